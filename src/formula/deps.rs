//! Dependencies of a formula and cycle detection across a panel's calculated columns.

use std::collections::{HashMap, HashSet};

use super::parse::{Expr, ExprKind};

/// Column names referenced by `expr`, de-duplicated, in order of first appearance.
pub fn dependencies(expr: &Expr) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    collect(expr, &mut out);
    out
}

fn collect(expr: &Expr, out: &mut Vec<String>) {
    match &expr.kind {
        ExprKind::Column(name) => {
            if !out.iter().any(|n| n == name) {
                out.push(name.clone());
            }
        }
        ExprKind::Neg(inner) => collect(inner, out),
        ExprKind::Binary(_, l, r) => {
            collect(l, out);
            collect(r, out);
        }
        ExprKind::Call(call) => call.args.iter().for_each(|a| collect(a, out)),
        ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Boolean(_) => {}
    }
}

/// `source` with every reference to column `old` naming `new` instead, or `None` when the source
/// does not parse. The references are the parser's own column nodes, so text in quotes, function
/// names and keywords are never touched; a reference keeps its form (bare or `{braced}`) when
/// `new` can be written that way.
pub fn rename_column(source: &str, old: &str, new: &str) -> Option<String> {
    let expr = super::parse::parse(source).ok()?;
    let mut spans = Vec::new();
    column_spans(&expr, old, &mut spans);
    let mut out = source.to_owned();
    // From the end, so earlier byte offsets stay valid.
    spans.sort_by_key(|s| std::cmp::Reverse(s.start));
    for span in spans {
        let braced = source[span.start..].starts_with('{');
        let replacement = if !braced && is_identifier(new) {
            new.to_owned()
        } else {
            format!("{{{new}}}")
        };
        out.replace_range(span.start..span.end, &replacement);
    }
    Some(out)
}

fn column_spans(expr: &Expr, name: &str, out: &mut Vec<super::Span>) {
    match &expr.kind {
        ExprKind::Column(column) if column == name => out.push(expr.span),
        ExprKind::Neg(inner) => column_spans(inner, name, out),
        ExprKind::Binary(_, l, r) => {
            column_spans(l, name, out);
            column_spans(r, name, out);
        }
        ExprKind::Call(call) => call.args.iter().for_each(|a| column_spans(a, name, out)),
        _ => {}
    }
}

/// Whether `name` can be written bare in a formula (not braced).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && !name.eq_ignore_ascii_case("true")
        && !name.eq_ignore_ascii_case("false")
}

/// Finds a dependency cycle among calculated columns. `graph` maps each calculated column
/// to the columns its formula references; names that are not keys are base columns and end
/// a path. Returns the cycle as a closed path, e.g. `["risk", "score", "risk"]`. Columns
/// are visited in name order so the reported cycle is deterministic.
pub fn find_cycle(graph: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    let mut names: Vec<&String> = graph.keys().collect();
    names.sort();
    let mut done: HashSet<&str> = HashSet::new();
    for start in names {
        if done.contains(start.as_str()) {
            continue;
        }
        // Iterative depth-first search: formulas can chain arbitrarily many columns.
        let mut path: Vec<&str> = vec![start];
        let mut on_path: HashSet<&str> = HashSet::from([start.as_str()]);
        let mut next_child: Vec<usize> = vec![0];
        while let Some(&node) = path.last() {
            let depth = path.len() - 1;
            let children = graph.get(node).map(Vec::as_slice).unwrap_or(&[]);
            let i = next_child[depth];
            if i >= children.len() {
                done.insert(node);
                on_path.remove(node);
                path.pop();
                next_child.pop();
                continue;
            }
            next_child[depth] += 1;
            let child = children[i].as_str();
            if on_path.contains(child) {
                let from = path.iter().position(|n| *n == child).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(child.to_string());
                return Some(cycle);
            }
            if done.contains(child) || !graph.contains_key(child) {
                continue;
            }
            path.push(child);
            on_path.insert(child);
            next_child.push(0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formula::{Schema, ValueType, analyze};

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_are_unique_in_first_appearance_order() {
        let schema: Schema = ["b", "a", "Last visit"]
            .iter()
            .map(|n| (n.to_string(), ValueType::Number))
            .collect();
        let checked = analyze("b + a * b + {Last visit} + ABS(a)", &schema).expect("valid");
        assert_eq!(checked.dependencies, vec!["b", "a", "Last visit"]);
    }

    #[test]
    fn renaming_rewrites_only_the_columns_references() {
        assert_eq!(
            rename_column("a + {a} + 'a' + ABS(a) + LEN(\"a {a}\")", "a", "b").as_deref(),
            Some("b + {b} + 'a' + ABS(b) + LEN(\"a {a}\")")
        );
        assert_eq!(
            rename_column("a * 2", "a", "two words").as_deref(),
            Some("{two words} * 2")
        );
        assert_eq!(
            rename_column("{x y} - 1", "x y", "z").as_deref(),
            Some("{z} - 1")
        );
        assert_eq!(
            rename_column("{  padded  } + âge", "padded", "p").as_deref(),
            Some("{p} + âge")
        );
        assert_eq!(
            rename_column("IF(TRUE, 1, 2)", "TRUE", "x").as_deref(),
            Some("IF(TRUE, 1, 2)")
        );
        assert_eq!(rename_column("(unclosed", "a", "b"), None);
    }

    #[test]
    fn finds_cycles_with_their_path() {
        let g = graph(&[("risk", &["score", "age"]), ("score", &["risk"])]);
        assert_eq!(
            find_cycle(&g),
            Some(vec!["risk".into(), "score".into(), "risk".into()])
        );
        let g = graph(&[("a", &["a"])]);
        assert_eq!(find_cycle(&g), Some(vec!["a".into(), "a".into()]));
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["d"]), ("d", &["b"])]);
        assert_eq!(
            find_cycle(&g),
            Some(vec!["b".into(), "c".into(), "d".into(), "b".into()])
        );
        let err =
            crate::formula::FormulaError::cycle(&["risk".into(), "score".into(), "risk".into()]);
        assert_eq!(
            err.to_string(),
            "calculated columns depend on each other: risk → score → risk"
        );
        assert_eq!(err.code_str(), "FORMULA_CYCLE");
    }

    #[test]
    fn accepts_acyclic_graphs() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["c", "base"]), ("c", &["base"])]);
        assert_eq!(find_cycle(&g), None);
        let long: HashMap<String, Vec<String>> = (0..10_000)
            .map(|i| (format!("c{i}"), vec![format!("c{}", i + 1)]))
            .collect();
        assert_eq!(find_cycle(&long), None);
    }
}
