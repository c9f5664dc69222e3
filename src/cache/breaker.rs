//! The Redis availability breaker: the first failure opens it and every read goes to PostgreSQL;
//! a probe retries, bumps the global epoch when Redis answers (writes made meanwhile could not
//! bump their versions) and only then closes it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::versions::bump_epoch;
use super::{Inner, PROBE_MAX, PROBE_MIN};

/// Opens the breaker (a new generation) and wakes the probe.
pub(super) fn trip(inner: &Inner) {
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
pub(super) async fn supervise(inner: Weak<Inner>, probe: Arc<Notify>, stop: CancellationToken) {
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
