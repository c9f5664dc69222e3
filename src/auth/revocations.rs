//! The denylist of revoked access tokens, shared by every instance through PostgreSQL: each
//! instance reads the revocations of the last seconds every [`POLL`] and refuses those tokens
//! until they expire. The instance that revoked a token refuses it at once; the others within a
//! poll. A revocation outlives Redis being down, since PostgreSQL is the list.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::AuthKeys;
use super::repo;
use crate::db::Db;

/// How often an instance reads new revocations.
pub const POLL: Duration = Duration::from_secs(1);
/// How far back each read looks, beyond the last revocation it saw (commits are not instantaneous,
/// and instances' clocks differ slightly).
const OVERLAP: chrono::Duration = chrono::Duration::seconds(10);

/// Follows the revocations of every tenant for the life of the process.
pub fn spawn(db: Db, auth: Arc<AuthKeys>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut since = DateTime::<Utc>::UNIX_EPOCH;
        loop {
            match read(&db, &auth, since).await {
                Ok(Some(latest)) => since = latest - OVERLAP,
                Ok(None) => {}
                Err(err) => tracing::debug!(%err, "cannot read token revocations; retrying"),
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

async fn read(
    db: &Db,
    auth: &AuthKeys,
    since: DateTime<Utc>,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let mut conn = db.acquire().await?;
    let rows = repo::revoked_tokens_since(&mut conn, since).await?;
    drop(conn);
    let mut latest = None;
    for (digest, expires_at, revoked_at) in rows {
        if let Ok(digest) = <[u8; 32]>::try_from(digest.as_slice()) {
            auth.revoke(digest, expires_at.timestamp().max(0) as u64);
        }
        latest = latest.max(Some(revoked_at));
    }
    Ok(latest)
}
