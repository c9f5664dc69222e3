//! The older client's filters: a flat list of conditions joined by the first `logicalOperator`,
//! with its operator names (`equals`, `greater_than`, …) and values sent as text. Read into the
//! filter tree, and the tree written back in that shape. Pure.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Condition, FieldKind, FilterGroup, FilterNode, Logic, Operator};
use crate::error::FieldError;

/// One filter in the older client's flat shape.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyFilter {
    #[schema(example = "status")]
    pub column_name: String,
    /// An operator of the filter tree (`eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `between`,
    /// `contains`, `not_contains`, `starts_with`, `ends_with`, `in`, `not_in`, `is_empty`,
    /// `is_not_empty`), or the older names `equals`, `not_equals`, `greater_than`,
    /// `greater_than_or_equal`, `less_than`, `less_than_or_equal`.
    #[schema(example = "equals")]
    pub operator: String,
    /// The operand: a scalar, an array for `in`, absent for `is_empty`/`is_not_empty`.
    #[serde(default)]
    pub value: Value,
    /// `AND` or `OR`; the first one given combines the whole list (default `AND`).
    pub logical_operator: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct LegacyFilters {
    pub filters: Vec<LegacyFilter>,
}

/// One condition of the tree in the older client's flat shape (`logicalOperator` is the logic of
/// the group the condition is in).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlatFilter {
    pub column_name: String,
    pub operator: Operator,
    /// The operand: a scalar, an array for `in`, `null` for `is_empty`/`is_not_empty`.
    pub value: Value,
    pub logical_operator: Logic,
}

/// The tree's conditions in the older client's flat shape.
fn flatten_into(group: &FilterGroup, out: &mut Vec<FlatFilter>) {
    for node in &group.conditions {
        match node {
            FilterNode::Condition(c) => out.push(FlatFilter {
                column_name: c.field.clone(),
                operator: c.operator,
                value: c.value.clone(),
                logical_operator: group.logic,
            }),
            FilterNode::Group(inner) => flatten_into(inner, out),
        }
    }
}

/// Every condition of a tree in the flat shape.
pub fn flatten(tree: &FilterGroup) -> Vec<FlatFilter> {
    let mut out = Vec::new();
    flatten_into(tree, &mut out);
    out
}

/// An operator of the older client (`equals`, `greater_than`, `notEquals` …) or of the tree.
fn legacy_operator(raw: &str) -> Option<Operator> {
    let key: String = raw
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    Some(match key.as_str() {
        "eq" | "equals" | "equal" | "is" => Operator::Eq,
        "neq" | "ne" | "notequals" | "notequal" | "isnot" => Operator::Neq,
        "gt" | "greaterthan" => Operator::Gt,
        "gte" | "greaterthanorequal" | "greaterthanorequals" | "greaterthanorequalto" => {
            Operator::Gte
        }
        "lt" | "lessthan" => Operator::Lt,
        "lte" | "lessthanorequal" | "lessthanorequals" | "lessthanorequalto" => Operator::Lte,
        "between" => Operator::Between,
        "contains" => Operator::Contains,
        "notcontains" | "doesnotcontain" => Operator::NotContains,
        "startswith" => Operator::StartsWith,
        "endswith" => Operator::EndsWith,
        "in" => Operator::In,
        "notin" => Operator::NotIn,
        "isempty" => Operator::IsEmpty,
        "isnotempty" => Operator::IsNotEmpty,
        _ => return None,
    })
}

/// The older client sent numbers and booleans as text; read them as the column's type.
fn legacy_value(value: Value, kind: Option<FieldKind>) -> Value {
    match (kind, &value) {
        (Some(FieldKind::Number), Value::String(s)) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(value, Value::Number),
            }
        }
        (Some(FieldKind::Boolean), Value::String(s)) => match s.trim().to_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => value,
        },
        _ => value,
    }
}

/// The flat list as a one-level tree: its logic is the first `logicalOperator` given (default AND).
pub fn to_tree(
    list: LegacyFilters,
    kind_of: &dyn Fn(&str) -> Option<FieldKind>,
) -> Result<FilterGroup, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut logic = None;
    let mut conditions = Vec::with_capacity(list.filters.len());
    for (i, filter) in list.filters.into_iter().enumerate() {
        if let Some(raw) = filter.logical_operator.as_deref() {
            match raw.trim().to_uppercase().as_str() {
                "AND" => logic = logic.or(Some(Logic::AND)),
                "OR" => logic = logic.or(Some(Logic::OR)),
                _ => errors.push(FieldError::new(
                    format!("filters[{i}].logicalOperator"),
                    "must be AND or OR",
                )),
            }
        }
        let Some(operator) = legacy_operator(&filter.operator) else {
            errors.push(FieldError::new(
                format!("filters[{i}].operator"),
                format!("unknown operator {:?}", filter.operator),
            ));
            continue;
        };
        let value = legacy_value(filter.value, kind_of(&filter.column_name));
        conditions.push(FilterNode::Condition(Condition {
            field: filter.column_name,
            operator,
            value,
        }));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(FilterGroup {
        conditions,
        logic: logic.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(name: &str) -> Option<FieldKind> {
        match name {
            "age" => Some(FieldKind::Number),
            "name" => Some(FieldKind::Text),
            _ => None,
        }
    }

    #[test]
    fn legacy_filters_map_onto_the_tree() {
        let list: LegacyFilters = serde_json::from_value(json!({"filters": [
            {"columnName": "age", "operator": "greater_than", "value": "18"},
            {"columnName": "name", "operator": "notEquals", "value": "x", "logicalOperator": "or"},
            {"columnName": "name", "operator": "contains", "value": "a", "logicalOperator": "AND"}
        ]}))
        .expect("parses");
        let tree = to_tree(list, &kinds).expect("maps");
        assert_eq!(tree.logic, Logic::OR);
        assert!(tree.validate("filters", &kinds).is_empty());
        let FilterNode::Condition(first) = &tree.conditions[0] else {
            panic!("a condition")
        };
        assert_eq!((first.operator, &first.value), (Operator::Gt, &json!(18)));
        let flat = flatten(&tree);
        assert_eq!(flat.len(), 3);
        assert_eq!(flat[1].operator, Operator::Neq);
    }

    #[test]
    fn unknown_legacy_operators_are_rejected() {
        let list: LegacyFilters = serde_json::from_value(
            json!({"filters": [{"columnName": "age", "operator": "resembles", "value": 1}]}),
        )
        .expect("parses");
        assert!(to_tree(list, &|_| Some(FieldKind::Number)).is_err());
    }
}
