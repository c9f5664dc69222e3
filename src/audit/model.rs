//! The shapes of the audit API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Who acted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorResponse {
    /// `user`, `apiKey` or `system` (the sync worker, the scheduler).
    #[serde(rename = "type")]
    #[schema(example = "user")]
    pub kind: String,
    #[schema(example = "7")]
    pub id: String,
    #[schema(example = "ada@example.com")]
    pub email: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryResponse {
    pub id: i64,
    /// Its place in the organisation's chain; null for a moment after the commit, until the
    /// entry is sealed.
    pub seq: Option<i64>,
    pub at: DateTime<Utc>,
    pub actor: ActorResponse,
    #[schema(example = "view.update")]
    pub action: String,
    #[schema(example = "PUT")]
    pub method: Option<String>,
    /// The matched route pattern.
    #[schema(example = "/api/views/{id}")]
    pub route: Option<String>,
    pub status: Option<i32>,
    #[schema(example = "view")]
    pub entity_type: Option<String>,
    #[schema(example = "12")]
    pub entity_id: Option<String>,
    pub panel_id: Option<i64>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The fields that changed, `{"field": {"from": …, "to": …}}`; secrets read `[FILTERED]`,
    /// values are cut at 2,000 characters.
    #[schema(value_type = Option<Object>, example = json!({"name": {"from": "Ward A", "to": "Ward B"}}))]
    pub changes: Option<Value>,
    /// The previous entry's hash (hex), none for the first.
    pub prev_hash: Option<String>,
    /// SHA-256 of `prevHash` and this entry's fields (hex); null until sealed.
    pub hash: Option<String>,
}

/// A page of entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditEntryResponse>,
    /// Pass as `cursor` for the next (older) page; none at the end.
    pub next_cursor: Option<String>,
}

/// What to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AuditParams {
    /// An actor's id (a user id, an API key's id, `system:sync`).
    pub actor: Option<String>,
    /// An action (`view.update`), or a family (`view.*`).
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub panel_id: Option<i64>,
    /// Entries at or after this moment (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Entries before this moment (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// What an export takes: the list's filters, every matching entry.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AuditExportParams {
    /// `ndjson` (the only format).
    pub format: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub panel_id: Option<i64>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// The chain's verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether every entry checked is the one written.
    pub valid: bool,
    /// Entries checked (up to and including the broken one).
    pub checked: i64,
    /// The first entry that breaks the chain.
    pub first_broken: Option<BrokenEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokenEntry {
    pub seq: i64,
    /// None when the entry is missing.
    pub id: Option<i64>,
    pub at: Option<DateTime<Utc>>,
    #[schema(example = "the entry was changed after it was written")]
    pub reason: String,
}
