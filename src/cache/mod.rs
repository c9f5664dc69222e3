//! The state every instance shares through Redis: cache-aside for the hot reads (`reads`),
//! versioned invalidation (`versions`), the availability breaker (`breaker`) and the event
//! channel (`events`) — with an in-process layer (moka) in front, and PostgreSQL behind for every
//! request Redis cannot serve. The rate-limit counters use the same connection (`run`) from
//! `crate::ratelimit`.
//!
//! Correctness comes before speed: a cached read never answers what the database would not.
//! - Every key starts with `panels:{namespace}:{tenant}` (the namespace is the database's name, so
//!   two deployments sharing a Redis never meet) and, where visibility differs, names the reader.
//! - Every key ends with the versions it depends on: a global epoch, and the tenant's list version
//!   or the panel's version. A write bumps them after its commit, so an entry made before the
//!   write is never read again. A reader reads the versions *before* it loads from PostgreSQL, so
//!   an entry filled with pre-commit data lands under the old versions and is dead on arrival.
//! - Missing versions start at a random value, never at 0, so a version key lost to eviction or
//!   expiry cannot bring an old entry back.
//! - The in-process layer is keyed by the same versioned keys, and the versions are read from Redis
//!   on every request, so it is as correct across instances as Redis itself.
//! - When Redis fails (error or command timeout), the breaker opens and every read goes straight
//!   to PostgreSQL: without the version source no entry can be trusted, not even a young one. A
//!   background task probes Redis; when it answers, the task bumps the global epoch (the writes
//!   made meanwhile could not bump their versions) and only then closes the breaker. An instance
//!   also starts with the breaker open for the same reason (a crashed predecessor may have left
//!   bumps undone).
//! - With `REDIS_URL` unset the versions live in the process and the in-process layer serves
//!   alone: correct for one instance.

mod breaker;
mod events;
mod reads;
mod versions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache as Moka;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::ids::{PanelId, ViewId};
use crate::metrics::Metrics;

pub use events::{Change, Event};
pub use reads::{Cached, JsonBytes, reader};
pub use versions::Depends;

/// How long an entry lives in Redis: bounds memory; never needed for correctness.
pub const ENTRY_TTL: Duration = Duration::from_secs(300);
/// How long an entry lives in the process. Short, to bound memory: correctness comes from the
/// version check against Redis that precedes every lookup.
pub const LOCAL_TTL: Duration = Duration::from_secs(30);
/// The in-process layer's budget, in bytes of keys and values.
const LOCAL_CAPACITY: u64 = 32 * 1024 * 1024;
/// Most view → panel pairs remembered (an immutable mapping; forgetting only costs a load).
const VIEW_PANELS_CAPACITY: usize = 100_000;
/// How often an open breaker probes Redis, at first and at most.
const PROBE_MIN: Duration = Duration::from_millis(50);
const PROBE_MAX: Duration = Duration::from_secs(1);

/// What readiness reports about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// No Redis configured: the in-process cache serves alone.
    Local,
    Up,
    /// Redis unreachable, or reachable again but not yet trusted: every read goes to PostgreSQL.
    Down,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub(crate) struct Redis {
    conn: ConnectionManager,
    /// Version reads waiting for the next `MGET` (see [`read_versions_in_batches`]).
    version_reads: mpsc::Sender<versions::VersionRead>,
    command_timeout: Duration,
    read_versions: Script,
    bump_versions: Script,
}

struct Inner {
    /// `panels:{namespace}`.
    prefix: String,
    /// `CACHE_ENABLED`: when false, [`Cache::read_through`] always loads.
    enabled: bool,
    local: Moka<String, Cached>,
    redis: Option<Redis>,
    /// The versions when there is no Redis.
    local_versions: Mutex<HashMap<String, u64>>,
    view_panels: Mutex<HashMap<(String, ViewId), PanelId>>,
    /// `generation << 1 | closed`: the breaker is closed (Redis trusted) when the low bit is set;
    /// every failure starts a new generation, so a probe that began before it cannot close it.
    breaker: AtomicU64,
    probe: Arc<Notify>,
    events: broadcast::Sender<Event>,
    subscribed: watch::Receiver<bool>,
    metrics: Metrics,
    _stop: DropGuard,
}

impl Cache {
    /// Builds the cache; never fails on an unreachable Redis (the breaker handles it). With Redis,
    /// starts the probe and the event subscription (so it must run inside the runtime).
    pub fn new(
        redis_url: Option<&secrecy::SecretString>,
        command_timeout: Duration,
        namespace: &str,
        enabled: bool,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let (events, _) = broadcast::channel(1024);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let probe = Arc::new(Notify::new());
        let prefix = format!("panels:{namespace}");
        let (version_reads, version_queue) = mpsc::channel(versions::VERSION_QUEUE);
        let (redis, client) = match redis_url {
            None => (None, None),
            Some(url) => {
                let client = redis::Client::open(url.expose_secret())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(command_timeout.max(Duration::from_millis(250))))
                    .set_response_timeout(Some(command_timeout))
                    .set_number_of_retries(1);
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                let redis = Redis {
                    conn,
                    version_reads,
                    command_timeout,
                    read_versions: Script::new(versions::READ_VERSIONS),
                    bump_versions: Script::new(versions::BUMP_VERSIONS),
                };
                (Some(redis), Some(client))
            }
        };
        let local = Moka::builder()
            .max_capacity(LOCAL_CAPACITY)
            .weigher(|k: &String, v: &Cached| (k.len() + v.weight()).try_into().unwrap_or(u32::MAX))
            .time_to_live(LOCAL_TTL)
            .build();
        let inner = Arc::new(Inner {
            prefix: prefix.clone(),
            enabled,
            local,
            redis,
            local_versions: Mutex::new(HashMap::new()),
            view_panels: Mutex::new(HashMap::new()),
            // Opens on start: the first probe bumps the epoch before anything is trusted.
            breaker: AtomicU64::new(0),
            probe: probe.clone(),
            events: events.clone(),
            subscribed,
            metrics,
            _stop: stop.clone().drop_guard(),
        });
        if let Some(client) = client {
            tokio::spawn(versions::read_versions_in_batches(
                Arc::downgrade(&inner),
                version_queue,
            ));
            tokio::spawn(breaker::supervise(
                Arc::downgrade(&inner),
                probe,
                stop.clone(),
            ));
            tokio::spawn(events::subscribe(
                client,
                format!("{prefix}:*"),
                events,
                subscribed_tx,
                stop,
            ));
        }
        Ok(Self { inner })
    }

    /// Whether a Redis server is configured.
    pub fn has_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Whether Redis is trusted right now (the breaker is closed).
    pub fn is_trusted(&self) -> bool {
        self.inner.breaker.load(Ordering::SeqCst) & 1 == 1
    }

    fn trip(&self) {
        breaker::trip(&self.inner);
    }

    /// Runs one Redis command under the command timeout and the breaker; `None` when Redis is not
    /// configured, not trusted, failing or slow.
    pub(crate) async fn run<T, F>(&self, cache: &'static str, op: &'static str, f: F) -> Option<T>
    where
        F: AsyncFnOnce(ConnectionManager, &Redis) -> redis::RedisResult<T>,
    {
        let redis = self.inner.redis.as_ref()?;
        if !self.is_trusted() {
            return None;
        }
        let started = Instant::now();
        let result =
            tokio::time::timeout(redis.command_timeout, f(redis.conn.clone(), redis)).await;
        self.inner
            .metrics
            .cache_latency
            .with_label_values(&[cache, op])
            .observe(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.inner
            .metrics
            .cache_errors
            .with_label_values(&[cache, op])
            .inc();
        tracing::debug!(error, cache, op, "redis command failed");
        self.trip();
        None
    }

    /// A key of this namespace: `panels:{namespace}:{suffix}`.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.prefix)
    }

    /// Pings Redis for readiness; answers the status and the round-trip time.
    pub async fn ping(&self) -> (CacheStatus, Option<Duration>) {
        let Some(redis) = self.inner.redis.as_ref() else {
            return (CacheStatus::Local, None);
        };
        let started = Instant::now();
        let mut conn = redis.conn.clone();
        let pong = tokio::time::timeout(
            redis.command_timeout.max(Duration::from_millis(250)),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match pong {
            Ok(Ok(_)) if self.is_trusted() => (CacheStatus::Up, Some(started.elapsed())),
            Ok(Ok(_)) => {
                // Reachable but not trusted yet: hurry the probe along.
                self.inner.probe.notify_one();
                (CacheStatus::Down, Some(started.elapsed()))
            }
            _ => {
                self.trip();
                (CacheStatus::Down, None)
            }
        }
    }
}
