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
