//! The dispatcher: turns the event log into deliveries. For each tenant with an enabled webhook it
//! reads the log after the tenant's cursor by the same commit-safe rule the streams use
//! (`events::repo::after`: only events of finished transactions, in `(txid, seq)` order), queues
//! one delivery per matching webhook and moves the cursor, all in one transaction: a crash before
//! the commit redoes the batch, after it nothing is redone, so no event is lost or queued twice
//! (and the deliveries' unique key would refuse a second one anyway). The cursor row is taken with
//! `for update skip locked`, so with several worker processes one dispatches a tenant at a time.
//!
//! It runs at least every `EVENT_POLL_MS` and whenever a commit's wake-up reaches this instance
//! (the Redis message every instance publishes after a commit).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::repo::{self, NewDeliveries, Subscriber};
use crate::auth::TenantId;
use crate::error::Result;
use crate::events::model::{Snapshot, StoredEvent};
use crate::events::repo as event_log;
use crate::events::service::Filters;
use crate::state::AppState;

/// Events read per transaction.
const BATCH: i64 = 500;

pub fn spawn(
    state: AppState,
    deliveries: Arc<Notify>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut messages = state.cache.subscribe();
        let mut tenants: HashSet<TenantId> = HashSet::new();
        let mut ticker = tokio::time::interval(state.config.event_poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let woken: Option<TenantId> = tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => None,
                message = messages.recv() => match message {
                    Ok(message) => match message.tenant().and_then(TenantId::parse) {
                        Some(tenant) if tenants.contains(&tenant) => Some(tenant),
                        _ => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => {
                        messages = state.cache.subscribe();
                        None
                    }
                },
            };
            let todo: Vec<TenantId> = match woken {
                Some(tenant) => vec![tenant],
                None => match listed(&state).await {
                    Ok(listed) => {
                        tenants = listed.iter().cloned().collect();
                        listed
                    }
                    Err(error) => {
                        tracing::warn!(%error, "listing the tenants with webhooks failed");
                        continue;
                    }
                },
            };
            for tenant in todo {
                match dispatch(&state, &tenant).await {
                    Ok(0) => {}
                    Ok(_) => deliveries.notify_waiters(),
                    Err(error) => {
                        tracing::warn!(%error, tenant = %tenant, "dispatching webhook deliveries failed; retrying")
                    }
                }
            }
        }
    })
}

async fn listed(state: &AppState) -> sqlx::Result<Vec<TenantId>> {
    let mut conn = state.db.acquire().await?;
    Ok(repo::tenants(&mut conn)
        .await?
        .iter()
        .filter_map(|t| TenantId::parse(t))
        .collect())
}

/// A webhook's subscription as the dispatcher checks events against it.
struct Matcher {
    id: i64,
    filters: Filters,
    /// Events of transactions this snapshot saw finished came before the webhook.
    since: Snapshot,
}

impl Matcher {
    fn of(subscriber: Subscriber) -> Option<Self> {
        let types = Filters::parse_types(Some(&subscriber.events.join(","))).ok()?;
        Some(Self {
            id: subscriber.id,
            filters: Filters {
                panel_id: subscriber.panel_id,
                view_id: None,
                types,
            },
            since: Snapshot::parse(&subscriber.since_snapshot)?,
        })
    }

    /// Events with an audience (a user's notification, a private view's change) are for those
    /// users' streams only: never sent to a webhook.
    fn wants(&self, event: &StoredEvent) -> bool {
        event.audience.is_none()
            && !self.since.saw(event.cursor().txid)
            && self.filters.matches(event, None)
    }
}

/// Queues the tenant's new events for its webhooks; answers how many deliveries were queued.
pub async fn dispatch(state: &AppState, tenant: &TenantId) -> Result<usize> {
    let config = &state.config.webhooks;
    let attempts = i32::try_from(config.retry_schedule.len()).unwrap_or(i32::MAX);
    let mut queued = 0;
    loop {
        let mut tx = state.db.begin(tenant).await?;
        let Some(cursor) = repo::lock_cursor(&mut tx, tenant).await? else {
            return Ok(queued);
        };
        let matchers: Vec<Matcher> = repo::subscribers(&mut tx, tenant)
            .await?
            .into_iter()
            .filter_map(Matcher::of)
            .collect();
        if matchers.is_empty() {
            return Ok(queued);
        }
        let events = event_log::after(&mut tx, tenant, cursor, BATCH).await?;
        let Some(last) = events.last().map(StoredEvent::cursor) else {
            return Ok(queued);
        };
        let mut new = NewDeliveries::default();
        for event in &events {
            for matcher in matchers.iter().filter(|m| m.wants(event)) {
                new.push(
                    matcher.id,
                    event.cursor().to_string(),
                    &event.kind,
                    event.json(),
                );
            }
        }
        if !new.is_empty() {
            // The tenant's queue has a cap: what does not fit is not queued, and counted.
            let room = (config.max_queued_per_tenant - repo::count_queued(&mut tx, tenant).await?)
                .max(0) as usize;
            if new.len() > room {
                let mut dropped: BTreeMap<i64, i64> = BTreeMap::new();
                for id in &new.webhook_ids[room..] {
                    *dropped.entry(*id).or_default() += 1;
                }
                let (ids, counts): (Vec<i64>, Vec<i64>) = dropped.into_iter().unzip();
                repo::add_dropped(&mut tx, tenant, &ids, &counts).await?;
                tracing::warn!(
                    tenant = %tenant,
                    dropped = new.len() - room,
                    "the webhook queue is full (WEBHOOK_MAX_QUEUED_PER_TENANT): deliveries dropped"
                );
                new.truncate(room);
            }
            queued += repo::insert_deliveries(&mut tx, tenant, &new, attempts)
                .await?
                .len();
        }
        repo::save_cursor(&mut tx, tenant, last).await?;
        tx.commit().await?;
        if (events.len() as i64) < BATCH {
            return Ok(queued);
        }
    }
}
