//! Calculated columns: a small, typed, spreadsheet-like formula language.
//!
//! A formula is parsed ([`parse`]) into an AST with source spans, type-checked against the
//! panel's columns ([`check`]), and then either compiled to parameterised PostgreSQL
//! ([`compile_sql`]) so a whole panel can be computed inside one query, or evaluated in
//! process ([`evaluate`]) for previews and single rows. Both back ends must give the same
//! value for every row: the SQL is written against helper functions from the migration
//! `20261123000200_formula_functions.sql`, and the evaluator mirrors each of them operation
//! by operation (numbers are IEEE doubles on both sides: `f64` here, `float8` in SQL).
//! Nothing in this module does I/O. Bad data never raises: a failing operation (division by
//! zero, overflow, a date that does not parse) yields blank for that cell. The user-facing
//! reference is `docs/formulas.md`.

mod check;
mod datetime;
mod deps;
mod eval;
mod functions;
mod num;
mod parse;
mod pattern;
mod sql;

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub use deps::{find_cycle, rename_column};
pub use eval::{Row, evaluate, evaluate_with_warnings};
pub use parse::{BinaryOp, Call, Expr, ExprKind};
pub use sql::{
    ColumnSql, CompiledParts, JsonbColumns, SqlBuilder, SqlParam, compile_parts, compile_sql,
    compiled_len, jsonb_reader, safe_cast_sql,
};

/// Longest accepted formula, in characters.
pub const MAX_FORMULA_CHARS: usize = 4096;
/// Deepest accepted nesting (AST depth, and parenthesis/call nesting while parsing).
pub const MAX_DEPTH: usize = 64;
/// Largest accepted AST.
pub const MAX_NODES: usize = 1000;
/// Longest text a formula works with, in bytes (UTF-8): a longer result of a concatenation,
/// SUBSTITUTE or REPLACE, and a longer text read from a column, is a failure of the cell (blank,
/// with a warning), in SQL (`panels_text_cap`) and in the evaluator alike. Every intermediate
/// value of a row is thereby bounded, however the formulas nest.
pub const MAX_TEXT_BYTES: usize = 65_536;
/// Largest SQL all the calculated columns of one panel may compile to, in bytes; a column that
/// would take a panel past it is refused (`FORMULA_TOO_COMPLEX`). Each column is compiled once
/// (the rows query computes each once per row and refers to it by name), so this grows with the
/// sum of the formulas, never with how they refer to each other.
pub const MAX_PANEL_FORMULA_SQL: usize = 256 * 1024;

/// The type of a formula value (and of a column, once mapped by
/// [`value_type_for_column_type`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Text,
    Number,
    Boolean,
    Date,
    DateTime,
}

impl ValueType {
    /// The name used in error messages and in the API.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Text => "text",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
            ValueType::Date => "date",
            ValueType::DateTime => "datetime",
        }
    }

    /// The PostgreSQL type a compiled expression of this type has.
    pub fn sql_type(self) -> &'static str {
        match self {
            ValueType::Text => "text",
            ValueType::Number => "float8",
            ValueType::Boolean => "boolean",
            ValueType::Date => "date",
            ValueType::DateTime => "timestamptz",
        }
    }
}

/// Maps a product column type onto the formula type system. Column types that carry labels
/// or references (select, multi_select, user, file, custom) are read as text; an unknown
/// type is read as text too, so a new column type degrades instead of failing.
pub fn value_type_for_column_type(column_type: &str) -> ValueType {
    match column_type {
        "number" => ValueType::Number,
        "boolean" => ValueType::Boolean,
        "date" => ValueType::Date,
        "datetime" => ValueType::DateTime,
        _ => ValueType::Text,
    }
}

/// A formula value. `Blank` is the absence of a value (SQL NULL).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Blank,
    Text(String),
    Number(f64),
    Boolean(bool),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Value {
    pub fn is_blank(&self) -> bool {
        matches!(self, Value::Blank)
    }

    /// The type of a non-blank value.
    pub fn value_type(&self) -> Option<ValueType> {
        match self {
            Value::Blank => None,
            Value::Text(_) => Some(ValueType::Text),
            Value::Number(_) => Some(ValueType::Number),
            Value::Boolean(_) => Some(ValueType::Boolean),
            Value::Date(_) => Some(ValueType::Date),
            Value::DateTime(_) => Some(ValueType::DateTime),
        }
    }

    /// JSON for API responses: whole numbers as integers, dates as `YYYY-MM-DD`, datetimes as
    /// RFC 3339 in UTC.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Blank => serde_json::Value::Null,
            Value::Text(s) => serde_json::Value::String(s.clone()),
            // A whole number reads as one (`36`, not `36.0`), as PostgreSQL writes it.
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
                serde_json::Value::from(*n as i64)
            }
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Date(d) => serde_json::Value::String(d.format("%Y-%m-%d").to_string()),
            Value::DateTime(t) => {
                serde_json::Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
        }
    }

    /// The value as text, as TEXT() writes it (numbers in their shortest form, dates
    /// `YYYY-MM-DD`, datetimes RFC 3339 in UTC, booleans `TRUE`/`FALSE`); blank is `None`.
    pub fn text(&self) -> Option<String> {
        eval::to_text(self)
    }

    /// Reads a source value (one field of a row's JSON) as a value of `ty`. This mirrors the
    /// SQL helpers `panels_jsonb_*` exactly, so a row read here and a row read by the compiled
    /// SQL agree; anything that does not coerce is blank.
    pub fn from_json(json: &serde_json::Value, ty: ValueType) -> Value {
        use serde_json::Value as J;
        match ty {
            ValueType::Text => match json {
                J::String(s) => Value::Text(s.clone()),
                J::Number(n) => Value::Text(n.to_string()),
                J::Bool(b) => Value::Text(b.to_string()),
                J::Array(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .filter_map(|item| match item {
                            J::Null => None,
                            J::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        })
                        .collect();
                    if parts.is_empty() {
                        Value::Blank
                    } else {
                        Value::Text(parts.join(", "))
                    }
                }
                J::Null | J::Object(_) => Value::Blank,
            },
            ValueType::Number => {
                let parsed = match json {
                    J::Number(n) => n.as_f64().and_then(num::in_range),
                    J::String(s) => num::parse_number(s),
                    _ => None,
                };
                parsed.map_or(Value::Blank, Value::Number)
            }
            ValueType::Boolean => match json {
                J::Bool(b) => Value::Boolean(*b),
                J::String(s) => num::parse_bool(s).map_or(Value::Blank, Value::Boolean),
                _ => Value::Blank,
            },
            ValueType::Date => match json {
                J::String(s) => datetime::parse_date(s).map_or(Value::Blank, Value::Date),
                _ => Value::Blank,
            },
            ValueType::DateTime => match json {
                J::String(s) => datetime::parse_datetime(s).map_or(Value::Blank, Value::DateTime),
                _ => Value::Blank,
            },
        }
    }
}

/// Where something is in the formula source. `start`/`end` are byte offsets; `line` and
/// `column` (1-based, column counted in characters) are for people.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: u32,
    pub column: u32,
}

/// Why a formula was rejected; each maps to a stable API error code ([`FormulaError::code_str`]).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormulaErrorCode {
    Syntax,
    UnknownColumn,
    UnknownFunction,
    Arity,
    Type,
    TooLong,
    TooDeep,
    TooManyNodes,
    Cycle,
}

/// A rejected formula: what is wrong and, where it can be pointed at, where.
#[derive(Clone, Debug, PartialEq)]
pub struct FormulaError {
    pub code: FormulaErrorCode,
    pub message: String,
    pub span: Option<Span>,
}

impl FormulaError {
    pub(crate) fn new(code: FormulaErrorCode, message: impl Into<String>, span: Span) -> Self {
        FormulaError {
            code,
            message: message.into(),
            span: Some(span),
        }
    }

    /// The error for a dependency cycle between calculated columns, from [`find_cycle`]'s path.
    pub fn cycle(path: &[String]) -> Self {
        FormulaError {
            code: FormulaErrorCode::Cycle,
            message: format!(
                "calculated columns depend on each other: {}",
                path.join(" → ")
            ),
            span: None,
        }
    }

    /// The stable code for API error bodies.
    pub fn code_str(&self) -> &'static str {
        match self.code {
            FormulaErrorCode::Syntax => "FORMULA_SYNTAX",
            FormulaErrorCode::UnknownColumn => "FORMULA_UNKNOWN_COLUMN",
            FormulaErrorCode::UnknownFunction => "FORMULA_UNKNOWN_FUNCTION",
            FormulaErrorCode::Arity => "FORMULA_ARITY",
            FormulaErrorCode::Type => "FORMULA_TYPE",
            FormulaErrorCode::TooLong => "FORMULA_TOO_LONG",
            FormulaErrorCode::TooDeep => "FORMULA_TOO_DEEP",
            FormulaErrorCode::TooManyNodes => "FORMULA_TOO_MANY_NODES",
            FormulaErrorCode::Cycle => "FORMULA_CYCLE",
        }
    }
}

impl fmt::Display for FormulaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.span {
            Some(span) => write!(f, "{}:{}: {}", span.line, span.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FormulaError {}

/// The columns a formula may reference: base and calculated columns of one panel.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    columns: HashMap<String, ValueType>,
}

impl Schema {
    pub fn new() -> Self {
        Schema::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, ty: ValueType) {
        self.columns.insert(name.into(), ty);
    }

    pub fn get(&self, name: &str) -> Option<ValueType> {
        self.columns.get(name).copied()
    }
}

impl FromIterator<(String, ValueType)> for Schema {
    fn from_iter<I: IntoIterator<Item = (String, ValueType)>>(iter: I) -> Self {
        Schema {
            columns: iter.into_iter().collect(),
        }
    }
}

/// A formula that parsed and type-checked: ready to compile or evaluate.
#[derive(Clone, Debug)]
pub struct Checked {
    pub expr: Expr,
    pub result_type: ValueType,
    /// Columns referenced, de-duplicated, in order of first appearance.
    pub dependencies: Vec<String>,
}

/// Parses and type-checks `source` against `schema`, enforcing the size limits.
pub fn analyze(source: &str, schema: &Schema) -> Result<Checked, FormulaError> {
    let expr = parse::parse(source)?;
    let expr = check::check(expr, schema)?;
    // A formula that is always blank (e.g. `BLANK()`) has no type of its own; it is shown as
    // an empty text column.
    let result_type = expr.ty.unwrap_or(ValueType::Text);
    let dependencies = deps::dependencies(&expr);
    Ok(Checked {
        expr,
        result_type,
        dependencies,
    })
}

/// The built-in functions for documentation and UI autocompletion: (name, signature, example).
pub fn function_list() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    functions::FUNCTIONS
        .iter()
        .map(|f| (f.name, f.signature, f.example))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn column_types_map_onto_formula_types() {
        assert_eq!(value_type_for_column_type("number"), ValueType::Number);
        assert_eq!(value_type_for_column_type("datetime"), ValueType::DateTime);
        for t in [
            "text",
            "select",
            "multi_select",
            "user",
            "file",
            "custom",
            "future",
        ] {
            assert_eq!(value_type_for_column_type(t), ValueType::Text, "{t}");
        }
        assert_eq!(
            serde_json::to_value(ValueType::DateTime).ok(),
            Some(json!("datetime"))
        );
        assert_eq!(
            serde_json::from_value::<ValueType>(json!("boolean")).ok(),
            Some(ValueType::Boolean)
        );
    }

    #[test]
    fn values_round_trip_through_json() {
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).expect("valid");
        assert_eq!(Value::Date(d).to_json(), json!("2024-02-29"));
        let t = Value::from_json(&json!("2024-01-02T03:04:05.5+01:00"), ValueType::DateTime);
        assert_eq!(t.to_json(), json!("2024-01-02T02:04:05.500Z"));
        assert_eq!(Value::Number(2.5).to_json(), json!(2.5));
        assert_eq!(Value::Blank.to_json(), json!(null));
        assert_eq!(
            Value::from_json(&json!(" 12 "), ValueType::Number),
            Value::Number(12.0)
        );
        assert_eq!(
            Value::from_json(&json!("x"), ValueType::Number),
            Value::Blank
        );
        assert_eq!(
            Value::from_json(&json!(1e305), ValueType::Number),
            Value::Blank
        );
        assert_eq!(
            Value::from_json(&json!(true), ValueType::Number),
            Value::Blank
        );
        assert_eq!(
            Value::from_json(&json!("TRUE"), ValueType::Boolean),
            Value::Boolean(true)
        );
        assert_eq!(
            Value::from_json(&json!(1), ValueType::Boolean),
            Value::Blank
        );
        assert_eq!(
            Value::from_json(&json!(["a", null, "b"]), ValueType::Text),
            Value::Text("a, b".into())
        );
        assert_eq!(
            Value::from_json(&json!({"a": 1}), ValueType::Text),
            Value::Blank
        );
        assert_eq!(
            Value::from_json(&json!("2023-02-29"), ValueType::Date),
            Value::Blank
        );
        assert_eq!(
            Value::from_json(&json!(20240101), ValueType::Date),
            Value::Blank
        );
    }

    #[test]
    fn errors_display_position_and_code() {
        let e = analyze("ROUND(1, 2", &Schema::new()).expect_err("syntax");
        assert_eq!(e.code_str(), "FORMULA_SYNTAX");
        assert_eq!(
            e.to_string(),
            "1:11: expected ')' after arguments, found the end of the formula"
        );
        let e = analyze("x", &Schema::new()).expect_err("unknown");
        assert_eq!(e.code_str(), "FORMULA_UNKNOWN_COLUMN");
        let e = analyze("IF(1)", &Schema::new()).expect_err("arity");
        assert_eq!(e.code_str(), "FORMULA_ARITY");
        let e = analyze("1 + 'a'", &Schema::new()).expect_err("type");
        assert_eq!(e.code_str(), "FORMULA_TYPE");
        assert_eq!(function_list().count(), 61);
    }
}
