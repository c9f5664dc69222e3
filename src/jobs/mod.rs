//! The durable job queue on PostgreSQL: sync runs are claimed with `FOR UPDATE SKIP LOCKED`
//! (through `claim_sync_run`, the one door that sees every tenant's queue), leased and kept alive
//! by a heartbeat, retried with exponential backoff and jitter, and dead-lettered after their
//! last attempt. A worker that dies loses its lease and another picks the run up. The scheduler
//! enqueues due scheduled syncs; an advisory lock lets one instance at a time do it.
//!
//! The queue knows no domain: what a claimed run does is the [`Handler`] its caller passes
//! (`datasources::sync::spawn_workers` passes the sync), so this module depends on nothing above
//! the database.

pub mod repo;

use crate::ids::{DataSourceId, PanelId, RunId};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use futures::future::BoxFuture;

use crate::auth::TenantId;
use crate::db::Db;

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
    pub id: RunId,
    pub tenant_id: String,
    pub panel_id: PanelId,
    pub data_source_id: DataSourceId,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// What a worker does with a run it claimed: `(tenant, worker name, run)`; the lease is kept alive
/// while the future runs.
pub type Handler = Arc<dyn Fn(TenantId, String, Claimed) -> BoxFuture<'static, ()> + Send + Sync>;

/// Where the workers find their runs and how long they hold them.
#[derive(Clone)]
pub struct Queue {
    pub db: Db,
    pub wakeup: Wakeup,
    pub lease: Duration,
}

/// Starts `concurrency` workers running `handler` on each claimed run, and the scheduler; they
/// stop when `stop` is cancelled.
pub fn spawn(
    queue: Queue,
    concurrency: usize,
    handler: Handler,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if concurrency == 0 {
        return handles;
    }
    let instance = uuid::Uuid::new_v4().simple().to_string();
    for n in 0..concurrency {
        let worker = format!("{}-{n}", &instance[..8]);
        handles.push(tokio::spawn(work(
            queue.clone(),
            handler.clone(),
            worker,
            stop.clone(),
        )));
    }
    handles.push(tokio::spawn(schedule(queue, stop)));
    handles
}

async fn work(queue: Queue, handler: Handler, worker: String, stop: CancellationToken) {
    tracing::info!(worker, "sync worker started");
    loop {
        if stop.is_cancelled() {
            break;
        }
        let claimed = claim(&queue.db, &worker, queue.lease).await;
        match claimed {
            Ok(Some(run)) => {
                let span = tracing::info_span!("sync", run_id = %run.id, tenant = %run.tenant_id, data_source_id = %run.data_source_id);
                let _ =
                    tracing::Instrument::instrument(process(&queue, &handler, &worker, run), span)
                        .await;
            }
            Ok(None) => {
                let woken = queue.wakeup.0.notified();
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

async fn claim(db: &Db, worker: &str, lease: Duration) -> Result<Option<Claimed>, sqlx::Error> {
    repo::claim(db.pool(), worker, lease).await
}

async fn process(queue: &Queue, handler: &Handler, worker: &str, run: Claimed) {
    let Some(tenant) = TenantId::parse(&run.tenant_id) else {
        tracing::error!("sync run of an invalid tenant slug; skipping");
        return;
    };
    let lease = queue.lease;
    // Keep the lease while we work; a dead worker stops renewing and loses it. The guard stops
    // the heartbeat whenever this future ends, including when the worker itself is killed.
    let _heartbeat = AbortOnDrop({
        let db = queue.db.clone();
        let tenant = tenant.clone();
        let worker = worker.to_owned();
        let id = run.id;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewed = async {
                    let mut tx = db.begin(&tenant).await?;
                    repo::renew_lease(&mut tx, &tenant, id, &worker, lease).await?;
                    tx.commit().await
                };
                if let Err(err) = renewed.await {
                    tracing::warn!(error = %err, "renewing a sync lease failed");
                }
            }
        })
    });
    handler(tenant, worker.to_owned(), run).await;
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

async fn schedule(queue: Queue, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(SCHEDULER_TICK) => {},
        }
        match enqueue_due(&queue.db).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(enqueued = n, "scheduled syncs enqueued");
                queue.wakeup.wake();
            }
            Err(err) => tracing::warn!(error = %err, "the sync scheduler failed"),
        }
    }
}

/// Enqueues every scheduled sync that is due; one instance at a time (advisory lock).
pub async fn enqueue_due(db: &Db) -> Result<usize, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    if !repo::lock_scheduler(&mut tx).await? {
        return Ok(0);
    }
    let sources = repo::scheduled_sources(&mut tx).await?;
    let now = chrono::Utc::now();
    let mut enqueued = 0;
    for source in sources {
        if is_due(&source.schedule, source.last_sync, now) {
            repo::enqueue_scheduled(&mut tx, &source.tenant_id, source.panel_id, source.id).await?;
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
