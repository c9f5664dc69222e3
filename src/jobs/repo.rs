//! SQL of sync runs (inside a tenant transaction; claiming is in `claim_sync_run`).

use crate::ids::{DataSourceId, PanelId, RunId};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::auth::TenantId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub panel_id: PanelId,
    pub data_source_id: DataSourceId,
    pub status: String,
    pub trigger: String,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub errors: Value,
    pub last_error: Option<String>,
}

macro_rules! columns {
    () => {
        "id, panel_id, data_source_id, status, trigger, attempts, run_at, started_at, finished_at, inserted, updated, unchanged, deleted, errors, last_error"
    };
}

/// Enqueues a run, or answers the live one (single flight per data source).
pub async fn enqueue(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    data_source_id: DataSourceId,
    trigger: &str,
) -> sqlx::Result<RunRow> {
    let inserted: Option<RunRow> = sqlx::query_as(concat!(
        "insert into sync_run (tenant_id, panel_id, data_source_id, trigger) values ($1, $2, $3, $4)
         on conflict (tenant_id, data_source_id) where status in ('queued', 'running', 'failed') do nothing
         returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(data_source_id)
    .bind(trigger)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(run) => Ok(run),
        None => sqlx::query_as(concat!(
            "select ",
            columns!(),
            " from sync_run where tenant_id = $1 and data_source_id = $2 and status in ('queued', 'running', 'failed')"
        ))
        .bind(tenant.as_str())
        .bind(data_source_id)
        .fetch_one(conn)
        .await,
    }
}

/// A run that starts right away in this process (uploads and pushes), already running.
pub async fn insert_running(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    data_source_id: DataSourceId,
    trigger: &str,
    worker: &str,
) -> sqlx::Result<RunRow> {
    sqlx::query_as(concat!(
        "insert into sync_run (tenant_id, panel_id, data_source_id, trigger, status, attempts, locked_by, started_at, lease_until, max_attempts)
         values ($1, $2, $3, $4, 'running', 1, $5, now(), now() + interval '1 hour', 1)
         returning ",
        columns!()
    ))
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(data_source_id)
    .bind(trigger)
    .bind(worker)
    .fetch_one(conn)
    .await
}

pub async fn find(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: RunId,
) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from sync_run where tenant_id = $1 and id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn list(
    conn: &mut PgConnection,
    tenant: &TenantId,
    data_source_id: DataSourceId,
    limit: i64,
) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from sync_run where tenant_id = $1 and data_source_id = $2 order by id desc limit $3"
    ))
    .bind(tenant.as_str())
    .bind(data_source_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub struct Outcome<'a> {
    pub status: &'a str,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub errors: Value,
    pub last_error: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
}

/// Ends a run (or schedules its retry) if this worker still holds it.
pub async fn finish(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: RunId,
    worker: &str,
    o: &Outcome<'_>,
) -> sqlx::Result<bool> {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "update sync_run set status = $4, inserted = $5, updated = $6, unchanged = $7, deleted = $8, errors = $9,
                last_error = $10, run_at = coalesce($11, run_at), lease_until = null, locked_by = null,
                finished_at = case when $4 in ('succeeded', 'dead') then now() else null end
         where tenant_id = $1 and id = $2 and locked_by = $3 and status = 'running'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(worker)
    .bind(o.status)
    .bind(as_i64(o.inserted))
    .bind(as_i64(o.updated))
    .bind(as_i64(o.unchanged))
    .bind(as_i64(o.deleted))
    .bind(&o.errors)
    .bind(&o.last_error)
    .bind(o.retry_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims the next due run (of any tenant) for `worker` and leases it.
pub async fn claim(
    pool: &sqlx::PgPool,
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<Option<super::Claimed>> {
    sqlx::query_as(
        "select id, tenant_id, panel_id, data_source_id, attempts, max_attempts from claim_sync_run($1, $2)
         where id is not null",
    )
    .bind(worker)
    .bind(i32::try_from(lease.as_secs()).unwrap_or(60))
    .fetch_optional(pool)
    .await
}

/// Extends `worker`'s lease of a run it still holds.
pub async fn renew_lease(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: RunId,
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "update sync_run set lease_until = now() + make_interval(secs => $4)
         where tenant_id = $1 and id = $2 and locked_by = $3 and status = 'running'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .execute(conn)
    .await
    .map(|_| ())
}

/// The scheduler's turn: true when this transaction holds the scheduler's advisory lock (an
/// arbitrary constant naming "the sync scheduler", written without digit separators: PostgreSQL
/// before 16 rejects `7_311_001` as "trailing junk").
pub async fn lock_scheduler(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock(7311001)")
        .fetch_one(conn)
        .await
}

/// A data source with a schedule, of any tenant.
#[derive(Debug, sqlx::FromRow)]
pub struct ScheduledSource {
    pub id: DataSourceId,
    pub tenant_id: String,
    pub panel_id: PanelId,
    pub schedule: Value,
    pub last_sync: DateTime<Utc>,
}

pub async fn scheduled_sources(conn: &mut PgConnection) -> sqlx::Result<Vec<ScheduledSource>> {
    sqlx::query_as("select id, tenant_id, panel_id, schedule, last_sync from scheduled_sources()")
        .fetch_all(conn)
        .await
}

/// Enqueues a scheduled run (joining a live one).
pub async fn enqueue_scheduled(
    conn: &mut PgConnection,
    tenant: &str,
    panel_id: PanelId,
    data_source_id: DataSourceId,
) -> sqlx::Result<()> {
    sqlx::query("select enqueue_scheduled_run($1, $2, $3)")
        .bind(tenant)
        .bind(panel_id)
        .bind(data_source_id)
        .execute(conn)
        .await
        .map(|_| ())
}
