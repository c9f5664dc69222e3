//! Creates without an `Idempotency-Key`, committed in groups.
//!
//! A create is one statement (`create_panels` with one panel), and under load its cost is the
//! commit: one round trip and one WAL flush per panel. Here concurrent creates queue for a collector task, which
//! takes whatever is waiting (up to [`MAX_BATCH`]) and writes each tenant's share with one
//! `create_panels` statement: one round trip and one flush for the group. Nothing waits to fill
//! a batch; a lone create goes out at once, alone. Batches form while the previous one commits:
//! one statement is in flight at a time ([`IN_FLIGHT`]), so under load every commit carries all
//! the creates that arrived during the one before, on one pooled connection.
//!
//! Every caller is answered only after the statement that wrote its panel committed, with its
//! own row. Should a group's statement fail, each of its creates is retried alone, so one
//! request's failure is never another's.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};

use sqlx::PgConnection;

use super::model::PanelRow;
use super::repo;
use crate::auth::TenantId;
use crate::db::Db;
use crate::error::{ApiError, Result};

/// Most creates one statement writes.
pub const MAX_BATCH: usize = 64;
/// Statements in flight at once, each on its own pooled connection. One: each commit then carries
/// every create that queued during the previous one, which gave the most creates per second and
/// the lowest p99 of the counts tried (bench/README.md, finding 4).
pub const IN_FLIGHT: usize = 1;
/// Creates that may wait for the collector; beyond it, callers wait to queue.
const QUEUE: usize = 1024;

/// A panel to create, as `create_panels` reads it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewPanel {
    pub user_id: String,
    pub owner: String,
    pub name: String,
    pub description: Option<String>,
    pub cohort_rule: Value,
    pub metadata: Value,
    /// Who creates it, as its `panel.created` event names them (`events::model::actor`).
    pub actor: Value,
    /// Its audit entry (`audit::NewEntry`, without the panel's id), written by the statement
    /// when the create is not inside a write of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Value>,
}

struct Job {
    tenant: TenantId,
    panel: NewPanel,
    reply: oneshot::Sender<Result<PanelRow>>,
}

/// The queue of creates; cheap to clone. Its collector runs until the last clone is dropped.
#[derive(Clone)]
pub struct CreateBatcher {
    jobs: mpsc::Sender<Job>,
    db: Db,
}

impl CreateBatcher {
    /// Starts the collector (so it must run inside the runtime).
    pub fn new(db: Db) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(collect(queue, db.clone()));
        Self { jobs, db }
    }

    /// Creates one panel and its owner entry; answers once they are committed.
    pub async fn create(&self, tenant: &TenantId, panel: NewPanel) -> Result<PanelRow> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            tenant: tenant.clone(),
            panel,
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job).await {
            // The collector is gone (the runtime is shutting down): write it directly.
            return one(write_alone(&self.db, &job.tenant, &[&job.panel]).await?);
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::Internal(anyhow::anyhow!(
                "the panel create batch ended without an answer"
            )))
        })
    }
}

/// Takes whatever creates are waiting, up to [`MAX_BATCH`], whenever a slot is free.
async fn collect(mut queue: mpsc::Receiver<Job>, db: Db) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let db = db.clone();
        tokio::spawn(async move {
            write(&db, batch).await;
            drop(slot);
        });
    }
}

/// Writes a batch, one statement per tenant, and answers every caller.
async fn write(db: &Db, batch: Vec<Job>) {
    let mut groups: Vec<(TenantId, Vec<Job>)> = Vec::new();
    for job in batch {
        match groups.iter_mut().find(|(t, _)| *t == job.tenant) {
            Some((_, jobs)) => jobs.push(job),
            None => groups.push((job.tenant.clone(), vec![job])),
        }
    }
    for (tenant, jobs) in groups {
        let panels: Vec<&NewPanel> = jobs.iter().map(|j| &j.panel).collect();
        match write_alone(db, &tenant, &panels).await {
            Ok(rows) => {
                for (job, row) in jobs.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(row));
                }
            }
            // Alone, a failure is that create's own answer.
            Err(error) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(%error, size = jobs.len(), "a panel create batch failed; retrying one by one");
                for job in jobs {
                    let result = write_alone(db, &tenant, &[&job.panel]).await.and_then(one);
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// [`insert`] on a pooled connection: a statement that commits on its own.
async fn write_alone(db: &Db, tenant: &TenantId, panels: &[&NewPanel]) -> Result<Vec<PanelRow>> {
    let mut conn = db.acquire().await?;
    insert(&mut conn, tenant, panels).await
}

/// Writes `panels` of one tenant with one `create_panels` statement on `conn` (a pooled
/// connection, where it commits on its own, or the request's transaction): their rows, in their
/// order.
pub async fn insert(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panels: &[&NewPanel],
) -> Result<Vec<PanelRow>> {
    let json = serde_json::to_value(panels).map_err(|e| ApiError::Internal(e.into()))?;
    let mut rows = repo::create_panels(conn, tenant, &json).await?;
    if rows.len() != panels.len() {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "create_panels answered {} rows for {} panels",
            rows.len(),
            panels.len()
        )));
    }
    rows.sort_by_key(|(ord, _)| *ord);
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// The row of a one-panel [`insert`].
pub fn one(rows: Vec<PanelRow>) -> Result<PanelRow> {
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("create_panels answered no row")))
}
