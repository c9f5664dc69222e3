//! Subscribing: who may receive what, resuming, and the per-subscriber stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::hub::BATCH;
use super::model::{Audience, Cursor, Snapshot, StoredEvent, TicketResponse};
use super::repo::{self, TicketRow};
use crate::auth::model::{Credential, Principal, Role, TenantId};
use crate::auth::tokens::random_token;
use crate::error::{ApiError, Result};
use crate::ids::{PanelId, ViewId};
use crate::panels::service::{self as panels, Access};
use crate::state::AppState;
use crate::views::service as views;

/// Seconds a ticket for `GET /api/events?ticket=` stays valid.
pub const TICKET_SECONDS: u64 = 60;

/// Every event type, as `types=` accepts them (a prefix ending in `.*` takes a family).
pub const TYPES: &[&str] = &[
    "panel.created",
    "panel.updated",
    "panel.deleted",
    "column.created",
    "column.updated",
    "column.deleted",
    "columns.reordered",
    "view.created",
    "view.updated",
    "view.deleted",
    "view.published",
    "view.unpublished",
    "datasource.created",
    "datasource.updated",
    "datasource.deleted",
    "sync.started",
    "sync.progress",
    "sync.succeeded",
    "sync.failed",
    "rows.changed",
    "cohort.entered",
    "cohort.left",
    "view.rows.entered",
    "view.rows.left",
    "notification.created",
    "acl.changed",
];

/// What a subscriber asked for.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub panel_id: Option<i64>,
    pub view_id: Option<i64>,
    /// Exact types and families (`view.`-prefixes); empty: every type.
    pub types: Vec<String>,
}

impl Filters {
    /// Parses `types=panel.created,view.*`: a 400 naming the unknown one.
    pub fn parse_types(raw: Option<&str>) -> Result<Vec<String>> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let mut types = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let known = match item.strip_suffix('*') {
                Some(prefix) => {
                    prefix.ends_with('.') && TYPES.iter().any(|t| t.starts_with(prefix))
                }
                None => TYPES.contains(&item),
            };
            if !known {
                return Err(ApiError::invalid(
                    "types",
                    format!(
                        "Unknown event type '{item}': one of {}, or a family such as 'view.*'",
                        TYPES.join(", ")
                    ),
                ));
            }
            types.push(item.trim_end_matches('*').to_owned());
        }
        Ok(types)
    }

    /// Whether `event` passes the filters (`view_panel`: the panel of the `view_id` filter's
    /// view). Webhooks subscribe by the same rules.
    pub fn matches(&self, event: &StoredEvent, view_panel: Option<i64>) -> bool {
        if let Some(panel) = self.panel_id
            && event.panel_id != Some(panel)
        {
            return false;
        }
        // A view's stream: the view's own events and its panel's events that concern no view in
        // particular (rows, columns, the cohort, the panel itself).
        if let Some(view) = self.view_id {
            let ok = event.view_id == Some(view)
                || (event.view_id.is_none() && event.panel_id == view_panel);
            if !ok {
                return false;
            }
        }
        self.types.is_empty()
            || self.types.iter().any(|t| {
                if t.ends_with('.') {
                    event.kind.starts_with(t.as_str())
                } else {
                    event.kind == *t
                }
            })
    }
}

/// What the next step of a stream is.
pub enum Next {
    /// Shared with every stream that sends it (its JSON is serialised once).
    Event(Arc<StoredEvent>),
    /// The resume point is older than retention: the client refetches, then follows.
    Reset,
    /// The instance shuts down: the client reconnects (elsewhere) with its last id.
    Shutdown,
}

/// One subscriber's stream: its catch-up from the log, then the tenant's broadcast, each event
/// at most once and in cursor order, only what the subscriber may read.
pub struct Subscription {
    state: AppState,
    principal: Principal,
    filters: Filters,
    view_panel: Option<i64>,
    /// `None`: an admin, who reads every panel of the tenant.
    readable: Option<HashSet<i64>>,
    last: Cursor,
    receiver: broadcast::Receiver<Arc<StoredEvent>>,
    pending: VecDeque<Arc<StoredEvent>>,
    /// Private views of others this subscriber holds an entry on (or not), as last read.
    shared: HashMap<i64, bool>,
    /// Read the log after `last` before taking from the broadcast (at the start, and after
    /// falling behind the broadcast).
    catch_up: bool,
    reset: bool,
    /// A stream that started at the present: the transactions this snapshot saw finished are
    /// the past, and their events are not this stream's.
    past: Option<Snapshot>,
    stop: CancellationToken,
}

/// Opens a subscription: checks the filters against what the principal may read (a panel or view
/// it may not read answers exactly as one that does not exist), then resumes after `last_event_id`
/// or starts at the present.
pub async fn subscribe(
    state: &AppState,
    principal: Principal,
    filters: Filters,
    last_event_id: Option<&str>,
) -> Result<Subscription> {
    let resume = match last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(Cursor::parse(raw).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_EVENT_ID",
                "Last-Event-ID is not an event id this server gave out (expected '<txid>-<seq>')",
            )
        })?),
    };
    // One tenant's streams cannot take an instance's memory and connections from the others.
    let cap = state.config.event_max_streams_per_tenant;
    if state.events.streams(&principal.tenant) >= cap {
        return Err(ApiError::TooManyRequests {
            retry_after_secs: 5,
            limit: cap as u64,
        });
    }
    let mut tx = state.db.begin(&principal.tenant).await?;
    let readable = readable(&mut tx, &principal).await?;
    let mut view_panel = None;
    if let Some(view) = filters.view_id {
        let view = views::readable(&mut tx, &principal, ViewId(view)).await?;
        if !may_read(&readable, view.panel_id.0) {
            return Err(views::not_found());
        }
        view_panel = Some(view.panel_id.0);
    }
    if let Some(panel) = filters.panel_id {
        panels::authorize(&mut tx, &principal, PanelId(panel), Access::Read).await?;
    }
    let position = repo::position(&mut tx, &principal.tenant).await?;
    crate::db::end_read(tx);
    // The broadcast first, then the log: the catch-up, read later, reaches at least as far as
    // the feed had.
    let receiver = state.events.subscribe(&principal.tenant, position.start);
    let (last, reset, past) = match resume {
        Some(cursor) if position.horizon.is_none_or(|h| cursor >= h) => (cursor, false, None),
        resumed => (position.start, resumed.is_some(), Some(position.snapshot)),
    };
    Ok(Subscription {
        state: state.clone(),
        principal,
        filters,
        view_panel,
        readable,
        last,
        receiver,
        pending: VecDeque::new(),
        shared: HashMap::new(),
        catch_up: true,
        reset,
        past,
        stop: state.events.stopping(),
    })
}

/// The panels a non-admin may read; `None` for an admin.
async fn readable(
    conn: &mut sqlx::PgConnection,
    principal: &Principal,
) -> Result<Option<HashSet<i64>>> {
    let user = principal.user_id.to_lowercase();
    let Some(reader) = panels::reader(principal, &user) else {
        return Ok(None);
    };
    let panels = repo::readable_panels(conn, &principal.tenant, reader).await?;
    Ok(Some(panels.into_iter().collect()))
}

/// Whether `user` (an e-mail or a user id) is `principal`.
fn is(principal: &Principal, user: &str) -> bool {
    !user.is_empty()
        && (user.eq_ignore_ascii_case(&principal.email)
            || user.eq_ignore_ascii_case(&principal.user_id))
}

fn may_read(readable: &Option<HashSet<i64>>, panel: i64) -> bool {
    readable.as_ref().is_none_or(|set| set.contains(&panel))
}

impl Subscription {
    /// The next event for this subscriber (waiting for one), a reset, or the end.
    pub async fn next(&mut self) -> Result<Next> {
        if std::mem::take(&mut self.reset) {
            return Ok(Next::Reset);
        }
        loop {
            if self.stop.is_cancelled() {
                return Ok(Next::Shutdown);
            }
            if let Some(event) = self.pending.pop_front() {
                let cursor = event.cursor();
                if cursor <= self.last {
                    continue;
                }
                self.last = cursor;
                if self.past.as_ref().is_some_and(|past| past.saw(cursor.txid)) {
                    continue;
                }
                if self.admits(&event).await? {
                    return Ok(Next::Event(event));
                }
                continue;
            }
            if self.catch_up {
                // Boxed, as the queries `admits` may make: inline, the futures that query the
                // database would be part of this one, which every idle stream holds while it
                // waits (4.4 KB of it; bench/README.md, "Live events").
                Box::pin(self.read_log()).await?;
                continue;
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(event) => self.pending.push_back(event),
                    // Fell behind the broadcast: what it missed is in the log.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = true,
                    // The feed ended: the instance is stopping.
                    Err(broadcast::error::RecvError::Closed) => return Ok(Next::Shutdown),
                },
                _ = self.stop.cancelled() => return Ok(Next::Shutdown),
            }
        }
    }

    /// Reads the next batch of the log after `last` into `pending`.
    async fn read_log(&mut self) -> Result<()> {
        let mut tx = self.state.db.begin(&self.principal.tenant).await?;
        let batch = repo::after(&mut tx, &self.principal.tenant, self.last, BATCH).await?;
        crate::db::end_read(tx);
        self.catch_up = batch.len() as i64 == BATCH;
        self.pending.extend(batch.into_iter().map(Arc::new));
        Ok(())
    }

    /// The last event id this subscriber was given (or skipped past).
    pub fn last(&self) -> Cursor {
        self.last
    }

    /// Whether the subscriber may receive `event`: its filters, the panels it may read (kept up
    /// to date as access changes, before deciding on the event that changed it), and the event's
    /// audience.
    async fn admits(&mut self, event: &StoredEvent) -> Result<bool> {
        self.follow_access(event).await?;
        if !event
            .panel_id
            .is_none_or(|panel| may_read(&self.readable, panel))
            || !self.filters.matches(event, self.view_panel)
        {
            return Ok(false);
        }
        match event.audience() {
            Some(Audience::Recipient(user)) => Ok(self.is(&user)),
            Some(Audience::PrivateView { owner })
                if !self.principal.is_admin() && !self.is(&owner) =>
            {
                self.shared_with_me(event.view_id).await
            }
            _ => Ok(true),
        }
    }

    /// Keeps a non-admin's readable panels current: a deleted panel leaves the set; a created
    /// one joins it when this subscriber created it (a new panel's only entry is its creator's);
    /// an ACL change is read again (it may be anyone's).
    async fn follow_access(&mut self, event: &StoredEvent) -> Result<()> {
        let Some(set) = self.readable.as_mut() else {
            return Ok(());
        };
        match (event.kind.as_str(), event.panel_id) {
            ("panel.deleted", Some(panel)) => {
                set.remove(&panel);
            }
            ("panel.created", Some(panel)) => {
                let mine = ["email", "id"].iter().any(|key| {
                    event.actor[*key]
                        .as_str()
                        .is_some_and(|v| is(&self.principal, v))
                });
                if mine {
                    set.insert(panel);
                }
            }
            // Boxed: only this event queries (see `next`).
            ("acl.changed", _) => Box::pin(self.read_access()).await?,
            _ => {}
        }
        Ok(())
    }

    /// Reads again what this subscriber may read (an ACL changed, maybe its own).
    async fn read_access(&mut self) -> Result<()> {
        let mut tx = self.state.db.begin(&self.principal.tenant).await?;
        self.readable = readable(&mut tx, &self.principal).await?;
        crate::db::end_read(tx);
        self.shared.clear();
        Ok(())
    }

    fn is(&self, user: &str) -> bool {
        is(&self.principal, user)
    }

    /// Whether a private view is shared with this subscriber (an ACL entry of its own),
    /// remembered until access changes.
    async fn shared_with_me(&mut self, view: Option<i64>) -> Result<bool> {
        let Some(view) = view else {
            return Ok(false);
        };
        if let Some(known) = self.shared.get(&view) {
            return Ok(*known);
        }
        // Boxed: only a private view's first event queries (see `next`).
        Box::pin(self.read_shared(view)).await
    }

    async fn read_shared(&mut self, view: i64) -> Result<bool> {
        let mut tx = self.state.db.begin(&self.principal.tenant).await?;
        let held = crate::acls::service::permission(
            &mut tx,
            &self.principal,
            crate::acls::model::ResourceType::View,
            view,
        )
        .await?
        .is_some();
        crate::db::end_read(tx);
        self.shared.insert(view, held);
        Ok(held)
    }
}

/// Issues a single-use ticket for the caller (60 seconds).
pub async fn ticket(state: &AppState, principal: &Principal) -> Result<TicketResponse> {
    let ticket = random_token("evt_");
    let row = TicketRow {
        tenant_id: principal.tenant.as_str().to_owned(),
        user_id: principal.user_id.clone(),
        email: principal.email.clone(),
        role: principal.role.as_str().to_owned(),
        api_key_id: match principal.credential {
            Credential::ApiKey { id, .. } => Some(id),
            Credential::Jwt => None,
        },
    };
    let mut tx = state.db.begin(&principal.tenant).await?;
    repo::insert_ticket(
        &mut tx,
        &principal.tenant,
        &hash(&ticket),
        &row,
        TICKET_SECONDS,
    )
    .await?;
    tx.commit().await?;
    Ok(TicketResponse {
        ticket,
        expires_in: TICKET_SECONDS,
    })
}

/// The principal a ticket was issued to; a 401 for an unknown, used or expired one.
pub async fn redeem(state: &AppState, ticket: &str) -> Result<Principal> {
    let invalid = || ApiError::unauthorized("The ticket is unknown, used or expired");
    let mut conn = state.db.acquire().await?;
    let row = repo::redeem_ticket(&mut conn, &hash(ticket))
        .await?
        .ok_or_else(invalid)?;
    Ok(Principal {
        user_id: row.user_id,
        email: row.email,
        tenant: TenantId::parse(&row.tenant_id).ok_or_else(invalid)?,
        role: Role::parse(&row.role).ok_or_else(invalid)?,
        credential: match row.api_key_id {
            Some(id) => Credential::ApiKey { id, write: false },
            None => Credential::Jwt,
        },
    })
}

fn hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_known_types_or_families() {
        assert_eq!(
            Filters::parse_types(Some("view.*, panel.created")).expect("types"),
            vec!["view.".to_owned(), "panel.created".to_owned()]
        );
        for bad in ["view", "nope.*", "panel.created,foo", "*"] {
            assert!(Filters::parse_types(Some(bad)).is_err(), "{bad}");
        }
    }
}
