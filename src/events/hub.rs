//! This instance's fan-out of the event log: one feed per tenant with subscribers here, reading
//! the log from PostgreSQL (the truth) when woken, and broadcasting to the tenant's subscribers.
//!
//! A feed is woken by Redis (every instance publishes a wake-up on the tenant's channel after each
//! commit, `write::published`), by a commit of this instance, and at least every
//! `EVENT_POLL_MS` (so with Redis down or absent events still arrive, later). Nothing is lost by
//! a missed wake-up: a feed reads everything after its cursor, and a subscriber that falls behind
//! the broadcast reads what it missed from the log itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::model::{Cursor, StoredEvent};
use super::repo;
use crate::auth::model::TenantId;
use crate::cache::Cache;
use crate::db::Db;

/// Events a feed reads per statement.
pub const BATCH: i64 = 500;
/// Events a tenant's broadcast holds for subscribers that have not taken them yet; one that falls
/// further behind reads from the log instead (`Subscription`).
const BROADCAST: usize = 1024;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    poll: Duration,
    feeds: Mutex<HashMap<TenantId, Arc<Feed>>>,
    stop: CancellationToken,
}

struct Feed {
    events: broadcast::Sender<Arc<StoredEvent>>,
    wake: Notify,
}

impl Hub {
    /// Starts the hub and its listener of Redis wake-ups.
    pub fn start(db: Db, cache: Cache, poll: Duration) -> Self {
        let hub = Self {
            inner: Arc::new(Inner {
                db,
                poll,
                feeds: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
            }),
        };
        let listener = hub.clone();
        tokio::spawn(async move { listener.listen(cache).await });
        hub
    }

    /// Ends every stream of this instance (graceful shutdown: open streams must not hold it up).
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// Cancelled when the instance shuts down.
    pub fn stopping(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// Wakes the tenant's feed (after a commit of this instance, or a wake-up from Redis).
    pub fn wake(&self, tenant: &TenantId) {
        let feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(tenant) {
            feed.wake.notify_one();
        }
    }

    /// The tenant's open streams on this instance.
    pub fn streams(&self, tenant: &TenantId) -> usize {
        let feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds
            .get(tenant)
            .map_or(0, |feed| feed.events.receiver_count())
    }

    /// A receiver of the tenant's events from now on. A new feed starts at `start`, a position
    /// the subscriber read before calling: its own catch-up, read after this returns, reaches at
    /// least as far as the feed has, so between the two nothing falls through.
    pub fn subscribe(
        &self,
        tenant: &TenantId,
        start: Cursor,
    ) -> broadcast::Receiver<Arc<StoredEvent>> {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(tenant) {
            return feed.events.subscribe();
        }
        let (events, receiver) = broadcast::channel(BROADCAST);
        let feed = Arc::new(Feed {
            events,
            wake: Notify::new(),
        });
        feeds.insert(tenant.clone(), feed.clone());
        let hub = self.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move { hub.run(tenant, feed, start).await });
        receiver
    }

    /// A feed: reads what is new whenever woken (or every `poll`), until nobody here listens.
    async fn run(self, tenant: TenantId, feed: Arc<Feed>, mut cursor: Cursor) {
        loop {
            tokio::select! {
                _ = feed.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.poll) => {}
                _ = self.inner.stop.cancelled() => break,
            }
            match self.read(&tenant, &feed, cursor).await {
                Ok(next) => cursor = next,
                Err(error) => {
                    tracing::warn!(%error, tenant = %tenant, "reading the event log failed; retrying")
                }
            }
            // Under the lock: a subscriber either got this feed before (and counts) or finds
            // it gone and starts another.
            let idle = {
                let mut feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
                let idle = feed.events.receiver_count() == 0;
                if idle {
                    feeds.remove(&tenant);
                }
                idle
            };
            if idle {
                return;
            }
        }
        self.inner
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tenant);
    }

    /// Broadcasts everything after `cursor` that can be read; answers the new cursor.
    async fn read(
        &self,
        tenant: &TenantId,
        feed: &Feed,
        mut cursor: Cursor,
    ) -> sqlx::Result<Cursor> {
        let mut tx = self.inner.db.begin(tenant).await?;
        loop {
            let batch = repo::after(&mut tx, tenant, cursor, BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            for event in batch {
                cursor = event.cursor();
                // No receiver is not an error: the last one may just have gone.
                let _ = feed.events.send(Arc::new(event));
            }
            if !full {
                break;
            }
        }
        crate::db::end_read(tx);
        Ok(cursor)
    }

    /// Wakes the feed of each tenant whose channel carries a message (every instance publishes on
    /// it after a commit).
    async fn listen(self, cache: Cache) {
        let mut messages = cache.subscribe();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        if let Some(tenant) = message.tenant().and_then(TenantId::parse) {
                            self.wake(&tenant);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    fn wake_all(&self) {
        let feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        for feed in feeds.values() {
            feed.wake.notify_one();
        }
    }
}
