//! SQL of webhooks, their deliveries and the dispatcher's cursor. Every statement names the tenant
//! (and, for a delivery, its webhook), so an id of another tenant or webhook finds nothing; the
//! cross-tenant steps of the workers go through the functions of migration 20261205000300.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::model::{AttemptRow, DeliveryRow, WebhookRow};
use crate::auth::TenantId;
use crate::events::model::Cursor;
use crate::ids::PanelId;

macro_rules! columns {
    () => {
        "w.id, w.panel_id, w.url, w.description, w.events, w.enabled, w.disabled_reason, w.disabled_at,
         w.previous_secret_expires_at, w.secret_rotated_at, w.failing_since, w.last_success_at,
         w.dropped, w.created_by, w.version, w.created_at, w.updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "d.id, d.webhook_id, d.event_id, d.event_type, d.payload, d.status, d.attempts, d.max_attempts,
         d.next_attempt_at, d.response_code, d.last_error, d.created_at, d.finished_at"
    };
}

/// Serialises the creates of one tenant until the transaction ends, so two of them cannot both
/// pass the count of [`count_webhooks`] (an arbitrary constant naming "webhooks", and the tenant).
pub async fn lock_tenant_webhooks(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(7311002, hashtext($1))")
        .bind(tenant.as_str())
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn count_webhooks(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from webhook where tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(conn)
        .await
}

/// The id the next webhook gets (its secret is sealed for it before the insert).
pub async fn next_webhook_id(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select nextval(pg_get_serial_sequence('webhook', 'id'))")
        .fetch_one(conn)
        .await
}

/// What a create or an update writes.
pub struct WebhookFields<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub panel_id: Option<PanelId>,
    pub description: Option<&'a str>,
}

pub async fn insert_webhook(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    fields: &WebhookFields<'_>,
    sealed_secret: &str,
    created_by: &str,
) -> sqlx::Result<WebhookRow> {
    sqlx::query_as(concat!(
        "insert into webhook as w (id, tenant_id, panel_id, url, description, events, secret, created_by)
         overriding system value values ($1, $2, $3, $4, $5, $6, $7, $8) returning ",
        columns!()
    ))
    .bind(id)
    .bind(tenant.as_str())
    .bind(fields.panel_id)
    .bind(fields.url)
    .bind(fields.description)
    .bind(fields.events)
    .bind(sealed_secret)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

/// The webhook, locked for the rest of the transaction when `lock` (updates read, check, write).
pub async fn find_webhook(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    lock: bool,
) -> sqlx::Result<Option<WebhookRow>> {
    let sql = if lock {
        concat!(
            "select ",
            columns!(),
            " from webhook w where w.tenant_id = $1 and w.id = $2 for update"
        )
    } else {
        concat!(
            "select ",
            columns!(),
            " from webhook w where w.tenant_id = $1 and w.id = $2"
        )
    };
    sqlx::query_as(sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A page of the webhooks the caller manages, by id: every one for an admin (`reader` `None`),
/// else those of the panels it holds an editor or owner entry on (its e-mail, its lower-cased
/// user id, or everyone's).
pub async fn list_webhooks(
    conn: &mut PgConnection,
    tenant: &TenantId,
    reader: Option<(&str, &str)>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<WebhookRow>> {
    let (email, user) = reader.unzip();
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from webhook w
         where w.tenant_id = $1 and w.id > $2
           and ($3::text is null or exists (
               select 1 from access_control_lists a
                where a.tenant_id = $1 and a.resource_type = 'panel' and a.resource_id = w.panel_id
                  and a.user_email in ($3, $4, '_all') and a.permission in ('editor', 'owner')))
         order by w.id limit $5"
    ))
    .bind(tenant.as_str())
    .bind(after)
    .bind(email)
    .bind(user)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn update_webhook(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    fields: &WebhookFields<'_>,
) -> sqlx::Result<WebhookRow> {
    sqlx::query_as(concat!(
        "update webhook w set url = $3, events = $4, panel_id = $5, description = $6
         where w.tenant_id = $1 and w.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(fields.url)
    .bind(fields.events)
    .bind(fields.panel_id)
    .bind(fields.description)
    .fetch_one(conn)
    .await
}

/// Stops deliveries (a user's choice: no reason recorded).
pub async fn disable(conn: &mut PgConnection, tenant: &TenantId, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "update webhook set enabled = false, disabled_at = now(), disabled_reason = null
         where tenant_id = $1 and id = $2 and enabled",
    )
    .bind(tenant.as_str())
    .bind(id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Starts a webhook at the present (created, or enabled again): it receives the events of
/// transactions not yet finished now, and nothing of the past. The tenant's dispatcher cursor is
/// created there, or moved there when no other enabled webhook still needs it behind.
pub async fn start_at_present(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update webhook set enabled = true, disabled_at = null, disabled_reason = null,
                failing_since = null, since_snapshot = pg_current_snapshot()::text
          where tenant_id = $1 and id = $2",
    )
    .bind(tenant.as_str())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into webhook_cursor as c (tenant_id, txid, seq)
         values ($1, pg_snapshot_xmin(pg_current_snapshot()), 0)
         on conflict (tenant_id) do update set txid = excluded.txid, seq = 0
          where (c.txid, c.seq) < (excluded.txid, 0)
            and not exists (select 1 from webhook w
                             where w.tenant_id = $1 and w.enabled and w.id <> $2)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// A new secret; the current one keeps signing beside it for `overlap_hours`.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    sealed_secret: &str,
    overlap_hours: i32,
) -> sqlx::Result<WebhookRow> {
    sqlx::query_as(concat!(
        "update webhook w set previous_secret = w.secret,
                previous_secret_expires_at = now() + make_interval(hours => $4),
                secret = $3, secret_rotated_at = now()
          where w.tenant_id = $1 and w.id = $2 returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .bind(sealed_secret)
    .bind(overlap_hours)
    .fetch_one(conn)
    .await
}

pub async fn delete_webhook(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<bool> {
    sqlx::query("delete from webhook where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
}

// --- Deliveries -----------------------------------------------------------------------------

/// Deliveries to queue: parallel columns.
#[derive(Debug, Default)]
pub struct NewDeliveries {
    pub webhook_ids: Vec<i64>,
    pub event_ids: Vec<String>,
    pub event_types: Vec<String>,
    pub payloads: Vec<String>,
}

impl NewDeliveries {
    pub fn push(&mut self, webhook_id: i64, event_id: String, event_type: &str, payload: &str) {
        self.webhook_ids.push(webhook_id);
        self.event_ids.push(event_id);
        self.event_types.push(event_type.to_owned());
        self.payloads.push(payload.to_owned());
    }

    pub fn len(&self) -> usize {
        self.webhook_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.webhook_ids.is_empty()
    }

    /// Keeps the first `n`.
    pub fn truncate(&mut self, n: usize) {
        self.webhook_ids.truncate(n);
        self.event_ids.truncate(n);
        self.event_types.truncate(n);
        self.payloads.truncate(n);
    }
}

/// Queues deliveries, due at once (an event already queued for a webhook is skipped); answers the
/// rows inserted, in order.
pub async fn insert_deliveries(
    conn: &mut PgConnection,
    tenant: &TenantId,
    new: &NewDeliveries,
    max_attempts: i32,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(concat!(
        "insert into webhook_delivery as d (tenant_id, webhook_id, event_id, event_type, payload, max_attempts)
         select $1, n.w, n.e, n.t, n.p, $6
           from unnest($2::int8[], $3::text[], $4::text[], $5::text[]) with ordinality as n(w, e, t, p, ord)
          order by n.ord
         on conflict (tenant_id, webhook_id, event_id) do nothing
         returning ",
        delivery_columns!()
    ))
    .bind(tenant.as_str())
    .bind(&new.webhook_ids)
    .bind(&new.event_ids)
    .bind(&new.event_types)
    .bind(&new.payloads)
    .bind(max_attempts)
    .fetch_all(conn)
    .await
}

/// The tenant's deliveries waiting or in flight (of every webhook, enabled or not).
pub async fn count_queued(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from webhook_delivery
          where tenant_id = $1 and status in ('pending', 'delivering')",
    )
    .bind(tenant.as_str())
    .fetch_one(conn)
    .await
}

/// Counts events not queued for each webhook (the queue was full).
pub async fn add_dropped(
    conn: &mut PgConnection,
    tenant: &TenantId,
    webhook_ids: &[i64],
    counts: &[i64],
) -> sqlx::Result<()> {
    sqlx::query(
        "update webhook w set dropped = w.dropped + n.c
           from unnest($2::int8[], $3::int8[]) as n(id, c)
          where w.tenant_id = $1 and w.id = n.id",
    )
    .bind(tenant.as_str())
    .bind(webhook_ids)
    .bind(counts)
    .execute(conn)
    .await
    .map(|_| ())
}

/// A page of a webhook's deliveries, newest first: those with an id below `before` (0: from the
/// newest), in `status` when given.
pub async fn list_deliveries(
    conn: &mut PgConnection,
    tenant: &TenantId,
    webhook_id: i64,
    before: i64,
    status: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(concat!(
        "select ",
        delivery_columns!(),
        " from webhook_delivery d
         where d.tenant_id = $1 and d.webhook_id = $2 and ($3 = 0 or d.id < $3)
           and ($4::text is null or d.status = $4)
         order by d.id desc limit $5"
    ))
    .bind(tenant.as_str())
    .bind(webhook_id)
    .bind(before)
    .bind(status)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The attempts of these deliveries, in order.
pub async fn attempts_of(
    conn: &mut PgConnection,
    tenant: &TenantId,
    delivery_ids: &[i64],
) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "select delivery_id, attempt, status, started_at, duration_ms, response_code, response_body, error
           from webhook_attempt
          where tenant_id = $1 and delivery_id = any($2)
          order by delivery_id, attempt, id",
    )
    .bind(tenant.as_str())
    .bind(delivery_ids)
    .fetch_all(conn)
    .await
}

pub async fn find_delivery(
    conn: &mut PgConnection,
    tenant: &TenantId,
    webhook_id: i64,
    id: i64,
) -> sqlx::Result<Option<DeliveryRow>> {
    sqlx::query_as(concat!(
        "select ",
        delivery_columns!(),
        " from webhook_delivery d where d.tenant_id = $1 and d.webhook_id = $2 and d.id = $3 for update"
    ))
    .bind(tenant.as_str())
    .bind(webhook_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Makes a delivery due at once: a pending one keeps its schedule after this attempt; a finished
/// one gets one more attempt.
pub async fn retry_delivery(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<DeliveryRow> {
    sqlx::query_as(concat!(
        "update webhook_delivery d set
                max_attempts = case when d.status = 'pending' then greatest(d.max_attempts, d.attempts + 1)
                                    else d.attempts + 1 end,
                status = 'pending', next_attempt_at = now(), finished_at = null, updated_at = now()
          where d.tenant_id = $1 and d.id = $2 and d.status <> 'delivering' returning ",
        delivery_columns!()
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_one(conn)
    .await
}

// --- The workers ----------------------------------------------------------------------------

/// The tenants with an enabled webhook (any tenant: `webhook_tenants`).
pub async fn tenants(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select tenant_id from webhook_tenants()")
        .fetch_all(conn)
        .await
}

/// The tenant's dispatcher cursor, locked for this transaction; `None` when there is none or
/// another dispatcher holds it now (it will do the work).
pub async fn lock_cursor(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> sqlx::Result<Option<Cursor>> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "select txid::text, seq from webhook_cursor where tenant_id = $1 for update skip locked",
    )
    .bind(tenant.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(txid, seq)| {
        Some(Cursor {
            txid: txid.parse().ok()?,
            seq,
        })
    }))
}

pub async fn save_cursor(
    conn: &mut PgConnection,
    tenant: &TenantId,
    cursor: Cursor,
) -> sqlx::Result<()> {
    sqlx::query("update webhook_cursor set txid = $2::text::xid8, seq = $3 where tenant_id = $1")
        .bind(tenant.as_str())
        .bind(cursor.txid.to_string())
        .bind(cursor.seq)
        .execute(conn)
        .await
        .map(|_| ())
}

/// An enabled webhook as the dispatcher matches events to it.
#[derive(Debug, sqlx::FromRow)]
pub struct Subscriber {
    pub id: i64,
    pub panel_id: Option<i64>,
    pub events: Vec<String>,
    pub since_snapshot: String,
}

pub async fn subscribers(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> sqlx::Result<Vec<Subscriber>> {
    sqlx::query_as(
        "select id, panel_id, events, since_snapshot from webhook
          where tenant_id = $1 and enabled order by id",
    )
    .bind(tenant.as_str())
    .fetch_all(conn)
    .await
}

/// A delivery a worker holds the lease of.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub tenant_id: String,
    pub webhook_id: i64,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Claims the next due delivery (of any tenant) for `worker` and leases it.
pub async fn claim(
    conn: &mut PgConnection,
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(
        "select id, tenant_id, webhook_id, attempts, max_attempts
           from claim_webhook_delivery($1, $2) where id is not null",
    )
    .bind(worker)
    .bind(i32::try_from(lease.as_secs()).unwrap_or(i32::MAX))
    .fetch_optional(conn)
    .await
}

/// What an attempt sends, and where: read while the worker still holds the delivery.
#[derive(Debug, sqlx::FromRow)]
pub struct Target {
    pub event_id: String,
    pub payload: String,
    pub url: String,
    pub secret: String,
    /// The previous secret while it still signs.
    pub previous_secret: Option<String>,
}

pub async fn target(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    worker: &str,
) -> sqlx::Result<Option<Target>> {
    sqlx::query_as(
        "select d.event_id, d.payload, w.url, w.secret,
                case when w.previous_secret_expires_at > now() then w.previous_secret end as previous_secret
           from webhook_delivery d join webhook w on w.tenant_id = d.tenant_id and w.id = d.webhook_id
          where d.tenant_id = $1 and d.id = $2 and d.locked_by = $3 and d.status = 'delivering'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(worker)
    .fetch_optional(conn)
    .await
}

/// One attempt, as the log keeps it.
pub struct NewAttempt<'a> {
    pub attempt: i32,
    pub succeeded: bool,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_code: Option<i32>,
    pub response_body: Option<&'a str>,
    pub error: Option<&'a str>,
}

pub async fn insert_attempt(
    conn: &mut PgConnection,
    tenant: &TenantId,
    delivery_id: i64,
    a: &NewAttempt<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into webhook_attempt (tenant_id, delivery_id, attempt, status, started_at, duration_ms,
                                      response_code, response_body, error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant.as_str())
    .bind(delivery_id)
    .bind(a.attempt)
    .bind(if a.succeeded { "succeeded" } else { "failed" })
    .bind(a.started_at)
    .bind(a.duration_ms)
    .bind(a.response_code)
    .bind(a.response_body)
    .bind(a.error)
    .execute(conn)
    .await
    .map(|_| ())
}

/// How an attempt ends a delivery: `succeeded`, `failed`, or `pending` again with the next
/// attempt after `retry_in_ms`.
pub struct Finish<'a> {
    pub status: &'a str,
    pub response_code: Option<i32>,
    pub error: Option<&'a str>,
    pub retry_in_ms: Option<i64>,
}

/// Ends an attempt if `worker` still holds the delivery; answers whether it held it.
pub async fn finish_delivery(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    worker: &str,
    f: &Finish<'_>,
) -> sqlx::Result<bool> {
    sqlx::query(
        "update webhook_delivery set status = $4, response_code = $5, last_error = $6,
                next_attempt_at = coalesce(now() + make_interval(secs => $7::float8 / 1000), next_attempt_at),
                lease_until = null, locked_by = null, updated_at = now(),
                finished_at = case when $4 in ('succeeded', 'failed') then now() end
          where tenant_id = $1 and id = $2 and locked_by = $3 and status = 'delivering'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(worker)
    .bind(f.status)
    .bind(f.response_code)
    .bind(f.error)
    .bind(f.retry_in_ms)
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn mark_success(
    conn: &mut PgConnection,
    tenant: &TenantId,
    webhook_id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update webhook set failing_since = null, last_success_at = now()
          where tenant_id = $1 and id = $2",
    )
    .bind(tenant.as_str())
    .bind(webhook_id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records a failed attempt; when every attempt has failed for `disable_after` and the webhook is
/// still enabled, disables it with `reason`. Answers the disabled webhook's (panel, url).
pub async fn mark_failure(
    conn: &mut PgConnection,
    tenant: &TenantId,
    webhook_id: i64,
    disable_after: std::time::Duration,
    reason: &str,
) -> sqlx::Result<Option<(Option<i64>, String)>> {
    // Locked first, so two workers failing together decide once.
    let expired: Option<(bool, Option<i64>, String)> = sqlx::query_as(
        "select w.enabled and w.failing_since <= now() - make_interval(secs => $3),
                w.panel_id, w.url
           from webhook w where w.tenant_id = $1 and w.id = $2 for update",
    )
    .bind(tenant.as_str())
    .bind(webhook_id)
    .bind(disable_after.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?
    .map(
        |(expired, panel, url): (Option<bool>, Option<i64>, String)| {
            (expired.unwrap_or(false), panel, url)
        },
    );
    let Some((expired, panel, url)) = expired else {
        return Ok(None);
    };
    if !expired {
        sqlx::query(
            "update webhook set failing_since = coalesce(failing_since, now())
              where tenant_id = $1 and id = $2",
        )
        .bind(tenant.as_str())
        .bind(webhook_id)
        .execute(conn)
        .await?;
        return Ok(None);
    }
    sqlx::query(
        "update webhook set enabled = false, disabled_at = now(), disabled_reason = $3
          where tenant_id = $1 and id = $2",
    )
    .bind(tenant.as_str())
    .bind(webhook_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(Some((panel, url)))
}

/// The e-mail addresses of the tenant's admins (local accounts and identity-provider members).
pub async fn admin_emails(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select email from users where tenant_id = $1 and role = 'admin'
         union
         select lower(email) from principal_seen where tenant_id = $1 and role = 'admin'",
    )
    .bind(tenant.as_str())
    .fetch_all(conn)
    .await
}

/// Deletes finished deliveries older than `hours`, at most `limit`; answers how many.
pub async fn purge(conn: &mut PgConnection, hours: u64, limit: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("select purge_webhook_deliveries(now() - make_interval(hours => $1), $2)")
        .bind(i32::try_from(hours).unwrap_or(i32::MAX))
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .fetch_one(conn)
        .await
}
