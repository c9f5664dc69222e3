//! The one write path. Every mutating service runs its statements through [`write`] (or
//! [`create`], which adds the `Idempotency-Key`), in this order and nowhere else:
//!
//! 1. open the transaction bound to the caller's tenant;
//! 2. claim the idempotency key: a replay answers the stored response and does nothing else (no
//!    statement, no commit, no cache bump, no event);
//! 3. the service's own statements: a closure that takes the [`Writer`] and gives it back with
//!    its answer, recording the panel change through [`Writer::record`] and naming what readers
//!    must see change through [`Writer::changed`] (by value rather than borrowed, so the
//!    closure's future is an ordinary type whose `Send` the compiler can see);
//! 4. store the idempotent response, append each change's event to the event log
//!    (`events`, the transactional outbox), and the write's audit entry (`audit`);
//! 5. commit;
//! 6. only then, invalidate the cache and publish ([`published`]), for every change named.
//!
//! A write that fails at any step before the commit rolls back whole and publishes nothing. The
//! grouped create of `POST /api/panels` (src/panels/batch.rs) commits in the batcher and then
//! calls [`published`] for each caller: the same steps 5 and 6, once per group's commit.

use serde::Serialize;

use crate::audit::{self, Audited};
use crate::auth::{Principal, TenantId};
use crate::cache::Change;
use crate::changes::{self, Affect, NewChange};
use crate::db::Tx;
use crate::error::{Result, to_json};
use crate::events::model::NewEvent;
use crate::events::repo as event_log;
use crate::idempotency::{self, Outcome};
use crate::state::AppState;

/// A create's `Idempotency-Key` and the digest of what it was sent with.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub digest: &'a [u8],
}

impl<'a> Idempotency<'a> {
    /// The key of a request, when it carries one.
    pub fn of(key: Option<&'a str>, digest: &'a [u8]) -> Option<Self> {
        key.map(|key| Self { key, digest })
    }
}

/// The transaction a service writes in, the caller it writes for, and what readers must see
/// change once it commits.
pub struct Writer<'a> {
    pub tx: Tx,
    pub principal: &'a Principal,
    changes: Vec<Change>,
    audit: Audited,
}

impl Writer<'_> {
    pub fn tenant(&self) -> &TenantId {
        &self.principal.tenant
    }

    /// Records a structural change of a panel (and notifies the users of the views it affects),
    /// in this transaction.
    pub async fn record(&mut self, change: NewChange, affect: Affect<'_>) -> Result<()> {
        changes::record(&mut self.tx, self.principal, change, affect).await?;
        Ok(())
    }

    /// What readers must see change: invalidated and published after the commit, never before
    /// and never when the write does not commit.
    pub fn changed(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// The audit entry's action, when the route's (`audit::ACTIONS`) is not the whole story, or
    /// for a write of the system (which is audited only when it names one).
    pub fn audit_action(&mut self, action: &str) {
        self.audit.action = Some(action.to_owned());
    }

    /// The entity the audit entry is about, when the path and the first change do not name it.
    pub fn audit_entity(&mut self, kind: &str, id: impl ToString, panel_id: Option<i64>) {
        self.audit.entity = Some((kind.to_owned(), id.to_string()));
        if panel_id.is_some() {
            self.audit.panel_id = panel_id;
        }
    }

    /// The fields that changed, from the entity's client shape before and after the write
    /// (secrets filtered, long values cut: `audit::diff`).
    pub fn audit_diff(&mut self, before: &impl Serialize, after: &impl Serialize) {
        if let (Ok(before), Ok(after)) = (serde_json::to_value(before), serde_json::to_value(after))
        {
            self.audit.changes = audit::diff(&before, &after);
        }
    }

    /// The audit entry's changes as given (already a diff, already without secrets).
    pub fn audit_changes(&mut self, changes: serde_json::Value) {
        self.audit.changes = Some(audit::redact(changes));
    }
}

async fn begin<'a>(state: &AppState, principal: &'a Principal) -> Result<Writer<'a>> {
    Ok(Writer {
        tx: state.db.begin(&principal.tenant).await?,
        principal,
        changes: Vec::new(),
        audit: Audited::default(),
    })
}

async fn commit(
    state: &AppState,
    writer: Writer<'_>,
    created: Option<serde_json::Value>,
) -> Result<()> {
    let Writer {
        mut tx,
        principal,
        changes,
        audit: audited,
    } = writer;
    let events: Vec<NewEvent> = changes
        .iter()
        .filter(|change| !change.is_logged())
        .map(|change| NewEvent::of_change(change, principal))
        .collect();
    event_log::append(&mut tx, &principal.tenant, &events).await?;
    let entry = audit::for_write(principal, audited, &changes, created);
    if let Some(entry) = &entry {
        audit::repo::insert(&mut tx, std::slice::from_ref(entry)).await?;
    }
    tx.commit().await?;
    if entry.is_some() {
        audit::written();
    }
    published(state, &principal.tenant, changes).await;
    Ok(())
}

/// Runs one write: `body` in the tenant's transaction, then the commit, then the cache and the
/// events. Answers what `body` answered.
pub async fn write<'p, T, F, Fut>(state: &AppState, principal: &'p Principal, body: F) -> Result<T>
where
    F: FnOnce(Writer<'p>) -> Fut,
    Fut: Future<Output = Result<(Writer<'p>, T)>>,
{
    let writer = begin(state, principal).await?;
    let (writer, value) = body(writer).await?;
    commit(state, writer, None).await?;
    Ok(value)
}

/// [`write`] for a create that may carry an `Idempotency-Key`: the key is claimed first (a replay
/// answers the first response and does nothing else) and the response stored with the write.
pub async fn create<'p, T, F, Fut>(
    state: &AppState,
    principal: &'p Principal,
    idempotency: Option<Idempotency<'_>>,
    body: F,
) -> Result<Outcome<T>>
where
    T: Serialize,
    F: FnOnce(Writer<'p>) -> Fut,
    Fut: Future<Output = Result<(Writer<'p>, T)>>,
{
    let mut writer = begin(state, principal).await?;
    if let Some(key) = idempotency
        && let Some(replay) = idempotency::claim(
            &mut writer.tx,
            &principal.tenant,
            principal,
            key.key,
            key.digest,
        )
        .await?
    {
        return Ok(Outcome::Replayed(replay));
    }
    let (mut writer, value) = body(writer).await?;
    let json = to_json(&value)?;
    if let Some(key) = idempotency {
        idempotency::store(&mut writer.tx, &principal.tenant, principal, key.key, &json).await?;
    }
    commit(state, writer, Some(json)).await?;
    Ok(Outcome::Created(value))
}

/// After a commit: every change invalidates the cached reads it affects and is published to the
/// tenant's subscribers (step 6). The only caller besides this module is the grouped panel
/// create, which commits in its batcher.
pub async fn published(state: &AppState, tenant: &TenantId, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    // This instance's streams at once; the others when the publish below reaches them.
    state.events.wake(tenant);
    for change in changes {
        state.cache.committed(tenant, change).await;
    }
}
