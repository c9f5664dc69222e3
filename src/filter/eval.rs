//! Decides in process whether a row passes a resolved filter tree: the definition the compiled
//! SQL ([`super::sql`]) is tested against (the row queries' property test runs random trees both
//! ways over the same rows).
//!
//! Text is compared case-insensitively (Unicode lower case, as `panels_lower` in SQL) and an
//! empty text is no value; a multiple-choice cell is its list of choices; a blank cell passes
//! only `is_empty`, `neq`, `not_in` and `not_contains`.

use chrono::{DateTime, NaiveDate, Utc};

use super::resolve::{Cmp, Operand, Resolved, Test};
use crate::formula;

/// One cell as a filter sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Blank,
    Text(String),
    Number(f64),
    Bool(bool),
    Date(NaiveDate),
    Instant(DateTime<Utc>),
    /// A multiple-choice cell: its choices.
    List(Vec<String>),
}

impl Cell {
    /// A formula value (a base column read as its type, or a calculated column's cell).
    pub fn from_value(value: formula::Value) -> Cell {
        match value {
            formula::Value::Blank => Cell::Blank,
            formula::Value::Text(s) => Cell::Text(s),
            formula::Value::Number(n) => Cell::Number(n),
            formula::Value::Boolean(b) => Cell::Bool(b),
            formula::Value::Date(d) => Cell::Date(d),
            formula::Value::DateTime(t) => Cell::Instant(t),
        }
    }

    /// A multiple-choice field as stored: an array's non-null items as text (a lone string or
    /// number is a list of one), as `panels_jsonb_list` reads it.
    pub fn list_from_json(json: &serde_json::Value) -> Cell {
        use serde_json::Value as J;
        let item = |v: &J| match v {
            J::String(s) => Some(s.clone()),
            J::Number(n) => Some(n.to_string()),
            J::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        Cell::List(match json {
            J::Array(items) => items.iter().filter_map(item).collect(),
            J::Null | J::Object(_) => Vec::new(),
            other => item(other).into_iter().collect(),
        })
    }

    fn is_empty(&self) -> bool {
        match self {
            Cell::Blank => true,
            Cell::Text(s) => s.is_empty(),
            Cell::List(items) => items.is_empty(),
            _ => false,
        }
    }
}

/// Whether the row whose cells `cell` answers passes the tree. An empty text is no value.
pub fn matches(tree: &Resolved, cell: &dyn Fn(&str) -> Cell) -> bool {
    match tree {
        Resolved::All(nodes) => nodes.iter().all(|n| matches(n, cell)),
        Resolved::Any(nodes) => nodes.iter().any(|n| matches(n, cell)),
        Resolved::Condition(c) => match cell(&c.field) {
            Cell::Text(s) if s.is_empty() => passes(&c.test, &Cell::Blank),
            other => passes(&c.test, &other),
        },
    }
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

fn passes(test: &Test, cell: &Cell) -> bool {
    match test {
        Test::Empty => cell.is_empty(),
        Test::NotEmpty => !cell.is_empty(),
        Test::Equals(op) => equals(cell, op),
        Test::NotEquals(op) => !equals(cell, op),
        Test::In(ops) => in_list(cell, ops),
        Test::NotIn(ops) => !in_list(cell, ops),
        Test::Compare(cmp, op) => compare(cell, *cmp, op),
        Test::Between(low, high) => compare(cell, Cmp::Gte, low) && compare(cell, Cmp::Lte, high),
        Test::Contains(s) => text_of(cell).is_some_and(|t| t.contains(&lower(s))),
        Test::NotContains(s) => !text_of(cell).is_some_and(|t| t.contains(&lower(s))),
        Test::StartsWith(s) => text_of(cell).is_some_and(|t| t.starts_with(&lower(s))),
        Test::EndsWith(s) => text_of(cell).is_some_and(|t| t.ends_with(&lower(s))),
    }
}

/// The lower-cased text of a text cell, or of a multiple-choice cell's choices joined by ", ".
fn text_of(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Text(s) => Some(lower(s)),
        Cell::List(items) => Some(lower(&items.join(", "))),
        _ => None,
    }
}

fn in_list(cell: &Cell, ops: &[Operand]) -> bool {
    match cell {
        Cell::List(items) => items.iter().any(|item| {
            let item = lower(item);
            ops.iter()
                .any(|op| matches!(op, Operand::Text(v) if lower(v) == item))
        }),
        _ => ops.iter().any(|op| equals(cell, op)),
    }
}

fn equals(cell: &Cell, op: &Operand) -> bool {
    match (cell, op) {
        (Cell::Text(_) | Cell::List(_), Operand::Text(v)) => text_of(cell) == Some(lower(v)),
        (Cell::Number(x), Operand::Number(y)) => x == y,
        (Cell::Bool(x), Operand::Bool(y)) => x == y,
        (Cell::Date(x), Operand::Date(y)) => x == y,
        (Cell::Instant(x), Operand::Instant(y)) => x == y,
        (Cell::Instant(x), Operand::Day(start, end)) => start <= x && x < end,
        _ => false,
    }
}

fn compare(cell: &Cell, cmp: Cmp, op: &Operand) -> bool {
    use std::cmp::Ordering;
    let holds = |ord: Option<Ordering>| match ord {
        Some(o) => match cmp {
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Gte => o != Ordering::Less,
            Cmp::Lt => o == Ordering::Less,
            Cmp::Lte => o != Ordering::Greater,
        },
        None => false,
    };
    match (cell, op) {
        (Cell::Number(x), Operand::Number(y)) => holds(x.partial_cmp(y)),
        (Cell::Date(x), Operand::Date(y)) => holds(Some(x.cmp(y))),
        (Cell::Instant(x), Operand::Instant(y)) => holds(Some(x.cmp(y))),
        // A local day: after it means from its end on, before it means before its start.
        (Cell::Instant(x), Operand::Day(start, end)) => match cmp {
            Cmp::Gt => x >= end,
            Cmp::Gte => x >= start,
            Cmp::Lt => x < start,
            Cmp::Lte => x < end,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{FieldKind, FilterGroup, Resolver};
    use chrono_tz::Tz;
    use serde_json::json;

    fn cell(name: &str) -> Cell {
        match name {
            "name" => Cell::Text("Ada Lovelace".into()),
            "age" => Cell::Number(36.0),
            "seen" => Cell::Date(NaiveDate::from_ymd_opt(2026, 12, 1).expect("date")),
            "at" => Cell::Instant(
                DateTime::parse_from_rfc3339("2026-12-04T08:00:00Z")
                    .expect("rfc3339")
                    .with_timezone(&Utc),
            ),
            "tags" => Cell::list_from_json(&json!(["VIP", null, "Diabetic"])),
            "active" => Cell::Bool(true),
            _ => Cell::Blank,
        }
    }

    fn kind(name: &str) -> Option<FieldKind> {
        Some(match name {
            "name" | "blank" => FieldKind::Text,
            "age" => FieldKind::Number,
            "seen" => FieldKind::Date,
            "at" => FieldKind::DateTime,
            "tags" => FieldKind::List,
            "active" => FieldKind::Boolean,
            _ => return None,
        })
    }

    fn check(condition: serde_json::Value) -> bool {
        let tree: FilterGroup =
            serde_json::from_value(json!({"conditions": [condition]})).expect("tree");
        let resolver = Resolver {
            now: DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
                .expect("rfc3339")
                .with_timezone(&Utc),
            tz: Tz::UTC,
            current_user: Some("ADA@example.org"),
        };
        let resolved = resolver
            .resolve(&tree, "f", &kind)
            .unwrap_or_else(|e| panic!("{condition}: {e:?}"));
        matches(&resolved, &cell)
    }

    #[test]
    fn every_operator_decides_as_documented() {
        let yes = [
            json!({"field": "name", "operator": "eq", "value": "ada lovelace"}),
            json!({"field": "name", "operator": "contains", "value": "LOVE"}),
            json!({"field": "name", "operator": "not_contains", "value": "x"}),
            json!({"field": "name", "operator": "starts_with", "value": "ada"}),
            json!({"field": "name", "operator": "ends_with", "value": "LACE"}),
            json!({"field": "name", "operator": "in", "value": ["x", "ADA LOVELACE"]}),
            json!({"field": "blank", "operator": "neq", "value": "x"}),
            json!({"field": "blank", "operator": "not_in", "value": ["x"]}),
            json!({"field": "blank", "operator": "not_contains", "value": "x"}),
            json!({"field": "blank", "operator": "is_empty"}),
            json!({"field": "age", "operator": "between", "value": [36, 40]}),
            json!({"field": "age", "operator": "not_in", "value": [1, 2]}),
            json!({"field": "seen", "operator": "gte", "value": {"relative": "-7d"}}),
            json!({"field": "seen", "operator": "lt", "value": {"relative": "today"}}),
            json!({"field": "at", "operator": "eq", "value": {"relative": "today"}}),
            json!({"field": "at", "operator": "lte", "value": "2026-12-04"}),
            json!({"field": "at", "operator": "gt", "value": "2026-12-04T07:59:59Z"}),
            json!({"field": "tags", "operator": "contains", "value": "vip"}),
            json!({"field": "tags", "operator": "in", "value": ["diabetic", "x"]}),
            json!({"field": "tags", "operator": "eq", "value": "vip, diabetic"}),
            json!({"field": "active", "operator": "eq", "value": true}),
        ];
        for c in yes {
            assert!(check(c.clone()), "{c} should hold");
        }
        let no = [
            json!({"field": "blank", "operator": "eq", "value": "x"}),
            json!({"field": "blank", "operator": "contains", "value": ""}),
            json!({"field": "blank", "operator": "in", "value": ["x"]}),
            json!({"field": "age", "operator": "gt", "value": 36}),
            json!({"field": "at", "operator": "gt", "value": "2026-12-04"}),
            json!({"field": "at", "operator": "lt", "value": {"relative": "today"}}),
            json!({"field": "tags", "operator": "not_contains", "value": "VIP"}),
            json!({"field": "tags", "operator": "contains", "value": "vi"}),
            json!({"field": "name", "operator": "eq", "value": "$CURRENT_USER"}),
            json!({"field": "name", "operator": "is_empty"}),
        ];
        for c in no {
            assert!(!check(c.clone()), "{c} should not hold");
        }
    }
}
