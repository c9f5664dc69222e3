//! Request rate limits: per tenant (so one noisy tenant cannot starve the others), for the
//! login and token endpoints per account and per client address, for registrations per client
//! address, and for failed authentication attempts (unknown API keys, bad tokens) per client
//! address. 0 turns a limit off.
//!
//! Every map keyed by something a client chooses (an address, an account) is bounded: the keyed
//! limiters forget keys that are back at full capacity whenever they grow past
//! [`PRUNE_ABOVE`] keys, and the failure counter forgets ended windows the same way.
//!
//! Each check counts in two places: this instance's in-process limiter (governor), and the
//! counters every instance shares in Redis (GCRA, one script call). A request passes when both
//! admit it, so a limit holds across instances; with Redis absent or not trusted, the in-process
//! limiter alone still holds it per instance.
//!
//! Limits of 100 requests per second or more take their shared admissions in leases: one script
//! call admits up to a fiftieth of a second's worth (at most [`MAX_LEASE`]), debited in Redis at
//! once, and this instance hands them out to its next requests of that key within
//! [`LEASE_TTL`]. A busy tenant then costs Redis one call per lease instead of one per request
//! (bench/README.md, finding 11). Nothing passes
//! that Redis did not admit; a lease left unused when it expires is lost, so a limit can only
//! err on the strict side. Lower limits (logins, small tenants) admit one request per call.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::cache::Cache;
use crate::config::Config;
use crate::error::ApiError;

/// Keys a keyed map may hold before it forgets the ones it no longer needs.
pub const PRUNE_ABOVE: usize = 10_000;

/// The most shared admissions one script call takes for this instance.
pub const MAX_LEASE: u32 = 64;
/// How long admissions taken from Redis may wait here for a request.
pub const LEASE_TTL: Duration = Duration::from_millis(250);

/// One limit: its shared form (emission interval and burst, for Redis) and its local fallback.
struct Limit {
    scope: &'static str,
    interval: Duration,
    burst: u32,
    /// The number reported to clients (per second for tenants, per minute for logins).
    reported: u64,
    local: DefaultKeyedRateLimiter<String>,
    /// Shared admissions one call asks for: a fiftieth of a second's worth, 1 to [`MAX_LEASE`].
    lease: u32,
    /// Admissions Redis granted to this instance and not yet used, by key.
    leases: Mutex<HashMap<String, Lease>>,
    /// Checks since the keyed limiter was last pruned.
    checks: std::sync::atomic::AtomicU32,
}

struct Lease {
    left: u32,
    until: Instant,
}

impl Limit {
    fn new(
        scope: &'static str,
        interval: Duration,
        burst: u32,
        reported: u64,
        quota: Quota,
    ) -> Self {
        let per_second = 1.0 / interval.as_secs_f64();
        Self {
            scope,
            interval,
            burst,
            reported,
            local: DefaultKeyedRateLimiter::keyed(quota),
            lease: ((per_second / 50.0) as u32).clamp(1, MAX_LEASE.min(burst.max(1))),
            leases: Mutex::new(HashMap::new()),
            checks: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Forgets keys at full capacity once the limiter holds more than [`PRUNE_ABOVE`] (looked at
    /// every 1,024 checks, so a flood of new keys cannot grow it without bound).
    fn prune(&self) {
        use std::sync::atomic::Ordering;
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && self.local.len() > PRUNE_ABOVE
        {
            self.local.retain_recent();
            self.local.shrink_to_fit();
        }
    }

    /// Uses one admission of a lease of `key`, if one is left and fresh.
    fn take_leased(&self, key: &str) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.get_mut(key) {
            Some(lease) if lease.left > 0 && lease.until > Instant::now() => {
                lease.left -= 1;
                true
            }
            Some(_) => {
                leases.remove(key);
                false
            }
            None => false,
        }
    }

    /// Keeps `extra` admissions of `key` for the next requests (added to any left over, so
    /// concurrent calls lose nothing).
    fn keep_leased(&self, key: &str, extra: u32) {
        if extra == 0 {
            return;
        }
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Bounded: expired leases go whenever the map has grown.
        if leases.len() >= 10_000 {
            leases.retain(|_, l| l.until > now);
        }
        let lease = leases.entry(key.to_owned()).or_insert(Lease {
            left: 0,
            until: now,
        });
        if lease.until <= now {
            lease.left = 0;
        }
        lease.left += extra;
        lease.until = now + LEASE_TTL;
    }
}

/// Failed authentication attempts per client address in fixed one-minute windows, counted in this
/// instance (what it protects, the database pool behind API-key look-ups, is the instance's own).
pub struct FailureCounter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl FailureCounter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// 429 when `key` has used up its failures in the current window.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get(key) {
            Some((start, n)) if *n >= self.limit && start.elapsed() < self.window => {
                let left = self.window.saturating_sub(start.elapsed());
                Err(ApiError::TooManyRequests {
                    retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
                    limit: u64::from(self.limit),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure of `key`.
    pub fn record(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if counts.len() >= PRUNE_ABOVE && !counts.contains_key(key) {
            let window = self.window;
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
            if counts.len() >= 10 * PRUNE_ABOVE {
                // Still flooded with live windows: the oldest half goes.
                let mut starts: Vec<Instant> = counts.values().map(|(s, _)| *s).collect();
                starts.sort();
                let cut = starts[starts.len() / 2];
                counts.retain(|_, (start, _)| *start > cut);
            }
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// GCRA over a shared key, admitting up to ARGV[3] requests at once (an instance's lease).
/// KEYS[1]: the key; ARGV: emission interval (µs), burst, wanted. Answers {granted, 0}, or
/// {0, µs to wait} when not even one request may pass now.
const SHARED_GCRA: &str = r"
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

static SHARED_GCRA_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SHARED_GCRA));

/// Admits requests of `key` at `interval` per request with `burst` (GCRA, shared by every
/// instance through Redis), up to `want` at once: `Some(Ok(n))` admitted n (at least one),
/// `Some(Err(wait))` over the limit, `None` when Redis cannot answer (the caller falls back to
/// its in-process limiter).
async fn shared_admit(
    cache: &Cache,
    key: &str,
    interval: Duration,
    burst: u32,
    want: u32,
) -> Option<Result<u32, Duration>> {
    let key = cache.key(&format!("rl:{key}"));
    let interval_us = interval.as_micros().max(1) as u64;
    let (granted, wait_us): (u32, u64) = cache
        .run("ratelimit", "gcra", async |mut conn, _| {
            SHARED_GCRA_SCRIPT
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

#[derive(Clone)]
pub struct RateLimiter {
    tenant: Option<Arc<Limit>>,
    login: Option<Arc<Limit>>,
    register: Option<Arc<Limit>>,
    auth_failures: Option<Arc<FailureCounter>>,
    shared: Cache,
}

impl RateLimiter {
    pub fn new(config: &Config, shared: Cache) -> Self {
        let tenant = NonZeroU32::new(config.rate_limit_tenant_rps).map(|rps| {
            let burst = NonZeroU32::new(config.rate_limit_tenant_burst)
                .unwrap_or(rps)
                .max(rps);
            Arc::new(Limit::new(
                "tenant",
                Duration::from_secs(1) / rps.get(),
                burst.get(),
                u64::from(rps.get()),
                Quota::per_second(rps).allow_burst(burst),
            ))
        });
        let login = NonZeroU32::new(config.rate_limit_login_per_minute).map(|n| {
            Arc::new(Limit::new(
                "login",
                Duration::from_secs(60) / n.get(),
                n.get(),
                u64::from(n.get()),
                Quota::per_minute(n),
            ))
        });
        let register = NonZeroU32::new(config.rate_limit_register_per_minute).map(|n| {
            Arc::new(Limit::new(
                "register",
                Duration::from_secs(60) / n.get(),
                n.get(),
                u64::from(n.get()),
                Quota::per_minute(n),
            ))
        });
        let auth_failures = (config.rate_limit_auth_failures_per_minute > 0).then(|| {
            Arc::new(FailureCounter::new(
                config.rate_limit_auth_failures_per_minute,
                Duration::from_secs(60),
            ))
        });
        Self {
            tenant,
            login,
            register,
            auth_failures,
            shared,
        }
    }

    /// Counts one registration from a client address; 429 when over the limit.
    pub async fn check_register(&self, client: &str) -> Result<(), ApiError> {
        self.check(self.register.as_deref(), client).await
    }

    /// 429 when the client address has failed to authenticate too often lately.
    pub fn check_auth_failures(&self, client: &str) -> Result<(), ApiError> {
        match &self.auth_failures {
            Some(counter) => counter.check(client),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication attempt of a client address.
    pub fn record_auth_failure(&self, client: &str) {
        if let Some(counter) = &self.auth_failures {
            counter.record(client);
        }
    }

    /// Counts one request of `tenant`; 429 when over its rate.
    pub async fn check_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        self.check(self.tenant.as_deref(), tenant).await
    }

    /// Counts one login/token attempt for `key` (an account or a client address).
    pub async fn check_login(&self, key: &str) -> Result<(), ApiError> {
        self.check(self.login.as_deref(), key).await
    }

    async fn check(&self, limit: Option<&Limit>, key: &str) -> Result<(), ApiError> {
        let Some(limit) = limit else {
            return Ok(());
        };
        limit.prune();
        // This instance's own count first: it holds while Redis is away, is never reset when
        // Redis comes and goes, and spares Redis the requests already over the limit here.
        let wait = match limit.local.check_key(&key.to_owned()) {
            Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
            Ok(()) => {
                if limit.take_leased(key) {
                    return Ok(());
                }
                let shared_key = format!("{}:{key}", limit.scope);
                match shared_admit(
                    &self.shared,
                    &shared_key,
                    limit.interval,
                    limit.burst,
                    limit.lease,
                )
                .await
                {
                    // A concurrent request of this instance may have leased meanwhile.
                    Some(Err(_)) if limit.take_leased(key) => return Ok(()),
                    Some(Err(wait)) => wait,
                    Some(Ok(granted)) => {
                        limit.keep_leased(key, granted - 1);
                        return Ok(());
                    }
                    None => return Ok(()),
                }
            }
        };
        Err(ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            limit: limit.reported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: u32, burst: u32) -> Limit {
        let rps = NonZeroU32::new(rps).expect("rps");
        let burst = NonZeroU32::new(burst).expect("burst");
        Limit::new(
            "tenant",
            Duration::from_secs(1) / rps.get(),
            burst.get(),
            u64::from(rps.get()),
            Quota::per_second(rps).allow_burst(burst),
        )
    }

    #[test]
    fn leases_are_a_fiftieth_of_a_second_bounded_by_the_burst_and_the_cap() {
        assert_eq!(limit(2, 3).lease, 1);
        assert_eq!(limit(99, 200).lease, 1);
        assert_eq!(limit(500, 1000).lease, 10);
        assert_eq!(limit(200, 3).lease, 3);
        assert_eq!(limit(1_000_000, 10_000_000).lease, MAX_LEASE);
    }

    #[test]
    fn leased_admissions_are_used_once_per_key_and_add_up() {
        let l = limit(500, 1000);
        assert!(!l.take_leased("a"));
        l.keep_leased("a", 2);
        l.keep_leased("a", 1);
        assert!(!l.take_leased("b"), "leases are per key");
        assert!(l.take_leased("a"));
        assert!(l.take_leased("a"));
        assert!(l.take_leased("a"));
        assert!(!l.take_leased("a"));
    }

    #[test]
    fn failures_block_their_address_for_the_rest_of_the_window_and_the_map_stays_bounded() {
        let counter = FailureCounter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(counter.check("1.2.3.4").is_ok());
            counter.record("1.2.3.4");
        }
        assert!(counter.check("1.2.3.4").is_err());
        assert!(counter.check("5.6.7.8").is_ok(), "per address");
        let short = FailureCounter::new(1, Duration::from_millis(1));
        for i in 0..(3 * PRUNE_ABOVE) {
            short.record(&format!("10.0.{}.{}", i / 256, i % 256));
            if i % 2048 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert!(
            short.len() <= PRUNE_ABOVE + 2048,
            "{} keys kept",
            short.len()
        );
    }

    #[test]
    fn a_keyed_limiter_forgets_idle_keys_when_it_grows() {
        let l = limit(1000, 1000);
        for i in 0..(PRUNE_ABOVE * 2) {
            let _ = l.local.check_key(&format!("k{i}"));
        }
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..1025 {
            l.prune();
        }
        assert!(l.local.len() < PRUNE_ABOVE, "{} keys kept", l.local.len());
    }

    #[test]
    fn an_expired_lease_admits_nothing() {
        let l = limit(500, 1000);
        l.keep_leased("a", 5);
        l.leases
            .lock()
            .expect("lock")
            .get_mut("a")
            .expect("lease")
            .until = Instant::now();
        assert!(!l.take_leased("a"));
        // Adding to an expired lease starts from zero.
        l.keep_leased("a", 1);
        assert!(l.take_leased("a"));
        assert!(!l.take_leased("a"));
    }
}
