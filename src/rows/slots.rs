//! Typed slots: each base column's value copied, read as its type, into a column of its own on
//! the row (`n1`…`n16` numbers, `t1`…`t16` texts in lower case with "" as NULL, `d1`…`d8` dates,
//! `s1`…`s8` datetimes, `b1`…`b8` booleans; a multiple-choice column has none).
//!
//! Why: the rows query filters and sorts large panels by these plain columns. PostgreSQL uses a
//! condition as an index condition under row-level security only when its functions are
//! leakproof, which comparison operators are and the JSON readers are not; and a plain column is
//! read without parsing the record. A slot holds exactly what the column's JSON reader answers
//! (a text slot, its lower case: what text filters and sorts compare), so reading either gives
//! the same rows.
//!
//! How it stays true: a column takes a free slot of its type when it is created, and a new one
//! when its type or source field changes (`assign`, in the column's own transaction). The sink
//! writes every slot of the panel with each batch of records (`layout` tells it which), holding a
//! lock the assignment waits for, so a batch either saw the new slot or finished before it was
//! given. A worker (`spawn_filler`) then fills the new slot for the rows already there, a chunk at
//! a time, and marks it ready; only a ready slot is read.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::TenantId;
use crate::db::Db;
use crate::formula::{SqlBuilder, SqlParam, ValueType};
use crate::ids::{ColumnId, DataSourceId, PanelId};

/// Rows filled per transaction.
const CHUNK: i64 = 5000;
/// How long a filler holds a panel without renewing.
const LEASE: Duration = Duration::from_secs(120);
/// How often an idle filler looks for work.
const POLL: Duration = Duration::from_secs(2);
/// The advisory lock class of a panel's slot layout.
const LOCK_CLASS: i32 = 7_311_002;

/// The kinds of slots, by prefix, with how many the table has.
const KINDS: &[(char, usize)] = &[('n', 16), ('t', 16), ('d', 8), ('s', 8), ('b', 8)];

/// The slot prefix for a base column of this type, `None` for a type with no slot.
pub fn prefix_for(column_type: &str) -> Option<char> {
    Some(match column_type {
        "number" => 'n',
        "date" => 'd',
        "datetime" => 's',
        "boolean" => 'b',
        "multi_select" => return None,
        _ => 't',
    })
}

/// A slot name read from the database, checked to be one of the table's columns before it is
/// written into SQL.
pub fn checked_slot(slot: &str) -> Option<&str> {
    let mut chars = slot.chars();
    let prefix = chars.next()?;
    let count = KINDS.iter().find(|(p, _)| *p == prefix)?.1;
    let n: usize = chars.as_str().parse().ok()?;
    (chars.as_str().len() <= 2 && (1..=count).contains(&n)).then_some(slot)
}

/// The SQL of a slot's value, from the column's raw JSONB (`raw`, trusted SQL): what the column's
/// JSON reader answers, a text's lower case with "" as NULL.
pub fn value_sql(prefix: char, raw: &str) -> String {
    match prefix {
        'n' => format!("panels_jsonb_float8({raw})"),
        'd' => format!("panels_jsonb_date({raw})"),
        's' => format!("panels_jsonb_timestamptz({raw})"),
        'b' => format!("panels_jsonb_bool({raw})"),
        _ => format!("nullif(panels_lower(panels_jsonb_text({raw})), '')"),
    }
}

/// The formula type a slot holds.
pub fn value_type(prefix: char) -> ValueType {
    match prefix {
        'n' => ValueType::Number,
        'd' => ValueType::Date,
        's' => ValueType::DateTime,
        'b' => ValueType::Boolean,
        _ => ValueType::Text,
    }
}

/// `(r.data -> $n)` or `(r.data #> …)` of a source field, with the field bound in `out`;
/// `row` names the record (`r.data`, or an upsert's incoming `d`).
pub fn field_sql(row: &str, source_field: &str, out: &mut SqlBuilder) -> String {
    out.capture(|out| {
        let path = crate::rows::model::field_path(source_field);
        if path.len() == 1 {
            out.push_sql(&format!("({row} -> "));
            out.push_param(SqlParam::Text(path[0].clone()));
            out.push_sql(")");
        } else {
            // Path segments joined by the unit separator, split again in SQL: one text parameter.
            out.push_sql(&format!("({row} #> string_to_array("));
            out.push_param(SqlParam::Text(path.join("\u{1f}")));
            out.push_sql(", chr(31)))");
        }
    })
}

/// Holds the panel's slot layout still for the transaction: shared by the writers of rows,
/// exclusive for a change of slots.
async fn lock(conn: &mut PgConnection, panel: PanelId, shared: bool) -> sqlx::Result<()> {
    let sql = if shared {
        "select pg_advisory_xact_lock_shared($1, ($2 % 2147483647)::int)"
    } else {
        "select pg_advisory_xact_lock($1, ($2 % 2147483647)::int)"
    };
    sqlx::query(sql)
        .bind(LOCK_CLASS)
        .bind(panel)
        .execute(conn)
        .await
        .map(drop)
}

/// Gives a base column a slot of its type (its old one, if any, is freed): in the transaction
/// that creates the column or changes its type or source field. No free slot: the column is
/// read from the record.
pub async fn assign(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
    column: ColumnId,
    column_type: &str,
) -> sqlx::Result<()> {
    lock(conn, panel, false).await?;
    sqlx::query("delete from panel_slot where tenant_id = $1 and column_id = $2")
        .bind(tenant.as_str())
        .bind(column)
        .execute(&mut *conn)
        .await?;
    let Some(prefix) = prefix_for(column_type) else {
        return Ok(());
    };
    let taken: Vec<String> =
        sqlx::query_scalar("select slot from panel_slot where tenant_id = $1 and panel_id = $2")
            .bind(tenant.as_str())
            .bind(panel)
            .fetch_all(&mut *conn)
            .await?;
    let count = KINDS
        .iter()
        .find(|(p, _)| *p == prefix)
        .map_or(0, |(_, n)| *n);
    let Some(free) = (1..=count)
        .map(|n| format!("{prefix}{n}"))
        .find(|s| !taken.contains(s))
    else {
        return Ok(());
    };
    // A panel with no rows yet has nothing to fill: its slot is ready at once (no writer of rows
    // can be halfway through a batch: they hold the lock this transaction waited for).
    sqlx::query(
        "insert into panel_slot (tenant_id, panel_id, column_id, slot, state)
         select $1, $2, $3, $4,
                case when exists (select 1 from panel_row where tenant_id = $1 and panel_id = $2)
                     then 'filling' else 'ready' end",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .bind(column)
    .bind(&free)
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// One slot of a panel, with what fills it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Slot {
    pub column_id: ColumnId,
    pub slot: String,
    pub source_field: String,
    pub data_source_id: Option<DataSourceId>,
    pub state: String,
    pub filled_to: i64,
}

/// The panel's slots (ready and filling), after taking the shared lock: what a writer of rows
/// must write.
pub async fn layout(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
) -> sqlx::Result<Vec<Slot>> {
    lock(conn, panel, true).await?;
    let slots: Vec<Slot> = sqlx::query_as(
        "select s.column_id, s.slot, c.source_field, c.data_source_id, s.state, s.filled_to
           from panel_slot s join panel_column c on c.tenant_id = s.tenant_id and c.id = s.column_id
          where s.tenant_id = $1 and s.panel_id = $2 and c.source_field is not null
          order by s.slot",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .fetch_all(conn)
    .await?;
    Ok(slots
        .into_iter()
        .filter(|s| checked_slot(&s.slot).is_some())
        .collect())
}

/// The slots a writer of `data_source`'s rows fills, as `(slot, value SQL)` over the record
/// `row` (trusted SQL), with their fields bound in `out`.
pub fn writes(
    slots: &[Slot],
    data_source: DataSourceId,
    row: &str,
    out: &mut SqlBuilder,
) -> Vec<(String, String)> {
    slots
        .iter()
        .filter(|s| s.data_source_id.is_none_or(|ds| ds == data_source))
        .filter_map(|s| {
            let prefix = s.slot.chars().next()?;
            let raw = field_sql(row, &s.source_field, out);
            Some((s.slot.clone(), value_sql(prefix, &raw)))
        })
        .collect()
}

/// The filler: fills new slots for the rows already there, until `stop`.
pub fn spawn_filler(db: Db, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let worker = format!("slots-{}", uuid::Uuid::new_v4().simple());
        loop {
            let worked = match fill_next(&db, &worker, &stop).await {
                Ok(worked) => worked,
                Err(e) => {
                    tracing::warn!(error = %e, "slot filler");
                    false
                }
            };
            if stop.is_cancelled() {
                return;
            }
            if !worked {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    })
}

/// Fills the filling slots of one panel; `true` when there was one.
async fn fill_next(db: &Db, worker: &str, stop: &CancellationToken) -> sqlx::Result<bool> {
    let mut conn = db.acquire().await?;
    let claimed: Option<(String, i64)> =
        sqlx::query_as("select tenant_id, panel_id from claim_slot_fill($1, $2) limit 1")
            .bind(worker)
            .bind(LEASE.as_secs() as i32)
            .fetch_optional(&mut *conn)
            .await?;
    drop(conn);
    let Some((tenant, panel)) = claimed else {
        return Ok(false);
    };
    let Some(tenant) = TenantId::parse(&tenant) else {
        return Ok(true);
    };
    let panel = PanelId(panel);
    let started = std::time::Instant::now();
    let mut rows = 0u64;
    loop {
        if stop.is_cancelled() {
            return Ok(true);
        }
        let mut tx = db.begin(&tenant).await?;
        let slots: Vec<Slot> = layout(&mut tx, &tenant, panel)
            .await?
            .into_iter()
            .filter(|s| s.state == "filling")
            .collect();
        if slots.is_empty() {
            return Ok(true);
        }
        let from = slots.iter().map(|s| s.filled_to).min().unwrap_or(0);
        let to: Option<i64> = sqlx::query_scalar(
            "select max(id) from (select id from panel_row where tenant_id = $1 and panel_id = $2 and id > $3
                                   order by tenant_id, panel_id, id limit $4) chunk",
        )
        .bind(tenant.as_str())
        .bind(panel)
        .bind(from)
        .bind(CHUNK)
        .fetch_one(&mut *tx)
        .await?;
        let Some(to) = to else {
            // Every row has them: the slots may be read.
            sqlx::query(
                "update panel_slot set state = 'ready', lease_until = null, locked_by = null
                  where tenant_id = $1 and panel_id = $2 and state = 'filling'",
            )
            .bind(tenant.as_str())
            .bind(panel)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(panel_id = %panel, rows, seconds = started.elapsed().as_secs_f64(), "filled the slots of a panel");
            return Ok(true);
        };
        // Each slot from the record as the sink writes it, rows of other sources left empty.
        let mut out = SqlBuilder::new(5);
        let mut sets = Vec::new();
        for s in &slots {
            let prefix = s.slot.chars().next().unwrap_or('t');
            let raw = field_sql("r.data", &s.source_field, &mut out);
            let value = value_sql(prefix, &raw);
            sets.push(match s.data_source_id {
                // Our own id, not user text.
                Some(ds) => format!(
                    "{} = case when r.data_source_id = {ds} then {value} end",
                    s.slot
                ),
                None => format!("{} = {value}", s.slot),
            });
        }
        let sql = format!(
            "update panel_row r set {} where r.tenant_id = $1 and r.panel_id = $2 and r.id > $3 and r.id <= $4",
            sets.join(", ")
        );
        let mut args = sqlx::postgres::PgArguments::default();
        SqlParam::Text(tenant.as_str().to_owned()).bind(&mut args);
        SqlParam::Int(panel.0).bind(&mut args);
        SqlParam::Int(from).bind(&mut args);
        SqlParam::Int(to).bind(&mut args);
        for p in out.params {
            p.bind(&mut args);
        }
        let done = sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
        rows += done.rows_affected();
        let columns: Vec<ColumnId> = slots.iter().map(|s| s.column_id).collect();
        sqlx::query(
            "update panel_slot set filled_to = greatest(filled_to, $3), lease_until = now() + make_interval(secs => $4)
              where tenant_id = $1 and column_id = any($2) and state = 'filling'",
        )
        .bind(tenant.as_str())
        .bind(&columns)
        .bind(to)
        .bind(LEASE.as_secs() as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_checked_before_they_reach_sql() {
        for good in ["n1", "n16", "t9", "d8", "s1", "b8"] {
            assert_eq!(checked_slot(good), Some(good));
        }
        for bad in ["n0", "n17", "d9", "x1", "t", "t1; drop", "n01x", "", "n001"] {
            assert_eq!(checked_slot(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_column_type_has_its_slot_kind() {
        assert_eq!(prefix_for("number"), Some('n'));
        assert_eq!(prefix_for("datetime"), Some('s'));
        assert_eq!(prefix_for("select"), Some('t'));
        assert_eq!(prefix_for("multi_select"), None);
        assert_eq!(
            value_sql('t', "x"),
            "nullif(panels_lower(panels_jsonb_text(x)), '')"
        );
    }
}
