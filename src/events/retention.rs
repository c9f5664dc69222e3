//! Deletes events older than `EVENT_RETENTION_HOURS`, a bounded batch at a time, and moves each
//! tenant's horizon (a stream resuming before it is told to start again).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::repo;
use crate::db::Db;

/// Events deleted per statement: a short transaction, however much there is to delete.
const BATCH: i64 = 10_000;
/// How often retention runs.
const EVERY: Duration = Duration::from_secs(60);

pub fn spawn(db: Db, hours: u64, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.cancelled() => return,
            }
            if let Err(error) = purge(&db, hours).await {
                tracing::warn!(%error, "deleting old events failed; retrying later");
            }
        }
    })
}

/// Deletes every event older than `hours`, in batches; answers how many.
pub async fn purge(db: &Db, hours: u64) -> sqlx::Result<i64> {
    let mut total = 0;
    loop {
        let mut conn = db.acquire().await?;
        let deleted = repo::purge(&mut conn, hours, BATCH).await?;
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
    }
}
