//! SQL of columns, and of the view references a column change has to follow.

use crate::ids::{ColumnId, DataSourceId, PanelId};
use serde_json::Value;
use sqlx::PgConnection;

use super::model::ColumnRow;
use crate::auth::TenantId;

macro_rules! columns {
    () => {
        "c.id, c.panel_id, c.kind, c.name, c.type, c.source_field, c.data_source_id, c.formula, c.dependencies,
         c.result_type, c.properties, c.metadata, c.tags, c.display_order, c.version, c.created_at, c.updated_at"
    };
}

/// Display order: columns whose properties carry no order come last, then by order, then by id.
macro_rules! display_order {
    () => {
        " order by jsonb_typeof(c.properties #> '{display,order}') is distinct from 'number', c.display_order, c.id"
    };
}

/// A column about to be inserted.
pub struct NewColumn<'a> {
    pub panel_id: PanelId,
    pub kind: &'a str,
    pub name: &'a str,
    pub column_type: &'a str,
    pub source_field: Option<&'a str>,
    pub data_source_id: Option<DataSourceId>,
    pub formula: Option<&'a str>,
    pub dependencies: &'a Value,
    pub result_type: Option<&'a str>,
    /// Must contain a `display` object: the server writes `display.order` into it.
    pub properties: &'a Value,
    pub metadata: Option<&'a Value>,
    pub tags: &'a Value,
}

/// Serialises writes that number the panel's columns (create, reorder) without blocking reads
/// or the foreign-key checks of other inserts.
pub async fn lock_panel(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<()> {
    sqlx::query("select 1 from panel where tenant_id = $1 and id = $2 for no key update")
        .bind(tenant.as_str())
        .bind(panel_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn data_source_exists(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    id: DataSourceId,
) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from data_source where tenant_id = $1 and panel_id = $2 and id = $3)")
        .bind(tenant.as_str())
        .bind(panel_id)
        .bind(id)
        .fetch_one(conn)
        .await
}

/// Inserts the column at the end of the panel's order (one more than the highest order).
pub async fn insert_column(
    conn: &mut PgConnection,
    tenant: &TenantId,
    new: &NewColumn<'_>,
) -> sqlx::Result<ColumnRow> {
    sqlx::query_as(concat!(
        "with next as (
             select coalesce(max(display_order) + 1, 0) as o from panel_column where tenant_id = $1 and panel_id = $2)
         insert into panel_column as c (tenant_id, panel_id, kind, name, type, source_field, data_source_id, formula,
                                        dependencies, result_type, properties, metadata, tags, display_order)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, jsonb_set($11, '{display,order}', to_jsonb(next.o)), $12, $13, next.o
         from next
         returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(new.panel_id)
    .bind(new.kind)
    .bind(new.name)
    .bind(new.column_type)
    .bind(new.source_field)
    .bind(new.data_source_id)
    .bind(new.formula)
    .bind(new.dependencies)
    .bind(new.result_type)
    .bind(new.properties)
    .bind(new.metadata)
    .bind(new.tags)
    .fetch_one(conn)
    .await
}

pub async fn find_column(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    id: ColumnId,
) -> sqlx::Result<Option<ColumnRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from panel_column c where c.tenant_id = $1 and c.panel_id = $2 and c.id = $3"
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The panel's columns in display order; `ids` and `tags` (any of) narrow it when given.
pub async fn list_columns(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    ids: Option<&[ColumnId]>,
    tags: Option<&[String]>,
) -> sqlx::Result<Vec<ColumnRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from panel_column c
         where c.tenant_id = $1 and c.panel_id = $2
           and ($3::bigint[] is null or c.id = any($3))
           and ($4::text[] is null or c.tags ?| $4)",
        display_order!()
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(ids)
    .bind(tags)
    .fetch_all(conn)
    .await
}

/// Name, kind and stored dependencies of each of the panel's columns (for formula analysis).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ColumnRef {
    pub id: ColumnId,
    pub name: String,
    pub kind: String,
    #[sqlx(rename = "type")]
    pub column_type: String,
    pub result_type: Option<String>,
    pub dependencies: Value,
    pub formula: Option<String>,
}

pub async fn column_refs(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<ColumnRef>> {
    sqlx::query_as(
        "select id, name, kind, type, result_type, dependencies, formula from panel_column where tenant_id = $1 and panel_id = $2 order by id",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .fetch_all(conn)
    .await
}

/// Calculated columns (other than `except`) whose dependencies include `name`.
pub async fn dependents(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    name: &str,
    except: ColumnId,
) -> sqlx::Result<Vec<(ColumnId, String)>> {
    sqlx::query_as(
        "select id, name from panel_column
         where tenant_id = $1 and panel_id = $2 and kind = 'calculated' and id <> $4 and dependencies ? $3
         order by id",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(name)
    .bind(except)
    .fetch_all(conn)
    .await
}

/// Every stored field of a column after an update.
pub struct ColumnUpdate<'a> {
    pub name: &'a str,
    pub column_type: &'a str,
    pub source_field: Option<&'a str>,
    pub formula: Option<&'a str>,
    pub dependencies: &'a Value,
    pub result_type: Option<&'a str>,
    pub properties: &'a Value,
    pub display_order: Option<i32>,
    pub metadata: Option<&'a Value>,
    pub tags: &'a Value,
}

pub async fn update_column(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ColumnId,
    u: &ColumnUpdate<'_>,
) -> sqlx::Result<ColumnRow> {
    sqlx::query_as(concat!(
        "update panel_column c set name = $3, type = $4, source_field = $5, formula = $6, dependencies = $7,
                result_type = $8, properties = $9, display_order = coalesce($10, c.display_order), metadata = $11, tags = $12
         where c.tenant_id = $1 and c.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(u.name)
    .bind(u.column_type)
    .bind(u.source_field)
    .bind(u.formula)
    .bind(u.dependencies)
    .bind(u.result_type)
    .bind(u.properties)
    .bind(u.display_order)
    .bind(u.metadata)
    .bind(u.tags)
    .fetch_one(conn)
    .await
}

/// Rewrites formulas and dependencies of several columns at once (`[{id, formula, dependencies}]`).
pub async fn set_formulas(
    conn: &mut PgConnection,
    tenant: &TenantId,
    changes: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "update panel_column c set formula = t.formula, dependencies = t.dependencies
         from jsonb_to_recordset($2) as t(id bigint, formula text, dependencies jsonb)
         where c.tenant_id = $1 and c.id = t.id",
    )
    .bind(tenant.as_str())
    .bind(changes)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_column(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ColumnId,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from panel_column where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn column_ids(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<ColumnId>> {
    sqlx::query_scalar("select id from panel_column where tenant_id = $1 and panel_id = $2")
        .bind(tenant.as_str())
        .bind(panel_id)
        .fetch_all(conn)
        .await
}

/// Gives the listed columns the orders 0..n-1 (column and `properties.display.order`) in one
/// statement; answers all of them in the new order.
pub async fn reorder_columns(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    ids: &[ColumnId],
) -> sqlx::Result<Vec<ColumnRow>> {
    sqlx::query_as(concat!(
        "with updated as (
             update panel_column c
                set display_order = t.ord - 1,
                    properties = jsonb_set(
                        case when jsonb_typeof(c.properties) = 'object' then c.properties else '{}' end,
                        '{display}',
                        case when jsonb_typeof(c.properties -> 'display') = 'object' then c.properties -> 'display' else '{}' end
                            || jsonb_build_object('order', t.ord - 1))
               from unnest($3::bigint[]) with ordinality as t(id, ord)
              where c.tenant_id = $1 and c.panel_id = $2 and c.id = t.id
              returning c.*)
         select ",
        columns!(),
        " from updated c",
        display_order!()
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// A view of the panel and how it refers to one column.
#[derive(Debug, sqlx::FromRow)]
pub struct ViewUse {
    pub id: i64,
    pub name: String,
    /// Its visible columns hold the column's id.
    pub visible: bool,
    /// One of its sorts is on the column's name.
    pub sorted: bool,
    pub filters: Value,
}

/// Every view of the panel, with whether it shows or sorts on the column (filters are
/// inspected by the caller, which knows the filter tree).
pub async fn view_uses(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    id: ColumnId,
    name: &str,
) -> sqlx::Result<Vec<ViewUse>> {
    sqlx::query_as(
        "select v.id, v.name,
                exists (select 1 from jsonb_array_elements(case when jsonb_typeof(v.visible_columns) = 'array'
                                                               then v.visible_columns else '[]' end) e
                         where e = to_jsonb($3::bigint::text) or e = to_jsonb($3::bigint)) as visible,
                exists (select 1 from view_sort s where s.tenant_id = v.tenant_id and s.view_id = v.id
                           and s.column_name = $4) as sorted,
                v.filters
         from view v where v.tenant_id = $1 and v.panel_id = $2 order by v.id",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(id)
    .bind(name)
    .fetch_all(conn)
    .await
}

/// Removes a column id from the visible columns of the panel's views.
pub async fn hide_column(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    id: ColumnId,
) -> sqlx::Result<()> {
    sqlx::query(
        "update view v set visible_columns = (
             select coalesce(jsonb_agg(e order by i), '[]') from jsonb_array_elements(v.visible_columns) with ordinality as t(e, i)
              where e <> to_jsonb($3::bigint::text) and e <> to_jsonb($3::bigint))
         where v.tenant_id = $1 and v.panel_id = $2 and jsonb_typeof(v.visible_columns) = 'array'
           and (v.visible_columns @> jsonb_build_array($3::bigint::text) or v.visible_columns @> jsonb_build_array($3::bigint))",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the sorts on a column name in the panel's views.
pub async fn delete_sorts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    name: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "delete from view_sort s using view v
         where s.tenant_id = $1 and v.tenant_id = $1 and v.panel_id = $2 and s.view_id = v.id and s.column_name = $3",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Renames the sorts on a column in the panel's views.
pub async fn rename_sorts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    old: &str,
    new: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update view_sort s set column_name = $4 from view v
         where s.tenant_id = $1 and v.tenant_id = $1 and v.panel_id = $2 and s.view_id = v.id and s.column_name = $3",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(old)
    .bind(new)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the filters of several views at once (`[{id, filters}]`).
pub async fn set_view_filters(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    changes: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "update view v set filters = t.filters
         from jsonb_to_recordset($3) as t(id bigint, filters jsonb)
         where v.tenant_id = $1 and v.panel_id = $2 and v.id = t.id",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(changes)
    .execute(conn)
    .await?;
    Ok(())
}
