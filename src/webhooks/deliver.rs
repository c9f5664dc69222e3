//! The delivery workers: claim a due delivery (`claim_webhook_delivery`: `for update skip
//! locked`, a lease), sign it, POST it, record the attempt, and schedule the next one or end it.
//!
//! - A 2xx succeeds. Network errors, 408, 429 and 5xx are retried on `WEBHOOK_RETRY_SCHEDULE`
//!   (±20 % jitter), or after the receiver's `Retry-After` on a 429 or 503 (at most the schedule's
//!   longest step). Any other answer (3xx: redirects are not followed; 4xx) ends it as failed.
//! - The address policy of data sources applies at every attempt: an IP literal is checked here,
//!   a name in the client's resolver, which answers only the addresses it checked, so the
//!   connection goes to a checked address and a name re-resolving to a private one (DNS
//!   rebinding) is refused. Redirects are not followed; no proxy is used.
//! - At most 64 KB of an answer is read (the first KB is kept in the log); an attempt has
//!   `WEBHOOK_TIMEOUT_MS` in all.
//! - A webhook whose every attempt has failed for `WEBHOOK_DISABLE_AFTER_MS` is disabled, and each
//!   admin of the tenant gets a `notification.created` event (`data.webhookId`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::repo::{self, Claimed, Finish, NewAttempt};
use super::signing;
use crate::auth::TenantId;
use crate::error::{ApiError, Result};
use crate::events::model::{Audience, NewEvent, system_actor};
use crate::events::repo as event_log;
use crate::netguard::{self, Blocked};
use crate::state::AppState;

/// How often an idle worker looks for due deliveries (it is also woken by the dispatcher).
const POLL: Duration = Duration::from_millis(500);
/// The most of an answer read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The most of an answer kept in the log.
const LOGGED_BYTES: usize = 1024;
/// Finished deliveries deleted per statement, and how often.
const PURGE_BATCH: i64 = 10_000;
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Starts `WEBHOOK_CONCURRENCY` delivery workers and the purge of old deliveries.
pub fn spawn(state: &AppState, wake: Arc<Notify>, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let config = &state.config.webhooks;
    let mut handles = Vec::new();
    if config.concurrency == 0 {
        return handles;
    }
    let client = match client(state) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook HTTP client; no deliveries from this process");
            return handles;
        }
    };
    let instance = uuid::Uuid::new_v4().simple().to_string();
    for n in 0..config.concurrency {
        let worker = format!("hook-{}-{n}", &instance[..8]);
        handles.push(tokio::spawn(work(
            state.clone(),
            client.clone(),
            wake.clone(),
            worker,
            stop.clone(),
        )));
    }
    handles.push(tokio::spawn(purge(state.clone(), stop)));
    handles
}

fn client(state: &AppState) -> reqwest::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    let timeout = state.config.webhooks.timeout;
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(4)
        .user_agent(concat!("Panels-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: state.config.allow_private_source_hosts,
        }))
        .build()
}

async fn work(
    state: AppState,
    client: reqwest::Client,
    wake: Arc<Notify>,
    worker: String,
    stop: CancellationToken,
) {
    let lease = state.config.webhooks.timeout + Duration::from_secs(30);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let claimed = async {
            let mut conn = state.db.acquire().await?;
            repo::claim(&mut conn, &worker, lease).await
        }
        .await;
        match claimed {
            Ok(Some(delivery)) => {
                let span = tracing::info_span!("webhook", delivery_id = delivery.id, tenant = %delivery.tenant_id, webhook_id = delivery.webhook_id);
                let attempted = tracing::Instrument::instrument(
                    attempt(&state, &client, &worker, &delivery),
                    span,
                )
                .await;
                if let Err(error) = attempted {
                    tracing::warn!(%error, delivery_id = delivery.id, "a webhook attempt failed to run; its lease will expire and it is retried");
                }
            }
            Ok(None) => {
                let woken = wake.notified();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = woken => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "claiming a webhook delivery failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL * 4) => {}
                }
            }
        }
    }
}

/// What an attempt came to.
#[derive(Debug)]
struct Outcome {
    succeeded: bool,
    /// Another attempt may succeed (network error, 408, 429, 5xx).
    retryable: bool,
    response_code: Option<i32>,
    response_body: Option<String>,
    error: Option<String>,
    /// The receiver's `Retry-After` (on a 429 or 503).
    retry_after: Option<Duration>,
}

impl Outcome {
    fn failed(error: impl Into<String>, retryable: bool) -> Self {
        Self {
            succeeded: false,
            retryable,
            response_code: None,
            response_body: None,
            error: Some(error.into()),
            retry_after: None,
        }
    }
}

async fn attempt(
    state: &AppState,
    client: &reqwest::Client,
    worker: &str,
    claimed: &Claimed,
) -> Result<()> {
    let Some(tenant) = TenantId::parse(&claimed.tenant_id) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a delivery of an invalid tenant slug"
        )));
    };
    let mut tx = state.db.begin(&tenant).await?;
    let target = repo::target(&mut tx, &tenant, claimed.id, worker).await?;
    crate::db::end_read(tx);
    // Deleted with its webhook, or taken over after our lease ran out.
    let Some(target) = target else { return Ok(()) };
    let started_at = Utc::now();
    let clock = Instant::now();
    let outcome = match keys(state, &tenant, claimed.webhook_id, &target) {
        Ok(keys) => send(state, client, &target, &keys).await,
        Err(error) => {
            tracing::error!(error.cause = ?error, "cannot open a webhook's secret (ENCRYPTION_KEYS?)");
            Outcome::failed("the signing secret cannot be opened on the server", false)
        }
    };
    let duration_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
    finish(
        state,
        &tenant,
        worker,
        claimed,
        started_at,
        duration_ms,
        outcome,
    )
    .await
}

/// The HMAC keys to sign with: the current secret's, then the previous one's during a rotation.
fn keys(
    state: &AppState,
    tenant: &TenantId,
    webhook_id: i64,
    target: &repo::Target,
) -> Result<Vec<Vec<u8>>> {
    let mut keys = vec![signing::open_key(
        &state.crypto,
        tenant.as_str(),
        webhook_id,
        &target.secret,
    )?];
    if let Some(previous) = &target.previous_secret {
        keys.push(signing::open_key(
            &state.crypto,
            tenant.as_str(),
            webhook_id,
            previous,
        )?);
    }
    Ok(keys)
}

async fn send(
    state: &AppState,
    client: &reqwest::Client,
    target: &repo::Target,
    keys: &[Vec<u8>],
) -> Outcome {
    let Ok(url) = reqwest::Url::parse(&target.url) else {
        return Outcome::failed("the URL is not valid", false);
    };
    // An IP literal never reaches the resolver: the policy is checked here for it.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.to_string()),
        Some(url::Host::Ipv6(ip)) => Some(ip.to_string()),
        _ => None,
    };
    if let Some(ip) = literal
        && netguard::check_literal(&ip, state.config.allow_private_source_hosts).is_err()
    {
        return Outcome::failed(netguard::REFUSED, false);
    }
    let timestamp = Utc::now().timestamp();
    let signature = signing::signature_header(keys, &target.event_id, timestamp, &target.payload);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &target.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(target.payload.clone())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return network_error(&error),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    // Read at most 64 KB; a longer answer is cut (the connection is then not reused).
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_RESPONSE_BYTES {
                    break;
                }
            }
            // The status came: what the body did afterwards does not change the outcome.
            Err(_) => break,
        }
    }
    let (succeeded, retryable) = classify(status.as_u16());
    let logged = String::from_utf8_lossy(&body[..body.len().min(LOGGED_BYTES)]).into_owned();
    Outcome {
        succeeded,
        retryable,
        response_code: Some(i32::from(status.as_u16())),
        response_body: (!logged.is_empty()).then_some(logged),
        error: (!succeeded).then(|| {
            if status.is_redirection() {
                format!("HTTP {}: redirects are not followed", status.as_u16())
            } else {
                format!("HTTP {}", status.as_u16())
            }
        }),
        retry_after: matches!(status.as_u16(), 429 | 503)
            .then_some(retry_after)
            .flatten(),
    }
}

/// (succeeded, retryable) for an HTTP status: 2xx succeed; 408, 429 and 5xx may succeed later;
/// anything else is final.
fn classify(status: u16) -> (bool, bool) {
    match status {
        200..=299 => (true, false),
        408 | 429 | 500..=599 => (false, true),
        _ => (false, false),
    }
}

/// A request that got no HTTP answer: refused by the policy (final), or unreachable (retried).
/// Neither says more (the resolved address, the socket's error, a timeout apart from a refusal):
/// the server must not be a tool to map a network.
fn network_error(error: &reqwest::Error) -> Outcome {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(err) = cause {
        if err.to_string().contains(REFUSED_BY_POLICY) {
            return Outcome::failed(netguard::REFUSED, false);
        }
        cause = err.source();
    }
    Outcome::failed(netguard::UNREACHABLE, true)
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(raw: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// When the next attempt is due after failed attempt `attempts` (1-based), or `None` when that
/// was the last: the schedule's next step with ±20 % jitter, or the receiver's `Retry-After`
/// (never more than the schedule's longest step).
fn next_delay(
    schedule: &[Duration],
    attempts: i32,
    max_attempts: i32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    if attempts >= max_attempts {
        return None;
    }
    let longest = schedule.iter().max().copied().unwrap_or_default();
    if let Some(asked) = retry_after {
        return Some(asked.min(longest));
    }
    let step = usize::try_from(attempts)
        .ok()
        .and_then(|n| schedule.get(n))
        .or(schedule.last())
        .copied()
        .unwrap_or_default();
    if step.is_zero() {
        return Some(step);
    }
    Some(step.mul_f64(rand::rng().random_range(0.8..1.2)))
}

async fn finish(
    state: &AppState,
    tenant: &TenantId,
    worker: &str,
    claimed: &Claimed,
    started_at: chrono::DateTime<Utc>,
    duration_ms: i32,
    outcome: Outcome,
) -> Result<()> {
    let config = &state.config.webhooks;
    let delay = if outcome.succeeded || !outcome.retryable {
        None
    } else {
        next_delay(
            &config.retry_schedule,
            claimed.attempts,
            claimed.max_attempts,
            outcome.retry_after,
        )
    };
    let status = match (outcome.succeeded, delay) {
        (true, _) => "succeeded",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    let mut tx = state.db.begin(tenant).await?;
    repo::insert_attempt(
        &mut tx,
        tenant,
        claimed.id,
        &NewAttempt {
            attempt: claimed.attempts,
            succeeded: outcome.succeeded,
            started_at,
            duration_ms,
            response_code: outcome.response_code,
            response_body: outcome.response_body.as_deref(),
            error: outcome.error.as_deref(),
        },
    )
    .await?;
    let finish = Finish {
        status,
        response_code: outcome.response_code,
        error: outcome.error.as_deref(),
        retry_in_ms: delay.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    };
    let held = repo::finish_delivery(&mut tx, tenant, claimed.id, worker, &finish).await?;
    let mut notified = false;
    if held && outcome.succeeded {
        repo::mark_success(&mut tx, tenant, claimed.webhook_id).await?;
    } else if held {
        let reason = format!(
            "every delivery failed for {} (WEBHOOK_DISABLE_AFTER_MS); last: {}",
            describe(config.disable_after),
            outcome.error.as_deref().unwrap_or("failed")
        );
        if let Some((panel, url)) = repo::mark_failure(
            &mut tx,
            tenant,
            claimed.webhook_id,
            config.disable_after,
            &reason,
        )
        .await?
        {
            notify_admins(&mut tx, tenant, claimed.webhook_id, panel, &url, &reason).await?;
            notified = true;
        }
    }
    tx.commit().await?;
    if notified {
        tracing::warn!(
            webhook_id = claimed.webhook_id,
            "webhook disabled after failing for too long"
        );
        // The admins' streams, here at once and on the other instances by the tenant's channel.
        state.events.wake(tenant);
        let channel = state.cache.events_channel(tenant);
        state
            .cache
            .publish(
                &channel,
                &json!({"type": "notification.created"}).to_string(),
            )
            .await;
    }
    Ok(())
}

/// A `notification.created` event for each admin of the tenant (their streams only).
async fn notify_admins(
    tx: &mut crate::db::Tx,
    tenant: &TenantId,
    webhook_id: i64,
    panel: Option<i64>,
    url: &str,
    reason: &str,
) -> Result<()> {
    let message = format!("Webhook {webhook_id} ({url}) was disabled: {reason}");
    let message: String = message.chars().take(1000).collect();
    let events: Vec<NewEvent> = repo::admin_emails(tx, tenant)
        .await?
        .into_iter()
        .map(|email| NewEvent {
            kind: "notification.created".to_owned(),
            panel_id: panel,
            view_id: None,
            entity_id: Some(webhook_id.to_string()),
            audience: Some(Audience::Recipient(email)),
            actor: system_actor("system:webhooks"),
            data: json!({"webhookId": webhook_id, "impact": "warning", "message": message}),
        })
        .collect();
    event_log::append(tx, tenant, &events).await?;
    Ok(())
}

/// `3 days`, `2 h`, `500 ms`: a window as people read it.
fn describe(window: Duration) -> String {
    let ms = window.as_millis();
    match ms {
        86_400_000 => "1 day".to_owned(),
        ms if ms % 86_400_000 == 0 => format!("{} days", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
        ms => format!("{ms} ms"),
    }
}

/// Deletes finished deliveries older than `WEBHOOK_LOG_RETENTION_HOURS`, every ten minutes.
async fn purge(state: AppState, stop: CancellationToken) {
    let hours = state.config.webhooks.log_retention_hours;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
        let purged = async {
            loop {
                let mut conn = state.db.acquire().await?;
                if repo::purge(&mut conn, hours, PURGE_BATCH).await? < PURGE_BATCH {
                    return Ok::<_, sqlx::Error>(());
                }
            }
        };
        if let Err(error) = purged.await {
            tracing::warn!(%error, "deleting old webhook deliveries failed; retrying later");
        }
    }
}

/// The resolver's error text for a forbidden address, recognised again in [`network_error`].
const REFUSED_BY_POLICY: &str = "panels: webhook address refused by policy";

/// Resolves a webhook's host and answers only addresses the policy allows (every address of the
/// name must be allowed): the connection goes to one of them.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            match netguard::resolve(&host, 0, allow_private).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(Blocked::Refused) => Err(REFUSED_BY_POLICY.into()),
                Err(Blocked::Unresolvable) => Err("cannot resolve the host".into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_succeed_retry_or_end() {
        assert_eq!(classify(200), (true, false));
        assert_eq!(classify(204), (true, false));
        for retried in [408, 429, 500, 502, 503, 599] {
            assert_eq!(classify(retried), (false, true), "{retried}");
        }
        for final_ in [301, 400, 401, 404, 410, 422] {
            assert_eq!(classify(final_), (false, false), "{final_}");
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_or_the_receivers_retry_after() {
        let schedule = [
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_secs(1800),
        ];
        let after_first = next_delay(&schedule, 1, 4, None).expect("a retry");
        assert!(after_first >= Duration::from_secs(4) && after_first <= Duration::from_secs(6));
        let after_second = next_delay(&schedule, 2, 4, None).expect("a retry");
        assert!(after_second >= Duration::from_secs(240));
        assert_eq!(next_delay(&schedule, 4, 4, None), None);
        assert_eq!(
            next_delay(&schedule, 1, 4, Some(Duration::from_secs(42))),
            Some(Duration::from_secs(42))
        );
        // Never parked longer than the schedule's longest step.
        assert_eq!(
            next_delay(&schedule, 1, 4, Some(Duration::from_secs(86_400))),
            Some(Duration::from_secs(1800))
        );
        // A manual retry past the schedule's end waits its last step.
        assert!(next_delay(&schedule, 6, 8, None).expect("a retry") >= Duration::from_secs(1440));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn windows_read_as_people_say_them() {
        assert_eq!(describe(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(describe(Duration::from_secs(7200)), "2 h");
        assert_eq!(describe(Duration::from_millis(1500)), "1500 ms");
    }
}
