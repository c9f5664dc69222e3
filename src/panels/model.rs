//! Panel shapes, as the existing client reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use validator::Validate;

use crate::filter::FilterGroup;
use crate::ids::PanelId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PanelRow {
    pub id: PanelId,
    pub tenant_id: String,
    pub user_id: String,
    pub name: String,
    pub description: Option<String>,
    pub cohort_rule: Value,
    pub metadata: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PanelRow {
    /// The cohort rule; a rule stored by an older version that no longer parses reads as
    /// "every row".
    pub fn cohort(&self) -> FilterGroup {
        serde_json::from_value(self.cohort_rule.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PanelResponse {
    pub id: PanelId,
    #[schema(example = "Diabetes follow-up")]
    pub name: String,
    pub description: Option<String>,
    pub tenant_id: String,
    /// The creator (the token's subject).
    pub user_id: String,
    pub cohort_rule: FilterGroup,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<PanelRow> for PanelResponse {
    fn from(row: PanelRow) -> Self {
        let cohort_rule = row.cohort();
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            tenant_id: row.tenant_id,
            user_id: row.user_id,
            cohort_rule,
            created_at: row.created_at,
            updated_at: row.updated_at,
            metadata: match row.metadata {
                Value::Object(map) => Value::Object(map),
                _ => Value::Object(Map::new()),
            },
        }
    }
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "Diabetes follow-up", "description": "Patients due for a HbA1c check", "metadata": {"team": "endocrinology"}, "cohortRule": {"logic": "AND", "conditions": [{"field": "age", "operator": "gte", "value": 18}]}}))]
pub struct CreatePanelRequest {
    /// Defaults to "New Panel".
    #[validate(length(max = 255))]
    #[schema(max_length = 255, example = "Diabetes follow-up")]
    pub name: Option<String>,
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub cohort_rule: Option<FilterGroup>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "Diabetes follow-up (adults)", "metadata": {"reviewed": true}}))]
pub struct UpdatePanelRequest {
    /// Applied when non-empty.
    #[validate(length(max = 255))]
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Applied whenever present (`null` clears it).
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    #[serde(default, deserialize_with = "crate::panels::model::present")]
    pub description: Option<Option<String>>,
    /// Shallow-merged into the stored metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub cohort_rule: Option<FilterGroup>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
