//! The typed filter tree shared by cohort rules and view filters: conditions on a panel's
//! columns combined with AND/OR, nested to a fixed depth. Pure: parsing and validation here,
//! no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::FieldError;

pub mod legacy;

/// Groups may nest this deep (the root group is depth 1).
pub const MAX_DEPTH: usize = 4;
/// At most this many conditions in a whole tree.
pub const MAX_CONDITIONS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub enum Logic {
    #[default]
    #[serde(alias = "and")]
    AND,
    #[serde(alias = "or")]
    OR,
}

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
    Contains,
    In,
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
    /// The operand: a scalar, an array for `in`, absent for `is_empty`/`is_not_empty`.
    #[serde(default)]
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

/// The type families a filter distinguishes (the ten column types map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Number,
    Date,
    Boolean,
    List,
}

impl FieldKind {
    pub fn of_column_type(column_type: &str) -> Self {
        match column_type {
            "number" => Self::Number,
            "date" | "datetime" => Self::Date,
            "boolean" => Self::Boolean,
            "multi_select" => Self::List,
            _ => Self::Text,
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
}

impl Condition {
    fn problem(&self, kind_of: &dyn Fn(&str) -> Option<FieldKind>) -> Option<String> {
        let Some(kind) = kind_of(&self.field) else {
            return Some(format!(
                "field {:?} is not a column of this panel",
                self.field
            ));
        };
        use Operator::*;
        let allowed = match self.operator {
            Eq | Neq | IsEmpty | IsNotEmpty => true,
            Gt | Gte | Lt | Lte => matches!(kind, FieldKind::Number | FieldKind::Date),
            Contains => matches!(kind, FieldKind::Text | FieldKind::List),
            In => kind != FieldKind::Boolean,
        };
        if !allowed {
            return Some(
                format!(
                    "operator {:?} does not apply to a {kind:?} column",
                    self.operator
                )
                .to_lowercase(),
            );
        }
        let scalar_ok = |v: &Value| match kind {
            FieldKind::Number => v.is_number(),
            FieldKind::Boolean => v.is_boolean(),
            FieldKind::Date => v.as_str().is_some_and(is_date),
            FieldKind::Text | FieldKind::List => v.is_string() || v.is_number(),
        };
        match self.operator {
            IsEmpty | IsNotEmpty => None,
            In => match &self.value {
                Value::Array(items)
                    if !items.is_empty() && items.len() <= 1000 && items.iter().all(scalar_ok) =>
                {
                    None
                }
                _ => Some(
                    "value must be a non-empty array (at most 1000) of values of the column's type"
                        .to_owned(),
                ),
            },
            Contains => self
                .value
                .is_string()
                .then_some(())
                .map_or(Some("value must be text".to_owned()), |_| None),
            _ if scalar_ok(&self.value) => None,
            _ => Some(format!("value does not suit a {kind:?} column",).to_lowercase()),
        }
    }
}

fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        || chrono::DateTime::parse_from_rfc3339(s).is_ok()
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
            "active" => Some(FieldKind::Boolean),
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
    fn problems_are_named_by_path() {
        let tree = parse(json!({"conditions": [
            {"field": "nope", "operator": "eq", "value": 1},
            {"field": "active", "operator": "gt", "value": 1},
            {"field": "age", "operator": "eq", "value": "ten"},
            {"field": "age", "operator": "in", "value": []}
        ]}));
        let errors = tree.validate("cohortRule", &kinds);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "cohortRule.conditions[0]",
                "cohortRule.conditions[1]",
                "cohortRule.conditions[2]",
                "cohortRule.conditions[3]"
            ]
        );
        assert!(errors[0].message.contains("not a column"));
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
    }
}
