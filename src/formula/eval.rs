//! In-process evaluation of a checked formula against one row.
//!
//! Every operation mirrors the SQL the compiler emits (see `num.rs` and `datetime.rs` for
//! the guarded operations), so a value computed here equals the value the database computes
//! for the same row. A failing operation records a warning and fails the cell: the whole
//! formula is blank for that row (a failed sub-expression never turns into a number or a text
//! further up), while a blank input keeps its meaning. The evaluation itself never fails.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::datetime;
use super::functions::FUNCTIONS;
use super::num;
use super::parse::{BinaryOp, Expr, ExprKind};
use super::{Checked, MAX_TEXT_BYTES, Span, Value, ValueType};

/// A source row: the value of each column, already typed (e.g. with [`Value::from_json`]).
/// A value of the wrong type for its column is treated as blank, with a warning.
pub trait Row {
    fn get(&self, name: &str) -> Value;

    /// Whether the column failed for this row (a calculated column whose formula failed): a
    /// formula that reads it fails too. Asked after [`Row::get`].
    fn failed(&self, _name: &str) -> bool {
        false
    }
}

/// Evaluates a formula for one row. `now` is what NOW() and TODAY() see.
pub fn evaluate(checked: &Checked, row: &dyn Row, now: DateTime<Utc>) -> Value {
    evaluate_with_warnings(checked, row, now).0
}

/// Like [`evaluate`], also returning why the cell failed (e.g. `1:5: division by zero`); the
/// value is blank whenever the warnings are not empty.
pub fn evaluate_with_warnings(
    checked: &Checked,
    row: &dyn Row,
    now: DateTime<Utc>,
) -> (Value, Vec<String>) {
    let mut ev = Evaluator {
        row,
        now,
        warnings: Vec::new(),
    };
    let value = ev.eval_as(&checked.expr, checked.result_type);
    if ev.warnings.is_empty() {
        (value, ev.warnings)
    } else {
        (Value::Blank, ev.warnings)
    }
}

pub(crate) struct Evaluator<'a> {
    row: &'a dyn Row,
    pub now: DateTime<Utc>,
    /// Why the cell failed; not empty means it did.
    warnings: Vec<String>,
}

impl Evaluator<'_> {
    /// Records why the cell fails and returns blank for the operation (the whole cell is blank
    /// in the end).
    pub fn fail(&mut self, span: Span, message: &str) -> Value {
        self.warnings
            .push(format!("{}:{}: {message}", span.line, span.column));
        Value::Blank
    }

    /// The failure of a text result longer than [`MAX_TEXT_BYTES`].
    pub fn too_long(&mut self, span: Span) -> Value {
        self.fail(span, "text longer than 65536 bytes")
    }

    /// A number result, or blank with a warning when the guarded operation failed.
    pub fn number(&mut self, result: Option<f64>, span: Span, message: &str) -> Value {
        match result {
            Some(v) => Value::Number(v),
            None => self.fail(span, message),
        }
    }

    pub fn eval(&mut self, e: &Expr) -> Value {
        let Some(ty) = e.ty else {
            return Value::Blank;
        };
        match &e.kind {
            ExprKind::Number(v) => Value::Number(*v),
            ExprKind::Text(s) => Value::Text(s.clone()),
            ExprKind::Boolean(b) => Value::Boolean(*b),
            ExprKind::Column(name) => {
                let value = self.row.get(name);
                if self.row.failed(name) {
                    return self.fail(e.span, &format!("column {name} failed for this row"));
                }
                match (&value, ty) {
                    (Value::Blank, _) => value,
                    (Value::Text(t), ValueType::Text) if t.len() > MAX_TEXT_BYTES => self.fail(
                        e.span,
                        &format!("column {name} holds a text longer than 65536 bytes"),
                    ),
                    (Value::Number(n), ValueType::Number) if !n.is_finite() => {
                        self.fail(e.span, &format!("column {name} holds a non-finite number"))
                    }
                    _ if value.value_type() == Some(ty) => value,
                    _ => self.fail(
                        e.span,
                        &format!("column {name} holds a value that is not a {}", ty.name()),
                    ),
                }
            }
            ExprKind::Neg(inner) => Value::Number(-self.num(inner)),
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r, e.span),
            ExprKind::Call(call) => (FUNCTIONS[call.func].eval)(self, e, &call.args),
        }
    }

    /// `e` as a value of `want`, widening a date to midnight UTC where a datetime is wanted.
    pub fn eval_as(&mut self, e: &Expr, want: ValueType) -> Value {
        match (self.eval(e), want) {
            (Value::Date(d), ValueType::DateTime) => Value::DateTime(datetime::date_to_datetime(d)),
            (v, _) => v,
        }
    }

    /// A number, blank read as 0.
    pub fn num(&mut self, e: &Expr) -> f64 {
        match self.eval(e) {
            Value::Number(v) => v,
            _ => 0.0,
        }
    }

    pub fn num_opt(&mut self, e: &Expr) -> Option<f64> {
        match self.eval(e) {
            Value::Number(v) => Some(v),
            _ => None,
        }
    }

    /// Text, blank as `None`.
    pub fn text(&mut self, e: &Expr) -> Option<String> {
        match self.eval(e) {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Text, blank read as "".
    pub fn text_or_empty(&mut self, e: &Expr) -> String {
        self.text(e).unwrap_or_default()
    }

    /// A boolean, blank read as false.
    pub fn boolean(&mut self, e: &Expr) -> bool {
        matches!(self.eval(e), Value::Boolean(true))
    }

    /// Any value as text, as TEXT() converts it.
    pub fn any_text(&mut self, e: &Expr) -> Option<String> {
        to_text(&self.eval(e))
    }

    /// A date or datetime as UTC wall-clock time.
    pub fn timestamp(&mut self, e: &Expr) -> Option<NaiveDateTime> {
        match self.eval(e) {
            Value::Date(d) => Some(datetime::date_to_datetime(d).naive_utc()),
            Value::DateTime(t) => Some(t.naive_utc()),
            _ => None,
        }
    }

    fn binary(&mut self, op: BinaryOp, l: &Expr, r: &Expr, span: Span) -> Value {
        let guarded = match op {
            BinaryOp::Add => num::add,
            BinaryOp::Sub => num::sub,
            BinaryOp::Mul => num::mul,
            BinaryOp::Div => num::div,
            BinaryOp::Concat => {
                let mut s = self.any_text(l).unwrap_or_default();
                s.push_str(&self.any_text(r).unwrap_or_default());
                if s.len() > MAX_TEXT_BYTES {
                    return self.too_long(span);
                }
                return Value::Text(s);
            }
            _ => {
                let a = self.eval(l);
                let b = self.eval(r);
                return Value::Boolean(compare_op(op, &a, &b));
            }
        };
        let a = self.num(l);
        let b = self.num(r);
        match guarded(a, b) {
            Some(v) => Value::Number(v),
            None if op == BinaryOp::Div && b == 0.0 => self.fail(span, "division by zero"),
            None => self.fail(span, "number out of range"),
        }
    }
}

/// TEXT()'s conversion of any value; blank stays blank.
pub(crate) fn to_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Blank => return None,
        Value::Text(s) => s.clone(),
        Value::Number(n) => num::format_number(*n),
        Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Value::Date(d) => datetime::date_text(*d),
        Value::DateTime(t) => datetime::datetime_text(*t),
    })
}

/// Orders two values of compatible types; `None` when either is blank. Text orders by code
/// point like SQL's `collate "C"`.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Boolean(x), Value::Boolean(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::DateTime(y)) => Some(datetime::date_to_datetime(*x).cmp(y)),
        (Value::DateTime(x), Value::Date(y)) => Some(x.cmp(&datetime::date_to_datetime(*y))),
        _ => None,
    }
}

pub(crate) fn compare_op(op: BinaryOp, a: &Value, b: &Value) -> bool {
    let Some(ord) = compare(a, b) else {
        return false;
    };
    match op {
        BinaryOp::Eq => ord == Ordering::Equal,
        BinaryOp::Ne => ord != Ordering::Equal,
        BinaryOp::Lt => ord == Ordering::Less,
        BinaryOp::Le => ord != Ordering::Greater,
        BinaryOp::Gt => ord == Ordering::Greater,
        BinaryOp::Ge => ord != Ordering::Less,
        _ => false,
    }
}
