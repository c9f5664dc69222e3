//! Request rate limits: per tenant (so one noisy tenant cannot starve the others) and for the
//! login and token endpoints per account and per client address. 0 turns a limit off.
//!
//! Each check counts in two places: this instance's in-process limiter (governor), and the
//! counters every instance shares in Redis (GCRA, one script call). A request passes when both
//! admit it, so a limit holds across instances; with Redis absent or not trusted, the in-process
//! limiter alone still holds it per instance.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::cache::Cache;
use crate::config::Config;
use crate::error::ApiError;

/// One limit: its shared form (emission interval and burst, for Redis) and its local fallback.
struct Limit {
    scope: &'static str,
    interval: Duration,
    burst: u32,
    /// The number reported to clients (per second for tenants, per minute for logins).
    reported: u64,
    local: DefaultKeyedRateLimiter<String>,
}

#[derive(Clone)]
pub struct RateLimiter {
    tenant: Option<Arc<Limit>>,
    login: Option<Arc<Limit>>,
    shared: Cache,
}

impl RateLimiter {
    pub fn new(config: &Config, shared: Cache) -> Self {
        let tenant = NonZeroU32::new(config.rate_limit_tenant_rps).map(|rps| {
            let burst = NonZeroU32::new(config.rate_limit_tenant_burst)
                .unwrap_or(rps)
                .max(rps);
            Arc::new(Limit {
                scope: "tenant",
                interval: Duration::from_secs(1) / rps.get(),
                burst: burst.get(),
                reported: u64::from(rps.get()),
                local: DefaultKeyedRateLimiter::keyed(Quota::per_second(rps).allow_burst(burst)),
            })
        });
        let login = NonZeroU32::new(config.rate_limit_login_per_minute).map(|n| {
            Arc::new(Limit {
                scope: "login",
                interval: Duration::from_secs(60) / n.get(),
                burst: n.get(),
                reported: u64::from(n.get()),
                local: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            })
        });
        Self {
            tenant,
            login,
            shared,
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
        // This instance's own count first: it holds while Redis is away, is never reset when
        // Redis comes and goes, and spares Redis the requests already over the limit here.
        let wait = match limit.local.check_key(&key.to_owned()) {
            Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
            Ok(()) => {
                let shared_key = format!("{}:{key}", limit.scope);
                match self
                    .shared
                    .rate_limit(&shared_key, limit.interval, limit.burst)
                    .await
                {
                    Some(Err(wait)) => wait,
                    Some(Ok(())) | None => return Ok(()),
                }
            }
        };
        Err(ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            limit: limit.reported,
        })
    }
}
