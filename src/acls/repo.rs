//! SQL of the ACL table.

use sqlx::PgConnection;

use super::model::AclRow;
use super::model::ResourceType;
use crate::auth::TenantId;
use crate::ids::PanelId;

/// The columns of `AclRow`, as a literal so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "id, tenant_id, resource_type, resource_id, user_email, permission, created_at, updated_at"
    };
}

/// The highest permission among the entries for this e-mail, this user id (legacy entries) or
/// everyone.
pub async fn highest_permission(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
    email: &str,
    user_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "select permission from access_control_lists
         where tenant_id = $1 and resource_type = $2 and resource_id = $3 and user_email in ($4, $5, '_all')
         order by case permission when 'owner' then 3 when 'editor' then 2 else 1 end desc limit 1",
    )
    .bind(tenant.as_str())
    .bind(resource_type.as_str())
    .bind(resource_id)
    .bind(email)
    .bind(user_id.to_lowercase())
    .fetch_optional(conn)
    .await
}

pub async fn list_for_resource(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
) -> sqlx::Result<Vec<AclRow>> {
    sqlx::query_as(concat!("select ", columns!(), " from access_control_lists where tenant_id = $1 and resource_type = $2 and resource_id = $3 order by id"))
    .bind(tenant.as_str())
    .bind(resource_type.as_str())
    .bind(resource_id)
    .fetch_all(conn)
    .await
}

/// The entries of one e-mail, then every tenant-wide entry.
pub async fn list_for_user(
    conn: &mut PgConnection,
    tenant: &TenantId,
    email: &str,
    resource_type: Option<ResourceType>,
) -> sqlx::Result<Vec<AclRow>> {
    sqlx::query_as(concat!("select ", columns!(), " from access_control_lists
         where tenant_id = $1 and user_email in ($2, '_all') and ($3::text is null or resource_type = $3)
         order by (user_email = '_all'), id"))
    .bind(tenant.as_str())
    .bind(email)
    .bind(resource_type.map(|r| r.as_str()))
    .fetch_all(conn)
    .await
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
    email: &str,
    permission: &str,
) -> sqlx::Result<AclRow> {
    sqlx::query_as(concat!("insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
         values ($1, $2, $3, $4, $5) returning ", columns!(), ""))
    .bind(tenant.as_str())
    .bind(resource_type.as_str())
    .bind(resource_id)
    .bind(email)
    .bind(permission)
    .fetch_one(conn)
    .await
}

pub async fn update_permission(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
    email: &str,
    permission: &str,
) -> sqlx::Result<Option<AclRow>> {
    sqlx::query_as(concat!("update access_control_lists set permission = $5
         where tenant_id = $1 and resource_type = $2 and resource_id = $3 and user_email = $4 returning ", columns!(), ""))
    .bind(tenant.as_str())
    .bind(resource_type.as_str())
    .bind(resource_id)
    .bind(email)
    .bind(permission)
    .fetch_optional(conn)
    .await
}

pub async fn delete(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
    email: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "delete from access_control_lists where tenant_id = $1 and resource_type = $2 and resource_id = $3 and user_email = $4",
    )
    .bind(tenant.as_str())
    .bind(resource_type.as_str())
    .bind(resource_id)
    .bind(email)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts or updates the tenant-wide entry; answers the row and whether it was inserted.
pub async fn upsert_everyone(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
    permission: &str,
) -> sqlx::Result<(AclRow, bool)> {
    let row: UpsertedRow = sqlx::query_as(concat!("insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
         values ($1, $2, $3, '_all', $4)
         on conflict on constraint acl_unique_entry do update set permission = excluded.permission
         returning ", columns!(), ", (xmax = 0) as inserted"))
    .bind(tenant.as_str())
    .bind(resource_type.as_str())
    .bind(resource_id)
    .bind(permission)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.acl, row.inserted))
}

/// Whether the resource exists in the tenant.
/// The panel a resource of the tenant belongs to (a panel is its own), or `None` when the
/// resource does not exist: cache invalidation of an ACL change is by panel.
pub async fn panel_of(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_type: ResourceType,
    resource_id: i64,
) -> sqlx::Result<Option<PanelId>> {
    let sql = match resource_type {
        ResourceType::Panel => "select id from panel where tenant_id = $1 and id = $2",
        ResourceType::View => "select panel_id from view where tenant_id = $1 and id = $2",
    };
    sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(resource_id)
        .fetch_optional(conn)
        .await
}

#[derive(sqlx::FromRow)]
struct UpsertedRow {
    #[sqlx(flatten)]
    acl: AclRow,
    inserted: bool,
}

/// Whether a view is published (readable by everyone in its tenant).
pub async fn is_published_view(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("select is_published from view where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .fetch_one(conn)
        .await
}
