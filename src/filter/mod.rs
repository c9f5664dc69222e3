//! The typed filter tree shared by cohort rules, view filters and ad-hoc row queries: conditions
//! on a panel's columns combined with AND/OR, nested to a fixed depth. Pure, no I/O: parsing and
//! validation here; [`resolve`] turns a tree into typed tests for one reader at one moment
//! (relative dates, `$CURRENT_USER`, the time zone); [`eval`] decides a row in process (the
//! reference the database's answer is tested against); [`sql`] compiles it for the rows query.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::FieldError;

pub mod eval;
pub mod legacy;
pub mod resolve;
pub mod sql;

pub use resolve::{Cmp, Operand, Resolved, ResolvedCondition, Resolver, Test};

/// Groups may nest this deep (the root group is depth 1).
pub const MAX_DEPTH: usize = 4;
/// At most this many conditions in a whole tree.
pub const MAX_CONDITIONS: usize = 200;
/// At most this many values in an `in` / `not_in` list.
pub const MAX_LIST: usize = 1000;
/// The value that stands for the reader's e-mail address.
pub const CURRENT_USER: &str = "$CURRENT_USER";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub enum Logic {
    #[default]
    #[serde(alias = "and")]
    AND,
    #[serde(alias = "or")]
    OR,
}

/// What a condition tests. Text matching is case-insensitive; a blank cell fails every test but
/// `neq`, `not_contains`, `not_in` and `is_empty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Eq,
    #[serde(alias = "ne")]
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    /// Both ends included: `"value": [low, high]`.
    Between,
    /// Text: a substring; a multiple-choice column: one of its choices.
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
}

/// One test on one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    /// The column's name.
    #[schema(example = "age")]
    pub field: String,
    pub operator: Operator,
    /// The operand: a scalar; an array for `in`/`not_in` and `[low, high]` for `between`;
    /// absent for `is_empty`/`is_not_empty`. Dates are `YYYY-MM-DD` or RFC 3339 datetimes, or a
    /// relative date `{"relative": "today" | "yesterday" | "tomorrow" | "-7d" | "+2w" | "-3m" |
    /// "+1y" | "start_of_week" | "end_of_week" | "start_of_month" | "end_of_month" |
    /// "start_of_year" | "end_of_year"}` evaluated in the request's time zone. `"$CURRENT_USER"`
    /// is the reader's e-mail address.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub value: Value,
}

/// A node of the tree: a condition or a nested group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FilterNode {
    Condition(Condition),
    Group(FilterGroup),
}

/// Conditions combined with one logic. `{"conditions": [], "logic": "AND"}` matches everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct FilterGroup {
    #[serde(default)]
    #[schema(no_recursion)]
    pub conditions: Vec<FilterNode>,
    #[serde(default)]
    pub logic: Logic,
}

/// The type families a filter distinguishes (the ten column types and the five formula result
/// types map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Number,
    Date,
    DateTime,
    Boolean,
    /// A multiple-choice column: a list of texts.
    List,
}

impl FieldKind {
    /// The kind of a column of this type (a calculated column's type is its formula's result
    /// type: `text`, `number`, `boolean`, `date` or `datetime`).
    pub fn of_column_type(column_type: &str) -> Self {
        match column_type {
            "number" => Self::Number,
            "date" => Self::Date,
            "datetime" => Self::DateTime,
            "boolean" => Self::Boolean,
            "multi_select" => Self::List,
            _ => Self::Text,
        }
    }

    fn is_date(self) -> bool {
        matches!(self, Self::Date | Self::DateTime)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Date => "date",
            Self::DateTime => "datetime",
            Self::Boolean => "boolean",
            Self::List => "multiple-choice",
        }
    }
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Neq => "neq",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Between => "between",
            Self::Contains => "contains",
            Self::NotContains => "not_contains",
            Self::StartsWith => "starts_with",
            Self::EndsWith => "ends_with",
            Self::In => "in",
            Self::NotIn => "not_in",
            Self::IsEmpty => "is_empty",
            Self::IsNotEmpty => "is_not_empty",
        }
    }

    /// Whether the operator applies to a column of this kind.
    pub fn applies_to(self, kind: FieldKind) -> bool {
        use Operator::*;
        match self {
            Eq | Neq | IsEmpty | IsNotEmpty => true,
            Gt | Gte | Lt | Lte | Between => matches!(kind, FieldKind::Number) || kind.is_date(),
            Contains | NotContains => matches!(kind, FieldKind::Text | FieldKind::List),
            StartsWith | EndsWith => kind == FieldKind::Text,
            In | NotIn => kind != FieldKind::Boolean,
        }
    }
}

impl FilterGroup {
    /// Checks every condition against the panel's columns: the field exists, the operator suits
    /// its type, the value suits the operator. Errors name the path (`conditions[1].operator`).
    pub fn validate(
        &self,
        prefix: &str,
        kind_of: &dyn Fn(&str) -> Option<FieldKind>,
    ) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut count = 0;
        self.validate_at(prefix, 1, kind_of, &mut errors, &mut count);
        if count > MAX_CONDITIONS {
            errors.push(FieldError::new(
                prefix,
                format!("at most {MAX_CONDITIONS} conditions are allowed"),
            ));
        }
        errors
    }

    fn validate_at(
        &self,
        path: &str,
        depth: usize,
        kind_of: &dyn Fn(&str) -> Option<FieldKind>,
        errors: &mut Vec<FieldError>,
        count: &mut usize,
    ) {
        if depth > MAX_DEPTH {
            errors.push(FieldError::new(
                path,
                format!("groups may nest at most {MAX_DEPTH} deep"),
            ));
            return;
        }
        for (i, node) in self.conditions.iter().enumerate() {
            let here = format!("{path}.conditions[{i}]");
            match node {
                FilterNode::Group(group) => {
                    group.validate_at(&here, depth + 1, kind_of, errors, count)
                }
                FilterNode::Condition(condition) => {
                    *count += 1;
                    if let Some(error) = condition.problem(kind_of) {
                        errors.push(FieldError::new(here, error));
                    }
                }
            }
        }
    }

    /// Every column name the tree mentions.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for node in &self.conditions {
            match node {
                FilterNode::Condition(c) => out.push(c.field.as_str()),
                FilterNode::Group(g) => out.extend(g.fields()),
            }
        }
        out
    }

    /// The tree without the conditions on `field` (used when a column is force-deleted).
    pub fn without_field(&self, field: &str) -> Self {
        let conditions = self
            .conditions
            .iter()
            .filter_map(|node| match node {
                FilterNode::Condition(c) if c.field == field => None,
                FilterNode::Condition(c) => Some(FilterNode::Condition(c.clone())),
                FilterNode::Group(g) => {
                    let inner = g.without_field(field);
                    (!inner.conditions.is_empty()).then_some(FilterNode::Group(inner))
                }
            })
            .collect();
        Self {
            conditions,
            logic: self.logic,
        }
    }

    /// Whether the tree has no condition at all (it matches every row).
    pub fn is_empty(&self) -> bool {
        self.conditions.iter().all(|node| match node {
            FilterNode::Condition(_) => false,
            FilterNode::Group(g) => g.is_empty(),
        })
    }
}

impl Condition {
    fn problem(&self, kind_of: &dyn Fn(&str) -> Option<FieldKind>) -> Option<String> {
        let Some(kind) = kind_of(&self.field) else {
            return Some(format!(
                "field {:?} is not a column of this panel",
                self.field
            ));
        };
        if !self.operator.applies_to(kind) {
            return Some(format!(
                "operator {} does not apply to a {} column",
                self.operator.as_str(),
                kind.name()
            ));
        }
        use Operator::*;
        let fits = |v: &Value| operand_fits(kind, v);
        match self.operator {
            IsEmpty | IsNotEmpty => None,
            In | NotIn => match &self.value {
                Value::Array(items)
                    if !items.is_empty() && items.len() <= MAX_LIST && items.iter().all(fits) =>
                {
                    None
                }
                _ => Some(format!(
                    "value must be a non-empty array (at most {MAX_LIST}) of {} values",
                    kind.name()
                )),
            },
            Between => match &self.value {
                Value::Array(items) if items.len() == 2 && items.iter().all(fits) => None,
                _ => Some(format!(
                    "value must be [low, high]: two {} values",
                    kind.name()
                )),
            },
            Contains | NotContains | StartsWith | EndsWith => match &self.value {
                Value::String(_) => None,
                _ => Some("value must be text".to_owned()),
            },
            _ if fits(&self.value) => None,
            _ => Some(format!("value does not suit a {} column", kind.name())),
        }
    }
}

/// Whether a scalar operand suits a column of this kind.
fn operand_fits(kind: FieldKind, v: &Value) -> bool {
    match kind {
        FieldKind::Number => v.is_number(),
        FieldKind::Boolean => v.is_boolean(),
        FieldKind::Date | FieldKind::DateTime => match v {
            Value::String(s) => resolve::parse_date_operand(s).is_some(),
            Value::Object(_) => resolve::relative_of(v).is_some(),
            _ => false,
        },
        FieldKind::Text | FieldKind::List => v.is_string() || v.is_number(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(name: &str) -> Option<FieldKind> {
        match name {
            "age" => Some(FieldKind::Number),
            "name" => Some(FieldKind::Text),
            "seen" => Some(FieldKind::Date),
            "at" => Some(FieldKind::DateTime),
            "active" => Some(FieldKind::Boolean),
            "tags" => Some(FieldKind::List),
            _ => None,
        }
    }

    fn parse(v: Value) -> FilterGroup {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn a_valid_nested_tree_passes() {
        let tree = parse(json!({"logic": "OR", "conditions": [
            {"field": "age", "operator": "gte", "value": 18},
            {"logic": "AND", "conditions": [
                {"field": "name", "operator": "contains", "value": "ann"},
                {"field": "seen", "operator": "lt", "value": "2026-01-01"},
                {"field": "active", "operator": "eq", "value": true},
                {"field": "name", "operator": "in", "value": ["a", "b"]},
                {"field": "age", "operator": "is_empty"}
            ]}
        ]}));
        assert!(tree.validate("cohortRule", &kinds).is_empty());
        assert_eq!(
            tree.fields(),
            vec!["age", "name", "seen", "active", "name", "age"]
        );
    }

    #[test]
    fn the_new_operators_and_operands_validate() {
        let tree = parse(json!({"conditions": [
            {"field": "name", "operator": "not_contains", "value": "x"},
            {"field": "name", "operator": "starts_with", "value": "A"},
            {"field": "name", "operator": "ends_with", "value": "z"},
            {"field": "name", "operator": "eq", "value": "$CURRENT_USER"},
            {"field": "age", "operator": "not_in", "value": [1, 2]},
            {"field": "age", "operator": "between", "value": [18, 65]},
            {"field": "seen", "operator": "gte", "value": {"relative": "-7d"}},
            {"field": "at", "operator": "between", "value": [{"relative": "start_of_month"}, "2026-12-31T23:00:00Z"]},
            {"field": "tags", "operator": "contains", "value": "vip"},
            {"field": "tags", "operator": "not_in", "value": ["a"]}
        ]}));
        assert_eq!(tree.validate("f", &kinds), Vec::<FieldError>::new());
    }

    #[test]
    fn problems_are_named_by_path() {
        let tree = parse(json!({"conditions": [
            {"field": "nope", "operator": "eq", "value": 1},
            {"field": "active", "operator": "gt", "value": 1},
            {"field": "age", "operator": "eq", "value": "ten"},
            {"field": "age", "operator": "in", "value": []},
            {"field": "age", "operator": "between", "value": [1]},
            {"field": "seen", "operator": "eq", "value": {"relative": "next tuesday"}},
            {"field": "tags", "operator": "starts_with", "value": "a"},
            {"field": "age", "operator": "contains", "value": "1"}
        ]}));
        let errors = tree.validate("cohortRule", &kinds);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            (0..8)
                .map(|i| format!("cohortRule.conditions[{i}]"))
                .collect::<Vec<_>>()
        );
        assert!(errors[0].message.contains("not a column"));
        assert_eq!(
            errors[7].message,
            "operator contains does not apply to a number column"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut tree = json!({"field": "age", "operator": "eq", "value": 1});
        for _ in 0..MAX_DEPTH + 1 {
            tree = json!({"conditions": [tree], "logic": "AND"});
        }
        let errors = parse(tree).validate("f", &kinds);
        assert!(errors.iter().any(|e| e.message.contains("nest")));
    }

    #[test]
    fn removing_a_field_prunes_empty_groups() {
        let tree = parse(json!({"conditions": [
            {"field": "age", "operator": "eq", "value": 1},
            {"conditions": [{"field": "age", "operator": "gt", "value": 2}]},
            {"field": "name", "operator": "eq", "value": "x"}
        ]}));
        assert_eq!(tree.without_field("age").fields(), vec!["name"]);
        assert!(!tree.is_empty());
        assert!(parse(json!({"conditions": [{"conditions": []}]})).is_empty());
    }
}
