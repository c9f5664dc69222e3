//! Versioned invalidation: every cached key ends with the versions it depends on (a global epoch,
//! and the tenant's list version or the panel's), read in batches with one `MGET`, bumped after
//! each commit.

use std::sync::Weak;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot};

use super::events::Change;
use super::{Cache, Inner};
use crate::auth::TenantId;
use crate::ids::PanelId;

/// Version keys expire when untouched for a day (a lost version restarts at a random value).
const VERSION_TTL_SECS: u64 = 86_400;

/// Reads the versions a key depends on, starting each missing one at the random value given.
/// KEYS: version keys; ARGV[1]: TTL in seconds; ARGV[1 + i]: the start value of KEYS[i].
pub(super) const READ_VERSIONS: &str = r"
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
pub(super) const BUMP_VERSIONS: &str = r"
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

/// Most version reads one `MGET` answers; the rest wait for the next.
const VERSION_BATCH: usize = 256;
/// Version reads that may wait for the collector; beyond it, readers wait to queue.
pub(super) const VERSION_QUEUE: usize = 4096;

/// A read of one version key (and the epoch), answered with both, or `None` when Redis cannot
/// be trusted.
pub(super) struct VersionRead {
    key: String,
    reply: oneshot::Sender<Option<(u64, u64)>>,
}

/// What a cached read depends on, beside the global epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depends {
    /// The tenant's lists (which panels exist, their fields, who may see them).
    Lists,
    /// One panel and everything in it: columns, data sources, views, ACLs.
    Panel(PanelId),
}

impl Cache {
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
    pub(super) async fn versions(
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

    /// After a commit, never before: bumps the versions the change touches (so every entry made
    /// before it is dead, on every instance) and publishes its event on the tenant's channel.
    /// When Redis cannot take the bump, the breaker opens and the epoch bump on recovery covers
    /// it; the event then reaches only this instance's subscribers.
    pub async fn committed(&self, tenant: &TenantId, change: Change) {
        let mut keys = Vec::with_capacity(2);
        if change.invalidates {
            keys.push(self.version_key(tenant, Depends::Panel(change.panel_id)));
        }
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
}

/// A random start for a version: never 0, far below 2^63 so `INCR` cannot overflow.
pub(super) fn start_value() -> u64 {
    (rand::random::<u64>() >> 12) + 1
}

/// Reads versions for every waiting reader with one `MGET`, one batch in flight at a time: the
/// reads that arrive while a batch is out go together in the next. A read joins only a batch
/// not yet sent, so it sees every bump that completed before it was asked (a write seen at once
/// through every instance). Under load this turns a Redis command per cache hit into one per
/// round trip, for Redis and for this process alike.
pub(super) async fn read_versions_in_batches(
    inner: Weak<Inner>,
    mut queue: mpsc::Receiver<VersionRead>,
) {
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

/// Bumps the global epoch: every entry of the namespace is dead.
pub(super) async fn bump_epoch(inner: &Inner) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_values_are_never_zero() {
        for _ in 0..1000 {
            let v = start_value();
            assert!(v > 0 && v < (1 << 53));
        }
    }
}
