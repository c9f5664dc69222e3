//! Typed slots: each column's value copied, as its type, into a column of its own on the row
//! (`n1`…`n16` numbers, `t1`…`t16` texts in lower case with "" as NULL, `d1`…`d8` dates,
//! `s1`…`s8` datetimes, `b1`…`b8` booleans). A base column's slot holds what its JSON reader
//! answers; a calculated column's, its cell, when its formula does not read the clock. A
//! multiple-choice column has none.
//!
//! Why: the rows query filters and sorts large panels by these plain columns. PostgreSQL uses a
//! condition as an index condition under row-level security only when its functions are
//! leakproof, which comparison operators are and the JSON readers and formula helpers are not;
//! and a plain column is read without parsing the record or computing a formula.
//!
//! How they stay true: what fills a slot is SQL (`query::fills`), and a slot remembers a hash of
//! it. After any change to a panel's columns, `refresh` compares: a slot whose column now fills
//! differently (a new type, source field or formula, or a column it reads changed) is freed, and
//! the column takes a new one. The sink writes every slot of the panel with each batch of
//! records (`writes`), holding a lock `refresh` waits for, so a batch either saw the new slot or
//! finished before it was given. A worker (`spawn_filler`) fills a new slot for the rows already
//! there, a chunk at a time, and marks it ready; only a ready slot is read.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::model::ColumnDef;
use super::query::{self, Fill, Record, SLOT_KINDS};
use super::repo;
use crate::auth::TenantId;
use crate::db::Db;
use crate::formula::{SqlBuilder, SqlParam};
use crate::ids::{ColumnId, DataSourceId, PanelId};

/// Rows filled per transaction.
const CHUNK: i64 = 5000;
/// How long a filler holds a panel without renewing.
const LEASE: Duration = Duration::from_secs(120);
/// How often an idle filler looks for work.
const POLL: Duration = Duration::from_secs(2);
/// The advisory lock class of a panel's slot layout.
const LOCK_CLASS: i32 = 7_311_002;

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

/// The hash of what fills a slot: its SQL and the values of the parameters it reads (read over
/// the rows query's own record).
fn fill_hash(fill: &Fill, params: &[SqlParam]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(fill.prefix.to_string().as_bytes());
    hasher.update(fill.sql.as_bytes());
    let bytes = fill.sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if let Some(p) = fill.sql[start..end]
                .parse::<usize>()
                .ok()
                .and_then(|n| params.get(n.checked_sub(1)?))
            {
                hasher.update(format!("\0{p:?}").as_bytes());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    hex::encode(&hasher.finalize()[..16])
}

#[derive(sqlx::FromRow)]
struct Held {
    column_id: ColumnId,
    slot: String,
    fill_hash: String,
}

/// Holds the panel's slot layout for the rest of the transaction, before it deletes a column or
/// the panel: a delete locks the column's `panel_slot` rows (by cascade) and `refresh` then wants
/// this lock, while a filler holds it shared and waits for those rows: a deadlock, unless the
/// lock comes first (Bruno's forced column delete met a filler once).
pub async fn lock_layout(conn: &mut PgConnection, panel: PanelId) -> sqlx::Result<()> {
    lock(conn, panel, false).await
}

/// Gives every column of the panel the slot it should have, after a change of its columns (in the
/// same transaction): a column whose slot fills as before keeps it; one that fills differently,
/// or is new, takes a free slot of its kind, to be filled; columns beyond the slots of their kind
/// are read from the record.
pub async fn refresh(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
) -> sqlx::Result<()> {
    lock(conn, panel, false).await?;
    let columns = repo::columns(conn, tenant, panel).await?;
    let (checked, _) = query::check_all(&columns);
    let mut out = SqlBuilder::new(1);
    let mut wanted: Vec<(ColumnId, char, String)> = Vec::new();
    for fill in query::fills(&columns, &checked, query::ROW, &mut out) {
        if let Some(column) = columns.iter().find(|c| c.name == fill.column) {
            wanted.push((column.id, fill.prefix, fill_hash(&fill, &out.params)));
        }
    }
    let held: Vec<Held> = sqlx::query_as(
        "select column_id, slot, fill_hash from panel_slot where tenant_id = $1 and panel_id = $2",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .fetch_all(&mut *conn)
    .await?;
    let mut kept: Vec<ColumnId> = Vec::new();
    for h in &held {
        let Some((_, prefix, hash)) = wanted.iter().find(|(id, _, _)| *id == h.column_id) else {
            continue;
        };
        if h.slot.starts_with(*prefix) && (h.fill_hash == *hash || h.fill_hash.is_empty()) {
            kept.push(h.column_id);
            if h.fill_hash.is_empty() {
                // A slot given before hashes were kept (the migration, a seed) fills as its
                // column reads today: adopt it.
                sqlx::query(
                    "update panel_slot set fill_hash = $3 where tenant_id = $1 and column_id = $2",
                )
                .bind(tenant.as_str())
                .bind(h.column_id)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    sqlx::query("delete from panel_slot where tenant_id = $1 and panel_id = $2 and not (column_id = any($3))")
        .bind(tenant.as_str())
        .bind(panel)
        .bind(&kept)
        .execute(&mut *conn)
        .await?;
    let mut taken: Vec<String> = held
        .iter()
        .filter(|h| kept.contains(&h.column_id))
        .map(|h| h.slot.clone())
        .collect();
    let empty: bool = sqlx::query_scalar(
        "select not exists (select 1 from panel_row where tenant_id = $1 and panel_id = $2)",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .fetch_one(&mut *conn)
    .await?;
    for (column, prefix, hash) in wanted.iter().filter(|(id, _, _)| !kept.contains(id)) {
        let count = SLOT_KINDS
            .iter()
            .find(|(p, _)| p == prefix)
            .map_or(0, |(_, n)| *n);
        let Some(free) = (1..=count)
            .map(|n| format!("{prefix}{n}"))
            .find(|s| !taken.contains(s))
        else {
            continue;
        };
        // A panel with no rows has nothing to fill: its slot is ready at once (no writer of rows
        // is halfway through a batch: they hold the lock this transaction took).
        sqlx::query(
            "insert into panel_slot (tenant_id, panel_id, column_id, slot, state, fill_hash)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(panel)
        .bind(column)
        .bind(&free)
        .bind(if empty { "ready" } else { "filling" })
        .bind(hash)
        .execute(&mut *conn)
        .await?;
        taken.push(free);
    }
    Ok(())
}

/// The panel's slots with what fills them from `record`, their values bound in `out`, after
/// taking the shared lock; `filling_only` leaves out the ready ones.
async fn slot_fills(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
    record: Record<'_>,
    filling_only: bool,
    out: &mut SqlBuilder,
) -> sqlx::Result<Vec<(String, String, i64, ColumnId)>> {
    lock(conn, panel, true).await?;
    let held: Vec<(ColumnId, String, String, i64)> = sqlx::query_as(
        "select column_id, slot, state, filled_to from panel_slot where tenant_id = $1 and panel_id = $2",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .fetch_all(&mut *conn)
    .await?;
    if held
        .iter()
        .all(|(_, _, state, _)| filling_only && state == "ready")
        || held.is_empty()
    {
        return Ok(Vec::new());
    }
    let columns: Vec<ColumnDef> = repo::columns(conn, tenant, panel).await?;
    let (checked, _) = query::check_all(&columns);
    let fills: HashMap<String, Fill> = query::fills(&columns, &checked, record, out)
        .into_iter()
        .map(|f| (f.column.clone(), f))
        .collect();
    Ok(held
        .into_iter()
        .filter(|(_, _, state, _)| !filling_only || state == "filling")
        .filter_map(|(column_id, slot, _, filled_to)| {
            let slot = query::checked_slot(&slot)?.to_owned();
            let column = columns.iter().find(|c| c.id == column_id)?;
            let fill = fills.get(&column.name)?;
            slot.starts_with(fill.prefix)
                .then(|| (slot, fill.sql.clone(), filled_to, column_id))
        })
        .collect())
}

/// What a writer of `data_source`'s records into the panel writes besides each record: its slots,
/// as `(slot, value SQL)` over the incoming record `data` (trusted SQL), their values bound in
/// `out`. Holds the layout still until the writer's transaction ends.
pub async fn writes(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
    data_source: DataSourceId,
    data: &str,
    out: &mut SqlBuilder,
) -> sqlx::Result<Vec<(String, String)>> {
    // Our own id, not user text.
    let source = format!("{}::bigint", data_source.0);
    let record = Record {
        data,
        source: &source,
    };
    Ok(slot_fills(conn, tenant, panel, record, false, out)
        .await?
        .into_iter()
        .map(|(slot, sql, _, _)| (slot, sql))
        .collect())
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
        let mut out = SqlBuilder::new(5);
        let slots = slot_fills(&mut tx, &tenant, panel, query::ROW, true, &mut out).await?;
        if slots.is_empty() {
            return Ok(true);
        }
        let from = slots.iter().map(|(_, _, f, _)| *f).min().unwrap_or(0);
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
        let columns: Vec<ColumnId> = slots.iter().map(|(_, _, _, c)| *c).collect();
        let Some(to) = to else {
            // Every row has them: the slots may be read.
            sqlx::query(
                "update panel_slot set state = 'ready', lease_until = null, locked_by = null
                  where tenant_id = $1 and column_id = any($2) and state = 'filling'",
            )
            .bind(tenant.as_str())
            .bind(&columns)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(panel_id = %panel, rows, seconds = started.elapsed().as_secs_f64(), "filled the slots of a panel");
            return Ok(true);
        };
        let sets: Vec<String> = slots
            .iter()
            .map(|(slot, sql, _, _)| format!("{slot} = {sql}"))
            .collect();
        let sql = format!(
            "update panel_row r set {} where r.tenant_id = $1 and r.panel_id = $2 and r.id > $3 and r.id <= $4",
            sets.join(", ")
        );
        let (sql, params) = out.compact(&sql);
        let mut args = sqlx::postgres::PgArguments::default();
        SqlParam::Text(tenant.as_str().to_owned()).bind(&mut args);
        SqlParam::Int(panel.0).bind(&mut args);
        SqlParam::Int(from).bind(&mut args);
        SqlParam::Int(to).bind(&mut args);
        for p in params {
            p.bind(&mut args);
        }
        let done = sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
        rows += done.rows_affected();
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
    use super::query::{checked_slot, slot_prefix};
    use crate::rows::model::ColumnDef;

    #[test]
    fn slot_names_are_checked_before_they_reach_sql() {
        for good in ["n1", "n16", "t9", "d8", "s1", "b8"] {
            assert_eq!(checked_slot(good), Some(good));
        }
        for bad in [
            "n0", "n17", "d9", "x1", "t", "t1; drop", "n01x", "", "n001", "n01",
        ] {
            assert_eq!(checked_slot(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_column_has_the_slot_kind_of_its_values() {
        let column = |kind: &str, ty: &str, result: Option<&str>| ColumnDef {
            id: crate::ids::ColumnId(1),
            name: "c".into(),
            kind: kind.into(),
            column_type: ty.into(),
            source_field: None,
            data_source_id: None,
            formula: None,
            result_type: result.map(str::to_owned),
            slot: None,
        };
        assert_eq!(slot_prefix(&column("base", "number", None)), Some('n'));
        assert_eq!(slot_prefix(&column("base", "datetime", None)), Some('s'));
        assert_eq!(slot_prefix(&column("base", "select", None)), Some('t'));
        assert_eq!(slot_prefix(&column("base", "multi_select", None)), None);
        assert_eq!(
            slot_prefix(&column("calculated", "text", Some("number"))),
            Some('n')
        );
    }
}
