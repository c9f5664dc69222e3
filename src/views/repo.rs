//! SQL of views and their sorts.

use crate::ids::{ColumnId, PanelId, ViewId};
use serde_json::Value;
use sqlx::PgConnection;

use super::model::{ListedViewRow, SortRow, ViewRow};
use crate::auth::TenantId;
use crate::page::Page;

macro_rules! columns {
    () => {
        "v.id, v.tenant_id, v.panel_id, v.name, v.owner_user_id, v.owner_email, v.is_published, v.published_at,
         v.published_by, v.visible_columns, v.filters, v.metadata, v.version, v.created_at, v.updated_at"
    };
}

/// The views a list may show: the tenant's, narrowed by panel and published state; with a reader
/// (`$4` e-mail, `$5` lower-cased subject), only the views it has an ACL entry for and the published
/// views of panels it can read. Admins pass no reader.
macro_rules! listed {
    () => {
        " from view v
         where v.tenant_id = $1
           and ($2::bigint is null or v.panel_id = $2)
           and ($3::boolean is null or v.is_published = $3)
           and ($4::text is null
                or exists (select 1 from access_control_lists a
                           where a.tenant_id = $1 and a.resource_type = 'view' and a.resource_id = v.id
                             and a.user_email in ($4, $5, '_all'))
                or (v.is_published and exists (select 1 from access_control_lists a
                           where a.tenant_id = $1 and a.resource_type = 'panel' and a.resource_id = v.panel_id
                             and a.user_email in ($4, $5, '_all'))))"
    };
}

/// What a list is narrowed by.
#[derive(Debug, Clone, Copy)]
pub struct ViewFilter<'a> {
    pub panel_id: Option<PanelId>,
    pub published: Option<bool>,
    /// `(e-mail, lower-cased subject)` of a non-admin reader.
    pub reader: Option<(&'a str, &'a str)>,
}

#[allow(clippy::too_many_arguments)] // one bound value per column written
pub async fn insert_view(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    name: &str,
    owner_user_id: &str,
    owner_email: &str,
    visible_columns: &Value,
    metadata: Option<&Value>,
) -> sqlx::Result<ViewRow> {
    sqlx::query_as(concat!(
        "insert into view as v (tenant_id, panel_id, name, owner_user_id, owner_email, visible_columns, metadata)
         values ($1, $2, $3, $4, $5, $6, $7) returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(name)
    .bind(owner_user_id)
    .bind(owner_email)
    .bind(visible_columns)
    .bind(metadata)
    .fetch_one(conn)
    .await
}

/// A view; with `lock`, locked until the transaction ends, so that a version checked against
/// `If-Match` is still the version written over.
pub async fn find_view(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ViewId,
    lock: bool,
) -> sqlx::Result<Option<ViewRow>> {
    const FIND: &str = concat!(
        "select ",
        columns!(),
        " from view v where v.tenant_id = $1 and v.id = $2"
    );
    const LOCK: &str = concat!(
        "select ",
        columns!(),
        " from view v where v.tenant_id = $1 and v.id = $2 for update"
    );
    sqlx::query_as(if lock { LOCK } else { FIND })
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A page of matching views, newest id first (keyset on id: rows below `page.after`), each with
/// the number of views matching the whole query.
pub async fn list_views(
    conn: &mut PgConnection,
    tenant: &TenantId,
    filter: ViewFilter<'_>,
    page: Page,
) -> sqlx::Result<Vec<ListedViewRow>> {
    let (email, user) = filter.reader.unzip();
    sqlx::query_as(concat!(
        "with matching as (select ",
        columns!(),
        ", count(*) over () as total",
        listed!(),
        ") select * from matching v where ($6 = 0 or v.id < $6) order by v.id desc limit $7"
    ))
    .bind(tenant.as_str())
    .bind(filter.panel_id)
    .bind(filter.published)
    .bind(email)
    .bind(user)
    .bind(page.after)
    .bind(page.limit + 1)
    .fetch_all(conn)
    .await
}

/// How many views match (for a page past the last one, which carries no count).
pub async fn count_views(
    conn: &mut PgConnection,
    tenant: &TenantId,
    filter: ViewFilter<'_>,
) -> sqlx::Result<i64> {
    let (email, user) = filter.reader.unzip();
    sqlx::query_scalar(concat!("select count(*)", listed!()))
        .bind(tenant.as_str())
        .bind(filter.panel_id)
        .bind(filter.published)
        .bind(email)
        .bind(user)
        .fetch_one(conn)
        .await
}

pub async fn update_view(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ViewId,
    name: &str,
    visible_columns: &Value,
    metadata: Option<&Value>,
) -> sqlx::Result<ViewRow> {
    sqlx::query_as(concat!(
        "update view v set name = $3, visible_columns = $4, metadata = $5
         where v.tenant_id = $1 and v.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(name)
    .bind(visible_columns)
    .bind(metadata)
    .fetch_one(conn)
    .await
}

pub async fn update_filters(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ViewId,
    filters: &Value,
) -> sqlx::Result<ViewRow> {
    sqlx::query_as(concat!(
        "update view v set filters = $3 where v.tenant_id = $1 and v.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(filters)
    .fetch_one(conn)
    .await
}

/// Publishes (recording when and by whom) or unpublishes (clearing both).
pub async fn set_published(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ViewId,
    published: bool,
    by: &str,
) -> sqlx::Result<ViewRow> {
    sqlx::query_as(concat!(
        "update view v set is_published = $3,
                published_at = case when $3 then now() end,
                published_by = case when $3 then $4 end
         where v.tenant_id = $1 and v.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(published)
    .bind(by)
    .fetch_one(conn)
    .await
}

/// Bumps the view's `updated_at` and version (the trigger does both on any update).
pub async fn touch_view(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ViewId,
) -> sqlx::Result<ViewRow> {
    sqlx::query_as(concat!(
        "update view v set version = v.version where v.tenant_id = $1 and v.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Deletes the view; its sorts and notifications go with it (foreign keys), its ACL entries too
/// (trigger).
pub async fn delete_view(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ViewId,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from view where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The sorts of several views in one query, by view then `order`.
pub async fn sorts_of(
    conn: &mut PgConnection,
    tenant: &TenantId,
    view_ids: &[ViewId],
) -> sqlx::Result<Vec<SortRow>> {
    sqlx::query_as(
        r#"select id, view_id, column_name, direction, "order" from view_sort
           where tenant_id = $1 and view_id = any($2) order by view_id, "order", id"#,
    )
    .bind(tenant.as_str())
    .bind(view_ids)
    .fetch_all(conn)
    .await
}

pub async fn delete_sorts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    view_id: ViewId,
) -> sqlx::Result<u64> {
    sqlx::query("delete from view_sort where tenant_id = $1 and view_id = $2")
        .bind(tenant.as_str())
        .bind(view_id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
}

/// Inserts the sorts in one statement; answers them by `order`.
pub async fn insert_sorts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    view_id: ViewId,
    column_names: &[String],
    directions: &[String],
    orders: &[i32],
) -> sqlx::Result<Vec<SortRow>> {
    let mut rows: Vec<SortRow> = sqlx::query_as(
        r#"insert into view_sort (tenant_id, view_id, column_name, direction, "order")
           select $1, $2, c, d, o from unnest($3::text[], $4::text[], $5::int[]) as t(c, d, o)
           returning id, view_id, column_name, direction, "order""#,
    )
    .bind(tenant.as_str())
    .bind(view_id)
    .bind(column_names)
    .bind(directions)
    .bind(orders)
    .fetch_all(conn)
    .await?;
    rows.sort_by_key(|row| (row.order, row.id));
    Ok(rows)
}

/// A column of a panel, as views refer to it (by id in `visibleColumns`, by name in sorts and
/// filters).
#[derive(Debug, sqlx::FromRow)]
pub struct PanelColumn {
    pub id: ColumnId,
    pub name: String,
    /// The column's type; a calculated column's is its formula's result type.
    #[sqlx(rename = "type")]
    pub column_type: String,
}

pub async fn panel_columns(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<PanelColumn>> {
    sqlx::query_as(
        "select id, name, case when kind = 'calculated' and result_type is not null then result_type else type end as type
         from panel_column where tenant_id = $1 and panel_id = $2",
    )
        .bind(tenant.as_str())
        .bind(panel_id)
        .fetch_all(conn)
        .await
}
