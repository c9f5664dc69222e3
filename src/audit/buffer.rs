//! The bounded buffer of entries written outside a mutation's transaction (a refused write, an
//! export, a failed login): a request hands its entry over without waiting; a writer task writes
//! them in batches, one multi-row insert per tenant, every `AUDIT_FLUSH_MS` or 500 entries; the
//! buffer is written out at shutdown ([`AuditBuffer::flush`]). When it is full, the entry is
//! dropped, counted in `panels_audit_dropped_total` and logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::NewEntry;
use crate::auth::TenantId;
use crate::db::Db;

/// Entries written by one statement at most.
const BATCH: usize = 500;
/// Attempts to write a batch before its entries are counted as dropped.
const ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub struct AuditBuffer(Arc<Inner>);

struct Inner {
    sender: mpsc::Sender<NewEntry>,
    dropped: IntCounter,
    written: IntCounter,
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditBuffer {
    /// Starts the writer task.
    pub fn start(
        db: Db,
        capacity: usize,
        flush_every: Duration,
        dropped: IntCounter,
        written: IntCounter,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write_loop(
            db,
            receiver,
            flush_every,
            stop.clone(),
            dropped.clone(),
            written.clone(),
        ));
        Self(Arc::new(Inner {
            sender,
            dropped,
            written,
            stop,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Hands `entry` to the writer; never waits. A full buffer (or one already flushed at
    /// shutdown) drops it, counted and logged.
    pub fn record(&self, entry: NewEntry) {
        if let Err(err) = self.0.sender.try_send(entry) {
            self.0.dropped.inc();
            let entry = match &err {
                mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => e,
            };
            tracing::warn!(
                tenant = %entry.tenant_id,
                action = %entry.action,
                dropped_total = self.0.dropped.get(),
                "audit buffer full: entry dropped"
            );
        }
    }

    /// Entries written by the buffer so far (for tests and the metrics page).
    pub fn written(&self) -> u64 {
        self.0.written.get()
    }

    /// Writes out everything buffered and stops the writer (at shutdown, after the last
    /// request). Later entries are dropped and counted.
    pub async fn flush(&self) {
        self.0.stop.cancel();
        let writer = self
            .0
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

async fn write_loop(
    db: Db,
    mut receiver: mpsc::Receiver<NewEntry>,
    flush_every: Duration,
    stop: CancellationToken,
    dropped: IntCounter,
    written: IntCounter,
) {
    let mut batch: Vec<NewEntry> = Vec::with_capacity(BATCH);
    loop {
        // Wait for a first entry, then gather for up to `flush_every` or a full batch.
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            got = receiver.recv_many(&mut batch, BATCH) => {
                if got == 0 {
                    break;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + flush_every;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                got = receiver.recv_many(&mut batch, room) => {
                    if got == 0 {
                        break;
                    }
                }
            }
        }
        write(&db, std::mem::take(&mut batch), &dropped, &written).await;
        if stop.is_cancelled() {
            break;
        }
    }
    // Shutdown: refuse new entries, then write every one already handed over.
    receiver.close();
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        write(&db, std::mem::take(&mut batch), &dropped, &written).await;
    }
}

/// Writes a batch: one transaction per tenant (row-level security binds each to its tenant), one
/// insert each. A batch that cannot be written after [`ATTEMPTS`] is dropped, counted and logged.
async fn write(db: &Db, batch: Vec<NewEntry>, dropped: &IntCounter, written: &IntCounter) {
    let mut by_tenant: BTreeMap<String, Vec<NewEntry>> = BTreeMap::new();
    for entry in batch {
        by_tenant
            .entry(entry.tenant_id.clone())
            .or_default()
            .push(entry);
    }
    for (tenant, entries) in by_tenant {
        let Some(tenant_id) = TenantId::parse(&tenant) else {
            continue;
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match write_one(db, &tenant_id, &entries).await {
                Ok(()) => {
                    written.inc_by(entries.len() as u64);
                    break;
                }
                Err(err) if attempt < ATTEMPTS => {
                    tracing::warn!(%tenant, %err, attempt, "audit batch not written; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(err) => {
                    dropped.inc_by(entries.len() as u64);
                    tracing::error!(%tenant, %err, entries = entries.len(), "audit batch dropped");
                    break;
                }
            }
        }
    }
}

async fn write_one(db: &Db, tenant: &TenantId, entries: &[NewEntry]) -> crate::error::Result<()> {
    let mut tx = db.begin(tenant).await?;
    super::repo::insert(&mut tx, entries).await?;
    tx.commit().await?;
    Ok(())
}
