//! Compiles a resolved filter tree to one SQL condition, with every operand a bound parameter.
//! The caller says how each field reads ([`FieldSql`]); the semantics are those of
//! [`super::eval`], which the rows tests hold the two to.
//!
//! The condition is true for the rows that pass and false or NULL for the others, as a `where`
//! clause reads it: a positive test is written plainly (`x > $1`, `x = any(…)`), so the planner can
//! use an index on `x`; a negative one says what an empty cell does (`x is null or x <> $1`). No
//! group is ever negated, so a NULL never turns into a pass.

use super::FieldKind;
use super::resolve::{Cmp, Operand, Resolved, Test};
use crate::formula::{SqlBuilder, SqlParam};

/// How a field reads in SQL: trusted text whose parameters are already bound in the builder.
#[derive(Debug, Clone)]
pub struct FieldSql {
    pub kind: FieldKind,
    /// The typed value (`text`, `float8`, `boolean`, `date`, `timestamptz`), an empty text as
    /// NULL; for a multiple-choice field, a `text[]` of its choices in lower case (empty, never
    /// NULL, for a blank cell).
    pub sql: String,
    /// A text already in lower case (a typed slot): compared as it is, which an index on it
    /// serves under row-level security (`lower` is not leakproof).
    pub lowered: bool,
}

impl FieldSql {
    /// The value in lower case.
    pub fn lower(&self) -> String {
        if self.lowered {
            self.sql.clone()
        } else {
            format!("panels_lower({})", self.sql)
        }
    }
}

/// Appends the tree as a condition (see the module's documentation).
pub fn compile(
    tree: &Resolved,
    field: &dyn Fn(&str) -> Option<FieldSql>,
    out: &mut SqlBuilder,
) -> Result<(), String> {
    match tree {
        Resolved::All(nodes) | Resolved::Any(nodes) if nodes.is_empty() => {
            out.push_sql(if matches!(tree, Resolved::All(_)) {
                "true"
            } else {
                "false"
            });
        }
        Resolved::All(nodes) | Resolved::Any(nodes) => {
            let glue = if matches!(tree, Resolved::All(_)) {
                " and "
            } else {
                " or "
            };
            out.push_sql("(");
            for (i, node) in nodes.iter().enumerate() {
                if i > 0 {
                    out.push_sql(glue);
                }
                compile(node, field, out)?;
            }
            out.push_sql(")");
        }
        Resolved::Condition(c) => {
            let f = field(&c.field).ok_or_else(|| format!("unknown field {:?}", c.field))?;
            out.push_sql("(");
            condition(&f, &c.test, out);
            out.push_sql(")");
        }
    }
    Ok(())
}

fn param(op: &Operand) -> Option<SqlParam> {
    Some(match op {
        Operand::Text(s) => SqlParam::Text(s.clone()),
        Operand::Number(n) => SqlParam::Number(*n),
        Operand::Bool(b) => SqlParam::Bool(*b),
        Operand::Date(d) => SqlParam::Date(*d),
        Operand::Instant(t) => SqlParam::Instant(*t),
        Operand::Day(..) | Operand::Nobody => return None,
    })
}

/// `panels_lower($n::text)`: operands are lowered by the same function as the cells.
fn lowered(out: &mut SqlBuilder, s: &str) {
    out.push_sql("panels_lower(");
    out.push_param(SqlParam::Text(s.to_owned()));
    out.push_sql(")");
}

/// The operands that can equal something (`$CURRENT_USER` without an e-mail equals nothing).
fn real(ops: &[Operand]) -> Vec<&Operand> {
    ops.iter().filter(|op| **op != Operand::Nobody).collect()
}

/// `(<value> is null or not (<test>))`: a negative test, which an empty cell passes.
fn negated(f: &FieldSql, test: &Test, out: &mut SqlBuilder) {
    out.push_sql(&format!("({} is null or not (", f.sql));
    condition(f, test, out);
    out.push_sql("))");
}

fn condition(f: &FieldSql, test: &Test, out: &mut SqlBuilder) {
    match test {
        Test::Empty => match f.kind {
            FieldKind::List => out.push_sql(&format!("cardinality({}) = 0", f.sql)),
            _ => out.push_sql(&format!("{} is null", f.sql)),
        },
        Test::NotEmpty => match f.kind {
            FieldKind::List => out.push_sql(&format!("cardinality({}) > 0", f.sql)),
            _ => out.push_sql(&format!("{} is not null", f.sql)),
        },
        _ if f.kind == FieldKind::List => list_condition(f, test, out),
        Test::NotEquals(op) => negated(f, &Test::Equals(op.clone()), out),
        Test::NotIn(ops) => negated(f, &Test::In(ops.clone()), out),
        Test::NotContains(s) => negated(f, &Test::Contains(s.clone()), out),
        Test::Equals(op) => equals(f, op, out),
        Test::In(ops) => {
            let ops = real(ops);
            if ops.is_empty() {
                out.push_sql("false");
            } else if ops.iter().any(|op| matches!(op, Operand::Day(..))) {
                // Whole local days: one range each.
                out.push_sql("(");
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        out.push_sql(" or ");
                    }
                    equals(f, op, out);
                }
                out.push_sql(")");
            } else {
                let text = f.kind == FieldKind::Text;
                out.push_sql(&if text {
                    format!("{} in (", f.lower())
                } else {
                    format!("{} in (", f.sql)
                });
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        out.push_sql(", ");
                    }
                    match (text, op) {
                        (true, Operand::Text(s)) => lowered(out, s),
                        (_, op) => match param(op) {
                            Some(p) => out.push_param(p),
                            None => out.push_sql("null"),
                        },
                    }
                }
                out.push_sql(")");
            }
        }
        Test::Compare(cmp, op) => compare(f, *cmp, op, out),
        Test::Between(low, high) => {
            out.push_sql("(");
            compare(f, Cmp::Gte, low, out);
            out.push_sql(" and ");
            compare(f, Cmp::Lte, high, out);
            out.push_sql(")");
        }
        Test::Contains(s) => {
            out.push_sql(&format!("strpos({}, ", f.lower()));
            lowered(out, s);
            out.push_sql(") > 0");
        }
        Test::StartsWith(s) => {
            out.push_sql(&format!("starts_with({}, ", f.lower()));
            lowered(out, s);
            out.push_sql(")");
        }
        Test::EndsWith(s) => {
            out.push_sql(&format!("panels_ends_with({}, ", f.lower()));
            lowered(out, s);
            out.push_sql(")");
        }
    }
}

/// A multiple-choice field (its choices are never NULL, an empty cell has none): `eq` compares
/// its choices joined by ", ", `in` (and `contains`) asks for a choice among the operands.
fn list_condition(f: &FieldSql, test: &Test, out: &mut SqlBuilder) {
    let choices = |ops: &[Operand]| -> Vec<String> {
        ops.iter()
            .filter_map(|op| match op {
                Operand::Text(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    };
    let any_of = |out: &mut SqlBuilder, texts: &[String]| {
        out.push_sql(&format!("{} && array[", f.sql));
        for (i, s) in texts.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            lowered(out, s);
        }
        out.push_sql("]");
    };
    match test {
        Test::Equals(Operand::Text(s)) => {
            out.push_sql(&format!("array_to_string({}, ', ') = ", f.sql));
            lowered(out, s);
        }
        Test::NotEquals(Operand::Text(s)) => {
            out.push_sql(&format!("array_to_string({}, ', ') <> ", f.sql));
            lowered(out, s);
        }
        Test::NotEquals(_) => out.push_sql("true"),
        Test::In(ops) => {
            let texts = choices(ops);
            if texts.is_empty() {
                out.push_sql("false");
            } else {
                any_of(out, &texts);
            }
        }
        Test::NotIn(ops) => {
            let texts = choices(ops);
            if texts.is_empty() {
                out.push_sql("true");
            } else {
                out.push_sql("not ");
                any_of(out, &texts);
            }
        }
        _ => out.push_sql("false"),
    }
}

fn equals(f: &FieldSql, op: &Operand, out: &mut SqlBuilder) {
    match (f.kind, op) {
        (_, Operand::Nobody) => out.push_sql("false"),
        (FieldKind::Text, Operand::Text(s)) => {
            out.push_sql(&format!("{} = ", f.lower()));
            lowered(out, s);
        }
        (FieldKind::DateTime, Operand::Day(..)) => {
            out.push_sql("(");
            compare(f, Cmp::Gte, op, out);
            out.push_sql(" and ");
            compare(f, Cmp::Lte, op, out);
            out.push_sql(")");
        }
        (_, op) => match param(op) {
            Some(p) => {
                out.push_sql(&format!("{} = ", f.sql));
                out.push_param(p);
            }
            None => out.push_sql("false"),
        },
    }
}

fn compare(f: &FieldSql, cmp: Cmp, op: &Operand, out: &mut SqlBuilder) {
    let (symbol, bound) = match (cmp, op) {
        // A local day: after it means from its end on, before it means before its start.
        (Cmp::Gt, Operand::Day(_, end)) => (">=", SqlParam::Instant(*end)),
        (Cmp::Gte, Operand::Day(start, _)) => (">=", SqlParam::Instant(*start)),
        (Cmp::Lt, Operand::Day(start, _)) => ("<", SqlParam::Instant(*start)),
        (Cmp::Lte, Operand::Day(_, end)) => ("<", SqlParam::Instant(*end)),
        (cmp, op) => {
            let Some(p) = param(op) else {
                out.push_sql("false");
                return;
            };
            let symbol = match cmp {
                Cmp::Gt => ">",
                Cmp::Gte => ">=",
                Cmp::Lt => "<",
                Cmp::Lte => "<=",
            };
            (symbol, p)
        }
    };
    out.push_sql(&format!("{} {symbol} ", f.sql));
    out.push_param(bound);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::ResolvedCondition;

    #[test]
    fn operands_travel_as_parameters_and_negative_tests_say_what_empty_does() {
        let tree = Resolved::Any(vec![
            Resolved::Condition(ResolvedCondition {
                field: "name".into(),
                kind: FieldKind::Text,
                test: Test::Equals(Operand::Text("x'); drop table t; --".into())),
            }),
            Resolved::Condition(ResolvedCondition {
                field: "age".into(),
                kind: FieldKind::Number,
                test: Test::NotIn(vec![Operand::Number(1.0), Operand::Number(2.0)]),
            }),
        ]);
        let fields = |name: &str| {
            Some(match name {
                "name" => FieldSql {
                    kind: FieldKind::Text,
                    sql: "c.name".into(),
                    lowered: false,
                },
                _ => FieldSql {
                    kind: FieldKind::Number,
                    sql: "c.age".into(),
                    lowered: false,
                },
            })
        };
        let mut out = SqlBuilder::new(3);
        compile(&tree, &fields, &mut out).expect("compiles");
        assert!(!out.sql.contains("drop"), "{}", out.sql);
        assert_eq!(
            out.sql,
            "((panels_lower(c.name) = panels_lower($3::text)) or ((c.age is null or not (c.age in ($4::float8, $5::float8)))))"
        );
        assert_eq!(out.params.len(), 3);
        let mut empty = SqlBuilder::new(1);
        compile(&Resolved::Any(vec![]), &fields, &mut empty).expect("compiles");
        assert_eq!(empty.sql, "false");
    }
}
