//! Compiles a checked formula to one parameterised PostgreSQL expression.
//!
//! Every literal from the formula is a bound parameter with an explicit cast; the only text
//! written into the SQL is this module's own (operators, helper function names, constants).
//! The helpers, not the raw operators, are used wherever PostgreSQL could raise (float8
//! overflow, division by zero, invalid dates), so the query never fails on data: a guarded
//! operation that fails answers NULL.
//!
//! A failure must blank the whole cell, not only its own sub-expression (`CONCAT(h / 0, "x")` is
//! blank, not `"x"`), while a blank *input* keeps its meaning (read as 0, "" or false where the
//! language says so). SQL has one NULL for both, so each expression is compiled twice: its value
//! ([`SqlCompiler::expr`], where a failure reads as NULL) and, for the expressions that can
//! fail, a boolean that says whether it failed for the row ([`SqlCompiler::failed`]), evaluated
//! exactly as lazily as the evaluator evaluates (IF, SWITCH, AND, OR and COALESCE skip what they
//! do not need). The cell is `case when <failed> then null else <value> end`.
//!
//! Most formulas need no second part: an expression that is never blank (arithmetic, numeric
//! functions, concatenation, literals) passes a failed part on as NULL instead of reading it as
//! 0 or "", so its value is NULL exactly where it failed ([`SqlCompiler::strict`]) and the cell
//! is the value alone. Elsewhere the failure test of an operation repeats the value of its
//! arguments, so the SQL grows with the size of the formula times its depth; parameters are
//! shared ([`SqlBuilder::push_param`] reuses the placeholder of an equal value), so their number
//! stays that of the formula's literals.

use super::functions::{FUNCTIONS, Fails};
use super::parse::{BinaryOp, Expr, ExprKind};
use super::{Checked, ValueType};

/// A bound parameter of the compiled SQL.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlParam {
    Text(String),
    Number(f64),
    Bool(bool),
    Date(chrono::NaiveDate),
    Instant(chrono::DateTime<chrono::Utc>),
    Int(i64),
}

impl SqlParam {
    /// Adds the value to a statement's arguments, in placeholder order.
    pub fn bind(self, args: &mut sqlx::postgres::PgArguments) {
        use sqlx::Arguments;
        // Encoding these plain values cannot fail.
        let _ = match self {
            SqlParam::Text(t) => args.add(t),
            SqlParam::Number(n) => args.add(n),
            SqlParam::Bool(b) => args.add(b),
            SqlParam::Date(d) => args.add(d),
            SqlParam::Instant(t) => args.add(t),
            SqlParam::Int(n) => args.add(n),
        };
    }
}

impl SqlParam {
    /// Equal values, numbers bit for bit (so `0` and `-0` stay two parameters).
    fn same(&self, other: &SqlParam) -> bool {
        match (self, other) {
            (SqlParam::Number(a), SqlParam::Number(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }
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

    /// Appends a placeholder with a cast naming its type (`$3::text`), so PostgreSQL never has
    /// to infer parameter types. A value already bound reuses its placeholder.
    pub fn push_param(&mut self, p: SqlParam) {
        let cast = match p {
            SqlParam::Text(_) => "text",
            SqlParam::Number(_) => "float8",
            SqlParam::Bool(_) => "boolean",
            SqlParam::Date(_) => "date",
            SqlParam::Instant(_) => "timestamptz",
            SqlParam::Int(_) => "bigint",
        };
        let index = match self.params.iter().position(|q| q.same(&p)) {
            Some(i) => i,
            None => {
                self.params.push(p);
                self.params.len() - 1
            }
        };
        let n = self.first_placeholder + index;
        self.sql.push_str(&format!("${n}::{cast}"));
    }

    /// The placeholder number the next new parameter will get.
    pub fn next_placeholder(&self) -> usize {
        self.first_placeholder + self.params.len()
    }

    /// `sql` (built with this builder's parameters) and the parameters it reads, renumbered in
    /// the order it first reads them; placeholders below the builder's first are the caller's
    /// own and stay. A parameter bound for text that was left out of the statement would
    /// otherwise be one the statement does not declare.
    pub fn compact(&self, sql: &str) -> (String, Vec<SqlParam>) {
        let mut map: Vec<Option<usize>> = vec![None; self.params.len()];
        let mut params = Vec::new();
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let number: Option<usize> = rest[at + 1..at + 1 + digits].parse().ok();
            match number.and_then(|n| n.checked_sub(self.first_placeholder).map(|i| (n, i))) {
                Some((_, i)) if i < self.params.len() => {
                    let new = *map[i].get_or_insert_with(|| {
                        params.push(self.params[i].clone());
                        self.first_placeholder + params.len() - 1
                    });
                    out.push_str(&format!("${new}"));
                }
                _ => out.push_str(&rest[at..at + 1 + digits]),
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_str(rest);
        (out, params)
    }

    /// Runs `emit` and takes the text it appended, leaving the parameters it bound in place:
    /// the text can then be written into the query more than once.
    pub fn capture(&mut self, emit: impl FnOnce(&mut SqlBuilder)) -> String {
        let start = self.sql.len();
        emit(self);
        self.sql.split_off(start)
    }
}

/// How the caller reads a column. The SQL written must have the column's type
/// ([`ValueType::sql_type`]) and must never raise, whatever the stored data is (see
/// [`safe_cast_sql`] and [`JsonbColumns`]). The column name must go in as a parameter.
///
/// A column read can fail the cell: a text longer than [`super::MAX_TEXT_BYTES`] (which must
/// then read as NULL), or a calculated column whose own formula failed for the row. A reader
/// that says so in [`ColumnSql::column_can_fail`] writes the test in
/// [`ColumnSql::column_failed`].
pub trait ColumnSql {
    fn column_sql(&self, name: &str, ty: ValueType, out: &mut SqlBuilder);

    /// Whether reading the column as `ty` can fail a cell.
    fn column_can_fail(&self, _name: &str, _ty: ValueType) -> bool {
        false
    }

    /// A boolean, true when reading the column failed for the row (called only when
    /// [`ColumnSql::column_can_fail`] says it can).
    fn column_failed(&self, _name: &str, _ty: ValueType, out: &mut SqlBuilder) {
        out.push_sql("false");
    }

    /// Whether the column reads as NULL exactly where it failed (a calculated column whose
    /// formula is never blank, see [`SqlCompiler::strict`]); base columns can be blank.
    fn column_strict(&self, _name: &str, _ty: ValueType) -> bool {
        false
    }

    /// The `timestamptz` that NOW() and TODAY() read: the database's clock unless the caller
    /// binds its own (so a query and the values shown beside it agree on the moment).
    fn now(&self, out: &mut SqlBuilder) {
        out.push_sql("now()");
    }
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

impl JsonbColumns<'_> {
    fn read(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        out.push_sql(jsonb_reader(ty));
        out.push_sql("((");
        out.push_sql(self.row);
        out.push_sql(") -> ");
        out.push_param(SqlParam::Text(name.to_string()));
        out.push_sql(")");
    }
}

impl ColumnSql for JsonbColumns<'_> {
    fn column_sql(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        if ty == ValueType::Text {
            out.push_sql("panels_text_cap(");
            self.read(name, ty, out);
            out.push_sql(")");
        } else {
            self.read(name, ty, out);
        }
    }

    fn column_can_fail(&self, _name: &str, ty: ValueType) -> bool {
        ty == ValueType::Text
    }

    fn column_failed(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        out.push_sql("coalesce(octet_length(");
        self.read(name, ty, out);
        out.push_sql(&format!(") > {}, false)", super::MAX_TEXT_BYTES));
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
        fn column_can_fail(&self, _: &str, _: ValueType) -> bool {
            true
        }
        fn column_failed(&self, _: &str, _: ValueType, out: &mut SqlBuilder) {
            out.push_sql("c00.f");
        }
    }
    let mut out = SqlBuilder::new(1);
    compile_sql(checked, &ByName, &mut out);
    out.sql.len()
}

/// Appends the SQL of a checked formula's cell: its value, or NULL where it failed for the
/// row. The expression has type `checked.result_type.sql_type()`.
pub fn compile_sql(checked: &Checked, columns: &dyn ColumnSql, out: &mut SqlBuilder) {
    let parts = compile_parts(checked, columns, out);
    out.push_sql(&parts.cell());
}

/// A formula's SQL in its two parts, for a caller that needs both (a formula that refers to
/// another calculated column fails where that column failed).
#[derive(Clone, Debug)]
pub struct CompiledParts {
    /// The value, where a failed operation reads as NULL but a failure elsewhere in the
    /// formula may not show.
    pub value: String,
    /// A boolean that is true where the formula failed for the row; `None` when it cannot.
    pub failed: Option<String>,
    /// The value is NULL exactly where the formula failed: it is its own cell.
    pub strict: bool,
}

impl CompiledParts {
    /// The cell: the value, or NULL where the formula failed.
    pub fn cell(&self) -> String {
        match &self.failed {
            Some(failed) if !self.strict => {
                format!("(case when {failed} then null else {} end)", self.value)
            }
            _ => self.value.clone(),
        }
    }
}

/// Compiles a formula's value and failure test; their parameters are bound in `out`, their text
/// is returned (and not appended to `out.sql`).
pub fn compile_parts(
    checked: &Checked,
    columns: &dyn ColumnSql,
    out: &mut SqlBuilder,
) -> CompiledParts {
    let mut c = SqlCompiler { out, columns };
    let value = c.capture(|c| c.expr_as(&checked.expr, checked.result_type));
    let strict = c.strict(&checked.expr);
    let failed = if !c.can_fail(&checked.expr) {
        None
    } else if strict {
        Some(format!("({value} is null)"))
    } else {
        Some(c.capture(|c| c.failed(&checked.expr)))
    };
    CompiledParts {
        value,
        failed,
        strict,
    }
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

    /// The moment NOW() reads (see [`ColumnSql::now`]).
    pub fn now(&mut self) {
        self.columns.now(self.out);
    }

    /// Runs `emit` and returns the text it wrote instead of keeping it in the output.
    fn capture(&mut self, emit: impl FnOnce(&mut Self)) -> String {
        let start = self.out.sql.len();
        emit(self);
        self.out.sql.split_off(start)
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
            HelperArg::TextOr(e) if self.strict(e) => self.expr_as(e, ValueType::Text),
            HelperArg::TextOr(e) => {
                self.sql("coalesce(");
                self.expr_as(e, ValueType::Text);
                self.sql(", '')");
            }
            HelperArg::AnyTextOr(e) if self.strict(e) => self.any_text(e),
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

    /// A number with blank read as 0 (the arithmetic rule); an expression that is never blank
    /// is passed as it is, so its failure (NULL) carries on.
    pub fn num(&mut self, e: &Expr) {
        if self.strict(e) {
            self.expr_as(e, ValueType::Number);
            return;
        }
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

    /// `e` in its own type, parenthesised; a failed operation reads as NULL.
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

    /// Whether `e` is NULL exactly where it failed: never blank, and every part that can fail is
    /// itself strict (then passed on without a default) — arithmetic, concatenation and the
    /// numeric functions over literals, other strict expressions, and parts that cannot fail.
    pub fn strict(&self, e: &Expr) -> bool {
        let Some(ty) = e.ty else {
            return false;
        };
        match &e.kind {
            ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Boolean(_) => true,
            ExprKind::Column(name) => self.columns.column_strict(name, ty),
            ExprKind::Neg(inner) => self.passes(inner),
            ExprKind::Binary(op, l, r) if op_can_fail(*op) => self.passes(l) && self.passes(r),
            // A comparison reads blank as false unless both sides are never blank.
            ExprKind::Binary(_, l, r) => {
                (self.strict(l) && self.strict(r)) || (!self.can_fail(l) && !self.can_fail(r))
            }
            ExprKind::Call(call) => match FUNCTIONS[call.func].fails {
                Fails::WhenNull => call.args.iter().all(|a| self.passes(a)),
                // Blank only where the first argument is: never, when that one is strict.
                Fails::WhenNullWithFirst => {
                    self.strict(&call.args[0]) && call.args[1..].iter().all(|a| self.passes(a))
                }
                _ => false,
            },
        }
    }

    /// Whether an argument read with a default (blank as 0 or "") keeps its parent strict: it is
    /// strict itself (and read without the default), or it cannot fail.
    fn passes(&self, e: &Expr) -> bool {
        self.strict(e) || !self.can_fail(e)
    }

    /// Whether `e` can fail for some row: an operation of its own that can, or a part that can.
    /// An expression without a type (always blank) evaluates nothing.
    pub fn can_fail(&self, e: &Expr) -> bool {
        let Some(ty) = e.ty else {
            return false;
        };
        match &e.kind {
            ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Boolean(_) => false,
            ExprKind::Column(name) => self.columns.column_can_fail(name, ty),
            ExprKind::Neg(inner) => self.can_fail(inner),
            ExprKind::Binary(op, l, r) => op_can_fail(*op) || self.can_fail(l) || self.can_fail(r),
            ExprKind::Call(call) => {
                own_failure(FUNCTIONS[call.func].fails)
                    || call.args.iter().any(|a| self.can_fail(a))
            }
        }
    }

    /// A boolean, true where evaluating `e` failed for the row, with the evaluator's laziness
    /// (a branch IF does not take cannot fail it). Called only where [`Self::can_fail`] holds.
    pub fn failed(&mut self, e: &Expr) {
        let Some(ty) = e.ty else {
            self.sql("false");
            return;
        };
        if self.strict(e) {
            self.sql("(");
            self.value_is_null(e);
            self.sql(")");
            return;
        }
        match &e.kind {
            ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Boolean(_) => self.sql("false"),
            ExprKind::Column(name) => {
                if self.columns.column_can_fail(name, ty) {
                    self.columns.column_failed(name, ty, self.out);
                } else {
                    self.sql("false");
                }
            }
            ExprKind::Neg(inner) => self.failed(inner),
            ExprKind::Binary(op, l, r) if op_can_fail(*op) => {
                // A strict operand's failure already shows as the operation's NULL.
                let own = self.capture(|c| c.value_is_null(e));
                let parts: Vec<&Expr> = [&**l, &**r]
                    .into_iter()
                    .filter(|p| !self.strict(p))
                    .collect();
                self.any_failed(&parts, Some(own));
            }
            ExprKind::Binary(_, l, r) => self.any_failed(&[l, r], None),
            ExprKind::Call(call) => {
                let a = &call.args;
                match FUNCTIONS[call.func].fails {
                    Fails::Never => self.any_failed(&a.iter().collect::<Vec<_>>(), None),
                    Fails::WhenNull => {
                        let own = self.capture(|c| c.value_is_null(e));
                        let parts: Vec<&Expr> = a.iter().filter(|p| !self.strict(p)).collect();
                        self.any_failed(&parts, Some(own));
                    }
                    Fails::WhenNullWithFirst | Fails::WhenNullWithFirstLoose => {
                        let own = self.capture(|c| {
                            c.sql("(");
                            c.value_is_null(e);
                            c.sql(" and ");
                            c.expr(&a[0]);
                            c.sql(" is not null)");
                        });
                        self.any_failed(&a.iter().collect::<Vec<_>>(), Some(own));
                    }
                    Fails::WhenNullWithAny => {
                        let own = self.capture(|c| {
                            c.sql("(");
                            c.value_is_null(e);
                            c.sql(" and (");
                            for (i, arg) in a.iter().enumerate() {
                                if i > 0 {
                                    c.sql(" or ");
                                }
                                c.expr(arg);
                                c.sql(" is not null");
                            }
                            c.sql("))");
                        });
                        self.any_failed(&a.iter().collect::<Vec<_>>(), Some(own));
                    }
                    Fails::If => {
                        self.sql("(");
                        self.failed_or_false(&a[0]);
                        self.sql(" or case when ");
                        self.boolean(&a[0]);
                        self.sql(" then ");
                        self.failed_or_false(&a[1]);
                        self.sql(" else ");
                        match a.get(2) {
                            Some(other) => self.failed_or_false(other),
                            None => self.sql("false"),
                        }
                        self.sql(" end)");
                    }
                    Fails::And | Fails::Or => {
                        // AND stops at the first false argument, OR at the first true one.
                        let and = FUNCTIONS[call.func].fails == Fails::And;
                        for (i, arg) in a.iter().enumerate() {
                            self.sql("(");
                            self.failed_or_false(arg);
                            if i + 1 < a.len() {
                                self.sql(" or (");
                                if !and {
                                    self.sql("not ");
                                }
                                self.boolean(arg);
                                self.sql(" and ");
                            }
                        }
                        for i in 0..a.len() {
                            self.sql(if i + 1 < a.len() { "))" } else { ")" });
                        }
                    }
                    Fails::Coalesce => {
                        // Stops at the first argument that is not blank.
                        let ty = e.ty.unwrap_or(ValueType::Text);
                        for (i, arg) in a.iter().enumerate() {
                            self.sql("(");
                            self.failed_or_false(arg);
                            if i + 1 < a.len() {
                                self.sql(" or (");
                                self.expr_as(arg, ty);
                                self.sql(" is null and ");
                            }
                        }
                        for i in 0..a.len() {
                            self.sql(if i + 1 < a.len() { "))" } else { ")" });
                        }
                    }
                    Fails::Switch => self.switch_failed(a),
                }
            }
        }
    }

    /// SWITCH evaluates its subject, then each pattern in turn until one equals it, then that
    /// pattern's result, or the default; a blank subject goes straight to the default.
    fn switch_failed(&mut self, a: &[Expr]) {
        let subject = switch_subject_type(a);
        let rest = &a[1..];
        let pairs: Vec<&[Expr]> = rest.chunks_exact(2).collect();
        let default = (rest.len() % 2 == 1).then(|| &rest[rest.len() - 1]);
        self.sql("(");
        self.failed_or_false(&a[0]);
        self.sql(" or case when ");
        self.expr_as(&a[0], subject);
        self.sql(" is null then ");
        match default {
            Some(d) => self.failed_or_false(d),
            None => self.sql("false"),
        }
        self.sql(" else ");
        for pair in &pairs {
            self.sql("(");
            self.failed_or_false(&pair[0]);
            self.sql(" or case when coalesce(");
            self.expr_as(&a[0], subject);
            self.sql(" = ");
            self.expr_as(&pair[0], subject);
            self.sql(", false) then ");
            self.failed_or_false(&pair[1]);
            self.sql(" else ");
        }
        match default {
            Some(d) => self.failed_or_false(d),
            None => self.sql("false"),
        }
        for _ in &pairs {
            self.sql(" end)");
        }
        self.sql(" end)");
    }

    /// [`Self::failed`] where `e` can fail, `false` where it cannot.
    fn failed_or_false(&mut self, e: &Expr) {
        if self.can_fail(e) {
            self.failed(e);
        } else {
            self.sql("false");
        }
    }

    /// `(F(a) or F(b) or … or own)` over the parts that can fail.
    fn any_failed(&mut self, parts: &[&Expr], own: Option<String>) {
        let mut terms: Vec<String> = Vec::new();
        for part in parts {
            if self.can_fail(part) {
                let term = self.capture(|c| c.failed(part));
                terms.push(term);
            }
        }
        terms.extend(own);
        match terms.len() {
            0 => self.sql("false"),
            1 => self.sql(&terms[0]),
            _ => {
                self.sql("(");
                self.sql(&terms.join(" or "));
                self.sql(")");
            }
        }
    }

    /// `(<value of e>) is null`.
    fn value_is_null(&mut self, e: &Expr) {
        self.expr(e);
        self.sql(" is null");
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
        // Two sides that are never blank: a NULL is a failure and carries on.
        let raw = self.strict(l) && self.strict(r);
        if !raw {
            self.sql("coalesce(");
        }
        self.expr_as(l, ty);
        if ty == ValueType::Text {
            self.sql(" collate \"C\"");
        }
        self.sql(" ");
        self.sql(sym);
        self.sql(" ");
        self.expr_as(r, ty);
        if !raw {
            self.sql(", false)");
        }
    }
}

/// Whether a binary operation can fail by itself (arithmetic out of range, division by zero, a
/// concatenation past the text limit); comparisons cannot.
fn op_can_fail(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Concat
    )
}

/// Whether a function's own operation can fail.
fn own_failure(fails: Fails) -> bool {
    matches!(
        fails,
        Fails::WhenNull
            | Fails::WhenNullWithFirst
            | Fails::WhenNullWithFirstLoose
            | Fails::WhenNullWithAny
    )
}

/// The type SWITCH compares in: its subject's, or its first typed pattern's when the subject is
/// always blank.
pub(crate) fn switch_subject_type(a: &[Expr]) -> ValueType {
    std::iter::once(&a[0])
        .chain(a[1..].chunks_exact(2).map(|pair| &pair[0]))
        .find_map(|x| x.ty)
        .unwrap_or(ValueType::Text)
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
    fn a_statement_binds_only_the_parameters_it_reads() {
        let mut out = SqlBuilder::new(3);
        out.push_param(SqlParam::Text("a".into()));
        out.push_param(SqlParam::Text("unused".into()));
        out.push_param(SqlParam::Number(1.0));
        let (sql, params) = out.compact("select $1, $5::float8, $3::text, $5, $12");
        assert_eq!(sql, "select $1, $3::float8, $4::text, $3, $12");
        assert_eq!(
            params,
            vec![SqlParam::Number(1.0), SqlParam::Text("a".into())]
        );
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
