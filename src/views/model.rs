//! View shapes, as the existing client reads them, and the request bodies of the view endpoints
//! (including the older client's flat filter list).

use crate::ids::{PanelId, ViewId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::filter::FilterGroup;
use crate::page::PageParams;

/// At most this many columns in `visibleColumns`, and this many sorts on a view.
pub const MAX_VISIBLE_COLUMNS: usize = 1000;
pub const MAX_SORTS: usize = 100;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ViewRow {
    pub id: ViewId,
    pub tenant_id: String,
    pub panel_id: PanelId,
    pub name: String,
    pub owner_user_id: String,
    pub owner_email: String,
    pub is_published: bool,
    pub published_at: Option<DateTime<Utc>>,
    pub published_by: Option<String>,
    pub visible_columns: Value,
    pub filters: Value,
    pub metadata: Option<Value>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ViewRow {
    /// The stored filter tree; one stored by an older version that no longer parses reads as
    /// "everything" rather than failing every read of the view.
    pub fn filter_tree(&self) -> FilterGroup {
        serde_json::from_value(self.filters.clone()).unwrap_or_default()
    }

    /// The stored metadata as an object (`NULL` or a non-object reads as absent).
    pub fn metadata_map(&self) -> Option<Map<String, Value>> {
        match &self.metadata {
            Some(Value::Object(map)) => Some(map.clone()),
            _ => None,
        }
    }
}

/// A row of a list page: the view and how many views match the whole query.
#[derive(Debug, sqlx::FromRow)]
pub struct ListedViewRow {
    #[sqlx(flatten)]
    pub view: ViewRow,
    pub total: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SortRow {
    pub id: i64,
    pub view_id: ViewId,
    pub column_name: String,
    pub direction: String,
    pub order: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// One sort of a view: sorts apply in ascending `order`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewSort {
    pub id: i64,
    #[schema(example = "lastName")]
    pub column_name: String,
    pub direction: Direction,
    pub order: i32,
}

impl From<SortRow> for ViewSort {
    fn from(row: SortRow) -> Self {
        Self {
            id: row.id,
            column_name: row.column_name,
            // The table's check constraint admits only 'asc' and 'desc'.
            direction: if row.direction == "desc" {
                Direction::Desc
            } else {
                Direction::Asc
            },
            order: row.order,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewResponse {
    pub id: ViewId,
    pub panel_id: PanelId,
    #[schema(example = "My open cases")]
    pub name: String,
    /// The creator (the token's subject).
    pub owner_user_id: String,
    pub tenant_id: String,
    pub is_published: bool,
    pub published_at: Option<DateTime<Utc>>,
    /// Who published it (the token's subject), while published.
    pub published_by: Option<String>,
    /// Ids of the panel's columns the view shows, as strings, in display order.
    #[schema(example = json!(["12", "15"]))]
    pub visible_columns: Vec<String>,
    /// Absent when the view has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The view's sorts, by `order`.
    pub sort: Vec<ViewSort>,
}

impl ViewResponse {
    pub fn new(row: ViewRow, sorts: Vec<SortRow>) -> Self {
        let metadata = row.metadata_map();
        Self {
            visible_columns: visible_columns(&row.visible_columns),
            id: row.id,
            panel_id: row.panel_id,
            name: row.name,
            owner_user_id: row.owner_user_id,
            tenant_id: row.tenant_id,
            is_published: row.is_published,
            published_at: row.published_at,
            published_by: row.published_by,
            metadata,
            created_at: row.created_at,
            updated_at: row.updated_at,
            sort: sorts.into_iter().map(ViewSort::from).collect(),
        }
    }
}

/// The stored column list as strings; numbers written by older clients read as their text, and
/// anything else is skipped rather than failing the read.
fn visible_columns(stored: &Value) -> Vec<String> {
    stored
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "My open cases", "panelId": 3, "visibleColumns": ["12", "15"], "metadata": {"color": "teal"}}))]
pub struct CreateViewRequest {
    #[validate(length(min = 1, max = 255))]
    #[schema(min_length = 1, max_length = 255, example = "My open cases")]
    pub name: String,
    pub panel_id: PanelId,
    /// Ids of the panel's columns, as strings (numbers are accepted too). Defaults to none.
    #[serde(default)]
    #[validate(length(max = 1000))]
    #[schema(value_type = Vec<String>, max_items = 1000, example = json!(["12", "15"]))]
    pub visible_columns: Vec<Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "My open cases (adults)", "visibleColumns": ["15", "12"]}))]
pub struct UpdateViewRequest {
    /// Applied when non-empty.
    #[validate(length(max = 255))]
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Replaces the list when present (`[]` clears it).
    #[validate(length(max = 1000))]
    #[schema(value_type = Option<Vec<String>>, max_items = 1000)]
    pub visible_columns: Option<Vec<Value>>,
    /// Shallow-merged into the stored metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Query of `GET /views`. `tenantId`/`userId` sent by older clients are ignored: they always come
/// from the token.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ViewListQuery {
    /// Only the views of this panel.
    pub panel_id: Option<PanelId>,
    /// `true`: only published views; `false`: only unpublished ones.
    pub published: Option<bool>,
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ViewListQuery {
    pub fn page_params(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewListResponse {
    pub views: Vec<ViewResponse>,
    /// How many views match the query (all pages).
    pub total: i64,
}

#[derive(Debug, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SortInput {
    /// A column name of the view's panel.
    #[validate(length(min = 1, max = 255))]
    #[schema(example = "lastName")]
    pub column_name: String,
    pub direction: Direction,
    #[validate(range(min = 0))]
    #[schema(minimum = 0)]
    pub order: i32,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"sorts": [{"columnName": "lastName", "direction": "asc", "order": 0}, {"columnName": "age", "direction": "desc", "order": 1}]}))]
pub struct ReplaceSortsRequest {
    /// The new sorts; `[]` removes them all.
    #[validate(length(max = 100), nested)]
    #[schema(max_items = 100)]
    pub sorts: Vec<SortInput>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SortsResponse {
    pub sorts: Vec<ViewSort>,
}

pub use crate::filter::legacy::{FlatFilter, LegacyFilter, LegacyFilters};

/// A view's filters: a filter tree, or the older client's `{"filters": [...]}` list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, try_from = "Value")]
#[schema(example = json!({"logic": "AND", "conditions": [{"field": "age", "operator": "gte", "value": 18}, {"logic": "OR", "conditions": [{"field": "status", "operator": "eq", "value": "open"}, {"field": "status", "operator": "eq", "value": "pending"}]}]}))]
pub enum ReplaceFiltersRequest {
    Legacy(LegacyFilters),
    Tree(FilterGroup),
}

impl TryFrom<Value> for ReplaceFiltersRequest {
    type Error = String;

    /// Chooses the shape by the `filters` key, so that a malformed flat list is reported as such
    /// instead of being read as an empty tree.
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        if value.get("filters").is_some() {
            serde_json::from_value(value)
                .map(Self::Legacy)
                .map_err(|e| format!("filters: {e}"))
        } else if value.is_object() {
            serde_json::from_value(value)
                .map(Self::Tree)
                .map_err(|e| e.to_string())
        } else {
            Err("expected an object with `conditions` and `logic`, or with `filters`".to_owned())
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiltersResponse {
    /// Every condition of the tree, flattened (for the older client).
    pub filters: Vec<FlatFilter>,
    /// The filter tree itself.
    pub filter_tree: FilterGroup,
}
