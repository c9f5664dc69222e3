//! The function table: for each built-in, its arity, argument and result types, and its SQL
//! and in-process implementations side by side, so the two can be read (and kept) in step.
//!
//! Blank rules: a text function of a blank text is blank; numeric arguments read blank as 0;
//! predicates (CONTAINS, STARTS_WITH, …) read blank text as "".

use super::datetime::{self, DatePart, Unit};
use super::eval::{Evaluator, compare, compare_op};
use super::num::{self, RoundMode};
use super::parse::{BinaryOp, Expr, ExprKind};
use super::pattern;
use super::sql::{HelperArg, SqlCompiler, SqlParam, switch_subject_type};
use super::{MAX_TEXT_BYTES, Value, ValueType};

/// How the checker treats an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    Text,
    Number,
    Boolean,
    /// A date or a datetime.
    DateLike,
    /// Any type.
    Any,
    /// A text literal, validated per function by the checker.
    Literal,
    /// Positional logic handled by the checker (IF, SWITCH, COALESCE).
    Special,
}

/// How the checker derives the result type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ret {
    Fixed(ValueType),
    Blank,
    If,
    Switch,
    Coalesce,
    DateAdd,
}

/// How a function can fail a cell by itself (its arguments' failures always count), and which
/// of its arguments it evaluates: the compiled SQL's failure test follows this
/// ([`super::sql`]), the evaluator does what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fails {
    /// Never by itself; evaluates every argument.
    Never,
    /// When its value is NULL: its arguments are read with blank as a default, so NULL means
    /// the guarded operation failed.
    WhenNull,
    /// When its value is NULL while its first argument is not blank (a blank first argument
    /// gives blank).
    WhenNullWithFirst,
    /// As `WhenNullWithFirst`, but its SQL does not carry a NULL in its other arguments through
    /// (REPLACE's positions go through `greatest`), so a failure there is tested on its own.
    WhenNullWithFirstLoose,
    /// When its value is NULL while some argument is not blank (AVERAGE of blanks is blank).
    WhenNullWithAny,
    /// Evaluate only some of their arguments.
    If,
    Switch,
    And,
    Or,
    Coalesce,
}

pub(crate) type SqlFn = fn(&mut SqlCompiler<'_>, &Expr, &[Expr]);
pub(crate) type EvalFn = fn(&mut Evaluator<'_>, &Expr, &[Expr]) -> Value;

pub(crate) struct Function {
    pub name: &'static str,
    pub min: usize,
    pub max: usize,
    /// Argument `i` uses `args[min(i, len - 1)]`, so variadic functions list one entry.
    pub args: &'static [Arg],
    pub ret: Ret,
    pub fails: Fails,
    pub signature: &'static str,
    pub example: &'static str,
    pub sql: SqlFn,
    pub eval: EvalFn,
}

impl Function {
    pub fn arg(&self, i: usize) -> Arg {
        self.args
            .get(i)
            .or(self.args.last())
            .copied()
            .unwrap_or(Arg::Any)
    }
}

/// Looks a function up by name, ignoring ASCII case.
pub(crate) fn lookup(name: &str) -> Option<usize> {
    FUNCTIONS
        .iter()
        .position(|f| f.name.eq_ignore_ascii_case(name))
}

const MANY: usize = usize::MAX;
use Arg::{Any, Boolean, DateLike, Literal, Number, Special, Text};
use ValueType as T;

fn text(v: Option<String>) -> Value {
    v.map_or(Value::Blank, Value::Text)
}

/// Text that may have grown past [`MAX_TEXT_BYTES`]: a failure of the cell when it has.
fn capped(ev: &mut Evaluator<'_>, e: &Expr, v: Option<String>) -> Value {
    match v {
        Some(s) if s.len() > MAX_TEXT_BYTES => ev.too_long(e.span),
        other => text(other),
    }
}

fn number(v: Option<f64>) -> Value {
    v.map_or(Value::Blank, Value::Number)
}

fn literal(e: &Expr) -> &str {
    match &e.kind {
        ExprKind::Text(s) => s,
        _ => "",
    }
}

/// The unit of DATEADD/DATEDIFF; the checker has validated the literal.
pub(crate) fn unit_arg(args: &[Expr], i: usize) -> Unit {
    args.get(i)
        .and_then(|e| Unit::parse(literal(e)))
        .unwrap_or(Unit::Days)
}

const DEFAULT_FORMAT: &str = "YYYY-MM-DD HH:mm:ss";

fn format_arg(args: &[Expr]) -> Vec<datetime::FormatItem> {
    let pattern = args.get(1).map_or(DEFAULT_FORMAT, literal);
    datetime::parse_format(pattern).unwrap_or_default()
}

fn chars_left(s: &str, n: i64) -> String {
    s.chars().take(n.max(0) as usize).collect()
}

fn chars_right(s: &str, n: i64) -> String {
    let len = s.chars().count();
    let n = (n.max(0) as usize).min(len);
    s.chars().skip(len - n).collect()
}

fn round_fn(ev: &mut Evaluator<'_>, e: &Expr, a: &[Expr], mode: RoundMode) -> Value {
    let x = ev.num(&a[0]);
    let d = a.get(1).map_or(0.0, |d| ev.num(d));
    let r = num::round(x, d, mode);
    ev.number(r, e.span, "number out of range")
}

fn round_sql(c: &mut SqlCompiler<'_>, a: &[Expr], mode: &'static str) {
    c.sql("panels_round(");
    c.num(&a[0]);
    c.sql(", ");
    match a.get(1) {
        Some(d) => c.num(d),
        None => c.sql("0::float8"),
    }
    c.sql(", ");
    c.sql(mode);
    c.sql(")");
}

fn unary_num(ev: &mut Evaluator<'_>, e: &Expr, a: &[Expr], f: fn(f64) -> Option<f64>) -> Value {
    let x = ev.num(&a[0]);
    ev.number(f(x), e.span, "argument out of range")
}

fn date_part(ev: &mut Evaluator<'_>, a: &[Expr], part: DatePart) -> Value {
    number(ev.timestamp(&a[0]).map(|t| datetime::date_part(t, part)))
}

fn date_part_sql(c: &mut SqlCompiler<'_>, a: &[Expr], part: DatePart) {
    if part == DatePart::Second {
        c.sql("floor(");
    }
    c.sql("date_part(");
    c.sql(part.sql());
    c.sql(", ");
    c.timestamp(&a[0]);
    c.sql(")");
    if part == DatePart::Second {
        c.sql(")");
    }
}

/// Joins argument SQL with an infix operator.
fn infix(c: &mut SqlCompiler<'_>, a: &[Expr], op: &str, each: fn(&mut SqlCompiler<'_>, &Expr)) {
    for (i, arg) in a.iter().enumerate() {
        if i > 0 {
            c.sql(op);
        }
        each(c, arg);
    }
}

fn extreme(ev: &mut Evaluator<'_>, a: &[Expr], better: fn(f64, f64) -> bool) -> Value {
    let mut best: Option<f64> = None;
    for arg in a {
        if let Some(v) = ev.num_opt(arg) {
            best = match best {
                Some(b) if !better(v, b) => Some(b),
                _ => Some(v),
            };
        }
    }
    number(best)
}

pub(crate) static FUNCTIONS: &[Function] = &[
    // ---- logic ----
    Function {
        name: "IF",
        min: 2,
        max: 3,
        args: &[Boolean, Special],
        ret: Ret::If,
        fails: Fails::If,
        signature: "IF(condition, then, [else])",
        example: r#"IF(score > 50, "high", "low")"#,
        sql: |c, e, a| {
            let ty = e.ty.unwrap_or(T::Text);
            c.sql("case when ");
            c.boolean(&a[0]);
            c.sql(" then ");
            c.expr_as(&a[1], ty);
            c.sql(" else ");
            match a.get(2) {
                Some(other) => c.expr_as(other, ty),
                None => {
                    c.sql("null::");
                    c.sql(ty.sql_type());
                }
            }
            c.sql(" end");
        },
        eval: |ev, e, a| {
            let ty = e.ty.unwrap_or(T::Text);
            if ev.boolean(&a[0]) {
                ev.eval_as(&a[1], ty)
            } else {
                a.get(2).map_or(Value::Blank, |other| ev.eval_as(other, ty))
            }
        },
    },
    Function {
        name: "SWITCH",
        min: 3,
        max: MANY,
        args: &[Special],
        ret: Ret::Switch,
        fails: Fails::Switch,
        signature: "SWITCH(expression, pattern1, result1, …, [default])",
        example: r#"SWITCH(status, "open", 1, "closed", 2, 0)"#,
        sql: |c, e, a| {
            let ty = e.ty.unwrap_or(T::Text);
            // A blank subject takes the patterns' type so the CASE is well typed.
            let subject = switch_subject_type(a);
            c.sql("case ");
            c.expr_as(&a[0], subject);
            let rest = &a[1..];
            let mut pairs = rest.chunks_exact(2);
            for pair in pairs.by_ref() {
                c.sql(" when ");
                c.expr_as(&pair[0], subject);
                c.sql(" then ");
                c.expr_as(&pair[1], ty);
            }
            c.sql(" else ");
            match pairs.remainder().first() {
                Some(default) => c.expr_as(default, ty),
                None => {
                    c.sql("null::");
                    c.sql(ty.sql_type());
                }
            }
            c.sql(" end");
        },
        eval: |ev, e, a| {
            let ty = e.ty.unwrap_or(T::Text);
            let subject = ev.eval(&a[0]);
            let rest = &a[1..];
            let mut pairs = rest.chunks_exact(2);
            if !subject.is_blank() {
                for pair in pairs.by_ref() {
                    let pattern = ev.eval(&pair[0]);
                    if compare(&subject, &pattern) == Some(std::cmp::Ordering::Equal) {
                        return ev.eval_as(&pair[1], ty);
                    }
                }
            }
            match rest.len() % 2 {
                1 => rest.last().map_or(Value::Blank, |d| ev.eval_as(d, ty)),
                _ => Value::Blank,
            }
        },
    },
    Function {
        name: "AND",
        min: 1,
        max: MANY,
        args: &[Boolean],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::And,
        signature: "AND(logical1, logical2, …)",
        example: "AND(score > 50, active)",
        sql: |c, _, a| infix(c, a, " and ", |c, e| c.boolean(e)),
        eval: |ev, _, a| Value::Boolean(a.iter().all(|x| ev.boolean(x))),
    },
    Function {
        name: "OR",
        min: 1,
        max: MANY,
        args: &[Boolean],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Or,
        signature: "OR(logical1, logical2, …)",
        example: "OR(score > 50, vip)",
        sql: |c, _, a| infix(c, a, " or ", |c, e| c.boolean(e)),
        eval: |ev, _, a| Value::Boolean(a.iter().any(|x| ev.boolean(x))),
    },
    Function {
        name: "NOT",
        min: 1,
        max: 1,
        args: &[Boolean],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "NOT(logical)",
        example: "NOT(active)",
        sql: |c, _, a| {
            c.sql("not ");
            c.boolean(&a[0]);
        },
        eval: |ev, _, a| Value::Boolean(!ev.boolean(&a[0])),
    },
    Function {
        name: "XOR",
        min: 1,
        max: MANY,
        args: &[Boolean],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "XOR(logical1, logical2, …)",
        example: "XOR(a > 1, b > 1)",
        sql: |c, _, a| {
            c.sql("(");
            infix(c, a, " + ", |c, e| {
                c.boolean(e);
                c.sql("::int");
            });
            c.sql(") % 2 = 1");
        },
        eval: |ev, _, a| {
            let trues = a.iter().filter(|x| ev.boolean(x)).count();
            Value::Boolean(trues % 2 == 1)
        },
    },
    Function {
        name: "ISBLANK",
        min: 1,
        max: 1,
        args: &[Any],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "ISBLANK(value)",
        example: "ISBLANK({Last visit date})",
        sql: |c, _, a| {
            if a[0].ty.is_none() {
                c.sql("true");
            } else {
                c.expr(&a[0]);
                c.sql(" is null");
            }
        },
        eval: |ev, _, a| Value::Boolean(ev.eval(&a[0]).is_blank()),
    },
    Function {
        name: "COALESCE",
        min: 1,
        max: MANY,
        args: &[Special],
        ret: Ret::Coalesce,
        fails: Fails::Coalesce,
        signature: "COALESCE(value1, value2, …)",
        example: r#"COALESCE(nickname, firstName, "anonymous")"#,
        sql: |c, e, a| {
            let ty = e.ty.unwrap_or(T::Text);
            c.sql("coalesce(");
            for (i, arg) in a.iter().enumerate() {
                if i > 0 {
                    c.sql(", ");
                }
                c.expr_as(arg, ty);
            }
            c.sql(")");
        },
        eval: |ev, e, a| {
            let ty = e.ty.unwrap_or(T::Text);
            for arg in a {
                let v = ev.eval_as(arg, ty);
                if !v.is_blank() {
                    return v;
                }
            }
            Value::Blank
        },
    },
    Function {
        name: "BLANK",
        min: 0,
        max: 0,
        args: &[],
        ret: Ret::Blank,
        fails: Fails::Never,
        signature: "BLANK()",
        example: "IF(score > 0, score, BLANK())",
        sql: |c, _, _| c.sql("null"),
        eval: |_, _, _| Value::Blank,
    },
    // ---- text ----
    Function {
        name: "CONCAT",
        min: 1,
        max: MANY,
        args: &[Any],
        ret: Ret::Fixed(T::Text),
        fails: Fails::WhenNull,
        signature: "CONCAT(value1, value2, …)",
        example: r#"CONCAT(firstName, " ", lastName)"#,
        sql: |c, _, a| {
            c.sql("panels_text_cap(");
            infix(c, a, " || ", |c, e| c.arg(&HelperArg::AnyTextOr(e)));
            c.sql(")");
        },
        eval: |ev, e, a| {
            let mut out = String::new();
            for arg in a {
                out.push_str(&ev.any_text(arg).unwrap_or_default());
                if out.len() > MAX_TEXT_BYTES {
                    return ev.too_long(e.span);
                }
            }
            Value::Text(out)
        },
    },
    Function {
        name: "UPPER",
        min: 1,
        max: 1,
        args: &[Text],
        ret: Ret::Fixed(T::Text),
        fails: Fails::WhenNullWithFirst,
        signature: "UPPER(text)",
        example: "UPPER(lastName)",
        // panels_upper uses ICU's root-locale mapping: Unicode's default, like Rust's.
        // Case mapping can lengthen a text (ß → SS): capped like any text that can grow.
        sql: |c, _, a| {
            c.sql("panels_text_cap(");
            c.func("panels_upper", &[HelperArg::Text(&a[0])]);
            c.sql(")");
        },
        eval: |ev, e, a| {
            let upper = ev.text(&a[0]).map(|s| s.to_uppercase());
            capped(ev, e, upper)
        },
    },
    Function {
        name: "LOWER",
        min: 1,
        max: 1,
        args: &[Text],
        ret: Ret::Fixed(T::Text),
        fails: Fails::WhenNullWithFirst,
        signature: "LOWER(text)",
        example: "LOWER(email)",
        sql: |c, _, a| {
            c.sql("panels_text_cap(");
            c.func("panels_lower", &[HelperArg::Text(&a[0])]);
            c.sql(")");
        },
        eval: |ev, e, a| {
            let lower = ev.text(&a[0]).map(|s| s.to_lowercase());
            capped(ev, e, lower)
        },
    },
    Function {
        name: "TRIM",
        min: 1,
        max: 1,
        args: &[Text],
        ret: Ret::Fixed(T::Text),
        fails: Fails::Never,
        signature: "TRIM(text)",
        example: "TRIM(name)",
        sql: |c, _, a| c.func("btrim", &[HelperArg::Text(&a[0]), HelperArg::Raw("' '")]),
        eval: |ev, _, a| text(ev.text(&a[0]).map(|s| s.trim_matches(' ').to_string())),
    },
    Function {
        name: "LEN",
        min: 1,
        max: 1,
        args: &[Text],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "LEN(text)",
        example: "LEN(description)",
        sql: |c, _, a| {
            c.func("length", &[HelperArg::Text(&a[0])]);
            c.sql("::float8");
        },
        eval: |ev, _, a| number(ev.text(&a[0]).map(|s| s.chars().count() as f64)),
    },
    Function {
        name: "LEFT",
        min: 1,
        max: 2,
        args: &[Text, Number],
        ret: Ret::Fixed(T::Text),
        fails: Fails::Never,
        signature: "LEFT(text, [count = 1])",
        example: "LEFT(code, 3)",
        sql: |c, _, a| {
            c.sql("left(");
            c.arg(&HelperArg::Text(&a[0]));
            c.sql(", ");
            count_sql(c, a.get(1));
            c.sql(")");
        },
        eval: |ev, _, a| {
            let s = ev.text(&a[0]);
            let n = count_eval(ev, a.get(1));
            text(s.map(|s| chars_left(&s, n)))
        },
    },
    Function {
        name: "RIGHT",
        min: 1,
        max: 2,
        args: &[Text, Number],
        ret: Ret::Fixed(T::Text),
        fails: Fails::Never,
        signature: "RIGHT(text, [count = 1])",
        example: "RIGHT(phone, 4)",
        sql: |c, _, a| {
            c.sql("right(");
            c.arg(&HelperArg::Text(&a[0]));
            c.sql(", ");
            count_sql(c, a.get(1));
            c.sql(")");
        },
        eval: |ev, _, a| {
            let s = ev.text(&a[0]);
            let n = count_eval(ev, a.get(1));
            text(s.map(|s| chars_right(&s, n)))
        },
    },
    Function {
        name: "MID",
        min: 3,
        max: 3,
        args: &[Text, Number, Number],
        ret: Ret::Fixed(T::Text),
        fails: Fails::Never,
        signature: "MID(text, start, count)",
        example: "MID(code, 2, 3)",
        sql: |c, _, a| {
            c.sql("substr(");
            c.arg(&HelperArg::Text(&a[0]));
            c.sql(", ");
            position_sql(c, &a[1]);
            c.sql(", ");
            count_sql(c, Some(&a[2]));
            c.sql(")");
        },
        eval: |ev, _, a| {
            let s = ev.text(&a[0]);
            let start = position_eval(ev, &a[1]);
            let count = count_eval(ev, Some(&a[2]));
            text(s.map(|s| {
                s.chars()
                    .skip(start as usize - 1)
                    .take(count as usize)
                    .collect()
            }))
        },
    },
    Function {
        name: "SUBSTITUTE",
        min: 3,
        max: 3,
        args: &[Text, Text, Text],
        ret: Ret::Fixed(T::Text),
        fails: Fails::WhenNullWithFirst,
        signature: "SUBSTITUTE(text, old, new)",
        example: r#"SUBSTITUTE(phone, "-", "")"#,
        sql: |c, _, a| {
            c.func(
                "panels_substitute",
                &[
                    HelperArg::Text(&a[0]),
                    HelperArg::TextOr(&a[1]),
                    HelperArg::TextOr(&a[2]),
                ],
            )
        },
        eval: |ev, e, a| {
            let s = ev.text(&a[0]);
            let old = ev.text_or_empty(&a[1]);
            let new = ev.text_or_empty(&a[2]);
            match s {
                None => Value::Blank,
                Some(s) if old.is_empty() => Value::Text(s),
                Some(s) => {
                    // The result's size first: an oversized one is never built.
                    let hits = s.matches(old.as_str()).count();
                    let size =
                        s.len() as i128 + hits as i128 * (new.len() as i128 - old.len() as i128);
                    if size > MAX_TEXT_BYTES as i128 {
                        ev.too_long(e.span)
                    } else {
                        Value::Text(s.replace(&old, &new))
                    }
                }
            }
        },
    },
    Function {
        name: "REPLACE",
        min: 4,
        max: 4,
        args: &[Text, Number, Number, Text],
        ret: Ret::Fixed(T::Text),
        fails: Fails::WhenNullWithFirstLoose,
        signature: "REPLACE(text, start, count, new)",
        example: r#"REPLACE(code, 1, 2, "XX")"#,
        sql: |c, _, a| {
            c.sql("panels_text_cap(overlay(");
            c.arg(&HelperArg::Text(&a[0]));
            c.sql(" placing ");
            c.arg(&HelperArg::TextOr(&a[3]));
            c.sql(" from ");
            position_sql(c, &a[1]);
            c.sql(" for ");
            count_sql(c, Some(&a[2]));
            c.sql("))");
        },
        eval: |ev, e, a| {
            let s = ev.text(&a[0]);
            let start = position_eval(ev, &a[1]) as usize;
            let count = count_eval(ev, Some(&a[2])) as usize;
            let new = ev.text_or_empty(&a[3]);
            let Some(s) = s else {
                return Value::Blank;
            };
            let mut out: String = s.chars().take(start - 1).collect();
            out.push_str(&new);
            out.extend(s.chars().skip(start - 1 + count));
            if out.len() > MAX_TEXT_BYTES {
                return ev.too_long(e.span);
            }
            Value::Text(out)
        },
    },
    Function {
        name: "FIND",
        min: 2,
        max: 2,
        args: &[Text, Text],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "FIND(needle, haystack)",
        example: r#"FIND("@", email)"#,
        sql: |c, _, a| {
            c.func(
                "strpos",
                &[HelperArg::Text(&a[1]), HelperArg::TextOr(&a[0])],
            );
            c.sql("::float8");
        },
        eval: |ev, _, a| {
            let needle = ev.text_or_empty(&a[0]);
            let hay = ev.text(&a[1]);
            number(hay.map(|h| match h.find(&needle) {
                Some(i) => (h[..i].chars().count() + 1) as f64,
                None => 0.0,
            }))
        },
    },
    Function {
        name: "CONTAINS",
        min: 2,
        max: 2,
        args: &[Text, Text],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "CONTAINS(haystack, needle)",
        example: r#"CONTAINS(email, "@example.com")"#,
        sql: |c, _, a| {
            c.func(
                "strpos",
                &[HelperArg::TextOr(&a[0]), HelperArg::TextOr(&a[1])],
            );
            c.sql(" > 0");
        },
        eval: |ev, _, a| {
            let hay = ev.text_or_empty(&a[0]);
            let needle = ev.text_or_empty(&a[1]);
            Value::Boolean(hay.contains(&needle))
        },
    },
    Function {
        name: "STARTS_WITH",
        min: 2,
        max: 2,
        args: &[Text, Text],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "STARTS_WITH(text, prefix)",
        example: r#"STARTS_WITH(sku, "EU-")"#,
        sql: |c, _, a| {
            c.func(
                "starts_with",
                &[HelperArg::TextOr(&a[0]), HelperArg::TextOr(&a[1])],
            )
        },
        eval: |ev, _, a| {
            let s = ev.text_or_empty(&a[0]);
            let p = ev.text_or_empty(&a[1]);
            Value::Boolean(s.starts_with(&p))
        },
    },
    Function {
        name: "ENDS_WITH",
        min: 2,
        max: 2,
        args: &[Text, Text],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "ENDS_WITH(text, suffix)",
        example: r#"ENDS_WITH(email, ".org")"#,
        sql: |c, _, a| {
            c.func(
                "panels_ends_with",
                &[HelperArg::TextOr(&a[0]), HelperArg::TextOr(&a[1])],
            )
        },
        eval: |ev, _, a| {
            let s = ev.text_or_empty(&a[0]);
            let p = ev.text_or_empty(&a[1]);
            Value::Boolean(s.ends_with(&p))
        },
    },
    Function {
        name: "REGEX_MATCH",
        min: 2,
        max: 2,
        args: &[Text, Literal],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "REGEX_MATCH(text, \"pattern\")",
        example: r#"REGEX_MATCH(postcode, "^[0-9]{5}$")"#,
        sql: |c, _, a| {
            let normalized = pattern::normalize(literal(&a[1])).unwrap_or_default();
            c.sql("coalesce(");
            c.arg(&HelperArg::Text(&a[0]));
            c.sql(" ~ ");
            c.param(SqlParam::Text(normalized));
            c.sql(", false)");
        },
        eval: |ev, e, a| match ev.text(&a[0]) {
            None => Value::Boolean(false),
            Some(s) => match pattern::is_match(literal(&a[1]), &s) {
                Some(m) => Value::Boolean(m),
                None => ev.fail(e.span, "invalid pattern"),
            },
        },
    },
    Function {
        name: "TEXT",
        min: 1,
        max: 1,
        args: &[Any],
        ret: Ret::Fixed(T::Text),
        fails: Fails::Never,
        signature: "TEXT(value)",
        example: r#"TEXT(amount) & " EUR""#,
        sql: |c, _, a| c.any_text(&a[0]),
        eval: |ev, _, a| text(ev.any_text(&a[0])),
    },
    Function {
        name: "REPT",
        min: 2,
        max: 2,
        args: &[Text, Number],
        ret: Ret::Fixed(T::Text),
        fails: Fails::WhenNullWithFirst,
        signature: "REPT(text, count)",
        example: r#"REPT("*", rating)"#,
        sql: |c, _, a| {
            c.sql("panels_rept(");
            c.arg(&HelperArg::Text(&a[0]));
            c.sql(", panels_int(");
            c.num(&a[1]);
            c.sql("))");
        },
        eval: |ev, e, a| {
            let s = ev.text(&a[0]);
            let n = num::to_int(ev.num(&a[1]));
            match s {
                None => Value::Blank,
                Some(_) if n <= 0 => Value::Text(String::new()),
                Some(s) if s.chars().count() as i64 * n > 10_000 => {
                    ev.fail(e.span, "REPT result longer than 10000 characters")
                }
                Some(s) => Value::Text(s.repeat(n as usize)),
            }
        },
    },
    // ---- numbers ----
    Function {
        name: "ROUND",
        min: 1,
        max: 2,
        args: &[Number, Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "ROUND(number, [digits = 0])",
        example: "ROUND(price * 1.2, 2)",
        sql: |c, _, a| round_sql(c, a, "0"),
        eval: |ev, e, a| round_fn(ev, e, a, RoundMode::HalfAway),
    },
    Function {
        name: "ROUNDUP",
        min: 1,
        max: 2,
        args: &[Number, Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "ROUNDUP(number, [digits = 0])",
        example: "ROUNDUP(hours, 0)",
        sql: |c, _, a| round_sql(c, a, "1"),
        eval: |ev, e, a| round_fn(ev, e, a, RoundMode::Up),
    },
    Function {
        name: "ROUNDDOWN",
        min: 1,
        max: 2,
        args: &[Number, Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "ROUNDDOWN(number, [digits = 0])",
        example: "ROUNDDOWN(score, 1)",
        sql: |c, _, a| round_sql(c, a, "2"),
        eval: |ev, e, a| round_fn(ev, e, a, RoundMode::Down),
    },
    Function {
        name: "FLOOR",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "FLOOR(number)",
        example: "FLOOR(rating)",
        sql: |c, _, a| c.func("floor", &[HelperArg::Num(&a[0])]),
        eval: |ev, _, a| Value::Number(ev.num(&a[0]).floor()),
    },
    Function {
        name: "CEILING",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "CEILING(number)",
        example: "CEILING(hours)",
        sql: |c, _, a| c.func("ceil", &[HelperArg::Num(&a[0])]),
        eval: |ev, _, a| Value::Number(ev.num(&a[0]).ceil()),
    },
    Function {
        name: "INT",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "INT(number)",
        example: "INT(-2.5)",
        sql: |c, _, a| c.func("floor", &[HelperArg::Num(&a[0])]),
        eval: |ev, _, a| Value::Number(ev.num(&a[0]).floor()),
    },
    Function {
        name: "ABS",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "ABS(number)",
        example: "ABS(balance)",
        sql: |c, _, a| c.func("abs", &[HelperArg::Num(&a[0])]),
        eval: |ev, _, a| Value::Number(ev.num(&a[0]).abs()),
    },
    Function {
        name: "SIGN",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "SIGN(number)",
        example: "SIGN(balance)",
        sql: |c, _, a| c.func("sign", &[HelperArg::Num(&a[0])]),
        eval: |ev, _, a| Value::Number(num::sign(ev.num(&a[0]))),
    },
    Function {
        name: "MIN",
        min: 1,
        max: MANY,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "MIN(number1, number2, …)",
        example: "MIN(bid, ask)",
        // least() skips NULLs, as MIN skips blanks.
        sql: |c, _, a| {
            c.sql("least(");
            infix(c, a, ", ", |c, e| c.expr_as(e, T::Number));
            c.sql(")");
        },
        eval: |ev, _, a| extreme(ev, a, |v, best| v < best),
    },
    Function {
        name: "MAX",
        min: 1,
        max: MANY,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "MAX(number1, number2, …)",
        example: "MAX(0, balance)",
        sql: |c, _, a| {
            c.sql("greatest(");
            infix(c, a, ", ", |c, e| c.expr_as(e, T::Number));
            c.sql(")");
        },
        eval: |ev, _, a| extreme(ev, a, |v, best| v > best),
    },
    Function {
        name: "SUM",
        min: 1,
        max: MANY,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "SUM(number1, number2, …)",
        example: "SUM(q1, q2, q3, q4)",
        // Exactly `a + b + c`, folded left: a step out of range fails the sum (the helper is
        // strict, so its NULL carries through the later steps).
        sql: |c, _, a| {
            for _ in 1..a.len() {
                c.sql("panels_add(");
            }
            c.num(&a[0]);
            for arg in &a[1..] {
                c.sql(", ");
                c.num(arg);
                c.sql(")");
            }
        },
        eval: |ev, e, a| {
            let mut acc = Some(ev.num(&a[0]));
            for arg in &a[1..] {
                let x = ev.num(arg);
                acc = acc.and_then(|sum| num::add(sum, x));
            }
            ev.number(acc, e.span, "number out of range")
        },
    },
    Function {
        name: "AVERAGE",
        min: 1,
        max: MANY,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNullWithAny,
        signature: "AVERAGE(number1, number2, …)",
        example: "AVERAGE(q1, q2, q3, q4)",
        sql: |c, _, a| {
            c.sql("panels_average(");
            infix(c, a, ", ", |c, e| c.expr_as(e, T::Number));
            c.sql(")");
        },
        eval: |ev, e, a| {
            let mut sum = Some(0.0);
            let mut n = 0u32;
            for arg in a {
                if let Some(x) = ev.num_opt(arg) {
                    sum = sum.and_then(|s| num::add(s, x));
                    n += 1;
                }
            }
            if n == 0 {
                return Value::Blank;
            }
            let average = sum.and_then(|s| num::div(s, f64::from(n)));
            ev.number(average, e.span, "number out of range")
        },
    },
    Function {
        name: "POWER",
        min: 2,
        max: 2,
        args: &[Number, Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "POWER(base, exponent)",
        example: "POWER(1 + rate, years)",
        sql: |c, _, a| {
            c.func(
                "panels_power",
                &[HelperArg::Num(&a[0]), HelperArg::Num(&a[1])],
            )
        },
        eval: |ev, e, a| {
            let x = ev.num(&a[0]);
            let y = ev.num(&a[1]);
            ev.number(num::power(x, y), e.span, "power out of range")
        },
    },
    Function {
        name: "SQRT",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "SQRT(number)",
        example: "SQRT(area)",
        sql: |c, _, a| c.func("panels_sqrt", &[HelperArg::Num(&a[0])]),
        eval: |ev, e, a| unary_num(ev, e, a, num::sqrt),
    },
    Function {
        name: "MOD",
        min: 2,
        max: 2,
        args: &[Number, Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "MOD(number, divisor)",
        example: "MOD(row, 2)",
        sql: |c, _, a| {
            c.func(
                "panels_mod",
                &[HelperArg::Num(&a[0]), HelperArg::Num(&a[1])],
            )
        },
        eval: |ev, e, a| {
            let x = ev.num(&a[0]);
            let y = ev.num(&a[1]);
            ev.number(
                num::modulo(x, y),
                e.span,
                "division by zero or out of range",
            )
        },
    },
    Function {
        name: "VALUE",
        min: 1,
        max: 1,
        args: &[Text],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNullWithFirst,
        signature: "VALUE(text)",
        example: r#"VALUE("12.5")"#,
        sql: |c, _, a| c.func("panels_try_float8", &[HelperArg::Text(&a[0])]),
        eval: |ev, e, a| match ev.text(&a[0]) {
            None => Value::Blank,
            Some(s) => {
                let parsed = num::parse_number(&s);
                ev.number(parsed, e.span, "text is not a number")
            }
        },
    },
    Function {
        name: "LOG",
        min: 1,
        max: 2,
        args: &[Number, Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "LOG(number, [base = 10])",
        example: "LOG(1000)",
        sql: |c, _, a| match a.get(1) {
            None => c.func("panels_log10", &[HelperArg::Num(&a[0])]),
            Some(base) => {
                c.sql("panels_div(");
                c.func("panels_ln", &[HelperArg::Num(&a[0])]);
                c.sql(", ");
                c.func("panels_ln", &[HelperArg::Num(base)]);
                c.sql(")");
            }
        },
        eval: |ev, e, a| {
            let x = ev.num(&a[0]);
            let r = match a.get(1) {
                None => num::log10(x),
                Some(base) => {
                    let b = ev.num(base);
                    num::ln(x).zip(num::ln(b)).and_then(|(x, b)| num::div(x, b))
                }
            };
            ev.number(r, e.span, "logarithm of a non-positive number")
        },
    },
    Function {
        name: "LN",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "LN(number)",
        example: "LN(growth)",
        sql: |c, _, a| c.func("panels_ln", &[HelperArg::Num(&a[0])]),
        eval: |ev, e, a| unary_num(ev, e, a, num::ln),
    },
    Function {
        name: "EXP",
        min: 1,
        max: 1,
        args: &[Number],
        ret: Ret::Fixed(T::Number),
        fails: Fails::WhenNull,
        signature: "EXP(number)",
        example: "EXP(1)",
        sql: |c, _, a| c.func("panels_exp", &[HelperArg::Num(&a[0])]),
        eval: |ev, e, a| unary_num(ev, e, a, num::exp),
    },
    // ---- dates ----
    Function {
        name: "NOW",
        min: 0,
        max: 0,
        args: &[],
        ret: Ret::Fixed(T::DateTime),
        fails: Fails::Never,
        signature: "NOW()",
        example: "DATEDIFF(NOW(), created, \"hours\")",
        sql: |c, _, _| c.now(),
        eval: |ev, _, _| Value::DateTime(ev.now),
    },
    Function {
        name: "TODAY",
        min: 0,
        max: 0,
        args: &[],
        ret: Ret::Fixed(T::Date),
        fails: Fails::Never,
        signature: "TODAY()",
        example: "DATEDIFF(TODAY(), birthday, \"years\")",
        // The UTC date, whatever the session time zone (current_date would use the session's).
        sql: |c, _, _| {
            c.sql("(");
            c.now();
            c.sql(" at time zone 'UTC')::date");
        },
        eval: |ev, _, _| Value::Date(ev.now.date_naive()),
    },
    Function {
        name: "DATE",
        min: 3,
        max: 3,
        args: &[Number, Number, Number],
        ret: Ret::Fixed(T::Date),
        fails: Fails::WhenNull,
        signature: "DATE(year, month, day)",
        example: "DATE(2024, 12, 31)",
        sql: |c, _, a| {
            c.func(
                "panels_make_date",
                &[
                    HelperArg::Num(&a[0]),
                    HelperArg::Num(&a[1]),
                    HelperArg::Num(&a[2]),
                ],
            )
        },
        eval: |ev, e, a| {
            let y = ev.num(&a[0]);
            let m = ev.num(&a[1]);
            let d = ev.num(&a[2]);
            match datetime::make_date(y, m, d) {
                Some(date) => Value::Date(date),
                None => ev.fail(e.span, "invalid date"),
            }
        },
    },
    Function {
        name: "YEAR",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "YEAR(date)",
        example: "YEAR(created)",
        sql: |c, _, a| date_part_sql(c, a, DatePart::Year),
        eval: |ev, _, a| date_part(ev, a, DatePart::Year),
    },
    Function {
        name: "MONTH",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "MONTH(date)",
        example: "MONTH(created)",
        sql: |c, _, a| date_part_sql(c, a, DatePart::Month),
        eval: |ev, _, a| date_part(ev, a, DatePart::Month),
    },
    Function {
        name: "DAY",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "DAY(date)",
        example: "DAY(created)",
        sql: |c, _, a| date_part_sql(c, a, DatePart::Day),
        eval: |ev, _, a| date_part(ev, a, DatePart::Day),
    },
    Function {
        name: "WEEKDAY",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "WEEKDAY(date)",
        example: "WEEKDAY(created)",
        sql: |c, _, a| {
            c.sql("date_part('dow', ");
            c.timestamp(&a[0]);
            c.sql(") + 1");
        },
        eval: |ev, _, a| number(ev.timestamp(&a[0]).map(datetime::weekday)),
    },
    Function {
        name: "HOUR",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "HOUR(datetime)",
        example: "HOUR(created)",
        sql: |c, _, a| date_part_sql(c, a, DatePart::Hour),
        eval: |ev, _, a| date_part(ev, a, DatePart::Hour),
    },
    Function {
        name: "MINUTE",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "MINUTE(datetime)",
        example: "MINUTE(created)",
        sql: |c, _, a| date_part_sql(c, a, DatePart::Minute),
        eval: |ev, _, a| date_part(ev, a, DatePart::Minute),
    },
    Function {
        name: "SECOND",
        min: 1,
        max: 1,
        args: &[DateLike],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "SECOND(datetime)",
        example: "SECOND(created)",
        sql: |c, _, a| date_part_sql(c, a, DatePart::Second),
        eval: |ev, _, a| date_part(ev, a, DatePart::Second),
    },
    Function {
        name: "DATEADD",
        min: 3,
        max: 3,
        args: &[DateLike, Number, Literal],
        ret: Ret::DateAdd,
        fails: Fails::WhenNullWithFirst,
        signature: "DATEADD(date, count, \"unit\")",
        example: "DATEADD(created, 30, \"days\")",
        sql: |c, e, a| {
            let unit = unit_arg(a, 2);
            if e.ty == Some(T::Date) {
                let helper = match unit {
                    Unit::Months | Unit::Years => "panels_date_add_months",
                    _ => "panels_date_add_days",
                };
                let per = match unit {
                    Unit::Weeks => "7",
                    Unit::Years => "12",
                    _ => "1",
                };
                c.func(
                    helper,
                    &[
                        HelperArg::As(&a[0], T::Date),
                        HelperArg::Num(&a[1]),
                        HelperArg::Raw(per),
                    ],
                );
            } else {
                let (helper, per) = match unit {
                    Unit::Months => ("panels_ts_add_months", "1"),
                    Unit::Years => ("panels_ts_add_months", "12"),
                    Unit::Seconds => ("panels_ts_add_seconds", "1"),
                    Unit::Minutes => ("panels_ts_add_seconds", "60"),
                    Unit::Hours => ("panels_ts_add_seconds", "3600"),
                    Unit::Days => ("panels_ts_add_seconds", "86400"),
                    Unit::Weeks => ("panels_ts_add_seconds", "604800"),
                };
                c.func(
                    helper,
                    &[
                        HelperArg::Ts(&a[0]),
                        HelperArg::Num(&a[1]),
                        HelperArg::Raw(per),
                    ],
                );
                c.sql(" at time zone 'UTC'");
            }
        },
        eval: |ev, e, a| {
            let unit = unit_arg(a, 2);
            let base = ev.eval(&a[0]);
            let n = ev.num(&a[1]);
            let result = match (base, e.ty) {
                (Value::Blank, _) => return Value::Blank,
                (Value::Date(d), Some(T::Date)) => match unit {
                    Unit::Months => datetime::add_months(d, n, 1).map(Value::Date),
                    Unit::Years => datetime::add_months(d, n, 12).map(Value::Date),
                    Unit::Weeks => datetime::add_days(d, n, 7).map(Value::Date),
                    _ => datetime::add_days(d, n, 1).map(Value::Date),
                },
                (v, _) => {
                    let t = match v {
                        Value::Date(d) => datetime::date_to_datetime(d).naive_utc(),
                        Value::DateTime(t) => t.naive_utc(),
                        _ => return Value::Blank,
                    };
                    match unit {
                        Unit::Months => datetime::ts_add_months(t, n, 1),
                        Unit::Years => datetime::ts_add_months(t, n, 12),
                        other => datetime::ts_add_seconds(t, n, other.seconds()),
                    }
                    .map(|t| Value::DateTime(t.and_utc()))
                }
            };
            result.unwrap_or_else(|| ev.fail(e.span, "date out of range"))
        },
    },
    Function {
        name: "DATEDIFF",
        min: 2,
        max: 3,
        args: &[DateLike, DateLike, Literal],
        ret: Ret::Fixed(T::Number),
        fails: Fails::Never,
        signature: "DATEDIFF(date1, date2, [\"unit\" = \"days\"])",
        example: "DATEDIFF(due, TODAY(), \"days\")",
        sql: |c, _, a| {
            let unit = unit_arg(a, 2);
            match unit {
                Unit::Months | Unit::Years => {
                    let per = if unit == Unit::Years { "12" } else { "1" };
                    c.func(
                        "panels_datediff_months",
                        &[
                            HelperArg::Ts(&a[0]),
                            HelperArg::Ts(&a[1]),
                            HelperArg::Raw(per),
                        ],
                    );
                }
                _ => {
                    let per = match unit {
                        Unit::Seconds => "1000000",
                        Unit::Minutes => "60000000",
                        Unit::Hours => "3600000000",
                        Unit::Weeks => "604800000000",
                        _ => "86400000000",
                    };
                    c.func(
                        "panels_datediff_micros",
                        &[
                            HelperArg::Ts(&a[0]),
                            HelperArg::Ts(&a[1]),
                            HelperArg::Raw(per),
                        ],
                    );
                }
            }
        },
        eval: |ev, _, a| {
            let unit = unit_arg(a, 2);
            let (Some(x), Some(y)) = (ev.timestamp(&a[0]), ev.timestamp(&a[1])) else {
                return Value::Blank;
            };
            number(match unit {
                Unit::Months | Unit::Years => Some(datetime::diff_months(x, y, unit.months())),
                other => datetime::diff_micros(x, y, other.micros()),
            })
        },
    },
    Function {
        name: "DATETIME_FORMAT",
        min: 1,
        max: 2,
        args: &[DateLike, Literal],
        ret: Ret::Fixed(T::Text),
        fails: Fails::Never,
        signature: "DATETIME_FORMAT(date, [\"format\" = \"YYYY-MM-DD HH:mm:ss\"])",
        example: "DATETIME_FORMAT(created, \"D MMM YYYY\")",
        sql: |c, _, a| {
            let pattern = datetime::to_char_pattern(&format_arg(a));
            c.func(
                "to_char",
                &[HelperArg::Ts(&a[0]), HelperArg::Param(pattern)],
            );
        },
        eval: |ev, _, a| {
            let items = format_arg(a);
            text(ev.timestamp(&a[0]).map(|t| datetime::format(t, &items)))
        },
    },
    Function {
        name: "DATETIME_PARSE",
        min: 1,
        max: 1,
        args: &[Text],
        ret: Ret::Fixed(T::DateTime),
        fails: Fails::WhenNullWithFirst,
        signature: "DATETIME_PARSE(text)",
        example: "DATETIME_PARSE(\"2024-05-01T09:30:00Z\")",
        sql: |c, _, a| c.func("panels_try_timestamptz", &[HelperArg::Text(&a[0])]),
        eval: |ev, e, a| match ev.text(&a[0]) {
            None => Value::Blank,
            Some(s) => match datetime::parse_datetime(&s) {
                Some(t) => Value::DateTime(t),
                None => ev.fail(e.span, "text is not a date and time"),
            },
        },
    },
    Function {
        name: "IS_BEFORE",
        min: 2,
        max: 2,
        args: &[DateLike, DateLike],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "IS_BEFORE(date1, date2)",
        example: "IS_BEFORE(due, TODAY())",
        sql: |c, _, a| c.compare(BinaryOp::Lt, &a[0], &a[1]),
        eval: |ev, _, a| {
            let x = ev.eval(&a[0]);
            let y = ev.eval(&a[1]);
            Value::Boolean(compare_op(BinaryOp::Lt, &x, &y))
        },
    },
    Function {
        name: "IS_AFTER",
        min: 2,
        max: 2,
        args: &[DateLike, DateLike],
        ret: Ret::Fixed(T::Boolean),
        fails: Fails::Never,
        signature: "IS_AFTER(date1, date2)",
        example: "IS_AFTER(shipped, due)",
        sql: |c, _, a| c.compare(BinaryOp::Gt, &a[0], &a[1]),
        eval: |ev, _, a| {
            let x = ev.eval(&a[0]);
            let y = ev.eval(&a[1]);
            Value::Boolean(compare_op(BinaryOp::Gt, &x, &y))
        },
    },
];

/// A 1-based text position: truncated, at least 1.
fn position_sql(c: &mut SqlCompiler<'_>, e: &Expr) {
    c.sql("greatest(panels_int(");
    c.num(e);
    c.sql("), 1)");
}

fn position_eval(ev: &mut Evaluator<'_>, e: &Expr) -> i64 {
    num::to_int(ev.num(e)).max(1)
}

/// A character count: truncated, at least 0; 1 when omitted.
fn count_sql(c: &mut SqlCompiler<'_>, e: Option<&Expr>) {
    match e {
        None => c.sql("1"),
        Some(e) => {
            c.sql("greatest(panels_int(");
            c.num(e);
            c.sql("), 0)");
        }
    }
}

fn count_eval(ev: &mut Evaluator<'_>, e: Option<&Expr>) -> i64 {
    e.map_or(1, |e| num::to_int(ev.num(e)).max(0))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};

    use super::FUNCTIONS;
    use crate::formula::{Row, Schema, Value, ValueType, analyze, evaluate_with_warnings};

    struct TestRow;

    impl Row for TestRow {
        fn get(&self, name: &str) -> Value {
            match name {
                "n" => Value::Number(2.5),
                "neg" => Value::Number(-7.0),
                "t" => Value::Text("Hello World".into()),
                "b" => Value::Boolean(true),
                "d" => Value::Date(date(2024, 1, 31)),
                "dt" => Value::DateTime(now()),
                // A text where a number belongs: source data of the wrong type.
                "wrong" => Value::Text("12".into()),
                _ => Value::Blank,
            }
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 10, 15, 4, 5)
            .single()
            .expect("valid")
    }

    fn schema() -> Schema {
        [
            ("n", ValueType::Number),
            ("neg", ValueType::Number),
            ("bn", ValueType::Number),
            ("wrong", ValueType::Number),
            ("t", ValueType::Text),
            ("bt", ValueType::Text),
            ("b", ValueType::Boolean),
            ("bb", ValueType::Boolean),
            ("d", ValueType::Date),
            ("bd", ValueType::Date),
            ("dt", ValueType::DateTime),
            ("bdt", ValueType::DateTime),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn run(src: &str) -> (Value, Vec<String>) {
        let checked = analyze(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"));
        evaluate_with_warnings(&checked, &TestRow, now())
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn num(v: f64) -> Value {
        Value::Number(v)
    }

    fn boolean(v: bool) -> Value {
        Value::Boolean(v)
    }

    fn dt(s: &str) -> Value {
        Value::DateTime(
            DateTime::parse_from_rfc3339(s)
                .expect("rfc3339")
                .with_timezone(&Utc),
        )
    }

    /// (formula, expected). Columns: n = 2.5, neg = -7, t = "Hello World", b = TRUE,
    /// d = 2024-01-31, dt = 2024-03-10T15:04:05Z = NOW(); bn/bt/bb/bd/bdt are blank.
    fn cases() -> Vec<(&'static str, Value)> {
        use Value::Blank;
        vec![
            // logic
            ("IF(b, 1, 2)", num(1.0)),
            ("IF(bb, 1, 2)", num(2.0)),
            ("IF(FALSE, 1)", Blank),
            ("IF(b, d, dt)", dt("2024-01-31T00:00:00Z")),
            ("SWITCH(t, 'x', 1, 'Hello World', 2, 3)", num(2.0)),
            ("SWITCH(t, 'x', 1, 3)", num(3.0)),
            ("SWITCH(t, 'x', 1)", Blank),
            ("SWITCH(bt, BLANK(), 1, 2)", num(2.0)),
            ("AND(b, n > 1)", boolean(true)),
            ("AND(b, bb)", boolean(false)),
            ("OR(bb, FALSE)", boolean(false)),
            ("OR(bb, b)", boolean(true)),
            ("NOT(bb)", boolean(true)),
            ("NOT(b)", boolean(false)),
            ("XOR(b, b, b)", boolean(true)),
            ("XOR(b, bb)", boolean(true)),
            ("XOR(b, b)", boolean(false)),
            ("ISBLANK(bn)", boolean(true)),
            ("ISBLANK(BLANK())", boolean(true)),
            ("ISBLANK('')", boolean(false)),
            ("ISBLANK(1 / 0)", Blank),
            ("COALESCE(bt, bt, t)", text("Hello World")),
            ("COALESCE(bn)", Blank),
            ("BLANK()", Blank),
            // text
            (
                "CONCAT(t, ' ', n, ' ', b, ' ', bn, d)",
                text("Hello World 2.5 TRUE 2024-01-31"),
            ),
            ("t & '!' & bt", text("Hello World!")),
            ("'at ' & dt", text("at 2024-03-10T15:04:05Z")),
            ("UPPER('straße é')", text("STRASSE É")),
            ("UPPER(bt)", Blank),
            ("LOWER('ΣΑΣ ABC')", text("σας abc")),
            ("TRIM('  a b  ')", text("a b")),
            ("TRIM(bt)", Blank),
            ("LEN('héllo')", num(5.0)),
            ("LEN(bt)", Blank),
            ("LEFT(t, 5)", text("Hello")),
            ("LEFT(t)", text("H")),
            ("LEFT(t, -1)", text("")),
            ("LEFT(bt, 2)", Blank),
            ("RIGHT(t, 5)", text("World")),
            ("RIGHT(t, 100)", text("Hello World")),
            ("RIGHT(bt)", Blank),
            ("MID(t, 7, 3)", text("Wor")),
            ("MID(t, 0, 2)", text("He")),
            ("MID(t, 50, 2)", text("")),
            ("MID('héllo', 2, 2.9)", text("él")),
            ("SUBSTITUTE(t, 'o', '0')", text("Hell0 W0rld")),
            ("SUBSTITUTE(t, '', 'x')", text("Hello World")),
            ("SUBSTITUTE(t, 'o', bt)", text("Hell Wrld")),
            ("SUBSTITUTE(bt, 'o', '0')", Blank),
            ("REPLACE(t, 1, 5, 'Howdy')", text("Howdy World")),
            ("REPLACE(t, 20, 1, '!')", text("Hello World!")),
            ("REPLACE('abc', 2, 0, 'X')", text("aXbc")),
            ("FIND('o', t)", num(5.0)),
            ("FIND('z', t)", num(0.0)),
            ("FIND('l', 'héllo')", num(3.0)),
            ("FIND('', t)", num(1.0)),
            ("FIND('o', bt)", Blank),
            ("CONTAINS(t, 'World')", boolean(true)),
            ("CONTAINS(t, 'world')", boolean(false)),
            ("CONTAINS(bt, '')", boolean(true)),
            ("STARTS_WITH(t, 'Hell')", boolean(true)),
            ("STARTS_WITH(bt, 'x')", boolean(false)),
            ("ENDS_WITH(t, 'rld')", boolean(true)),
            ("ENDS_WITH(t, '')", boolean(true)),
            ("REGEX_MATCH(t, '^H\\w+ W')", boolean(true)),
            ("REGEX_MATCH(t, '[0-9]')", boolean(false)),
            ("REGEX_MATCH(bt, '.*')", boolean(false)),
            ("TEXT(0.1 + 0.2)", text("0.30000000000000004")),
            ("TEXT(1e20)", text("1e+20")),
            ("TEXT(b)", text("TRUE")),
            ("TEXT(d)", text("2024-01-31")),
            ("TEXT(bn)", Blank),
            ("REPT('ab', 3)", text("ababab")),
            ("REPT('ab', -1)", text("")),
            ("REPT('ab', 6000)", Blank),
            ("REPT(bt, 2)", Blank),
            // numbers
            ("ROUND(2.5)", num(3.0)),
            ("ROUND(-2.5)", num(-3.0)),
            ("ROUND(2.675, 2)", num(2.68)),
            ("ROUND(1234.5678, -2)", num(1200.0)),
            ("ROUND(bn, 2)", num(0.0)),
            ("ROUNDUP(1.21, 1)", num(1.3)),
            ("ROUNDUP(-1.21)", num(-2.0)),
            ("ROUNDDOWN(1.29, 1)", num(1.2)),
            ("ROUNDDOWN(-1.9)", num(-1.0)),
            ("FLOOR(-2.5)", num(-3.0)),
            ("CEILING(2.1)", num(3.0)),
            ("INT(-2.5)", num(-3.0)),
            ("INT(bn)", num(0.0)),
            ("ABS(neg)", num(7.0)),
            ("SIGN(neg)", num(-1.0)),
            ("SIGN(bn)", num(0.0)),
            ("MIN(n, neg, 3)", num(-7.0)),
            ("MIN(bn, 4)", num(4.0)),
            ("MIN(bn)", Blank),
            ("MAX(n, neg, bn)", num(2.5)),
            ("SUM(n, neg, bn, 1)", num(-3.5)),
            ("SUM(1e308, 1e308, 5)", Blank),
            ("AVERAGE(n, neg, bn)", num(-2.25)),
            ("AVERAGE(bn)", Blank),
            ("POWER(2, 10)", num(1024.0)),
            ("POWER(-8, 1 / 3)", Blank),
            ("POWER(0, -1)", Blank),
            ("POWER(10, 400)", Blank),
            ("SQRT(16)", num(4.0)),
            ("SQRT(neg)", Blank),
            ("MOD(neg, 3)", num(2.0)),
            ("MOD(7, -3)", num(-2.0)),
            ("MOD(5, 0)", Blank),
            ("VALUE(' 12.5 ')", num(12.5)),
            ("VALUE('-1e3')", num(-1000.0)),
            ("VALUE('12abc')", Blank),
            ("VALUE(bt)", Blank),
            ("LOG(1000)", num(3.0)),
            ("LOG(8, 2)", num(3.0)),
            ("LOG(0)", Blank),
            ("LOG(8, 1)", Blank),
            ("LN(EXP(2))", num(2.0)),
            ("LN(-1)", Blank),
            ("EXP(0)", num(1.0)),
            ("EXP(1000)", Blank),
            // operators and blanks
            ("bn + 1", num(1.0)),
            ("-bn", num(-0.0)),
            ("n * 2 - 1 / 4", num(4.75)),
            ("1 / 0", Blank),
            ("1 / 0 + 1", Blank),
            ("1e300 * 1e300", Blank),
            ("bn = 0", boolean(false)),
            ("bn != 0", boolean(false)),
            ("bt = ''", boolean(false)),
            ("'a' < 'b'", boolean(true)),
            ("'Z' < 'a'", boolean(true)),
            ("'é' > 'z'", boolean(true)),
            ("d < dt", boolean(true)),
            ("d = DATE(2024, 1, 31)", boolean(true)),
            ("FALSE < TRUE", boolean(true)),
            ("wrong + 1", Blank),
            // dates
            ("NOW()", dt("2024-03-10T15:04:05Z")),
            ("TODAY()", Value::Date(date(2024, 3, 10))),
            ("DATE(2024, 2, 29)", Value::Date(date(2024, 2, 29))),
            ("DATE(2023, 2, 29)", Blank),
            ("DATE(2024, 13, 1)", Blank),
            ("YEAR(d)", num(2024.0)),
            ("YEAR(bd)", Blank),
            ("MONTH(dt)", num(3.0)),
            ("DAY(d)", num(31.0)),
            ("WEEKDAY(d)", num(4.0)),
            ("HOUR(dt)", num(15.0)),
            ("HOUR(d)", num(0.0)),
            ("MINUTE(dt)", num(4.0)),
            ("SECOND(dt)", num(5.0)),
            ("DATEADD(d, 1, 'months')", Value::Date(date(2024, 2, 29))),
            ("DATEADD(d, 1, 'years')", Value::Date(date(2025, 1, 31))),
            ("DATEADD(d, -2, 'weeks')", Value::Date(date(2024, 1, 17))),
            ("DATEADD(d, 1.9, 'day')", Value::Date(date(2024, 2, 1))),
            ("DATEADD(d, 36, 'hours')", dt("2024-02-01T12:00:00Z")),
            ("DATEADD(dt, -65, 'minutes')", dt("2024-03-10T13:59:05Z")),
            ("DATEADD(dt, 1, 'days')", dt("2024-03-11T15:04:05Z")),
            ("DATEADD(d, 1e9, 'days')", Blank),
            ("DATEADD(bd, 1, 'days')", Blank),
            ("DATEDIFF(dt, d)", num(39.0)),
            ("DATEDIFF(d, dt)", num(-39.0)),
            ("DATEDIFF(dt, d, 'weeks')", num(5.0)),
            ("DATEDIFF(dt, d, 'hours')", num(951.0)),
            ("DATEDIFF(dt, d, 'minutes')", num(57064.0)),
            ("DATEDIFF(dt, d, 'seconds')", num(3_423_845.0)),
            ("DATEDIFF(dt, d, 'months')", num(1.0)),
            ("DATEDIFF(DATE(2030, 1, 31), d, 'years')", num(6.0)),
            ("DATEDIFF(bd, d)", Blank),
            (
                "DATETIME_FORMAT(dt, 'ddd D MMM YYYY, hh:mm a')",
                text("Sun 10 Mar 2024, 03:04 pm"),
            ),
            ("DATETIME_FORMAT(d)", text("2024-01-31 00:00:00")),
            ("DATETIME_FORMAT(bdt, 'YYYY')", Blank),
            (
                "DATETIME_PARSE('2024-05-01T09:30:00+02:00')",
                dt("2024-05-01T07:30:00Z"),
            ),
            ("DATETIME_PARSE('tomorrow')", Blank),
            ("DATETIME_PARSE(bt)", Blank),
            ("IS_BEFORE(d, dt)", boolean(true)),
            ("IS_BEFORE(bd, dt)", boolean(false)),
            ("IS_AFTER(dt, d)", boolean(true)),
            ("IS_AFTER(d, d)", boolean(false)),
        ]
    }

    #[test]
    fn every_function_behaves_as_documented() {
        let mut failures = Vec::new();
        for (src, expected) in cases() {
            let (got, _) = run(src);
            let same = match (&got, &expected) {
                (Value::Number(a), Value::Number(b)) => (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                _ => got == expected,
            };
            if !same {
                failures.push(format!("{src}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn every_function_is_tested_and_there_are_more_than_fifty() {
        assert!(FUNCTIONS.len() > 50, "only {} functions", FUNCTIONS.len());
        let sources: Vec<String> = cases().iter().map(|(s, _)| s.to_uppercase()).collect();
        for f in FUNCTIONS {
            let call = format!("{}(", f.name);
            assert!(
                sources.iter().any(|s| s.contains(&call)),
                "{} has no test case",
                f.name
            );
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(run("round(2.5)").0, num(3.0));
        assert_eq!(
            run("DateAdd(d, 1, 'DAYS')").0,
            Value::Date(date(2024, 2, 1))
        );
    }

    #[test]
    fn a_failure_blanks_the_whole_cell_with_a_warning() {
        let (v, warnings) = run("1 + 1 / 0");
        assert_eq!(v, Value::Blank);
        assert_eq!(warnings, vec!["1:5: division by zero".to_string()]);
        let (v, warnings) = run("wrong * 2");
        assert_eq!(v, Value::Blank);
        assert_eq!(
            warnings,
            vec!["1:1: column wrong holds a value that is not a number".to_string()]
        );
        let (v, warnings) = run("DATE(2023, 2, 30)");
        assert_eq!(v, Value::Blank);
        assert_eq!(warnings.len(), 1);
        // A failed calculation never turns into a number or a text further up.
        for src in [
            "ROUND(n / 0, 2)",
            "SUM(n / 0, 1)",
            "IF(n / 0 > 1, 1, 2)",
            "CONCAT(n / 0, \"x\")",
            "TEXT(SQRT(neg)) & \"!\"",
            "COALESCE(VALUE(\"abc\"), 0)",
            "AND(b, n / 0 > 1)",
            "SWITCH(t, \"Hello World\", LN(neg), 0)",
        ] {
            let (v, warnings) = run(src);
            assert_eq!(v, Value::Blank, "{src}");
            assert_eq!(warnings.len(), 1, "{src}: {warnings:?}");
        }
    }

    #[test]
    fn blank_inputs_and_branches_not_taken_do_not_fail() {
        for (src, expected) in [
            ("n + BLANK()", num(2.5)),
            ("bn * 2", num(0.0)),
            ("IF(bn > 1, 1, 2)", num(2.0)),
            ("COALESCE(bn, 5)", num(5.0)),
            ("IF(n = 0, 0, 10 / n)", num(4.0)),
            ("IF(TRUE, 1, 1 / 0)", num(1.0)),
            ("AND(FALSE, 1 / 0 > 1)", boolean(false)),
            ("OR(TRUE, 1 / 0 > 1)", boolean(true)),
            ("COALESCE(n, 1 / 0)", num(2.5)),
            ("SWITCH(bt, \"x\", 1 / 0, 3)", num(3.0)),
            ("CONCAT(bt, \"x\")", text("x")),
        ] {
            let (v, warnings) = run(src);
            assert_eq!(v, expected, "{src}");
            assert!(warnings.is_empty(), "{src}: {warnings:?}");
        }
    }
}
