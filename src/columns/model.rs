//! Column shapes, as the existing client reads them, plus the fields it never had
//! (`columnType`, `dataSourceId`, `panelId`, `resultType`).

use crate::ids::{ColumnId, DataSourceId, PanelId};
use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationError, ValidationErrors};

pub const MAX_NAME: usize = 255;
pub const MAX_SOURCE_FIELD: usize = 1024;
pub const MAX_FORMULA: usize = 4096;
pub const MAX_TAGS: usize = 100;
pub const MAX_TAG: usize = 255;
pub const MAX_PATTERN: usize = 1024;
pub const MAX_OPTIONS: usize = 1000;
pub const MAX_FORMAT: usize = 255;

/// The ten column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Text,
    Number,
    Date,
    Datetime,
    Boolean,
    Select,
    MultiSelect,
    User,
    File,
    Custom,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Boolean => "boolean",
            Self::Select => "select",
            Self::MultiSelect => "multi_select",
            Self::User => "user",
            Self::File => "file",
            Self::Custom => "custom",
        }
    }
}

/// Which half of the list a column belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    Base,
    Calculated,
}

/// Input checks of a column's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ColumnValidation {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub min: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub max: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

/// How a column is shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ColumnDisplay {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub width: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255)]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible: Option<bool>,
    /// Position among the panel's columns; assigned by the server on create and by
    /// `PUT /panels/{id}/columns/order`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub order: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

/// A column's properties. Unknown keys (here, in `validation` and in `display`) are dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Any JSON value of the column's type.
    pub default_value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<ColumnValidation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<ColumnDisplay>,
}

impl ColumnProperties {
    /// Reads stored properties; anything that no longer parses reads as empty rather than
    /// failing the whole response.
    pub fn from_stored(value: Value) -> Self {
        serde_json::from_value(value).unwrap_or_default()
    }

    /// The update rule of the reference: top-level keys replace, `display` merges one level
    /// deeper, `validation` is replaced whole; the result always has a `display`.
    pub fn merged(&self, patch: ColumnProperties) -> Self {
        let mut out = self.clone();
        if patch.required.is_some() {
            out.required = patch.required;
        }
        if patch.unique.is_some() {
            out.unique = patch.unique;
        }
        if patch.default_value.is_some() {
            out.default_value = patch.default_value;
        }
        if patch.validation.is_some() {
            out.validation = patch.validation;
        }
        let mut display = out.display.take().unwrap_or_default();
        if let Some(p) = patch.display {
            display.width = p.width.or(display.width);
            display.format = p.format.or(display.format);
            display.visible = p.visible.or(display.visible);
            display.order = p.order.or(display.order);
            display.locked = p.locked.or(display.locked);
        }
        out.display = Some(display);
        out
    }

    pub fn order(&self) -> Option<u32> {
        self.display.as_ref().and_then(|d| d.order)
    }

    pub fn with_order(mut self, order: u32) -> Self {
        self.display
            .get_or_insert_with(ColumnDisplay::default)
            .order = Some(order);
        self
    }

    fn check(&self, errors: &mut Checks) {
        if let Some(v) = &self.validation {
            if v.pattern
                .as_ref()
                .is_some_and(|p| p.chars().count() > MAX_PATTERN)
            {
                errors.add(
                    "properties.validation.pattern",
                    format!("length must be at most {MAX_PATTERN}"),
                );
            }
            if let Some(options) = &v.options
                && (options.len() > MAX_OPTIONS
                    || options.iter().any(|o| o.chars().count() > MAX_NAME))
            {
                errors.add(
                    "properties.validation.options",
                    format!("at most {MAX_OPTIONS} options of at most {MAX_NAME} characters"),
                );
            }
        }
        if let Some(d) = &self.display
            && d.format
                .as_ref()
                .is_some_and(|f| f.chars().count() > MAX_FORMAT)
        {
            errors.add(
                "properties.display.format",
                format!("length must be at most {MAX_FORMAT}"),
            );
        }
    }
}

/// Collects field problems under their JSON (camelCase) names, for the error envelope.
#[derive(Default)]
pub struct Checks(ValidationErrors);

impl Checks {
    pub fn add(&mut self, field: &'static str, message: impl Into<Cow<'static, str>>) {
        self.0.add(
            field,
            ValidationError::new("invalid").with_message(message.into()),
        );
    }

    fn required<T>(&mut self, field: &'static str, value: &Option<T>) {
        if value.is_none() {
            self.add(field, "is required");
        }
    }

    fn name(&mut self, name: &Option<String>, required: bool) {
        match name {
            None if required => self.add("name", "is required"),
            Some(n) if n.trim().is_empty() && required => self.add("name", "must not be empty"),
            Some(n) if n.trim().chars().count() > MAX_NAME => {
                self.add("name", format!("length must be at most {MAX_NAME}"))
            }
            _ => {}
        }
    }

    fn text(&mut self, field: &'static str, value: &Option<String>, max: usize) {
        if let Some(v) = value {
            if v.trim().is_empty() {
                self.add(field, "must not be empty");
            } else if v.chars().count() > max {
                self.add(field, format!("length must be at most {max}"));
            }
        }
    }

    fn tags(&mut self, tags: &Option<Vec<String>>) {
        if let Some(tags) = tags
            && (tags.len() > MAX_TAGS
                || tags
                    .iter()
                    .any(|t| t.is_empty() || t.chars().count() > MAX_TAG))
        {
            self.add(
                "tags",
                format!("at most {MAX_TAGS} tags of 1 to {MAX_TAG} characters"),
            );
        }
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ColumnRow {
    pub id: ColumnId,
    pub panel_id: PanelId,
    pub kind: String,
    pub name: String,
    #[sqlx(rename = "type")]
    pub column_type: String,
    pub source_field: Option<String>,
    pub data_source_id: Option<DataSourceId>,
    pub formula: Option<String>,
    pub dependencies: Value,
    pub result_type: Option<String>,
    pub properties: Value,
    pub metadata: Option<Value>,
    pub tags: Value,
    pub display_order: i32,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ColumnRow {
    pub fn is_calculated(&self) -> bool {
        self.kind == "calculated"
    }
}

/// A JSON array of strings as stored; anything else reads as empty.
pub(super) fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Only an object is metadata; SQL NULL (or anything else) is omitted.
fn metadata(value: Option<Value>) -> Option<Map<String, Value>> {
    match value {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseColumnResponse {
    pub id: ColumnId,
    #[schema(example = "Email")]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = ColumnType)]
    pub column_type: String,
    #[schema(example = "email")]
    pub source_field: String,
    pub tags: Vec<String>,
    pub properties: ColumnProperties,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Always `base`.
    #[serde(rename = "columnType")]
    pub kind: ColumnKind,
    /// `null` once its data source was deleted.
    pub data_source_id: Option<DataSourceId>,
    pub panel_id: PanelId,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalculatedColumnResponse {
    pub id: ColumnId,
    #[schema(example = "Full name")]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = ColumnType)]
    pub column_type: String,
    #[schema(example = "CONCAT(firstName, ' ', lastName)")]
    pub formula: String,
    /// Names of the panel's columns the formula refers to (derived by the server).
    pub dependencies: Vec<String>,
    pub properties: ColumnProperties,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Vec<String>,
    /// Always `calculated`.
    #[serde(rename = "columnType")]
    pub kind: ColumnKind,
    /// The formula's value type, once known.
    pub result_type: Option<String>,
    pub panel_id: PanelId,
}

/// One column of either kind (what `GET` and `PUT` of a single column answer).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ColumnResponse {
    Base(BaseColumnResponse),
    Calculated(CalculatedColumnResponse),
}

impl From<ColumnRow> for ColumnResponse {
    fn from(row: ColumnRow) -> Self {
        let tags = string_list(&row.tags);
        let properties = ColumnProperties::from_stored(row.properties);
        let metadata = metadata(row.metadata);
        if row.kind == "calculated" {
            Self::Calculated(CalculatedColumnResponse {
                id: row.id,
                name: row.name,
                column_type: row.column_type,
                formula: row.formula.unwrap_or_default(),
                dependencies: string_list(&row.dependencies),
                properties,
                metadata,
                tags,
                kind: ColumnKind::Calculated,
                result_type: row.result_type,
                panel_id: row.panel_id,
            })
        } else {
            Self::Base(BaseColumnResponse {
                id: row.id,
                name: row.name,
                column_type: row.column_type,
                source_field: row.source_field.unwrap_or_default(),
                tags,
                properties,
                metadata,
                kind: ColumnKind::Base,
                data_source_id: row.data_source_id,
                panel_id: row.panel_id,
            })
        }
    }
}

/// `GET /panels/{id}/columns`: each half sorted by display order.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnListResponse {
    pub base_columns: Vec<BaseColumnResponse>,
    pub calculated_columns: Vec<CalculatedColumnResponse>,
}

impl ColumnListResponse {
    /// Splits rows already in display order.
    pub fn from_rows(rows: Vec<ColumnRow>) -> Self {
        let mut out = Self::default();
        for row in rows {
            match ColumnResponse::from(row) {
                ColumnResponse::Base(c) => out.base_columns.push(c),
                ColumnResponse::Calculated(c) => out.calculated_columns.push(c),
            }
        }
        out
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "age", "type": "number", "sourceField": "age", "dataSourceId": 7, "properties": {"display": {"visible": true, "width": 90}}, "tags": ["demographics"]}))]
pub struct CreateBaseColumnRequest {
    // Required (documented with value_type): `Option` only so that every missing field is
    // reported together in one 400 instead of the first one as a deserialisation error.
    #[schema(value_type = String, min_length = 1, max_length = 255, pattern = "\\S", example = "Email")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = ColumnType)]
    pub column_type: Option<ColumnType>,
    #[schema(value_type = String, min_length = 1, max_length = 1024, pattern = "\\S", example = "email")]
    pub source_field: Option<String>,
    /// A data source of this panel.
    #[schema(value_type = i64)]
    pub data_source_id: Option<DataSourceId>,
    #[schema(value_type = ColumnProperties)]
    pub properties: Option<ColumnProperties>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
}

impl Validate for CreateBaseColumnRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checks::default();
        c.name(&self.name, true);
        c.required("type", &self.column_type);
        c.required("sourceField", &self.source_field);
        c.text("sourceField", &self.source_field, MAX_SOURCE_FIELD);
        c.required("dataSourceId", &self.data_source_id);
        c.required("properties", &self.properties);
        if let Some(p) = &self.properties {
            p.check(&mut c);
        }
        c.tags(&self.tags);
        c.finish()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "fullName", "type": "text", "formula": "CONCAT(firstName, ' ', lastName)", "properties": {"display": {"visible": true}}}))]
pub struct CreateCalculatedColumnRequest {
    // Required (documented with value_type): `Option` only so that every missing field is
    // reported together in one 400 instead of the first one as a deserialisation error.
    #[schema(value_type = String, min_length = 1, max_length = 255, pattern = "\\S", example = "Full name")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = ColumnType)]
    pub column_type: Option<ColumnType>,
    #[schema(value_type = String, min_length = 1, max_length = 4096, pattern = "\\S", example = "CONCAT(firstName, ' ', lastName)")]
    pub formula: Option<String>,
    /// Accepted for compatibility and ignored: the server derives dependencies from the formula.
    #[schema(value_type = Option<Vec<String>>)]
    pub dependencies: Option<Value>,
    #[schema(value_type = ColumnProperties)]
    pub properties: Option<ColumnProperties>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
}

impl Validate for CreateCalculatedColumnRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checks::default();
        c.name(&self.name, true);
        c.required("type", &self.column_type);
        c.required("formula", &self.formula);
        c.text("formula", &self.formula, MAX_FORMULA);
        c.required("properties", &self.properties);
        if let Some(p) = &self.properties {
            p.check(&mut c);
        }
        c.tags(&self.tags);
        c.finish()
    }
}

/// `PUT /panels/{id}/columns/{colId}`: every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"properties": {"display": {"width": 120}, "validation": {"min": 0, "max": 130}}, "tags": ["demographics", "clinical"]}))]
pub struct UpdateColumnRequest {
    /// Applied when non-empty.
    #[schema(max_length = 255)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub column_type: Option<ColumnType>,
    /// Merged: top-level keys replace, `display` merges, `validation` is replaced.
    pub properties: Option<ColumnProperties>,
    /// Replaces the stored metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Calculated columns only (ignored for base columns).
    #[schema(max_length = 4096)]
    pub formula: Option<String>,
    /// Ignored: the server derives dependencies from the formula.
    #[schema(value_type = Option<Vec<String>>)]
    pub dependencies: Option<Value>,
    /// Base columns only (ignored for calculated columns).
    #[schema(max_length = 1024)]
    pub source_field: Option<String>,
    /// Replaces the tags (`[]` clears them).
    pub tags: Option<Vec<String>>,
}

impl Validate for UpdateColumnRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checks::default();
        c.name(&self.name, false);
        c.text("formula", &self.formula, MAX_FORMULA);
        c.text("sourceField", &self.source_field, MAX_SOURCE_FIELD);
        if let Some(p) = &self.properties {
            p.check(&mut c);
        }
        c.tags(&self.tags);
        c.finish()
    }
}

/// `PUT /panels/{id}/columns/order`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"columnIds": [14, 12, 13]}))]
pub struct ReorderColumnsRequest {
    /// Every column of the panel, each once, in the new order.
    pub column_ids: Vec<ColumnId>,
}

impl Validate for ReorderColumnsRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

/// Query of the column list (documentation; the handler reads the raw pairs so a key may repeat).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ColumnListParams {
    /// Column ids: `?ids=1`, `?ids=1&ids=2` or `?ids=1,2`.
    pub ids: Option<Vec<String>>,
    /// Columns having ANY of these tags: `?tags=a` or `?tags=a&tags=b`.
    pub tags: Option<Vec<String>>,
}

/// `DELETE /panels/{id}/columns/{colId}` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteColumnParams {
    /// Remove the column's references from views (visible columns, sorts, filters) and delete
    /// it even if views or formulas use it.
    pub force: Option<bool>,
}

/// What the formula analysis knows about a formula.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormulaInfo {
    pub result_type: Option<String>,
    pub dependencies: Vec<String>,
}
