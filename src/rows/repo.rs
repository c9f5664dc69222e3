//! The statements of panel rows: the columns, sample records for the formula check, and the
//! statements `query.rs` builds (a page, every row, the count and its estimate).

use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::model::ColumnDef;
use super::query::{KeyType, KeyValue};
use crate::auth::TenantId;
use crate::ids::{DataSourceId, PanelId};

pub async fn columns(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<ColumnDef>> {
    sqlx::query_as(
        "select c.id, c.name, c.kind, c.type, c.source_field, c.data_source_id, c.formula, c.result_type, s.slot
           from panel_column c
           left join panel_slot s on s.tenant_id = c.tenant_id and s.column_id = c.id and s.state = 'ready'
          where c.tenant_id = $1 and c.panel_id = $2 order by c.display_order, c.id",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .fetch_all(conn)
    .await
}

/// A page of raw records (for in-process evaluation of sample rows).
pub async fn sample(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String, DataSourceId, Value)>> {
    sqlx::query_as(
        "select id, record_key, data_source_id, data from panel_row where tenant_id = $1 and panel_id = $2 order by id limit $3",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A row of a page: the stored record and the values of its sort keys (for the next cursor).
#[derive(Debug)]
pub struct PageRow {
    pub id: i64,
    pub record_key: String,
    pub data_source_id: DataSourceId,
    pub data: Value,
    pub keys: Vec<KeyValue>,
}

fn page_row(row: &PgRow, types: &[KeyType]) -> sqlx::Result<PageRow> {
    let mut keys = Vec::with_capacity(types.len());
    for (i, ty) in types.iter().enumerate() {
        let at = 4 + i;
        // A slot key is empty where its value is; a bounded key never is.
        let value = match ty {
            KeyType::Text => row.try_get::<Option<String>, _>(at)?.map(KeyValue::Text),
            KeyType::Number => row.try_get::<Option<f64>, _>(at)?.map(KeyValue::Number),
            KeyType::Date => row.try_get::<Option<_>, _>(at)?.map(KeyValue::Date),
            KeyType::Instant => row.try_get::<Option<_>, _>(at)?.map(KeyValue::Instant),
        };
        keys.push(value.unwrap_or(KeyValue::Null));
    }
    Ok(PageRow {
        id: row.try_get(0)?,
        record_key: row.try_get(1)?,
        data_source_id: row.try_get(2)?,
        data: row.try_get(3)?,
        keys,
    })
}

/// Runs a statement of [`Plan::page`] (an unnamed statement: planned for its parameters' values
/// each time, so the planner can match expressions and partial indexes).
///
/// A page ordered by sort keys is planned without explicit sorts when it can be: the planner
/// cannot use the statistics of the engine's indexes (they are partial to a panel, and PostgreSQL
/// reads no statistics from partial indexes), so it underestimates how many rows pass the filters
/// and would rather sort all of them than walk the index on the keys, which reads a page and
/// stops. Where no index serves the order every plan sorts, and the choice is the same.
pub async fn fetch_page(
    conn: &mut PgConnection,
    (sql, args): (String, PgArguments),
    types: &[KeyType],
    ordered_by_keys: bool,
) -> sqlx::Result<Vec<PageRow>> {
    if ordered_by_keys {
        // The price a disabled plan shape gets also crosses the threshold of JIT compilation,
        // which would cost a page more than the page itself.
        sqlx::query(
            "select set_config('enable_sort', 'off', true), set_config('jit', 'off', true)",
        )
        .execute(&mut *conn)
        .await?;
    }
    let rows = sqlx::query_with(AssertSqlSafe(sql), args)
        .persistent(false)
        .fetch_all(conn)
        .await?;
    rows.iter().map(|r| page_row(r, types)).collect()
}

/// Streams the rows of [`Plan::all`] as the database sends them (an export).
pub fn stream_rows<'c>(
    conn: &'c mut PgConnection,
    (sql, args): (String, PgArguments),
    types: Vec<KeyType>,
) -> impl futures::Stream<Item = sqlx::Result<PageRow>> + Send + 'c {
    use futures::StreamExt;
    sqlx::query_with(AssertSqlSafe(sql), args)
        .persistent(false)
        .fetch(conn)
        .map(move |row| row.and_then(|r| page_row(&r, &types)))
}

/// Runs [`Plan::count`].
pub async fn count(
    conn: &mut PgConnection,
    (sql, args): (String, PgArguments),
) -> sqlx::Result<i64> {
    sqlx::query_scalar_with(AssertSqlSafe(sql), args)
        .persistent(false)
        .fetch_one(conn)
        .await
}

/// Runs [`Plan::estimate`]: the planner's estimate of the matching rows.
pub async fn estimate(
    conn: &mut PgConnection,
    (sql, args): (String, PgArguments),
) -> sqlx::Result<u64> {
    let plan: Value = sqlx::query_scalar_with(AssertSqlSafe(sql), args)
        .persistent(false)
        .fetch_one(conn)
        .await?;
    let rows = plan
        .pointer("/0/Plan/Plan Rows")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    Ok(rows.max(0.0).round() as u64)
}
