//! What the event log holds and what a subscriber receives.

use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::model::{Credential, Principal};
use crate::cache::Change;

/// A position in a tenant's event log: the writing transaction's id and the event's sequence
/// number, ordered as a pair (migration 20261205000100 says why a sequence alone is not safe).
/// Written `{txid}-{seq}`: the SSE `id:`, the payload's `id`, what `Last-Event-ID` resumes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub txid: u64,
    pub seq: i64,
}

impl Cursor {
    /// Before every event of a transaction `txid` or later: where a stream starts that resumes
    /// nothing (the oldest transaction still running, and everything after it).
    pub fn before_transaction(txid: u64) -> Self {
        Self { txid, seq: 0 }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let (txid, seq) = raw.trim().split_once('-')?;
        let txid = txid.parse().ok()?;
        let seq = seq.parse().ok()?;
        (seq >= 0).then_some(Self { txid, seq })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.txid, self.seq)
    }
}

/// A snapshot's view of transactions (`pg_current_snapshot()`, `xmin:xmax:xip,…`): which had
/// committed when a stream started at the present, so it skips their events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub running: Vec<u64>,
}

impl Snapshot {
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(Self {
            xmin,
            xmax,
            running,
        })
    }

    /// Whether transaction `txid` had committed (or aborted) when the snapshot was taken.
    pub fn saw(&self, txid: u64) -> bool {
        txid < self.xmin || (txid < self.xmax && !self.running.contains(&txid))
    }
}

/// Who may receive an event beyond the panel's readers rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// This user alone (a notification), whoever else may read the panel: admins included.
    Recipient(String),
    /// A private view's event: its owner, the users it is shared with, and admins.
    PrivateView { owner: String },
}

impl Audience {
    /// As stored in `event.audience`.
    pub fn to_column(&self) -> String {
        match self {
            Self::Recipient(user) => format!("user:{user}"),
            Self::PrivateView { owner } => format!("view:{owner}"),
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw.split_once(':')? {
            ("user", user) => Some(Self::Recipient(user.to_owned())),
            ("view", owner) => Some(Self::PrivateView {
                owner: owner.to_owned(),
            }),
            _ => None,
        }
    }
}

/// An event to append in the writing transaction.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub panel_id: Option<i64>,
    pub view_id: Option<i64>,
    pub entity_id: Option<String>,
    pub audience: Option<Audience>,
    pub actor: Value,
    pub data: Value,
}

impl NewEvent {
    /// The event of a committed change, by `principal`.
    pub fn of_change(change: &Change, principal: &Principal) -> Self {
        let extra = change.extra();
        let number = |key: &str| extra.get(key).and_then(Value::as_i64);
        let view_id = number("viewId");
        let entity = ["viewId", "columnId", "dataSourceId", "resourceId", "runId"]
            .iter()
            .find_map(|key| number(key))
            .unwrap_or(change.panel_id().0);
        Self {
            kind: change.event().to_owned(),
            panel_id: Some(change.panel_id().0),
            view_id,
            entity_id: Some(entity.to_string()),
            audience: change
                .private_view_owner()
                .map(|owner| Audience::PrivateView {
                    owner: owner.to_owned(),
                }),
            actor: actor(principal),
            data: Value::Object(extra.clone()),
        }
    }
}

/// Who made a change, as events (and later the audit log) name it: a user, an API key, or the
/// system (the sync worker and the scheduler).
pub fn actor(principal: &Principal) -> Value {
    if principal.user_id.starts_with("system:") {
        return system_actor(&principal.user_id);
    }
    match principal.credential {
        Credential::ApiKey { id, .. } => {
            json!({"type": "apiKey", "id": id.to_string(), "email": principal.email})
        }
        Credential::Jwt => {
            json!({"type": "user", "id": principal.user_id, "email": principal.email})
        }
    }
}

/// The system as an actor (`system:sync`, …).
pub fn system_actor(id: &str) -> Value {
    json!({"type": "system", "id": id})
}

/// An event as stored, with its payload serialised once however many streams send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    /// The transaction id (`xid8`, read as a number).
    pub txid: i64,
    pub seq: i64,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub panel_id: Option<i64>,
    pub view_id: Option<i64>,
    pub entity_id: Option<String>,
    pub audience: Option<String>,
    pub actor: Value,
    pub at: DateTime<Utc>,
    pub data: Value,
    #[sqlx(skip)]
    json: OnceLock<String>,
}

impl StoredEvent {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            txid: self.txid as u64,
            seq: self.seq,
        }
    }

    pub fn audience(&self) -> Option<Audience> {
        self.audience.as_deref().and_then(Audience::parse)
    }

    /// The payload as JSON ([`EventPayload`]), serialised on first use.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            serde_json::to_string(&EventPayload::from(self)).unwrap_or_else(|_| "{}".to_owned())
        })
    }
}

/// An event as a subscriber receives it (the SSE `data:`, a WebSocket message).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPayload {
    /// The event's cursor: resume after it with `Last-Event-ID`.
    #[schema(example = "7412-1023")]
    pub id: String,
    /// `panel.created`, `view.updated`, `sync.succeeded`, `rows.changed`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub panel_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_id: Option<i64>,
    /// The id of what changed (the view, column, data source, run; the panel otherwise).
    pub entity_id: Option<String>,
    /// `{"type": "user" | "apiKey" | "system", "id", "email"?}`
    #[schema(value_type = Object)]
    pub actor: Value,
    pub at: DateTime<Utc>,
    /// What the type carries (`{"viewId": …}`, counts of a sync, …).
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<&StoredEvent> for EventPayload {
    fn from(e: &StoredEvent) -> Self {
        Self {
            id: e.cursor().to_string(),
            kind: e.kind.clone(),
            panel_id: e.panel_id,
            view_id: e.view_id,
            entity_id: e.entity_id.clone(),
            actor: e.actor.clone(),
            at: e.at,
            data: if e.data.is_object() {
                e.data.clone()
            } else {
                Value::Object(Map::new())
            },
        }
    }
}

/// `POST /api/events/tickets`: a single-use ticket for `GET /api/events?ticket=`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketResponse {
    pub ticket: String,
    /// Seconds the ticket stays valid.
    pub expires_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_by_transaction_first() {
        let a = Cursor::parse("7412-1023").expect("cursor");
        assert_eq!(a.to_string(), "7412-1023");
        // A later transaction sorts after, whatever its sequence number.
        assert!(Cursor::parse("7413-5").expect("cursor") > a);
        for bad in ["", "7412", "-1", "a-1", "1-b", "1--2", "1-2-3"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn audiences_round_trip_through_their_column() {
        for audience in [
            Audience::Recipient("vic@acme.example".to_owned()),
            Audience::PrivateView {
                owner: "ann@acme.example".to_owned(),
            },
        ] {
            assert_eq!(Audience::parse(&audience.to_column()), Some(audience));
        }
        assert_eq!(Audience::parse("nobody"), None);
    }

    #[test]
    fn a_snapshot_saw_what_had_finished() {
        let s = Snapshot::parse("100:105:100,103").expect("snapshot");
        assert!(s.saw(99) && s.saw(101) && s.saw(104));
        assert!(!s.saw(100) && !s.saw(103) && !s.saw(105));
        assert_eq!(
            Snapshot::parse("7:7:").expect("empty").running,
            Vec::<u64>::new()
        );
        assert_eq!(Snapshot::parse("x"), None);
    }
}
