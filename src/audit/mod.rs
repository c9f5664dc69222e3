//! The audit log: who did what (docs/audit.md).
//!
//! * **Mutations** write their entry in their own transaction: the write path inserts it just
//!   before the commit ([`crate::write`]), the grouped panel create in its statement, the
//!   identity flows (login, registration, refresh, logout) in theirs. No change without its entry,
//!   no entry without its change.
//! * **Everything else** (a refused write, an export, a failed login) goes through the bounded
//!   [`buffer::AuditBuffer`], written in batches, flushed at shutdown; when it is full the entry is
//!   dropped, counted (`panels_audit_dropped_total`) and logged, and the request never waits.
//! * The request's part of an entry (method, matched route, request id, client address, user
//!   agent) comes from [`RequestAudit`], a task-local the router sets for every request that may
//!   be audited (a method other than GET/HEAD/OPTIONS, or an export); the tenant and actor come
//!   from the verified principal, or from an identity flow once it knows them.
//! * Entries carry a diff of what changed, never a body: secrets are `[FILTERED]`
//!   ([`redact`]), values cut at [`MAX_VALUE_CHARS`].
//! * Each tenant's entries form a hash chain, sealed by the workers just after the commit
//!   (`audit_seal`, migration 20261205000400); `GET /api/audit/verify` recomputes it.

pub mod buffer;
pub mod model;
pub mod repo;
pub mod retention;
pub mod routes;
pub mod service;

use std::sync::{Arc, Mutex};

use axum::http::Method;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::{Credential, Principal, TenantId};
use crate::cache::Change;

/// Values longer than this (a string's characters, or another value's JSON) are cut.
pub const MAX_VALUE_CHARS: usize = 2000;
/// What a secret reads as in an entry.
pub const FILTERED: &str = "[FILTERED]";

tokio::task_local! {
    static REQUEST: Arc<RequestAudit>;
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `user`, `apiKey` or `system`.
    pub kind: &'static str,
    pub id: String,
    pub email: Option<String>,
}

impl Actor {
    pub fn of(principal: &Principal) -> Self {
        let email = (!principal.email.is_empty()).then(|| principal.email.clone());
        match &principal.credential {
            Credential::ApiKey { id, .. } => Self {
                kind: "apiKey",
                id: id.to_string(),
                email,
            },
            Credential::Jwt if principal.user_id.starts_with("system:") => Self {
                kind: "system",
                id: principal.user_id.clone(),
                email: None,
            },
            Credential::Jwt => Self {
                kind: "user",
                id: principal.user_id.clone(),
                email,
            },
        }
    }

    pub fn user(id: impl ToString, email: &str) -> Self {
        Self {
            kind: "user",
            id: id.to_string(),
            email: (!email.is_empty()).then(|| email.to_owned()),
        }
    }
}

/// An entry to write, as `audit_entry` takes it (the chain's fields are the database's).
#[derive(Debug, Clone, Serialize)]
pub struct NewEntry {
    pub tenant_id: String,
    pub actor_type: &'static str,
    pub actor_id: String,
    pub actor_email: Option<String>,
    pub action: String,
    pub method: Option<String>,
    pub route: Option<String>,
    pub status: Option<i32>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub panel_id: Option<i64>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub changes: Option<Value>,
}

impl NewEntry {
    /// An entry of `tenant` by `actor`, with the current request's method, route, request id,
    /// client address and user agent when there is one.
    pub fn new(tenant: &TenantId, actor: &Actor, action: &str) -> Self {
        let mut entry = Self {
            tenant_id: tenant.as_str().to_owned(),
            actor_type: actor.kind,
            actor_id: actor.id.clone(),
            actor_email: actor.email.clone(),
            action: action.to_owned(),
            method: None,
            route: None,
            status: None,
            entity_type: None,
            entity_id: None,
            panel_id: None,
            request_id: None,
            ip: None,
            user_agent: None,
            changes: None,
        };
        if let Some(request) = current() {
            entry.method = Some(request.method.as_str().to_owned());
            entry.route = request.route.clone();
            entry.request_id = Some(request.request_id.clone());
            entry.ip = Some(request.ip.clone());
            entry.user_agent = request.user_agent.clone();
            let (entity_type, entity_id, panel_id) = request.entity();
            entry.entity_type = entity_type;
            entry.entity_id = entity_id;
            entry.panel_id = panel_id;
        }
        entry
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(i32::from(status));
        self
    }

    pub fn entity(mut self, kind: &str, id: impl ToString) -> Self {
        self.entity_type = Some(kind.to_owned());
        self.entity_id = Some(id.to_string());
        self
    }

    pub fn changes(mut self, changes: Option<Value>) -> Self {
        self.changes = changes;
        self
    }
}

/// What a write says about itself beyond what the route and its changes tell.
#[derive(Debug, Default)]
pub struct Audited {
    pub action: Option<String>,
    pub entity: Option<(String, String)>,
    pub panel_id: Option<i64>,
    pub changes: Option<Value>,
}

/// The part of an entry the request gives, set for the request's task by the router.
#[derive(Debug)]
pub struct RequestAudit {
    pub method: Method,
    /// The matched pattern (`/api/panels/{id}`), none for an unknown route.
    pub route: Option<String>,
    pub path: String,
    pub request_id: String,
    pub ip: String,
    pub user_agent: Option<String>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    tenant: Option<TenantId>,
    actor: Option<Actor>,
    action: Option<&'static str>,
    written: bool,
}

impl RequestAudit {
    pub fn new(
        method: Method,
        route: Option<String>,
        path: String,
        request_id: String,
        ip: String,
        user_agent: Option<String>,
    ) -> Self {
        Self {
            method,
            route,
            path,
            request_id,
            ip,
            user_agent: user_agent.map(|ua| truncate(&ua)),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Whether a request is audited at all: every write (a method other than GET, HEAD and
    /// OPTIONS) but the POSTs that only compute an answer, and every export.
    pub fn wanted(method: &Method, route: Option<&str>) -> bool {
        let Some(route) = route else {
            return false;
        };
        match *method {
            Method::GET => route.ends_with("/export"),
            Method::HEAD | Method::OPTIONS => false,
            _ => action_of(method, route).is_some(),
        }
    }

    /// The route's action (`panel.update`), or the one a flow named.
    fn action(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(action) = seen.action {
            return Some(action.to_owned());
        }
        drop(seen);
        action_of(&self.method, self.route.as_deref()?).map(|(action, _)| action.to_owned())
    }

    /// The entity the path names (`("panel", "42", Some(42))` for `/api/panels/42/columns`).
    fn entity(&self) -> (Option<String>, Option<String>, Option<i64>) {
        let Some(route) = self.route.as_deref() else {
            return (None, None, None);
        };
        let params = path_params(route, &self.path);
        let panel_id = params
            .iter()
            .find(|(name, _)| *name == "panels")
            .and_then(|(_, value)| value.parse().ok());
        let Some((_, entity_type)) = action_of(&self.method, route) else {
            return (None, None, panel_id);
        };
        let entity_id = params
            .iter()
            .rev()
            .find(|(collection, _)| singular(collection) == entity_type)
            .map(|(_, value)| (*value).to_owned());
        (Some(entity_type.to_owned()), entity_id, panel_id)
    }
}

/// Runs `f` with `request` as the task's audited request.
pub async fn scope<F: Future>(request: Arc<RequestAudit>, f: F) -> F::Output {
    REQUEST.scope(request, f).await
}

/// Whether the task is serving an audited request.
pub fn in_request() -> bool {
    REQUEST.try_with(|_| ()).is_ok()
}

fn current() -> Option<Arc<RequestAudit>> {
    REQUEST.try_with(Arc::clone).ok()
}

/// The request acts as `principal` (called by its extractor).
pub fn note_principal(principal: &Principal) {
    note(&principal.tenant, Actor::of(principal), None);
}

/// An identity flow found whom the request is about, and what it did (`auth.login_failed`).
pub fn note(tenant: &TenantId, actor: Actor, action: Option<&'static str>) {
    let _ = REQUEST.try_with(|request| {
        let mut seen = request.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.tenant = Some(tenant.clone());
        seen.actor = Some(actor);
        if action.is_some() {
            seen.action = action;
        }
    });
}

/// The request's entry was committed with its change: nothing is left to record for it.
pub fn written() {
    let _ = REQUEST.try_with(|request| {
        request
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .written = true;
    });
}

/// After the response: the entry of a request whose write did not record one (refused, an export,
/// a failed login), when its tenant is known; none when the write committed its own.
pub fn after(request: &RequestAudit, status: u16) -> Option<NewEntry> {
    let seen = request.seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.written {
        return None;
    }
    let (Some(tenant), Some(actor)) = (seen.tenant.clone(), seen.actor.clone()) else {
        if status < 500 {
            tracing::debug!(
                status,
                "an audited request without a tenant is not recorded"
            );
        }
        return None;
    };
    drop(seen);
    let action = request.action()?;
    let (entity_type, entity_id, panel_id) = request.entity();
    Some(NewEntry {
        tenant_id: tenant.as_str().to_owned(),
        actor_type: actor.kind,
        actor_id: actor.id,
        actor_email: actor.email,
        action,
        method: Some(request.method.as_str().to_owned()),
        route: request.route.clone(),
        status: Some(i32::from(status)),
        entity_type,
        entity_id,
        panel_id,
        request_id: Some(request.request_id.clone()),
        ip: Some(request.ip.clone()),
        user_agent: request.user_agent.clone(),
        changes: None,
    })
}

/// The entry a write commits with: what it said of itself, else what its route and its first
/// change tell. None for a write outside a request that named no action (the system's routine
/// writes: a sync's start, a scheduled membership refresh).
pub fn for_write(
    principal: &Principal,
    audited: Audited,
    changes: &[Change],
    created: Option<Value>,
) -> Option<NewEntry> {
    let request = current();
    let action = audited
        .action
        .clone()
        .or_else(|| request.as_ref().and_then(|r| r.action()))?;
    // The system writing on behalf of a request (a sync's end inside an upload) is the caller's
    // doing.
    let actor = match Actor::of(principal) {
        system if system.kind == "system" => request
            .as_ref()
            .and_then(|r| {
                r.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .actor
                    .clone()
            })
            .unwrap_or(system),
        actor => actor,
    };
    let mut entry = NewEntry::new(&principal.tenant, &actor, &action);
    if let Some(request) = &request {
        entry.status = Some(i32::from(success_status(request, created.is_some())));
    }
    if let Some(change) = changes.first() {
        entry.panel_id = entry.panel_id.or(Some(change.panel_id().0));
        if entry.entity_id.is_none()
            && let Some((kind, _)) = change.event().split_once('.')
        {
            let id = change
                .extra()
                .get(&format!("{kind}Id"))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .or_else(|| (kind == "panel").then(|| change.panel_id().to_string()));
            if let Some(id) = id {
                entry.entity_type = Some(kind.to_owned());
                entry.entity_id = Some(id);
            }
        }
    }
    if let Some((kind, id)) = audited.entity {
        entry.entity_type = Some(kind);
        entry.entity_id = Some(id);
    }
    if audited.panel_id.is_some() {
        entry.panel_id = audited.panel_id;
    }
    if entry.entity_id.is_none()
        && let Some(Value::Object(created)) = &created
        && let Some(id) = created.get("id")
    {
        entry.entity_id = Some(match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    entry.changes = match (audited.changes, created) {
        (Some(changes), _) => Some(changes),
        (None, Some(created)) => created_fields(&created),
        (None, None) => None,
    };
    Some(entry)
}

/// The status a committed write answers: its route's (held to the OpenAPI document by a test).
fn success_status(request: &RequestAudit, created: bool) -> u16 {
    request
        .route
        .as_deref()
        .and_then(|route| route_of(&request.method, route))
        .map(|(_, _, _, _, status)| *status)
        .unwrap_or(if created { 201 } else { 200 })
}

/// The fields of a created thing as a diff from nothing: `{"name": {"to": "Ward A"}, …}`.
pub fn created_fields(created: &Value) -> Option<Value> {
    diff(&Value::Object(Map::new()), created)
}

/// The fields that differ between `before` and `after` (objects), `{"field": {"from", "to"}}`,
/// with secrets filtered and long values cut; None when nothing differs. Bookkeeping fields
/// (`updatedAt`, `createdAt`, `version`) are left out.
pub fn diff(before: &Value, after: &Value) -> Option<Value> {
    let empty = Map::new();
    let before_map = before.as_object().unwrap_or(&empty);
    let after_map = after.as_object().unwrap_or(&empty);
    let mut out = Map::new();
    let keys = before_map
        .keys()
        .chain(after_map.keys().filter(|k| !before_map.contains_key(*k)));
    for key in keys {
        if matches!(key.as_str(), "updatedAt" | "createdAt" | "version" | "id") {
            continue;
        }
        let (from, to) = (before_map.get(key), after_map.get(key));
        if from == to {
            continue;
        }
        let mut field = Map::new();
        if let Some(from) = from {
            field.insert("from".to_owned(), redact_field(key, from));
        }
        if let Some(to) = to {
            field.insert("to".to_owned(), redact_field(key, to));
        }
        out.insert(key.clone(), Value::Object(field));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn redact_field(key: &str, value: &Value) -> Value {
    if is_secret_key(key) && !value.is_null() {
        return Value::String(FILTERED.to_owned());
    }
    cut(redact(value.clone()))
}

/// Whether a key's value is a secret: what data sources treat as one (`connectionString`,
/// password, secret, token, apiKey in any case or separator), and the credentials of HTTP
/// (`authorization`, `cookie`, `key`, a signature, a hash).
pub fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    crate::datasources::crypto::is_secret_name(key)
        || matches!(
            folded.as_str(),
            "key" | "authorization" | "cookie" | "setcookie" | "signature" | "hash" | "credentials"
        )
        || folded.ends_with("hash")
        || folded.ends_with("key") && folded != "keyfield"
}

/// `value` with every secret (by its key, every value of a `headers` object, the password and
/// credential parameters of a URL, anything already masked) replaced by [`FILTERED`].
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, child)| {
                    let child = if (is_secret_key(&key) || key.eq_ignore_ascii_case("headers"))
                        && !child.is_null()
                    {
                        if key.eq_ignore_ascii_case("headers")
                            && let Value::Object(headers) = child
                        {
                            Value::Object(
                                headers
                                    .into_iter()
                                    .map(|(name, _)| (name, Value::String(FILTERED.to_owned())))
                                    .collect(),
                            )
                        } else {
                            Value::String(FILTERED.to_owned())
                        }
                    } else {
                        redact(child)
                    };
                    (key, child)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(text) if text == crate::datasources::crypto::MASK => {
            Value::String(FILTERED.to_owned())
        }
        Value::String(text) if text.contains("://") => {
            match crate::datasources::crypto::split_url(&text) {
                Some((masked, secrets)) if !secrets.is_empty() => {
                    Value::String(masked.replace(crate::datasources::crypto::MASK, FILTERED))
                }
                _ => Value::String(text),
            }
        }
        other => other,
    }
}

/// A value cut to [`MAX_VALUE_CHARS`]: a long string keeps its start and says how long it was; a
/// large object or array becomes the start of its JSON.
fn cut(value: Value) -> Value {
    match value {
        Value::String(text) if text.chars().count() > MAX_VALUE_CHARS => {
            Value::String(truncate(&text))
        }
        Value::Object(_) | Value::Array(_) => {
            let text = value.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                Value::String(truncate(&text))
            } else {
                value
            }
        }
        other => other,
    }
}

fn truncate(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_VALUE_CHARS {
        return text.to_owned();
    }
    let kept: String = text.chars().take(MAX_VALUE_CHARS).collect();
    format!("{kept}… ({count} characters)")
}

/// Each route that changes something: its action, the kind of entity it acts on, and the status
/// it answers when the write commits (the entry is written before the response exists). A route not
/// here is not a mutation (a dry run, a query, a stream ticket) and writes no entry; the test
/// below holds every mutating route of the OpenAPI document to this table.
const ACTIONS: &[(&str, &str, &str, &str, u16)] = &[
    (
        "POST",
        "/acls/{resourceType}/{resourceId}",
        "acl.grant",
        "acl",
        201,
    ),
    (
        "PUT",
        "/acls/{resourceType}/{resourceId}/{userEmail}",
        "acl.update",
        "acl",
        200,
    ),
    (
        "DELETE",
        "/acls/{resourceType}/{resourceId}/{userEmail}",
        "acl.revoke",
        "acl",
        204,
    ),
    (
        "POST",
        "/acls/{resourceType}/{resourceId}/share-public",
        "acl.sharePublic",
        "acl",
        200,
    ),
    ("POST", "/api-keys", "apiKey.create", "apiKey", 201),
    ("DELETE", "/api-keys/{id}", "apiKey.revoke", "apiKey", 204),
    (
        "POST",
        "/auth/invitations",
        "invitation.create",
        "invitation",
        201,
    ),
    ("POST", "/auth/login", "auth.login", "user", 200),
    ("POST", "/auth/logout", "auth.logout", "user", 204),
    ("POST", "/auth/refresh", "auth.refresh", "user", 200),
    ("POST", "/auth/register", "auth.register", "user", 201),
    ("POST", "/panels", "panel.create", "panel", 201),
    ("PUT", "/panels/{id}", "panel.update", "panel", 200),
    ("DELETE", "/panels/{id}", "panel.delete", "panel", 204),
    (
        "POST",
        "/panels/{id}/columns/base",
        "column.create",
        "column",
        201,
    ),
    (
        "POST",
        "/panels/{id}/columns/calculated",
        "column.create",
        "column",
        201,
    ),
    (
        "PUT",
        "/panels/{id}/columns/order",
        "column.reorder",
        "panel",
        200,
    ),
    (
        "PUT",
        "/panels/{id}/columns/{colId}",
        "column.update",
        "column",
        200,
    ),
    (
        "DELETE",
        "/panels/{id}/columns/{colId}",
        "column.delete",
        "column",
        204,
    ),
    (
        "POST",
        "/panels/{id}/datasources",
        "datasource.create",
        "datasource",
        201,
    ),
    (
        "PUT",
        "/panels/{id}/datasources/{dsId}",
        "datasource.update",
        "datasource",
        200,
    ),
    (
        "DELETE",
        "/panels/{id}/datasources/{dsId}",
        "datasource.delete",
        "datasource",
        204,
    ),
    (
        "POST",
        "/panels/{id}/datasources/{dsId}/records",
        "datasource.push",
        "datasource",
        200,
    ),
    (
        "POST",
        "/panels/{id}/datasources/{dsId}/sync",
        "datasource.sync",
        "datasource",
        200,
    ),
    (
        "POST",
        "/panels/{id}/datasources/{dsId}/upload",
        "datasource.upload",
        "datasource",
        200,
    ),
    (
        "POST",
        "/panels/{id}/datasources/{dsId}/runs/{runId}/cancel",
        "job.cancel",
        "job",
        200,
    ),
    ("POST", "/jobs/{id}/retry", "job.retry", "job", 200),
    ("DELETE", "/jobs/{id}", "job.discard", "job", 204),
    (
        "PUT",
        "/notifications/views/mark-read",
        "notification.markRead",
        "notification",
        200,
    ),
    ("POST", "/views", "view.create", "view", 201),
    ("PUT", "/views/{id}", "view.update", "view", 200),
    ("DELETE", "/views/{id}", "view.delete", "view", 204),
    (
        "PUT",
        "/views/{id}/filters",
        "view.updateFilters",
        "view",
        200,
    ),
    ("PUT", "/views/{id}/sorts", "view.updateSorts", "view", 200),
    ("POST", "/views/{id}/publish", "view.publish", "view", 200),
    (
        "POST",
        "/views/{id}/unpublish",
        "view.unpublish",
        "view",
        200,
    ),
    ("GET", "/views/{id}/export", "view.export", "view", 200),
    ("GET", "/audit/export", "audit.export", "audit", 200),
    ("POST", "/webhooks", "webhook.create", "webhook", 201),
    ("PUT", "/webhooks/{id}", "webhook.update", "webhook", 200),
    ("DELETE", "/webhooks/{id}", "webhook.delete", "webhook", 204),
    (
        "POST",
        "/webhooks/{id}/rotate-secret",
        "webhook.rotateSecret",
        "webhook",
        200,
    ),
    (
        "POST",
        "/webhooks/{id}/test",
        "webhook.test",
        "webhook",
        202,
    ),
    (
        "POST",
        "/webhooks/{id}/deliveries/{deliveryId}/retry",
        "webhook.retryDelivery",
        "webhook",
        202,
    ),
];

/// POSTs that change nothing: not audited.
const NOT_MUTATIONS: &[&str] = &[
    "/panels/{id}/formulas/check",
    "/panels/{id}/rows/query",
    "/events/tickets",
];

/// The action and entity type of a route (with or without its `/api` prefix).
pub fn action_of(method: &Method, route: &str) -> Option<(&'static str, &'static str)> {
    route_of(method, route).map(|(_, _, action, kind, _)| (*action, *kind))
}

fn route_of(
    method: &Method,
    route: &str,
) -> Option<&'static (&'static str, &'static str, &'static str, &'static str, u16)> {
    let route = unprefixed(route);
    ACTIONS
        .iter()
        .find(|(m, r, _, _, _)| *m == method.as_str() && *r == route)
}

/// Whether a route is a known non-mutating POST.
pub fn is_read_only_post(route: &str) -> bool {
    NOT_MUTATIONS.contains(&unprefixed(route))
}

/// A route or path without its `/api` prefix (`/api-keys` has none).
fn unprefixed(route: &str) -> &str {
    match route.strip_prefix("/api") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => route,
    }
}

/// The path's parameters with the collection each follows: `/panels/{id}/columns/{colId}` and
/// `/panels/4/columns/9` → `[("panels", "4"), ("columns", "9")]`.
fn path_params<'a>(route: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    let route = unprefixed(route);
    let path = unprefixed(path);
    let mut out = Vec::new();
    let mut previous = "";
    for (pattern, value) in route.split('/').zip(path.split('/')) {
        if pattern.starts_with('{') {
            out.push((previous, value));
        } else {
            previous = pattern;
        }
    }
    out
}

/// `panels` → `panel`, `api-keys` → `apiKey`, `datasources` → `datasource`.
fn singular(collection: &str) -> String {
    let one = collection.strip_suffix('s').unwrap_or(collection);
    let mut out = String::new();
    let mut upper = false;
    for c in one.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_mutating_route_has_an_action() {
        let doc = crate::router::openapi();
        let mut missing = Vec::new();
        for (path, item) in doc.paths.paths {
            let route = unprefixed(&path).to_owned();
            let ops = [
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (method, present) in ops {
                if !present || (method == "POST" && is_read_only_post(&route)) {
                    continue;
                }
                let op = match method {
                    "POST" => item.post.as_ref(),
                    "PUT" => item.put.as_ref(),
                    "PATCH" => item.patch.as_ref(),
                    _ => item.delete.as_ref(),
                }
                .unwrap();
                let documented = op
                    .responses
                    .responses
                    .keys()
                    .find(|code| code.starts_with('2'))
                    .cloned()
                    .unwrap_or_default();
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                match route_of(&method, &route) {
                    None => missing.push(format!("{method} {route}")),
                    Some((_, _, _, _, status)) if status.to_string() != documented => missing.push(
                        format!("{method} {route}: {status}, documented {documented}"),
                    ),
                    Some(_) => {}
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes without an audit action, or with another status: {missing:?}"
        );
    }

    #[test]
    fn entities_come_from_the_path() {
        let request = RequestAudit::new(
            Method::PUT,
            Some("/api/panels/{id}/columns/{colId}".into()),
            "/api/panels/4/columns/9".into(),
            "r".into(),
            "1.2.3.4".into(),
            None,
        );
        assert_eq!(
            request.entity(),
            (Some("column".into()), Some("9".into()), Some(4))
        );
        let request = RequestAudit::new(
            Method::DELETE,
            Some("/api-keys/{id}".into()),
            "/api-keys/12".into(),
            "r".into(),
            "1.2.3.4".into(),
            None,
        );
        assert_eq!(
            request.entity(),
            (Some("apiKey".into()), Some("12".into()), None)
        );
    }

    #[test]
    fn diffs_filter_secrets_and_cut_long_values() {
        let before = json!({"name": "a", "config": {"connectionString": "postgres://u:pw@h/db", "query": "x"}, "version": 1});
        let after = json!({"name": "b", "config": {"connectionString": "postgres://u:pw2@h/db", "query": "x"}, "version": 2, "password": "hunter2", "note": "n".repeat(3000)});
        let d = diff(&before, &after).unwrap();
        let text = d.to_string();
        assert!(!text.contains("pw"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(d["name"], json!({"from": "a", "to": "b"}));
        assert_eq!(d["password"], json!({"to": FILTERED}));
        assert!(d.get("version").is_none());
        assert!(
            d["note"]["to"]
                .as_str()
                .unwrap()
                .ends_with("(3000 characters)")
        );
        let headers = redact(
            json!({"headers": {"X-Custom": "v"}, "url": "https://x.test/a?token=abc&page=1"}),
        );
        assert_eq!(headers["headers"]["X-Custom"], FILTERED);
        assert!(!headers["url"].as_str().unwrap().contains("abc"));
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": 1})), None);
    }

    #[test]
    fn secret_keys() {
        for key in [
            "password",
            "apiKey",
            "X-API-KEY",
            "key",
            "secret",
            "previousSecret",
            "passwordHash",
            "Authorization",
            "refreshToken",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["name", "keyField", "cohortRule", "url", "query"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
