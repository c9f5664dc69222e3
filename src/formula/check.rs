//! Type checker: resolves columns against the schema, checks operators and function
//! arguments, and records each node's type in the AST for the compilers.
//!
//! Blank (`BLANK()` and expressions that can only be blank) fits any type. Dates and
//! datetimes may be compared and mixed; a date then means midnight UTC.

use super::datetime::{self, Unit};
use super::functions::{Arg, FUNCTIONS, Ret};
use super::parse::{Expr, ExprKind};
use super::pattern;
use super::{FormulaError, FormulaErrorCode, Schema, Span, ValueType};

pub fn check(mut expr: Expr, schema: &Schema) -> Result<Expr, FormulaError> {
    check_expr(&mut expr, schema)?;
    Ok(expr)
}

fn type_error(message: impl Into<String>, span: Span) -> FormulaError {
    FormulaError::new(FormulaErrorCode::Type, message, span)
}

fn name(ty: Option<ValueType>) -> &'static str {
    ty.map_or("blank", ValueType::name)
}

/// The common type of two branches, if they have one.
fn unify(a: Option<ValueType>, b: Option<ValueType>) -> Option<Option<ValueType>> {
    match (a, b) {
        (None, x) | (x, None) => Some(x),
        (Some(x), Some(y)) if x == y => Some(Some(x)),
        (Some(ValueType::Date), Some(ValueType::DateTime))
        | (Some(ValueType::DateTime), Some(ValueType::Date)) => Some(Some(ValueType::DateTime)),
        _ => None,
    }
}

fn comparable(a: Option<ValueType>, b: Option<ValueType>) -> bool {
    unify(a, b).is_some()
}

fn check_expr(e: &mut Expr, schema: &Schema) -> Result<(), FormulaError> {
    let span = e.span;
    let ty = match &mut e.kind {
        ExprKind::Number(_) => Some(ValueType::Number),
        ExprKind::Text(_) => Some(ValueType::Text),
        ExprKind::Boolean(_) => Some(ValueType::Boolean),
        ExprKind::Column(name) => Some(schema.get(name).ok_or_else(|| {
            FormulaError::new(
                FormulaErrorCode::UnknownColumn,
                format!("unknown column '{name}'"),
                span,
            )
        })?),
        ExprKind::Neg(inner) => {
            check_expr(inner, schema)?;
            if !matches!(inner.ty, None | Some(ValueType::Number)) {
                return Err(type_error(
                    format!("'-' needs a number, found {}", name(inner.ty)),
                    inner.span,
                ));
            }
            Some(ValueType::Number)
        }
        ExprKind::Binary(op, l, r) => {
            check_expr(l, schema)?;
            check_expr(r, schema)?;
            if op.is_comparison() {
                if !comparable(l.ty, r.ty) {
                    return Err(type_error(
                        format!("cannot compare {} with {}", name(l.ty), name(r.ty)),
                        span,
                    ));
                }
                Some(ValueType::Boolean)
            } else if *op == super::parse::BinaryOp::Concat {
                Some(ValueType::Text)
            } else {
                for side in [&**l, &**r] {
                    if !matches!(side.ty, None | Some(ValueType::Number)) {
                        return Err(type_error(
                            format!("'{}' needs numbers, found {}", op.symbol(), name(side.ty)),
                            side.span,
                        ));
                    }
                }
                Some(ValueType::Number)
            }
        }
        ExprKind::Call(call) => {
            let f = &FUNCTIONS[call.func];
            let n = call.args.len();
            if n < f.min || n > f.max {
                let expected = match (f.min, f.max) {
                    (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                    (a, usize::MAX) => {
                        format!("at least {a} argument{}", if a == 1 { "" } else { "s" })
                    }
                    (a, b) => format!("{a} to {b} arguments"),
                };
                return Err(FormulaError::new(
                    FormulaErrorCode::Arity,
                    format!("{} expects {expected}, got {n}", f.name),
                    span,
                ));
            }
            for arg in call.args.iter_mut() {
                check_expr(arg, schema)?;
            }
            for (i, arg) in call.args.iter().enumerate() {
                check_arg(f.name, i, f.arg(i), arg)?;
            }
            call_type(f.name, f.ret, &call.args)?
        }
    };
    e.ty = ty;
    Ok(())
}

fn check_arg(fname: &str, i: usize, kind: Arg, arg: &Expr) -> Result<(), FormulaError> {
    let ok = match kind {
        Arg::Any | Arg::Special => true,
        Arg::Text => matches!(arg.ty, None | Some(ValueType::Text)),
        Arg::Number => matches!(arg.ty, None | Some(ValueType::Number)),
        Arg::Boolean => matches!(arg.ty, None | Some(ValueType::Boolean)),
        Arg::DateLike => matches!(arg.ty, None | Some(ValueType::Date | ValueType::DateTime)),
        Arg::Literal => return check_literal(fname, arg),
    };
    if ok {
        return Ok(());
    }
    let wanted = match kind {
        Arg::Text => "text",
        Arg::Number => "a number",
        Arg::Boolean => "a boolean",
        _ => "a date or datetime",
    };
    Err(type_error(
        format!(
            "{fname} expects {wanted} as argument {}, found {}",
            i + 1,
            name(arg.ty)
        ),
        arg.span,
    ))
}

fn check_literal(fname: &str, arg: &Expr) -> Result<(), FormulaError> {
    let ExprKind::Text(text) = &arg.kind else {
        return Err(type_error(
            format!("{fname} needs a quoted text literal here"),
            arg.span,
        ));
    };
    let result = match fname {
        "REGEX_MATCH" => pattern::normalize(text).map(drop),
        "DATETIME_FORMAT" => datetime::parse_format(text).map(drop),
        _ => match Unit::parse(text) {
            Some(_) => Ok(()),
            None => Err(format!(
                "unknown unit '{text}': use seconds, minutes, hours, days, weeks, months or years"
            )),
        },
    };
    result.map_err(|message| type_error(message, arg.span))
}

fn call_type(fname: &str, ret: Ret, args: &[Expr]) -> Result<Option<ValueType>, FormulaError> {
    let branches = |items: &mut dyn Iterator<Item = &Expr>| {
        let mut ty = None;
        for item in items {
            ty = unify(ty, item.ty).ok_or_else(|| {
                type_error(
                    format!(
                        "{fname} results must have one type, found {} and {}",
                        name(ty),
                        name(item.ty)
                    ),
                    item.span,
                )
            })?;
        }
        Ok(ty)
    };
    match ret {
        Ret::Fixed(ty) => Ok(Some(ty)),
        Ret::Blank => Ok(None),
        Ret::If => branches(&mut args[1..].iter()),
        Ret::Coalesce => branches(&mut args.iter()),
        Ret::Switch => {
            let rest = &args[1..];
            let mut subject = args[0].ty;
            for pattern in rest.chunks_exact(2).map(|pair| &pair[0]) {
                match (subject, pattern.ty) {
                    (_, None) => {}
                    (None, Some(ty)) => subject = Some(ty),
                    (Some(a), Some(b)) if a == b => {}
                    (Some(_), Some(_)) => {
                        return Err(type_error(
                            format!(
                                "SWITCH pattern is {} but the expression is {}",
                                name(pattern.ty),
                                name(subject)
                            ),
                            pattern.span,
                        ));
                    }
                }
            }
            let results = rest
                .chunks(2)
                .map(|chunk| chunk.last().unwrap_or(&chunk[0]));
            branches(&mut results.into_iter())
        }
        Ret::DateAdd => {
            let unit = super::functions::unit_arg(args, 2);
            Ok(match args[0].ty {
                None => None,
                Some(ValueType::Date) if unit.is_calendar() => Some(ValueType::Date),
                Some(_) => Some(ValueType::DateTime),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::formula::{FormulaErrorCode, Schema, ValueType, analyze};

    fn schema() -> Schema {
        [
            ("n", ValueType::Number),
            ("t", ValueType::Text),
            ("b", ValueType::Boolean),
            ("d", ValueType::Date),
            ("dt", ValueType::DateTime),
            ("Last visit date", ValueType::DateTime),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn ty(src: &str) -> ValueType {
        match analyze(src, &schema()) {
            Ok(c) => c.result_type,
            Err(e) => panic!("{src}: {e}"),
        }
    }

    fn err(src: &str) -> (FormulaErrorCode, String) {
        match analyze(src, &schema()) {
            Ok(c) => panic!("{src} should not check, got {:?}", c.result_type),
            Err(e) => (e.code, e.to_string()),
        }
    }

    #[test]
    fn infers_result_types() {
        assert_eq!(ty("n * 2 + 1"), ValueType::Number);
        assert_eq!(ty("t & n"), ValueType::Text);
        assert_eq!(ty("n > 1"), ValueType::Boolean);
        assert_eq!(ty("IF(b, n, BLANK())"), ValueType::Number);
        assert_eq!(ty("IF(b, d, dt)"), ValueType::DateTime);
        assert_eq!(ty("BLANK()"), ValueType::Text);
        assert_eq!(ty("BLANK() + 1"), ValueType::Number);
        assert_eq!(ty("COALESCE(BLANK(), t, 'x')"), ValueType::Text);
        assert_eq!(ty("SWITCH(t, 'a', 1, 'b', 2)"), ValueType::Number);
        assert_eq!(ty("SWITCH(n, 1, 'one', 'other')"), ValueType::Text);
        assert_eq!(ty("DATEADD(d, 1, 'days')"), ValueType::Date);
        assert_eq!(ty("DATEADD(d, 1, 'Hours')"), ValueType::DateTime);
        assert_eq!(ty("DATEADD(dt, 1, 'day')"), ValueType::DateTime);
        assert_eq!(ty("d < dt"), ValueType::Boolean);
        assert_eq!(ty("{Last visit date} > NOW()"), ValueType::Boolean);
        assert_eq!(ty("len(t) + value('1')"), ValueType::Number);
        assert_eq!(ty("REGEX_MATCH(t, '^[a-z]+$')"), ValueType::Boolean);
    }

    #[test]
    fn rejects_bad_formulas_with_spans() {
        assert_eq!(
            err("n + nope"),
            (
                FormulaErrorCode::UnknownColumn,
                "1:5: unknown column 'nope'".into()
            )
        );
        assert_eq!(
            err("{Last visit}"),
            (
                FormulaErrorCode::UnknownColumn,
                "1:1: unknown column 'Last visit'".into()
            )
        );
        assert_eq!(
            err("t = n"),
            (
                FormulaErrorCode::Type,
                "1:1: cannot compare text with number".into()
            )
        );
        assert_eq!(
            err("1 + t"),
            (
                FormulaErrorCode::Type,
                "1:5: '+' needs numbers, found text".into()
            )
        );
        assert_eq!(
            err("-t"),
            (
                FormulaErrorCode::Type,
                "1:2: '-' needs a number, found text".into()
            )
        );
        assert_eq!(
            err("IF(b)"),
            (
                FormulaErrorCode::Arity,
                "1:1: IF expects 2 to 3 arguments, got 1".into()
            )
        );
        assert_eq!(
            err("NOT(b, b)"),
            (
                FormulaErrorCode::Arity,
                "1:1: NOT expects 1 argument, got 2".into()
            )
        );
        assert_eq!(
            err("AND()"),
            (
                FormulaErrorCode::Arity,
                "1:1: AND expects at least 1 argument, got 0".into()
            )
        );
        assert_eq!(
            err("LEFT(n, 2)"),
            (
                FormulaErrorCode::Type,
                "1:6: LEFT expects text as argument 1, found number".into()
            )
        );
        assert_eq!(
            err("IF(b, 1, 'x')"),
            (
                FormulaErrorCode::Type,
                "1:10: IF results must have one type, found number and text".into()
            )
        );
        assert_eq!(
            err("SWITCH(t, 1, 'one')"),
            (
                FormulaErrorCode::Type,
                "1:11: SWITCH pattern is number but the expression is text".into()
            )
        );
        assert_eq!(err("DATEADD(d, 1, 'fortnights')").0, FormulaErrorCode::Type);
        assert_eq!(
            err("DATEADD(d, 1, t)").1,
            "1:15: DATEADD needs a quoted text literal here"
        );
        assert_eq!(err("REGEX_MATCH(t, '(?=a)')").0, FormulaErrorCode::Type);
        assert_eq!(err("DATETIME_FORMAT(d, '\"')").0, FormulaErrorCode::Type);
        assert_eq!(err("YEAR(n)").0, FormulaErrorCode::Type);
        assert_eq!(err("b < 'x'").1, "1:1: cannot compare boolean with text");
    }
}
