//! SQL of data sources. Every statement names the tenant and, for one source, its panel, so an id
//! of another panel or tenant finds nothing.

use crate::ids::{DataSourceId, PanelId};
use serde_json::Value;
use sqlx::PgConnection;

use super::model::DataSourceRow;
use crate::auth::TenantId;
use crate::page::Page;

macro_rules! columns {
    () => {
        "d.id, d.panel_id, d.type, d.config, d.last_sync, d.version, d.created_at, d.updated_at"
    };
}

/// The id the next data source gets (its secrets are encrypted for it before the insert).
pub async fn next_data_source_id(conn: &mut PgConnection) -> sqlx::Result<DataSourceId> {
    sqlx::query_scalar("select nextval(pg_get_serial_sequence('data_source', 'id'))")
        .fetch_one(conn)
        .await
}

pub async fn insert_data_source(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: DataSourceId,
    panel_id: PanelId,
    kind: &str,
    config: &Value,
) -> sqlx::Result<DataSourceRow> {
    sqlx::query_as(concat!(
        "insert into data_source as d (id, tenant_id, panel_id, type, config) overriding system value
         values ($1, $2, $3, $4, $5) returning ",
        columns!()
    ))
    .bind(id)
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(kind)
    .bind(config)
    .fetch_one(conn)
    .await
}

/// A page of the panel's data sources by id (one more row than the page, to tell if there is more).
pub async fn list_data_sources(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    page: Page,
) -> sqlx::Result<Vec<DataSourceRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from data_source d where d.tenant_id = $1 and d.panel_id = $2 and d.id > $3 order by d.id limit $4"
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(page.after)
    .bind(page.limit + 1)
    .fetch_all(conn)
    .await
}

/// The source, locked for the rest of the transaction (updates and deletes read, check and write).
pub async fn find_data_source(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    id: DataSourceId,
    lock: bool,
) -> sqlx::Result<Option<DataSourceRow>> {
    let sql = if lock {
        concat!(
            "select ",
            columns!(),
            " from data_source d where d.tenant_id = $1 and d.panel_id = $2 and d.id = $3 for update"
        )
    } else {
        concat!(
            "select ",
            columns!(),
            " from data_source d where d.tenant_id = $1 and d.panel_id = $2 and d.id = $3"
        )
    };
    sqlx::query_as(sql)
        .bind(tenant.as_str())
        .bind(panel_id)
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn update_data_source(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: DataSourceId,
    kind: &str,
    config: &Value,
) -> sqlx::Result<DataSourceRow> {
    sqlx::query_as(concat!(
        "update data_source d set type = $3, config = $4 where d.tenant_id = $1 and d.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(kind)
    .bind(config)
    .fetch_one(conn)
    .await
}

/// Marks the source as synced now.
pub async fn touch_last_sync(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: DataSourceId,
) -> sqlx::Result<DataSourceRow> {
    sqlx::query_as(concat!(
        "update data_source d set last_sync = now() where d.tenant_id = $1 and d.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Deletes the source; base columns reading from it keep existing with no source (foreign key
/// `on delete set null`).
pub async fn delete_data_source(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: DataSourceId,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from data_source where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// One source by id alone, locked (the key rotation, which walks every source of a tenant).
pub async fn find_data_source_by_id(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: DataSourceId,
) -> sqlx::Result<Option<DataSourceRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from data_source d where d.tenant_id = $1 and d.id = $2 for update"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Replaces a source's stored config with the same config re-encrypted (a new version: the
/// stored bytes changed).
pub async fn replace_config(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: DataSourceId,
    config: &Value,
) -> sqlx::Result<()> {
    sqlx::query("update data_source set config = $3 where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .bind(config)
        .execute(conn)
        .await
        .map(|_| ())
}
