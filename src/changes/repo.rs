//! SQL of changes and notifications.

use crate::ids::PanelId;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::model::{ChangeRow, NewChange, NotificationRow};
use crate::auth::TenantId;

pub async fn insert_change(
    conn: &mut PgConnection,
    tenant: &TenantId,
    actor: &str,
    change: &NewChange,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into panel_change (tenant_id, panel_id, change_type, affected_column, description, changed_by, old_values, new_values)
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning id",
    )
    .bind(tenant.as_str())
    .bind(change.panel_id)
    .bind(change.change_type.as_str())
    .bind(&change.affected_column)
    .bind(&change.description)
    .bind(actor)
    .bind(&change.old_values)
    .bind(&change.new_values)
    .fetch_one(conn)
    .await
}

/// A published view of a panel, with what it refers to (for impact).
#[derive(Debug, sqlx::FromRow)]
pub struct PublishedView {
    pub id: i64,
    pub name: String,
    pub owner_email: String,
    pub visible_columns: serde_json::Value,
    pub filters: serde_json::Value,
    pub sort_columns: Vec<String>,
    pub acl_emails: Vec<String>,
}

pub async fn published_views(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<PublishedView>> {
    sqlx::query_as(
        "select v.id, v.name, v.owner_email, v.visible_columns, v.filters,
                coalesce((select array_agg(s.column_name) from view_sort s where s.tenant_id = v.tenant_id and s.view_id = v.id), '{}') as sort_columns,
                coalesce((select array_agg(a.user_email) from access_control_lists a
                          where a.tenant_id = v.tenant_id and a.resource_type = 'view' and a.resource_id = v.id
                            and a.user_email <> '_all'), '{}') as acl_emails
         from view v where v.tenant_id = $1 and v.panel_id = $2 and v.is_published",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .fetch_all(conn)
    .await
}

/// One notification per (view, user), in one statement.
pub async fn insert_notifications(
    conn: &mut PgConnection,
    tenant: &TenantId,
    change_id: i64,
    view_ids: &[i64],
    emails: &[String],
    impacts: &[String],
    messages: &[String],
) -> sqlx::Result<u64> {
    sqlx::query(
        "insert into view_notification (tenant_id, view_id, panel_change_id, user_email, impact, message)
         select $1, v, $2, e, i, m from unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) as t(v, e, i, m)",
    )
    .bind(tenant.as_str())
    .bind(change_id)
    .bind(view_ids)
    .bind(emails)
    .bind(impacts)
    .bind(messages)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

pub struct ChangeFilter {
    pub panel_id: Option<PanelId>,
    pub change_type: Option<&'static str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// `None` for admins: every panel of the tenant; else the caller's e-mail and id for ACLs.
    pub reader: Option<(String, String)>,
    pub limit: i64,
    pub offset: i64,
}

const CHANGE_WHERE: &str = "c.tenant_id = $1
    and ($2::bigint is null or c.panel_id = $2)
    and ($3::text is null or c.change_type = $3)
    and ($4::timestamptz is null or c.created_at >= $4)
    and ($5::timestamptz is null or c.created_at < $5)
    and ($6::text is null or exists (
        select 1 from access_control_lists a where a.tenant_id = $1 and a.resource_type = 'panel'
           and a.resource_id = c.panel_id and a.user_email in ($6, $7, '_all')))";

/// A page of changes and the total matching, in one round trip.
pub async fn list_changes(
    conn: &mut PgConnection,
    tenant: &TenantId,
    f: &ChangeFilter,
) -> sqlx::Result<(Vec<ChangeRow>, i64)> {
    #[derive(sqlx::FromRow)]
    struct Counted {
        #[sqlx(flatten)]
        row: ChangeRow,
        total: i64,
    }
    let (email, user) = f.reader.clone().unzip();
    let sql = format!(
        "select c.id, c.panel_id, c.change_type, c.affected_column, c.description, c.changed_by, c.old_values,
                c.new_values, c.created_at, count(*) over () as total
         from panel_change c where {CHANGE_WHERE}
         order by c.id desc limit $8 offset $9"
    );
    let rows: Vec<Counted> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(f.panel_id)
        .bind(f.change_type)
        .bind(f.since)
        .bind(f.until)
        .bind(email)
        .bind(user)
        .bind(f.limit)
        .bind(f.offset)
        .fetch_all(&mut *conn)
        .await?;
    let total = match rows.first() {
        Some(r) => r.total,
        // An empty page past the end still needs the total.
        None if f.offset > 0 => {
            let sql = format!("select count(*) from panel_change c where {CHANGE_WHERE}");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(f.panel_id)
                .bind(f.change_type)
                .bind(f.since)
                .bind(f.until)
                .bind(f.reader.as_ref().map(|r| r.0.clone()))
                .bind(f.reader.as_ref().map(|r| r.1.clone()))
                .fetch_one(&mut *conn)
                .await?
        }
        None => 0,
    };
    Ok((rows.into_iter().map(|c| c.row).collect(), total))
}

pub struct NotificationFilter {
    pub is_read: Option<bool>,
    pub impact: Option<&'static str>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

/// A page of the user's notifications, the total matching and the user's unread count.
pub async fn list_notifications(
    conn: &mut PgConnection,
    tenant: &TenantId,
    email: &str,
    f: &NotificationFilter,
) -> sqlx::Result<(Vec<NotificationRow>, i64, i64)> {
    let rows: Vec<NotificationRow> = sqlx::query_as(
        "select n.id, n.tenant_id, n.view_id, n.user_email, n.impact, n.message, n.status, n.acknowledged_at,
                n.created_at, v.name as view_name, v.panel_id, v.published_by, n.panel_change_id
         from view_notification n join view v on v.tenant_id = n.tenant_id and v.id = n.view_id
         where n.tenant_id = $1 and n.user_email = $2
           and ($3::boolean is null or (n.status <> 'pending') = $3)
           and ($4::text is null or n.impact = $4)
           and ($5::timestamptz is null or n.created_at >= $5)
         order by n.id desc limit $6 offset $7",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(f.is_read)
    .bind(f.impact)
    .bind(f.since)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(&mut *conn)
    .await?;
    let (total, unread): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where ($3::boolean is null or (status <> 'pending') = $3)
                                   and ($4::text is null or impact = $4)
                                   and ($5::timestamptz is null or created_at >= $5)),
                count(*) filter (where status = 'pending')
         from view_notification where tenant_id = $1 and user_email = $2",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(f.is_read)
    .bind(f.impact)
    .bind(f.since)
    .fetch_one(conn)
    .await?;
    Ok((rows, total, unread))
}

pub async fn mark_read(
    conn: &mut PgConnection,
    tenant: &TenantId,
    email: &str,
    ids: &[i64],
) -> sqlx::Result<u64> {
    sqlx::query(
        "update view_notification set status = 'acknowledged', acknowledged_at = now()
         where tenant_id = $1 and user_email = $2 and id = any($3) and status = 'pending'",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(ids)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}
