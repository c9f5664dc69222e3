//! Row and formula-check shapes, and the column definitions rows are projected through.

use crate::ids::{ColumnId, DataSourceId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
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
        let field = self.source_field.as_deref().unwrap_or_default();
        if let Some(pointer) = field.strip_prefix('/') {
            pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            field.split('.').map(str::to_owned).collect()
        }
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
    /// How many cells of this page were null because their value did not fit the column.
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowPage {
    pub rows: Vec<RowResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub warnings: Vec<RowWarning>,
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
