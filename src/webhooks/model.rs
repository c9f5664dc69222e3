//! Webhook shapes: the rows, the requests, and what a client reads (never a secret, except once
//! in the answer of a create or a rotation).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use crate::ids::PanelId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: i64,
    pub panel_id: Option<PanelId>,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub dropped: i64,
    pub created_by: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook as a client reads it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResponse {
    pub id: i64,
    #[schema(example = "https://hooks.example.com/panels")]
    pub url: String,
    /// Event types and families (`view.*`), as `GET /api/events?types=` takes them.
    #[schema(example = json!(["panel.updated", "view.*"]))]
    pub events: Vec<String>,
    /// Only this panel's events; `null`: every event of the organisation.
    pub panel_id: Option<PanelId>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the server disabled it (every attempt failed for `WEBHOOK_DISABLE_AFTER_MS`).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed (`null` after a success).
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Events not queued because the organisation's queue was full
    /// (`WEBHOOK_MAX_QUEUED_PER_TENANT`).
    pub dropped_deliveries: i64,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until then, messages are signed with the previous secret too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookResponse {
    /// `now`: whether the previous secret still signs is a matter of time.
    pub fn of(row: WebhookRow, now: DateTime<Utc>) -> Self {
        Self {
            id: row.id,
            url: row.url,
            events: row.events,
            panel_id: row.panel_id,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at,
            failing_since: row.failing_since,
            last_success_at: row.last_success_at,
            dropped_deliveries: row.dropped,
            secret_rotated_at: row.secret_rotated_at,
            previous_secret_expires_at: row.previous_secret_expires_at.filter(|at| *at > now),
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The answer of a create and of a rotation: the webhook and its new signing secret, shown this
/// once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretResponse {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// `whsec_` and the base64 of 32 random bytes: the HMAC-SHA256 key is those bytes. Shown
    /// once; store it now.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8ZdmK6fVhq0=")]
    pub secret: String,
}

/// Body of create, and of update (which replaces the whole webhook; `enabled` left out keeps
/// its value).
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"url": "https://hooks.example.com/panels", "events": ["panel.updated", "view.*"], "panelId": 3, "description": "Ops dashboard"}))]
pub struct WebhookRequest {
    /// `http` or `https`; its host must not be (or resolve to) a private, loopback, link-local
    /// or reserved address (unless `ALLOW_PRIVATE_SOURCE_HOSTS`). No credentials in it: the
    /// signature authenticates the sender.
    #[validate(length(min = 1, max = 2048))]
    pub url: String,
    /// 1 to 64 types or families (`view.*`).
    #[validate(length(min = 1, max = 64))]
    pub events: Vec<String>,
    /// Only this panel's events (editors of the panel and admins); without it, every event of the
    /// organisation (admins only).
    pub panel_id: Option<PanelId>,
    #[validate(length(max = 1000))]
    pub description: Option<String>,
    /// Update only: `false` stops deliveries, `true` starts them again from the present.
    pub enabled: Option<bool>,
}

/// `GET /webhooks/{id}/deliveries` filters and page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DeliveriesParams {
    /// Page size (1–100, default 20), newest first.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only deliveries in this state.
    pub status: Option<DeliveryStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (at `nextAttemptAt`).
    Pending,
    /// An attempt is in flight.
    Delivering,
    Succeeded,
    /// No attempt left, or the receiver answered a 4xx other than 408 and 429.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivering => "delivering",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub response_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: i64,
    pub attempt: i32,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_code: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptResponse {
    /// 1 for the first attempt.
    pub attempt: i32,
    /// `succeeded` (a 2xx) or `failed`.
    #[schema(example = "failed")]
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// The receiver's HTTP status; `null` when it did not answer.
    pub response_code: Option<i32>,
    /// The first KB of the receiver's answer.
    pub response_body: Option<String>,
    /// Why it failed (`HTTP 500`, `unreachable: …`, `timed out`, …).
    pub error: Option<String>,
}

impl From<AttemptRow> for AttemptResponse {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempt: row.attempt,
            status: row.status,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            response_code: row.response_code,
            response_body: row.response_body,
            error: row.error,
        }
    }
}

/// One event's delivery to a webhook, with every attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryResponse {
    pub id: i64,
    pub webhook_id: i64,
    /// The `webhook-id` header: the event's id, the same for every attempt.
    #[schema(example = "7413-1024")]
    pub event_id: String,
    #[schema(example = "panel.updated")]
    pub event_type: String,
    #[schema(value_type = DeliveryStatus)]
    pub status: String,
    /// When the next attempt is due (a pending delivery).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    /// The last attempt's HTTP status.
    pub response_code: Option<i32>,
    pub last_error: Option<String>,
    /// The body sent: the event as `GET /api/events` sends it.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub attempts: Vec<AttemptResponse>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl DeliveryResponse {
    pub fn of(row: DeliveryRow, attempts: Vec<AttemptResponse>) -> Self {
        Self {
            id: row.id,
            webhook_id: row.webhook_id,
            event_id: row.event_id,
            event_type: row.event_type,
            next_attempt_at: (row.status == "pending").then_some(row.next_attempt_at),
            status: row.status,
            max_attempts: row.max_attempts,
            response_code: row.response_code,
            last_error: row.last_error,
            payload: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
            attempts,
            created_at: row.created_at,
            finished_at: row.finished_at,
        }
    }
}
