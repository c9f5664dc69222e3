//! The event channel: every committed change is published on its tenant's channel (in the same
//! Redis call as its version bump), and each instance's one subscription connection fans the
//! namespace's messages out to its in-process subscribers.

use crate::ids::PanelId;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{Cache, PROBE_MAX, PROBE_MIN};
use crate::auth::TenantId;

/// A committed change: what it invalidates and the event it publishes on the tenant's channel
/// (`{"type": …, "panelId": …, …}`).
#[derive(Debug, Clone)]
pub struct Change {
    event: &'static str,
    pub(super) panel_id: PanelId,
    pub(super) lists: bool,
    extra: Map<String, Value>,
    private_view_of: Option<String>,
    logged: bool,
    pub(super) invalidates: bool,
}

impl Change {
    /// A change of the panel or of anything in it: its cached reads are never read again.
    pub fn panel(event: &'static str, panel_id: PanelId) -> Self {
        Self {
            event,
            panel_id,
            lists: false,
            extra: Map::new(),
            private_view_of: None,
            logged: false,
            invalidates: true,
        }
    }

    /// An event only: no cached read depends on what changed (a sync's start, end and progress;
    /// the rows themselves are never cached).
    pub fn quiet(mut self) -> Self {
        self.invalidates = false;
        self
    }

    /// The change is of a private view of `owner`: its event goes to the owner, those the view
    /// is shared with and admins (`events::model::Audience::PrivateView`).
    pub fn private_view(mut self, owner: impl Into<String>) -> Self {
        self.private_view_of = Some(owner.into());
        self
    }

    /// The statement that made the change wrote its event itself (the grouped panel create): the
    /// write path must not write it again.
    pub fn logged(mut self) -> Self {
        self.logged = true;
        self
    }

    /// The event's type (`view.updated`, …).
    pub fn event(&self) -> &'static str {
        self.event
    }

    pub fn panel_id(&self) -> PanelId {
        self.panel_id
    }

    /// The event's fields beyond its type and panel (`viewId`, `columnId`, …).
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    pub fn private_view_owner(&self) -> Option<&str> {
        self.private_view_of.as_deref()
    }

    pub fn is_logged(&self) -> bool {
        self.logged
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

    pub(super) fn payload(&self) -> String {
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

impl Cache {
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

    pub(super) fn deliver_locally(&self, channel: String, payload: String) {
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
}

/// The instance's one subscription connection: listens to every channel of the namespace and
/// forwards to the in-process broadcast; reconnects by itself.
pub(super) async fn subscribe(
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
    fn events_name_their_tenant() {
        let event = Event {
            channel: "panels:db_1:acme-health:events".to_owned(),
            payload: r#"{"type":"panel.updated","panelId":3}"#.to_owned(),
        };
        assert_eq!(event.tenant(), Some("acme-health"));
        assert_eq!(event.json().expect("json")["panelId"], 3);
        let payload = Change::panel("view.updated", crate::ids::PanelId(3))
            .with("viewId", 9)
            .payload();
        assert_eq!(
            serde_json::from_str::<Value>(&payload).expect("json"),
            serde_json::json!({"type": "view.updated", "panelId": 3, "viewId": 9})
        );
    }
}
