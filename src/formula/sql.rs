//! Compiles a checked formula to one parameterised PostgreSQL expression.
//!
//! Every literal from the formula is a bound parameter with an explicit cast; the only text
//! written into the SQL is this module's own (operators, helper function names, constants).
//! Each child expression is emitted exactly once, so the SQL grows linearly with the AST;
//! where an argument is needed twice, a helper function from the migration takes it as a
//! parameter. The helpers, not the raw operators, are used wherever PostgreSQL could raise
//! (float8 overflow, division by zero, invalid dates), so the query never fails on data.

use super::functions::FUNCTIONS;
use super::parse::{BinaryOp, Expr, ExprKind};
use super::{Checked, ValueType};

/// A bound parameter of the compiled SQL.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlParam {
    Text(String),
    Number(f64),
    Bool(bool),
}

/// SQL text plus its parameters, with placeholders numbered from a caller-chosen offset so
/// the formula can be embedded in a larger query.
#[derive(Clone, Debug)]
pub struct SqlBuilder {
    pub sql: String,
    pub params: Vec<SqlParam>,
    first_placeholder: usize,
}

impl SqlBuilder {
    pub fn new(first_placeholder: usize) -> Self {
        SqlBuilder {
            sql: String::new(),
            params: Vec::new(),
            first_placeholder,
        }
    }

    /// Appends trusted SQL text. Never pass user input here: use [`SqlBuilder::push_param`].
    pub fn push_sql(&mut self, s: &str) {
        self.sql.push_str(s);
    }

    /// Appends the next placeholder with a cast naming its type (`$3::text`), so PostgreSQL
    /// never has to infer parameter types.
    pub fn push_param(&mut self, p: SqlParam) {
        let n = self.first_placeholder + self.params.len();
        let cast = match p {
            SqlParam::Text(_) => "text",
            SqlParam::Number(_) => "float8",
            SqlParam::Bool(_) => "boolean",
        };
        self.sql.push_str(&format!("${n}::{cast}"));
        self.params.push(p);
    }

    /// The placeholder number the next parameter will get.
    pub fn next_placeholder(&self) -> usize {
        self.first_placeholder + self.params.len()
    }
}

/// How the caller reads a column. The SQL written must have the column's type
/// ([`ValueType::sql_type`]) and must never raise, whatever the stored data is (see
/// [`safe_cast_sql`] and [`JsonbColumns`]); a text longer than [`super::MAX_TEXT_BYTES`] must
/// read as NULL (the evaluator fails such a cell). The column name must go in as a parameter.
pub trait ColumnSql {
    fn column_sql(&self, name: &str, ty: ValueType, out: &mut SqlBuilder);
}

/// The SQL helper (from the formula migration) that reads a JSONB value as `ty` without
/// raising: non-coercible values become NULL.
pub fn jsonb_reader(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Text => "panels_jsonb_text",
        ValueType::Number => "panels_jsonb_float8",
        ValueType::Boolean => "panels_jsonb_bool",
        ValueType::Date => "panels_jsonb_date",
        ValueType::DateTime => "panels_jsonb_timestamptz",
    }
}

/// Wraps trusted SQL producing a `jsonb` value so it yields `ty` or NULL, never an error:
/// `safe_cast_sql(ValueType::Number, "r.data -> $1::text")` is
/// `panels_jsonb_float8(r.data -> $1::text)`.
pub fn safe_cast_sql(ty: ValueType, jsonb_expr: &str) -> String {
    format!("{}({jsonb_expr})", jsonb_reader(ty))
}

/// Reads columns out of a JSONB object expression, e.g. `JsonbColumns { row: "r.data" }`
/// gives `panels_jsonb_float8((r.data) -> $4::text)` with the column name bound as `$4`.
pub struct JsonbColumns<'a> {
    /// Trusted SQL for the row's JSONB object.
    pub row: &'a str,
}

impl ColumnSql for JsonbColumns<'_> {
    fn column_sql(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        if ty == ValueType::Text {
            out.push_sql("panels_text_cap(");
        }
        out.push_sql(jsonb_reader(ty));
        out.push_sql("((");
        out.push_sql(self.row);
        out.push_sql(") -> ");
        out.push_param(SqlParam::Text(name.to_string()));
        out.push_sql(")");
        if ty == ValueType::Text {
            out.push_sql(")");
        }
    }
}

/// How long a formula's SQL is when every column it reads is a name of a few characters (as in
/// the rows query, where each column is computed once and referred to by name): the measure of a
/// panel's [`super::MAX_PANEL_FORMULA_SQL`].
pub fn compiled_len(checked: &Checked) -> usize {
    struct ByName;
    impl ColumnSql for ByName {
        fn column_sql(&self, _: &str, _: ValueType, out: &mut SqlBuilder) {
            out.push_sql("c00.v");
        }
    }
    let mut out = SqlBuilder::new(1);
    compile_sql(checked, &ByName, &mut out);
    out.sql.len()
}

/// Appends the SQL for a checked formula; the expression has type
/// `checked.result_type.sql_type()`.
pub fn compile_sql(checked: &Checked, columns: &dyn ColumnSql, out: &mut SqlBuilder) {
    let mut c = SqlCompiler { out, columns };
    c.expr_as(&checked.expr, checked.result_type);
}

/// An argument of a helper-function call, in the form the helper wants it.
pub(crate) enum HelperArg<'e> {
    /// A number, blank read as 0.
    Num(&'e Expr),
    /// Text, blank stays NULL.
    Text(&'e Expr),
    /// Text, blank read as ''.
    TextOr(&'e Expr),
    /// Any value converted to text, blank read as ''.
    AnyTextOr(&'e Expr),
    /// A date or datetime as a UTC `timestamp`.
    Ts(&'e Expr),
    /// A value of the given type (dates widened to datetimes).
    As(&'e Expr, ValueType),
    /// Trusted SQL text.
    Raw(&'static str),
    /// A string bound as a parameter.
    Param(String),
}

pub(crate) struct SqlCompiler<'a> {
    out: &'a mut SqlBuilder,
    columns: &'a dyn ColumnSql,
}

impl SqlCompiler<'_> {
    pub fn sql(&mut self, s: &str) {
        self.out.push_sql(s);
    }

    pub fn param(&mut self, p: SqlParam) {
        self.out.push_param(p);
    }

    /// `name(arg, arg, …)`.
    pub fn func(&mut self, name: &str, args: &[HelperArg<'_>]) {
        self.sql(name);
        self.sql("(");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                self.sql(", ");
            }
            self.arg(arg);
        }
        self.sql(")");
    }

    pub fn arg(&mut self, arg: &HelperArg<'_>) {
        match arg {
            HelperArg::Num(e) => self.num(e),
            HelperArg::Text(e) => self.expr_as(e, ValueType::Text),
            HelperArg::TextOr(e) => {
                self.sql("coalesce(");
                self.expr_as(e, ValueType::Text);
                self.sql(", '')");
            }
            HelperArg::AnyTextOr(e) => {
                self.sql("coalesce(");
                self.any_text(e);
                self.sql(", '')");
            }
            HelperArg::Ts(e) => self.timestamp(e),
            HelperArg::As(e, ty) => self.expr_as(e, *ty),
            HelperArg::Raw(s) => self.sql(s),
            HelperArg::Param(s) => self.param(SqlParam::Text(s.clone())),
        }
    }

    /// A number with blank read as 0 (the arithmetic rule).
    pub fn num(&mut self, e: &Expr) {
        self.sql("coalesce(");
        self.expr_as(e, ValueType::Number);
        self.sql(", 0::float8)");
    }

    /// A boolean with blank read as false.
    pub fn boolean(&mut self, e: &Expr) {
        self.sql("coalesce(");
        self.expr_as(e, ValueType::Boolean);
        self.sql(", false)");
    }

    /// Any value as text (TEXT's conversion); blank stays NULL.
    pub fn any_text(&mut self, e: &Expr) {
        let Some(ty) = e.ty else {
            self.sql("null::text");
            return;
        };
        let helper = match ty {
            ValueType::Text => return self.expr(e),
            ValueType::Number => "panels_float8_text",
            ValueType::Boolean => "panels_bool_text",
            ValueType::Date => "panels_date_text",
            ValueType::DateTime => "panels_timestamptz_text",
        };
        self.sql(helper);
        self.sql("(");
        self.expr(e);
        self.sql(")");
    }

    /// A date or datetime as UTC wall-clock `timestamp`.
    pub fn timestamp(&mut self, e: &Expr) {
        match e.ty {
            Some(ValueType::Date) => {
                self.expr(e);
                self.sql("::timestamp");
            }
            Some(ValueType::DateTime) => {
                self.sql("(");
                self.expr(e);
                self.sql(" at time zone 'UTC')");
            }
            _ => self.sql("null::timestamp"),
        }
    }

    /// `e` as a value of type `want`: blank expressions become a typed NULL, dates are
    /// widened to midnight UTC when a datetime is wanted.
    pub fn expr_as(&mut self, e: &Expr, want: ValueType) {
        match e.ty {
            None => {
                self.sql("null::");
                self.sql(want.sql_type());
            }
            Some(ValueType::Date) if want == ValueType::DateTime => {
                self.sql("(");
                self.expr(e);
                self.sql("::timestamp at time zone 'UTC')");
            }
            Some(_) => self.expr(e),
        }
    }

    /// `e` in its own type, parenthesised.
    pub fn expr(&mut self, e: &Expr) {
        let Some(ty) = e.ty else {
            self.sql("null::text");
            return;
        };
        self.sql("(");
        match &e.kind {
            ExprKind::Number(v) => self.param(SqlParam::Number(*v)),
            ExprKind::Text(s) => self.param(SqlParam::Text(s.clone())),
            ExprKind::Boolean(b) => self.sql(if *b { "true" } else { "false" }),
            ExprKind::Column(name) => self.columns.column_sql(name, ty, self.out),
            ExprKind::Neg(inner) => {
                self.sql("- ");
                self.num(inner);
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r),
            ExprKind::Call(call) => (FUNCTIONS[call.func].sql)(self, e, &call.args),
        }
        self.sql(")");
    }

    fn binary(&mut self, op: BinaryOp, l: &Expr, r: &Expr) {
        let helper = match op {
            BinaryOp::Add => "panels_add",
            BinaryOp::Sub => "panels_sub",
            BinaryOp::Mul => "panels_mul",
            BinaryOp::Div => "panels_div",
            BinaryOp::Concat => {
                self.sql("panels_text_cap(");
                self.arg(&HelperArg::AnyTextOr(l));
                self.sql(" || ");
                self.arg(&HelperArg::AnyTextOr(r));
                self.sql(")");
                return;
            }
            _ => return self.compare(op, l, r),
        };
        self.func(helper, &[HelperArg::Num(l), HelperArg::Num(r)]);
    }

    /// A comparison that is false (never NULL) when either side is blank. Text compares by
    /// code point (`collate "C"`), as Rust's `str` ordering does.
    pub fn compare(&mut self, op: BinaryOp, l: &Expr, r: &Expr) {
        let (Some(lt), Some(rt)) = (l.ty, r.ty) else {
            self.sql("false");
            return;
        };
        let ty = if lt == rt { lt } else { ValueType::DateTime };
        let sym = match op {
            BinaryOp::Ne => "<>",
            other => other.symbol(),
        };
        self.sql("coalesce(");
        self.expr_as(l, ty);
        if ty == ValueType::Text {
            self.sql(" collate \"C\"");
        }
        self.sql(" ");
        self.sql(sym);
        self.sql(" ");
        self.expr_as(r, ty);
        self.sql(", false)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formula::{Schema, analyze};

    fn schema() -> Schema {
        [
            ("name'; drop table x; --", ValueType::Text),
            ("n", ValueType::Number),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn user_text_only_travels_as_parameters() {
        let checked = analyze(
            r#"IF({name'; drop table x; --} = "'); drop table y; --", n * 1.5, -1) & REGEX_MATCH('x', '\d')"#,
            &schema(),
        )
        .expect("valid");
        let mut out = SqlBuilder::new(3);
        compile_sql(&checked, &JsonbColumns { row: "r.data" }, &mut out);
        assert!(!out.sql.contains("drop"), "{}", out.sql);
        assert!(!out.sql.contains("1.5"), "{}", out.sql);
        assert!(out.sql.contains("$3::text"), "{}", out.sql);
        assert!(
            out.sql.contains("panels_jsonb_text((r.data) -> $3::text)"),
            "{}",
            out.sql
        );
        assert_eq!(
            out.params[0],
            SqlParam::Text("name'; drop table x; --".into())
        );
        assert_eq!(out.params[1], SqlParam::Text("'); drop table y; --".into()));
        assert_eq!(out.params[3], SqlParam::Number(1.5));
        assert_eq!(out.params.last(), Some(&SqlParam::Text("[0-9]".into())));
        assert_eq!(out.next_placeholder(), 3 + out.params.len());
    }

    #[test]
    fn now_and_today_are_evaluated_by_the_database() {
        let checked = analyze("DATEDIFF(NOW(), TODAY(), 'hours')", &schema()).expect("valid");
        let mut out = SqlBuilder::new(1);
        compile_sql(&checked, &JsonbColumns { row: "r.data" }, &mut out);
        assert!(out.sql.contains("now()"), "{}", out.sql);
        assert!(
            out.sql.contains("(now() at time zone 'UTC')::date"),
            "{}",
            out.sql
        );
        assert!(out.params.is_empty());
    }

    #[test]
    fn concatenation_is_capped_at_every_level() {
        let checked = analyze(
            "CONCAT('a', n) & 'b' & SUBSTITUTE('x', 'x', 'y')",
            &schema(),
        )
        .expect("valid");
        let mut out = SqlBuilder::new(1);
        compile_sql(&checked, &JsonbColumns { row: "r.data" }, &mut out);
        assert_eq!(
            out.sql.matches("panels_text_cap(").count(),
            3,
            "{}",
            out.sql
        );
        assert!(out.sql.contains("panels_substitute("), "{}", out.sql);
    }

    #[test]
    fn sql_grows_linearly_with_nesting() {
        let src = format!("{}n{}", "MOD(".repeat(30), ", 2)".repeat(30));
        let checked = analyze(&src, &schema()).expect("valid");
        let mut out = SqlBuilder::new(1);
        compile_sql(&checked, &JsonbColumns { row: "r.data" }, &mut out);
        assert!(out.sql.len() < 5_000, "{} bytes", out.sql.len());
    }

    #[test]
    fn safe_casts_name_the_reader() {
        assert_eq!(
            safe_cast_sql(ValueType::DateTime, "r.data -> $1::text"),
            "panels_jsonb_timestamptz(r.data -> $1::text)"
        );
        let mut out = SqlBuilder::new(7);
        out.push_param(SqlParam::Bool(true));
        out.push_param(SqlParam::Number(2.0));
        assert_eq!(out.sql, "$7::boolean$8::float8");
    }
}
