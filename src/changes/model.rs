//! Change and notification shapes.

use crate::ids::{PanelId, ViewId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    ColumnAdded,
    ColumnRemoved,
    ColumnModified,
    SourceChanged,
    CohortChanged,
    ViewPublished,
    ViewUnpublished,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ColumnAdded => "column_added",
            Self::ColumnRemoved => "column_removed",
            Self::ColumnModified => "column_modified",
            Self::SourceChanged => "source_changed",
            Self::CohortChanged => "cohort_changed",
            Self::ViewPublished => "view_published",
            Self::ViewUnpublished => "view_unpublished",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    Info,
    Warning,
    Breaking,
}

impl Impact {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Breaking => "breaking",
        }
    }
}

/// A change to record.
#[derive(Debug, Clone)]
pub struct NewChange {
    pub panel_id: PanelId,
    pub change_type: ChangeType,
    pub affected_column: Option<String>,
    pub description: String,
    pub old_values: Option<Value>,
    pub new_values: Option<Value>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct ChangeRow {
    pub id: i64,
    pub panel_id: PanelId,
    pub change_type: String,
    pub affected_column: Option<String>,
    pub description: String,
    pub changed_by: String,
    pub old_values: Option<Value>,
    pub new_values: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PanelChange {
    pub id: i64,
    pub panel_id: PanelId,
    #[schema(value_type = ChangeType)]
    pub change_type: String,
    pub description: String,
    /// Who made the change (the token's subject).
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_column: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub old_values: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub new_values: Option<Value>,
}

impl From<ChangeRow> for PanelChange {
    fn from(row: ChangeRow) -> Self {
        Self {
            id: row.id,
            panel_id: row.panel_id,
            change_type: row.change_type,
            description: row.description,
            changed_by: row.changed_by,
            changed_at: row.created_at,
            affected_column: row.affected_column,
            old_values: row.old_values,
            new_values: row.new_values,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeListResponse {
    pub changes: Vec<PanelChange>,
    pub total: i64,
    pub has_more: bool,
}

/// Query of `GET /changes/panels`. `tenantId`/`userId` sent by older clients are ignored: the
/// tenant always comes from the token.
#[derive(Debug, Deserialize, IntoParams, Validate)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ChangeQuery {
    pub panel_id: Option<PanelId>,
    pub change_type: Option<ChangeType>,
    /// Only changes at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only changes before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1–1000 (default 50).
    #[validate(range(min = 1, max = 1000))]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[validate(range(min = 0))]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub tenant_id: String,
    pub view_id: ViewId,
    pub user_email: String,
    pub impact: String,
    pub message: String,
    pub status: String,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub view_name: String,
    pub panel_id: PanelId,
    pub published_by: Option<String>,
    pub panel_change_id: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    pub id: ViewId,
    pub name: String,
    pub panel_id: PanelId,
    pub published_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewNotification {
    pub id: i64,
    pub view_id: ViewId,
    /// The notified user (their e-mail).
    pub user_id: String,
    pub tenant_id: String,
    pub impact: Impact,
    pub message: String,
    pub is_read: bool,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    pub panel_change_id: Option<i64>,
    pub view: NotificationView,
}

impl From<NotificationRow> for ViewNotification {
    fn from(row: NotificationRow) -> Self {
        Self {
            id: row.id,
            view_id: row.view_id,
            user_id: row.user_email,
            tenant_id: row.tenant_id,
            impact: match row.impact.as_str() {
                "breaking" => Impact::Breaking,
                "warning" => Impact::Warning,
                _ => Impact::Info,
            },
            message: row.message,
            is_read: row.status != "pending",
            created_at: row.created_at,
            read_at: row.acknowledged_at,
            panel_change_id: row.panel_change_id,
            view: NotificationView {
                id: row.view_id,
                name: row.view_name,
                panel_id: row.panel_id,
                published_by: row.published_by.unwrap_or_default(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationListResponse {
    pub notifications: Vec<ViewNotification>,
    pub total: i64,
    pub unread_count: i64,
    pub has_more: bool,
}

#[derive(Debug, Deserialize, IntoParams, Validate)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// `true` or `false`.
    pub is_read: Option<bool>,
    pub notification_type: Option<Impact>,
    pub since: Option<DateTime<Utc>>,
    #[validate(range(min = 1, max = 1000))]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[validate(range(min = 0))]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"notificationIds": [41, 42]}))]
pub struct MarkReadRequest {
    #[validate(length(min = 1, max = 1000))]
    #[schema(min_items = 1, max_items = 1000, example = json!([41, 42]))]
    pub notification_ids: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkReadResponse {
    pub updated: i64,
}
