//! Row and formula-check shapes, and the column definitions rows are projected through.

use crate::ids::{ColumnId, DataSourceId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::formula::ValueType;

/// A column as the projection needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ColumnDef {
    pub id: ColumnId,
    pub name: String,
    pub kind: String,
    #[sqlx(rename = "type")]
    pub column_type: String,
    pub source_field: Option<String>,
    pub data_source_id: Option<DataSourceId>,
    pub formula: Option<String>,
    pub result_type: Option<String>,
    /// The column's ready typed slot (`n3`, `t1`, …; see `rows::slots`), if it has one.
    #[sqlx(default)]
    pub slot: Option<String>,
}

impl ColumnDef {
    /// The formula language's type of this column's values.
    pub fn value_type(&self) -> ValueType {
        if self.kind == "calculated"
            && let Some(ty) = self
                .result_type
                .as_deref()
                .and_then(|t| serde_json::from_value(Value::String(t.to_owned())).ok())
        {
            return ty;
        }
        crate::formula::value_type_for_column_type(&self.column_type)
    }

    /// The path inside a record: a JSON pointer (`/a/b`) or a dotted path (`a.b`).
    pub fn path(&self) -> Vec<String> {
        field_path(self.source_field.as_deref().unwrap_or_default())
    }
}

/// The path inside a record of a source field: a JSON pointer (`/a/b`) or a dotted path (`a.b`).
pub fn field_path(field: &str) -> Vec<String> {
    if let Some(pointer) = field.strip_prefix('/') {
        pointer
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect()
    } else {
        field.split('.').map(str::to_owned).collect()
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowResponse {
    pub id: i64,
    /// The record's key in its source (`keyField`).
    pub key: String,
    pub data_source_id: DataSourceId,
    /// Column name → value (null when absent, not coercible, or a formula failed for this row).
    #[schema(value_type = Object)]
    pub values: Value,
}

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct RowWarning {
    pub column: String,
    /// How many cells of this page were blank because their value did not fit the column, or
    /// because the column's formula failed for the row.
    pub count: u64,
    pub message: String,
}

/// How `total` is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CountMode {
    /// Every matching row, counted.
    Exact,
    /// The query planner's estimate (from statistics: cheap, approximate); exact when small.
    Estimated,
    /// No count.
    None,
}

/// What `total` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TotalKind {
    Exact,
    Estimated,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowPage {
    pub rows: Vec<RowResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// How many rows match the query (see `count`); null when not counted.
    pub total: Option<u64>,
    pub total_kind: Option<TotalKind>,
    pub warnings: Vec<RowWarning>,
}

pub use crate::views::model::Direction;

/// Where empty values go in a sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Nulls {
    First,
    #[default]
    Last,
}

/// One sort key of a query.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SortRequest {
    /// A column's name.
    #[schema(example = "age")]
    pub column: String,
    /// `asc` (default) or `desc`.
    pub direction: Option<Direction>,
    /// Where empty values go: `last` (default) or `first`.
    pub nulls: Option<Nulls>,
}

/// At most this many sort keys in a query.
pub const MAX_QUERY_SORTS: usize = 16;
/// The longest search text.
pub const MAX_SEARCH: usize = 256;

/// An ad-hoc query of a panel's rows; the panel's cohort rule always applies.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"filter": {"logic": "AND", "conditions": [{"field": "age", "operator": "gte", "value": 65}, {"field": "lastVisit", "operator": "lt", "value": {"relative": "-90d"}}]}, "sort": [{"column": "riskScore", "direction": "desc"}], "columns": ["name", "age", "riskScore"], "limit": 50, "count": "exact"}))]
pub struct RowQueryRequest {
    /// The filter tree (AND-ed with the cohort rule); absent matches every row of the cohort.
    pub filter: Option<crate::filter::FilterGroup>,
    /// Sort keys, first one first; ties are broken by row id.
    #[validate(length(max = 16))]
    pub sort: Option<Vec<SortRequest>>,
    /// The columns whose values each row carries, by name (default: all).
    #[validate(length(max = 1000))]
    pub columns: Option<Vec<String>>,
    /// Case-insensitive substring search over the text columns among `columns`.
    #[validate(length(min = 1, max = 256))]
    pub q: Option<String>,
    /// Page size (1–1000, default 100).
    #[validate(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// `exact`, `estimated` (default on a first page) or `none` (default on later pages).
    pub count: Option<CountMode>,
    /// The IANA time zone relative dates are evaluated in (default `UTC`).
    #[schema(example = "Europe/Amsterdam")]
    pub tz: Option<String>,
}

/// Paging, search, count and time zone of a view's rows.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RowsParams {
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Case-insensitive substring search over the view's visible text columns.
    #[param(min_length = 1, max_length = 256)]
    pub q: Option<String>,
    /// `exact`, `estimated` (default on a first page) or `none` (default on later pages).
    pub count: Option<CountMode>,
    /// The IANA time zone relative dates are evaluated in (default `UTC`).
    pub tz: Option<String>,
}

/// Which rows of a panel to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CohortMode {
    /// The rows that match the panel's cohort rule (the default).
    #[default]
    Rule,
    /// Every row (editors of the panel only).
    All,
}

/// Paging, search, count, time zone and cohort of a panel's rows.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PanelRowsParams {
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Case-insensitive substring search over the panel's text columns.
    #[param(min_length = 1, max_length = 256)]
    pub q: Option<String>,
    /// `exact`, `estimated` (default on a first page) or `none` (default on later pages).
    pub count: Option<CountMode>,
    /// The IANA time zone relative dates are evaluated in (default `UTC`).
    pub tz: Option<String>,
    /// `rule` (default): the rows the cohort rule admits; `all`: every row (editors only).
    #[param(inline)]
    pub cohort: Option<CohortMode>,
}

/// The formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// RFC 4180, a header of the view's column names; cells that a spreadsheet would read as a
    /// formula are prefixed with `'`.
    #[default]
    Csv,
    /// One row object per line, as the rows endpoints answer them.
    Ndjson,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `csv` (default) or `ndjson`.
    #[param(inline)]
    pub format: Option<ExportFormat>,
    /// Case-insensitive substring search over the view's visible text columns.
    #[param(min_length = 1, max_length = 256)]
    pub q: Option<String>,
    /// The IANA time zone relative dates are evaluated in (default `UTC`).
    pub tz: Option<String>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FormulaCheckRequest {
    #[validate(length(min = 1, max = 4096))]
    #[schema(example = "IF(age >= 65, \"senior\", \"adult\")", max_length = 4096)]
    pub formula: String,
    /// The column's name when checking a change to an existing calculated column (so it is not
    /// a dependency of itself).
    #[validate(length(max = 255))]
    pub name: Option<String>,
    /// How many of the panel's rows to evaluate (1–20, default 5).
    #[validate(range(min = 1, max = 20))]
    pub sample_size: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FormulaSample {
    pub row_id: i64,
    pub key: String,
    /// The formula's value for this row: text, number, boolean, a date or datetime as text, or
    /// null when blank.
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Value,
    /// Why the value is blank for this row (division by zero, a date that does not parse...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FormulaCheckResponse {
    pub valid: bool,
    /// text | number | boolean | date | datetime
    pub result_type: String,
    pub dependencies: Vec<String>,
    pub samples: Vec<FormulaSample>,
}
