//! The state every instance shares through Redis: cache-aside for the hot reads, versioned
//! invalidation, rate-limit counters and the event channel — with an in-process layer (moka) in
//! front, and PostgreSQL behind for every request Redis cannot serve.
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

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use moka::future::Cache as Moka;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::auth::{Principal, TenantId};
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;

/// How long an entry lives in Redis: bounds memory; never needed for correctness.
pub const ENTRY_TTL: Duration = Duration::from_secs(300);
/// How long an entry lives in the process. Short, to bound memory: correctness comes from the
/// version check against Redis that precedes every lookup.
pub const LOCAL_TTL: Duration = Duration::from_secs(30);
/// Version keys expire when untouched for a day (a lost version restarts at a random value).
const VERSION_TTL_SECS: u64 = 86_400;
/// The in-process layer's budget, in bytes of keys and values.
const LOCAL_CAPACITY: u64 = 32 * 1024 * 1024;
/// Most view → panel pairs remembered (an immutable mapping; forgetting only costs a load).
const VIEW_PANELS_CAPACITY: usize = 100_000;
/// How often an open breaker probes Redis, at first and at most.
const PROBE_MIN: Duration = Duration::from_millis(50);
const PROBE_MAX: Duration = Duration::from_secs(1);

/// Reads the versions a key depends on, starting each missing one at the random value given.
/// KEYS: version keys; ARGV[1]: TTL in seconds; ARGV[1 + i]: the start value of KEYS[i].
const READ_VERSIONS: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v then
    v = ARGV[i + 1]
    redis.call('SET', key, v, 'EX', ARGV[1])
  end
  out[i] = v
end
return out
";

/// Bumps versions (a missing one restarts at its random value) and publishes the change event, in
/// one round trip. KEYS: version keys; ARGV[1]: TTL; ARGV[1 + i]: start value of KEYS[i];
/// then the channel ('' for none) and the payload.
const BUMP_VERSIONS: &str = r"
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCR', key)
  else
    redis.call('SET', key, ARGV[i + 1])
  end
  redis.call('EXPIRE', key, ARGV[1])
end
local channel = ARGV[#KEYS + 2]
if channel ~= nil and channel ~= '' then
  redis.call('PUBLISH', channel, ARGV[#KEYS + 3])
end
return #KEYS
";

/// GCRA: admits one request of a key whose theoretical arrival time (µs) is stored; answers 0,
/// or the microseconds to wait. ARGV[1]: emission interval (µs); ARGV[2]: burst.
/// GCRA over a shared key, admitting up to ARGV[3] requests at once (an instance's lease).
/// KEYS[1]: the key; ARGV: emission interval (µs), burst, wanted. Answers {granted, 0}, or
/// {0, µs to wait} when not even one request may pass now.
const RATE_LIMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local available = math.floor((now + interval * burst - tat) / interval)
if available < 1 then return {0, tat + interval - interval * burst - now} end
local granted = math.min(want, available)
local next_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return {granted, 0}
";

/// Most version reads one `MGET` answers; the rest wait for the next.
const VERSION_BATCH: usize = 256;
/// Version reads that may wait for the collector; beyond it, readers wait to queue.
const VERSION_QUEUE: usize = 4096;

/// A read of one version key (and the epoch), answered with both, or `None` when Redis cannot
/// be trusted.
struct VersionRead {
    key: String,
    reply: oneshot::Sender<Option<(u64, u64)>>,
}

/// What a cached read depends on, beside the global epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depends {
    /// The tenant's lists (which panels exist, their fields, who may see them).
    Lists,
    /// One panel and everything in it: columns, data sources, views, ACLs.
    Panel(i64),
}

/// A cached JSON response: its body and one header value that goes with it (an `ETag` or the
/// next page's cursor; empty when none).
#[derive(Debug, Clone)]
pub struct Cached {
    pub meta: String,
    pub body: Bytes,
}

impl Cached {
    /// Serializes a response exactly as `Json` would.
    pub fn new<T: Serialize>(value: &T, meta: impl Into<String>) -> Result<Self> {
        let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Self {
            meta: meta.into(),
            body: Bytes::from(body),
        })
    }

    /// The body as a JSON response, without the meta header.
    pub fn json(&self) -> JsonBytes {
        JsonBytes(self.body.clone())
    }

    /// The body with `ETag: meta`.
    pub fn with_etag(self) -> Response {
        let mut response = JsonBytes(self.body).into_response();
        if let Ok(value) = HeaderValue::from_str(&self.meta) {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    }

    fn encode(&self) -> Vec<u8> {
        let meta = self.meta.as_bytes();
        let mut out = Vec::with_capacity(4 + meta.len() + self.body.len());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(meta);
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: Vec<u8>) -> Option<Self> {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let meta = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?.to_owned();
        let body = Bytes::from(bytes).slice(4 + len..);
        Some(Self { meta, body })
    }

    fn weight(&self) -> usize {
        self.meta.len() + self.body.len()
    }
}

/// Serialized JSON answered as is.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The part of a key that separates readers who may be shown different things: admins see the
/// whole tenant; anyone else what their e-mail, user id (and role, for safety) are granted.
pub fn reader(principal: &Principal) -> String {
    if principal.is_admin() {
        return "admin".to_owned();
    }
    let mut hash = Sha256::new();
    hash.update(principal.email.as_bytes());
    hash.update([0]);
    hash.update(principal.user_id.as_bytes());
    let digest = hash.finalize();
    format!("{}-{}", principal.role.as_str(), hex::encode(&digest[..16]))
}

/// A committed change: what it invalidates and the event it publishes on the tenant's channel
/// (`{"type": …, "panelId": …, …}`).
#[derive(Debug, Clone)]
pub struct Change {
    event: &'static str,
    panel_id: i64,
    lists: bool,
    extra: Map<String, Value>,
}

impl Change {
    /// A change of the panel or of anything in it: its cached reads are never read again.
    pub fn panel(event: &'static str, panel_id: i64) -> Self {
        Self {
            event,
            panel_id,
            lists: false,
            extra: Map::new(),
        }
    }

    /// The change also alters the tenant's lists (a panel created, renamed or deleted, access
    /// granted or revoked, a view published).
    pub fn lists(mut self) -> Self {
        self.lists = true;
        self
    }

    /// Adds a field to the event.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    fn payload(&self) -> String {
        let mut object = Map::new();
        object.insert("type".to_owned(), Value::from(self.event));
        object.insert("panelId".to_owned(), Value::from(self.panel_id));
        object.extend(self.extra.clone());
        Value::Object(object).to_string()
    }
}

/// A message received on the shared event channel.
#[derive(Debug, Clone)]
pub struct Event {
    pub channel: String,
    pub payload: String,
}

impl Event {
    /// The tenant of a tenant channel (`panels:{namespace}:{tenant}:events`).
    pub fn tenant(&self) -> Option<&str> {
        let rest = self.channel.strip_prefix("panels:")?;
        let (_, rest) = rest.split_once(':')?;
        rest.strip_suffix(":events")
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.payload).ok()
    }
}

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

struct Redis {
    conn: ConnectionManager,
    /// Version reads waiting for the next `MGET` (see [`read_versions_in_batches`]).
    version_reads: mpsc::Sender<VersionRead>,
    command_timeout: Duration,
    read_versions: Script,
    bump_versions: Script,
    rate_limit: Script,
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
    view_panels: Mutex<HashMap<(String, i64), i64>>,
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
        let (version_reads, version_queue) = mpsc::channel(VERSION_QUEUE);
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
                    read_versions: Script::new(READ_VERSIONS),
                    bump_versions: Script::new(BUMP_VERSIONS),
                    rate_limit: Script::new(RATE_LIMIT),
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
            tokio::spawn(read_versions_in_batches(
                Arc::downgrade(&inner),
                version_queue,
            ));
            tokio::spawn(supervise(Arc::downgrade(&inner), probe, stop.clone()));
            tokio::spawn(subscribe(
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
        trip(&self.inner);
    }

    /// Runs one Redis command under the command timeout and the breaker; `None` when Redis is not
    /// configured, not trusted, failing or slow.
    async fn run<T, F>(&self, cache: &'static str, op: &'static str, f: F) -> Option<T>
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

    fn version_key(&self, tenant: &TenantId, depends: Depends) -> String {
        match depends {
            Depends::Lists => format!("{}:{tenant}:ver:lists", self.inner.prefix),
            Depends::Panel(id) => format!("{}:{tenant}:ver:panel:{id}", self.inner.prefix),
        }
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.inner.prefix)
    }

    /// The versions a key depends on, joined; `None` when they cannot be known (Redis down).
    async fn versions(
        &self,
        cache: &'static str,
        tenant: &TenantId,
        depends: Depends,
    ) -> Option<String> {
        let key = self.version_key(tenant, depends);
        let Some(redis) = self.inner.redis.as_ref() else {
            let mut versions = self
                .inner
                .local_versions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let version = *versions.entry(key).or_insert_with(start_value);
            return Some(version.to_string());
        };
        if !self.is_trusted() {
            return None;
        }
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        redis
            .version_reads
            .send(VersionRead { key, reply })
            .await
            .ok()?;
        let (epoch, version) = answer.await.ok().flatten()?;
        self.inner
            .metrics
            .cache_latency
            .with_label_values(&[cache, "versions"])
            .observe(started.elapsed().as_secs_f64());
        Some(format!("{epoch}.{version}"))
    }

    /// One round trip for a batch of version reads: the epoch and every distinct key, by `MGET`
    /// (the script runs only when one is missing, to start it). `None` when Redis cannot answer.
    async fn read_version_batch(&self, reads: &[VersionRead]) -> Option<Vec<(u64, u64)>> {
        let mut keys = vec![self.epoch_key()];
        let mut slots = Vec::with_capacity(reads.len());
        for read in reads {
            let slot = match keys.iter().position(|k| *k == read.key) {
                Some(slot) => slot,
                None => {
                    keys.push(read.key.clone());
                    keys.len() - 1
                }
            };
            slots.push(slot);
        }
        let versions: Vec<u64> = self
            .run("versions", "mget", async |mut conn, redis| {
                // Almost always every key exists: a plain MGET costs Redis a fraction of the
                // script, which runs only to start a missing version.
                let found: Vec<Option<u64>> = conn.mget(&keys).await?;
                if found.iter().all(Option::is_some) {
                    return Ok(found.into_iter().flatten().collect());
                }
                let mut call = redis.read_versions.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(VERSION_TTL_SECS);
                for _ in &keys {
                    call.arg(start_value());
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        if versions.len() != keys.len() {
            return None;
        }
        Some(
            slots
                .into_iter()
                .map(|s| (versions[0], versions[s]))
                .collect(),
        )
    }

    /// Cache-aside: answers the entry of `{cache}:{rest}` at the current versions of `depends`,
    /// or loads it (after the versions were read, so a concurrent write can only make the fill
    /// land under versions nobody reads any more) and stores it. Errors are never cached. Without
    /// a trusted version source, loads and stores nothing.
    pub async fn read_through<F, Fut>(
        &self,
        cache: &'static str,
        tenant: &TenantId,
        depends: Depends,
        rest: &str,
        load: F,
    ) -> Result<Cached>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached>>,
    {
        if !self.inner.enabled {
            return Box::pin(load()).await;
        }
        let Some(versions) = self.versions(cache, tenant, depends).await else {
            self.inner
                .metrics
                .cache_bypassed
                .with_label_values(&[cache])
                .inc();
            return Box::pin(load()).await;
        };
        let key = format!("{}:{tenant}:{cache}:{rest}:{versions}", self.inner.prefix);
        if let Some(hit) = self.inner.local.get(&key).await {
            self.hit(cache, "local");
            return Ok(hit);
        }
        // Boxed: the Redis read and the load hold large futures (queries, connections), which
        // would otherwise make every hit's future that large, and be moved with it.
        Box::pin(self.fill(cache, key, load)).await
    }

    /// A miss in this process: the entry from Redis, or loaded and stored in both layers.
    async fn fill<F, Fut>(&self, cache: &'static str, key: String, load: F) -> Result<Cached>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached>>,
    {
        let remote: Option<Option<Vec<u8>>> = self
            .run(cache, "get", async |mut conn, _| conn.get(&key).await)
            .await;
        if let Some(hit) = remote.flatten().and_then(Cached::decode) {
            self.hit(cache, "redis");
            self.inner.local.insert(key, hit.clone()).await;
            return Ok(hit);
        }
        self.inner
            .metrics
            .cache_misses
            .with_label_values(&[cache])
            .inc();
        let value = load().await?;
        self.inner.local.insert(key.clone(), value.clone()).await;
        let bytes = value.encode();
        let _: Option<()> = self
            .run(cache, "set", async |mut conn, _| {
                conn.set_ex(&key, bytes, ENTRY_TTL.as_secs()).await
            })
            .await;
        Ok(value)
    }

    fn hit(&self, cache: &str, layer: &str) {
        self.inner
            .metrics
            .cache_hits
            .with_label_values(&[cache, layer])
            .inc();
    }

    /// After a commit, never before: bumps the versions the change touches (so every entry made
    /// before it is dead, on every instance) and publishes its event on the tenant's channel.
    /// When Redis cannot take the bump, the breaker opens and the epoch bump on recovery covers
    /// it; the event then reaches only this instance's subscribers.
    pub async fn committed(&self, tenant: &TenantId, change: Change) {
        let mut keys = vec![self.version_key(tenant, Depends::Panel(change.panel_id))];
        if change.lists {
            keys.push(self.version_key(tenant, Depends::Lists));
        }
        let channel = self.events_channel(tenant);
        let payload = change.payload();
        if self.inner.redis.is_none() {
            {
                let mut versions = self
                    .inner
                    .local_versions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for key in keys {
                    versions
                        .entry(key)
                        .and_modify(|v| *v = v.wrapping_add(1))
                        .or_insert_with(start_value);
                }
            }
            self.deliver_locally(channel, payload);
            return;
        }
        let bumped = self
            .run("invalidation", "bump", async |mut conn, redis| {
                let mut call = redis.bump_versions.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(VERSION_TTL_SECS);
                for _ in &keys {
                    call.arg(start_value());
                }
                call.arg(&channel).arg(&payload);
                call.invoke_async::<u64>(&mut conn).await
            })
            .await;
        if bumped.is_none() {
            // Not trusted until the epoch is bumped; make sure the breaker knows, even when the
            // command was skipped because the breaker was already open.
            self.trip();
            self.deliver_locally(channel, payload);
        }
    }

    /// Makes every entry of the namespace dead (bumps the global epoch; without Redis, restarts
    /// the local versions): for changes made beneath the API, e.g. by hand in the database.
    pub async fn flush(&self) {
        if self.inner.redis.is_none() {
            self.inner
                .local_versions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.inner.local.invalidate_all();
            return;
        }
        if !bump_epoch(&self.inner).await {
            self.trip();
        }
    }

    /// The channel of a tenant's structural changes.
    pub fn events_channel(&self, tenant: &TenantId) -> String {
        format!("{}:{tenant}:events", self.inner.prefix)
    }

    /// Publishes a message to every instance's subscribers (to this instance's only, when Redis
    /// is not there).
    pub async fn publish(&self, channel: &str, payload: &str) {
        let published: Option<u64> = self
            .run("events", "publish", async |mut conn, _| {
                conn.publish(channel, payload).await
            })
            .await;
        if published.is_none() {
            self.deliver_locally(channel.to_owned(), payload.to_owned());
        }
    }

    fn deliver_locally(&self, channel: String, payload: String) {
        // No receiver is not an error: nobody listens yet.
        let _ = self.inner.events.send(Event { channel, payload });
    }

    /// Every event of this namespace, as this instance's one subscription connection receives
    /// them.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Waits until the subscription connection listens (true), or answers false after `timeout`.
    /// Without Redis there is nothing to wait for.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        if self.inner.redis.is_none() {
            return true;
        }
        let mut subscribed = self.inner.subscribed.clone();
        tokio::time::timeout(timeout, subscribed.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The panel a view belongs to, when this instance has seen it (a view never moves).
    pub fn view_panel(&self, tenant: &TenantId, view_id: i64) -> Option<i64> {
        let map = self
            .inner
            .view_panels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant.as_str().to_owned(), view_id)).copied()
    }

    pub fn remember_view_panel(&self, tenant: &TenantId, view_id: i64, panel_id: i64) {
        let mut map = self
            .inner
            .view_panels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.len() >= VIEW_PANELS_CAPACITY {
            map.clear();
        }
        map.insert((tenant.as_str().to_owned(), view_id), panel_id);
    }

    /// Admits requests of `key` at `interval` per request with `burst` (GCRA, shared by every
    /// instance), up to `want` at once: `Some(Ok(n))` admitted n (at least one), `Some(Err(wait))`
    /// over the limit, `None` when Redis cannot answer (the caller falls back to its in-process
    /// limiter).
    pub async fn rate_limit(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> Option<std::result::Result<u32, Duration>> {
        let key = format!("{}:rl:{key}", self.inner.prefix);
        let interval_us = interval.as_micros().max(1) as u64;
        let (granted, wait_us): (u32, u64) = self
            .run("ratelimit", "gcra", async |mut conn, redis| {
                redis
                    .rate_limit
                    .key(&key)
                    .arg(interval_us)
                    .arg(burst.max(1))
                    .arg(want.max(1))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Some(if granted > 0 {
            Ok(granted)
        } else {
            Err(Duration::from_micros(wait_us))
        })
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

/// A random start for a version: never 0, far below 2^63 so `INCR` cannot overflow.
fn start_value() -> u64 {
    (rand::random::<u64>() >> 12) + 1
}

/// Reads versions for every waiting reader with one `MGET`, one batch in flight at a time: the
/// reads that arrive while a batch is out go together in the next. A read joins only a batch
/// not yet sent, so it sees every bump that completed before it was asked (a write seen at once
/// through every instance). Under load this turns a Redis command per cache hit into one per
/// round trip, for Redis and for this process alike.
async fn read_versions_in_batches(inner: Weak<Inner>, mut queue: mpsc::Receiver<VersionRead>) {
    let mut batch = Vec::with_capacity(VERSION_BATCH);
    loop {
        if queue.recv_many(&mut batch, VERSION_BATCH).await == 0 {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner
            .metrics
            .cache_version_batch
            .observe(batch.len() as f64);
        let cache = Cache { inner };
        match cache.read_version_batch(&batch).await {
            Some(versions) => {
                for (read, answer) in batch.drain(..).zip(versions) {
                    let _ = read.reply.send(Some(answer));
                }
            }
            None => {
                for read in batch.drain(..) {
                    let _ = read.reply.send(None);
                }
            }
        }
    }
}

/// Opens the breaker (a new generation) and wakes the probe.
fn trip(inner: &Inner) {
    let previous = inner
        .breaker
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
            Some(((s >> 1) + 1) << 1)
        })
        .unwrap_or_default();
    if previous & 1 == 1 {
        tracing::warn!("redis unavailable; serving from PostgreSQL until it answers again");
    }
    inner.probe.notify_one();
}

/// While the breaker is open, probes Redis; when it answers, bumps the global epoch (writes made
/// meanwhile may have missed their bumps) and closes the breaker, unless a failure came between.
async fn supervise(inner: Weak<Inner>, probe: Arc<Notify>, stop: CancellationToken) {
    let mut delay = PROBE_MIN;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let state = strong.breaker.load(Ordering::SeqCst);
        if state & 1 == 1 {
            drop(strong);
            delay = PROBE_MIN;
            tokio::select! {
                _ = probe.notified() => continue,
                _ = stop.cancelled() => return,
            }
        }
        if bump_epoch(&strong).await
            && strong
                .breaker
                .compare_exchange(state, state | 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            tracing::info!("redis available; cache epoch bumped, caching resumes");
            continue;
        }
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(PROBE_MAX);
    }
}

async fn bump_epoch(inner: &Inner) -> bool {
    let Some(redis) = inner.redis.as_ref() else {
        return true;
    };
    let key = format!("{}:epoch", inner.prefix);
    let mut conn = redis.conn.clone();
    let mut call = redis.bump_versions.prepare_invoke();
    call.key(&key)
        .arg(VERSION_TTL_SECS)
        .arg(start_value())
        .arg("")
        .arg("");
    let started = Instant::now();
    let result = tokio::time::timeout(
        redis.command_timeout.max(Duration::from_millis(250)),
        call.invoke_async::<u64>(&mut conn),
    )
    .await;
    inner
        .metrics
        .cache_latency
        .with_label_values(&["invalidation", "epoch"])
        .observe(started.elapsed().as_secs_f64());
    matches!(result, Ok(Ok(_)))
}

/// The instance's one subscription connection: listens to every channel of the namespace and
/// forwards to the in-process broadcast; reconnects by itself.
async fn subscribe(
    client: redis::Client,
    pattern: String,
    events: broadcast::Sender<Event>,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut delay = PROBE_MIN;
    loop {
        let connected = tokio::time::timeout(Duration::from_secs(2), async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = connected {
            delay = PROBE_MIN;
            let _ = subscribed.send(true);
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => {
                            let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                            let channel = message.get_channel_name().to_owned();
                            let _ = events.send(Event { channel, payload });
                        }
                        None => break,
                    },
                    _ = stop.cancelled() => return,
                }
            }
            let _ = subscribed.send(false);
            tracing::warn!("event subscription lost; reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(PROBE_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let cached = Cached::new(&serde_json::json!({"a": 1}), "\"panel-1-v2\"").expect("json");
        let back = Cached::decode(cached.encode()).expect("decodes");
        assert_eq!(back.meta, "\"panel-1-v2\"");
        assert_eq!(&back.body[..], br#"{"a":1}"#);
        assert!(Cached::decode(vec![0, 0]).is_none());
        assert!(Cached::decode(vec![0, 0, 0, 9, b'x']).is_none());
    }

    #[test]
    fn readers_differ_by_identity_and_role_but_admins_share() {
        let principal = |email: &str, role| Principal {
            user_id: format!("user-{email}"),
            email: email.to_owned(),
            tenant: TenantId::parse("acme").expect("tenant slug"),
            role,
            credential: crate::auth::Credential::Jwt,
        };
        use crate::auth::Role;
        let a = reader(&principal("a@x.io", Role::User));
        assert_eq!(a, reader(&principal("a@x.io", Role::User)));
        assert_ne!(a, reader(&principal("b@x.io", Role::User)));
        assert_ne!(a, reader(&principal("a@x.io", Role::Builder)));
        assert_eq!(
            reader(&principal("a@x.io", Role::Admin)),
            reader(&principal("b@x.io", Role::Admin))
        );
    }

    #[test]
    fn events_name_their_tenant() {
        let event = Event {
            channel: "panels:db_1:acme-health:events".to_owned(),
            payload: r#"{"type":"panel.updated","panelId":3}"#.to_owned(),
        };
        assert_eq!(event.tenant(), Some("acme-health"));
        assert_eq!(event.json().expect("json")["panelId"], 3);
        let payload = Change::panel("view.updated", 3).with("viewId", 9).payload();
        assert_eq!(
            serde_json::from_str::<Value>(&payload).expect("json"),
            serde_json::json!({"type": "view.updated", "panelId": 3, "viewId": 9})
        );
    }

    #[test]
    fn start_values_are_never_zero() {
        for _ in 0..1000 {
            let v = start_value();
            assert!(v > 0 && v < (1 << 53));
        }
    }
}
