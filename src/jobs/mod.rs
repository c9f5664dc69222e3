//! The durable job queue on PostgreSQL: sync runs are claimed with `FOR UPDATE SKIP LOCKED`
//! (through `claim_sync_run`, the one door that sees every tenant's queue), leased and kept alive
//! by a heartbeat, retried with exponential backoff and jitter, and dead-lettered after their
//! last attempt. A worker that dies loses its lease and another picks the run up. The scheduler
//! enqueues due scheduled syncs; an advisory lock lets one instance at a time do it.

pub mod repo;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::TenantId;
use crate::state::AppState;

/// How long a claimed run stays ours without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often an idle worker looks for work (it is also woken at once by local enqueues).
const POLL: Duration = Duration::from_millis(500);
/// How often the scheduler looks for due scheduled syncs.
const SCHEDULER_TICK: Duration = Duration::from_secs(20);

/// Wakes local workers when this process enqueues a run.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

/// A run a worker holds the lease of.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub tenant_id: String,
    pub panel_id: i64,
    pub data_source_id: i64,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Starts `concurrency` workers and the scheduler; they stop when `stop` is cancelled.
pub fn spawn(state: &AppState, concurrency: usize, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if concurrency == 0 {
        return handles;
    }
    let instance = uuid::Uuid::new_v4().simple().to_string();
    for n in 0..concurrency {
        let worker = format!("{}-{n}", &instance[..8]);
        handles.push(tokio::spawn(work(state.clone(), worker, stop.clone())));
    }
    handles.push(tokio::spawn(schedule(state.clone(), stop)));
    handles
}

async fn work(state: AppState, worker: String, stop: CancellationToken) {
    tracing::info!(worker, "sync worker started");
    let lease = state.config.sync_lease;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let claimed = claim(&state, &worker, lease).await;
        match claimed {
            Ok(Some(run)) => {
                let span = tracing::info_span!("sync", run_id = run.id, tenant = %run.tenant_id, data_source_id = run.data_source_id);
                let _ = tracing::Instrument::instrument(process(&state, &worker, run, lease), span)
                    .await;
            }
            Ok(None) => {
                let woken = state.wakeup.0.notified();
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = woken => {},
                    _ = tokio::time::sleep(POLL) => {},
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "claiming a sync run failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(POLL * 4) => {},
                }
            }
        }
    }
    tracing::info!(worker, "sync worker stopped");
}

async fn claim(
    state: &AppState,
    worker: &str,
    lease: Duration,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "select id, tenant_id, panel_id, data_source_id, attempts, max_attempts from claim_sync_run($1, $2)
         where id is not null",
    )
    .bind(worker)
    .bind(i32::try_from(lease.as_secs()).unwrap_or(60))
    .fetch_optional(state.db.pool())
    .await
}

async fn process(state: &AppState, worker: &str, run: Claimed, lease: Duration) {
    let Some(tenant) = TenantId::parse(&run.tenant_id) else {
        tracing::error!("sync run of an invalid tenant slug; skipping");
        return;
    };
    // Keep the lease while we work; a dead worker stops renewing and loses it. The guard stops
    // the heartbeat whenever this future ends, including when the worker itself is killed.
    let _heartbeat = AbortOnDrop({
        let db = state.db.clone();
        let tenant = tenant.clone();
        let worker = worker.to_owned();
        let id = run.id;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewed = async {
                    let mut tx = db.begin(&tenant).await?;
                    sqlx::query(
                        "update sync_run set lease_until = now() + make_interval(secs => $4)
                         where tenant_id = $1 and id = $2 and locked_by = $3 and status = 'running'",
                    )
                    .bind(tenant.as_str())
                    .bind(id)
                    .bind(&worker)
                    .bind(lease.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await
                };
                if let Err(err) = renewed.await {
                    tracing::warn!(error = %err, "renewing a sync lease failed");
                }
            }
        })
    });
    crate::datasources::sync::execute(state, &tenant, worker, &run).await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delay before retry `attempt` (1-based): 2^attempt seconds, ±50 % jitter, at most 10 minutes.
pub fn backoff(attempt: i32) -> Duration {
    let base = 2f64.powi(attempt.clamp(1, 10)).min(600.0);
    let jitter = rand::rng().random_range(0.5..1.5);
    Duration::from_secs_f64((base * jitter).min(600.0))
}

async fn schedule(state: AppState, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(SCHEDULER_TICK) => {},
        }
        match enqueue_due(&state).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(enqueued = n, "scheduled syncs enqueued");
                state.wakeup.wake();
            }
            Err(err) => tracing::warn!(error = %err, "the sync scheduler failed"),
        }
    }
}

/// Enqueues every scheduled sync that is due; one instance at a time (advisory lock).
pub async fn enqueue_due(state: &AppState) -> Result<usize, sqlx::Error> {
    let mut tx = state.db.pool().begin().await?;
    // An arbitrary constant naming "the sync scheduler" among advisory locks (written without
    // digit separators: PostgreSQL before 16 rejects `7_311_001` as "trailing junk").
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock(7311001)")
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(0);
    }
    let sources: Vec<(
        i64,
        String,
        i64,
        serde_json::Value,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "select id, tenant_id, panel_id, schedule, last_sync from scheduled_sources()",
    )
    .fetch_all(&mut *tx)
    .await?;
    let now = chrono::Utc::now();
    let mut enqueued = 0;
    for (id, tenant, panel, schedule, last_sync) in sources {
        if is_due(&schedule, last_sync, now) {
            sqlx::query("select enqueue_scheduled_run($1, $2, $3)")
                .bind(&tenant)
                .bind(panel)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            enqueued += 1;
        }
    }
    tx.commit().await?;
    Ok(enqueued)
}

/// Whether a schedule (`{"everyMinutes": n}` or `{"cron": "..."}`) is due after `last`.
pub fn is_due(
    schedule: &serde_json::Value,
    last: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    if let Some(minutes) = schedule
        .get("everyMinutes")
        .and_then(serde_json::Value::as_i64)
    {
        return minutes >= 1 && now - last >= chrono::Duration::minutes(minutes);
    }
    if let Some(expr) = schedule.get("cron").and_then(serde_json::Value::as_str)
        && let Ok(cron) = expr.parse::<croner::Cron>()
        && let Ok(next) = cron.find_next_occurrence(&last, false)
    {
        return next <= now;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn schedules_fall_due() {
        let last = chrono::Utc
            .with_ymd_and_hms(2026, 1, 1, 10, 0, 0)
            .single()
            .expect("time");
        let later = |m| last + chrono::Duration::minutes(m);
        assert!(!is_due(&json!({"everyMinutes": 15}), last, later(14)));
        assert!(is_due(&json!({"everyMinutes": 15}), last, later(15)));
        assert!(!is_due(&json!({"cron": "0 * * * *"}), last, later(59)));
        assert!(is_due(&json!({"cron": "0 * * * *"}), last, later(60)));
        assert!(!is_due(&json!({"cron": "not a cron"}), last, later(600)));
        assert!(!is_due(&json!({}), last, later(600)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs(3));
        assert!(backoff(5) >= Duration::from_secs(16));
        assert!(backoff(30) <= Duration::from_secs(600));
    }
}
