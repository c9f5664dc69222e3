//! Keeps the audit log's partitions: this month's and the next two made ahead, and every month
//! wholly older than `AUDIT_RETENTION_DAYS` dropped (`audit_maintain`, migration
//! 20261205000400). Run by the workers, on a connection of the database's owner (as the index
//! builder's): the application role can neither make nor drop a table.

use std::time::Duration;

use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// How often the partitions are looked after.
const EVERY: Duration = Duration::from_secs(3600);

pub fn spawn(owner_url: String, days: u32, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match maintain(&owner_url, days).await {
                Ok(dropped) if !dropped.is_empty() => {
                    tracing::info!(?dropped, days, "audit partitions past retention dropped");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "audit partition upkeep failed; retrying later")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    })
}

/// How often the workers seal the entries committed since their last sweep.
const SEAL_EVERY: Duration = Duration::from_millis(500);
/// Entries sealed per tenant and transaction.
const SEAL_BATCH: i32 = 5_000;

/// The workers' sweep: seals what committed since the last one (`audit_seal`), in short
/// transactions, so an entry is chained within about a second of its commit.
pub fn spawn_sealer(db: Db, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SEAL_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            loop {
                match seal(&db).await {
                    // A full batch: more may be waiting.
                    Ok(n) if n >= SEAL_BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "sealing audit entries failed; retrying later");
                        break;
                    }
                }
            }
        }
    })
}

async fn seal(db: &Db) -> crate::error::Result<i32> {
    let mut conn = db.acquire().await?;
    super::repo::seal(&mut conn, None, SEAL_BATCH).await
}

/// Makes the coming months' partitions and drops those past retention; answers the dropped.
pub async fn maintain(owner_url: &str, days: u32) -> sqlx::Result<Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(owner_url).await?;
    let dropped = sqlx::query_scalar("select audit_maintain($1)")
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(dropped)
}
