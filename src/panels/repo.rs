//! SQL of panels.

use crate::ids::PanelId;
use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::model::PanelRow;
use crate::auth::TenantId;
use crate::page::Page;

macro_rules! columns {
    () => {
        "p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule, p.metadata, p.version, p.created_at, p.updated_at"
    };
}

/// Panels of one tenant and their owner entries in one statement (`create_panels`, migration
/// 0920): each row with the 1-based position of its input. Outside a transaction the statement
/// binds the tenant for itself and commits on its own; inside one, it joins it.
pub async fn create_panels(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panels: &Value,
) -> sqlx::Result<Vec<(i64, PanelRow)>> {
    let rows: Vec<Numbered> = sqlx::query_as(concat!(
        "select p.ord, ",
        columns!(),
        " from create_panels($1, $2) p"
    ))
    .bind(tenant.as_str())
    .bind(panels)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.ord, r.panel)).collect())
}

#[derive(sqlx::FromRow)]
struct Numbered {
    ord: i64,
    #[sqlx(flatten)]
    panel: PanelRow,
}

/// A panel with the reader's highest permission on it (`panel_with_permission`, migration
/// 0900), inside the request's transaction. `reader` is the (e-mail, lower-cased user id) pair
/// of a non-admin; `None` (an admin) reads no ACL and gets `None` as the permission, which the
/// caller turns into ownership.
pub async fn find_panel_with_permission(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: PanelId,
    reader: Option<(&str, &str)>,
) -> sqlx::Result<Option<(PanelRow, Option<String>)>> {
    with_permission(
        conn,
        concat!(
            "select ",
            columns!(),
            ", p.permission from panel_with_permission($1, $2, $3, $4) p"
        ),
        tenant,
        id,
        reader,
    )
    .await
}

/// The same outside any transaction, in one round trip: `read_panel` binds the tenant for the
/// statement's own transaction. On a connection straight from the pool.
pub async fn read_panel(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: PanelId,
    reader: Option<(&str, &str)>,
) -> sqlx::Result<Option<(PanelRow, Option<String>)>> {
    with_permission(
        conn,
        concat!(
            "select ",
            columns!(),
            ", p.permission from read_panel($1, $2, $3, $4) p"
        ),
        tenant,
        id,
        reader,
    )
    .await
}

async fn with_permission(
    conn: &mut PgConnection,
    sql: &'static str,
    tenant: &TenantId,
    id: PanelId,
    reader: Option<(&str, &str)>,
) -> sqlx::Result<Option<(PanelRow, Option<String>)>> {
    let (email, user) = reader.unzip();
    let row: Option<PanelWithPermission> = sqlx::query_as(sql)
        .bind(tenant.as_str())
        .bind(id)
        .bind(email)
        .bind(user)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| (r.panel, r.permission)))
}

#[derive(sqlx::FromRow)]
struct PanelWithPermission {
    #[sqlx(flatten)]
    panel: PanelRow,
    permission: Option<String>,
}

/// A page of the tenant's panels; with `reader`, only those it has an ACL entry for.
///
/// The ACL test names the tenant by its parameter, not as `p.tenant_id`: PostgreSQL may answer
/// the `exists` with one hashed scan of the ACL table, and only a constant tenant lets that scan
/// use an index. With the correlated form and row-level security off, the scan read every
/// tenant's entries (bench/README.md, finding 19). The lists of views and changes do the same.
pub async fn list_panels(
    conn: &mut PgConnection,
    tenant: &TenantId,
    reader: Option<(&str, &str)>,
    page: Page,
) -> sqlx::Result<Vec<PanelRow>> {
    let (email, user) = reader.unzip();
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from panel p
         where p.tenant_id = $1 and p.id > $2
           and ($3::text is null or exists (
               select 1 from access_control_lists a where a.tenant_id = $1 and a.resource_type = 'panel'
                  and a.resource_id = p.id and a.user_email in ($3, $4, '_all')))
         order by p.id limit $5"
    ))
    .bind(tenant.as_str())
    .bind(page.after)
    .bind(email)
    .bind(user)
    .bind(page.limit + 1)
    .fetch_all(conn)
    .await
}

pub async fn update_panel(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: PanelId,
    name: &str,
    description: Option<&str>,
    cohort_rule: &Value,
    metadata: &Map<String, Value>,
) -> sqlx::Result<PanelRow> {
    sqlx::query_as(concat!(
        "update panel p set name = $3, description = $4, cohort_rule = $5, metadata = $6
         where p.tenant_id = $1 and p.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(name)
    .bind(description)
    .bind(cohort_rule)
    .bind(Value::Object(metadata.clone()))
    .fetch_one(conn)
    .await
}

/// Deletes the panel; its data sources, columns, views, sorts, changes and notifications go
/// with it (foreign keys), and its ACL entries and its views' (triggers).
pub async fn delete_panel(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: PanelId,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from panel where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Name and type of every column of the panel (for validating filter trees); a calculated
/// column's type is its formula's result type.
pub async fn column_types(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "select name, case when kind = 'calculated' and result_type is not null then result_type else type end
         from panel_column where tenant_id = $1 and panel_id = $2",
    )
        .bind(tenant.as_str())
        .bind(panel_id)
        .fetch_all(conn)
        .await
}
