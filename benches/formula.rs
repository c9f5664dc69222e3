//! Formula engine micro-benchmarks: the per-request cost of preparing a formula
//! (parse + type-check + SQL compile) and the per-row cost of in-process evaluation.
//! Targets: < 50 µs to prepare a typical 100-character formula, < 1 µs per row for simple
//! arithmetic.

use std::collections::HashMap;
use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use panels::formula::{
    JsonbColumns, Row, Schema, SqlBuilder, Value, ValueType, analyze, compile_sql, evaluate,
};

const TYPICAL: &str = r#"IF(AND(score > 50, NOT(ISBLANK({Last visit date}))), UPPER(LEFT(firstName, 1)) & ". " & lastName, "n/a")"#;

fn schema() -> Schema {
    [
        ("score", ValueType::Number),
        ("price", ValueType::Number),
        ("quantity", ValueType::Number),
        ("firstName", ValueType::Text),
        ("lastName", ValueType::Text),
        ("Last visit date", ValueType::DateTime),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

struct MapRow(HashMap<&'static str, Value>);

impl Row for MapRow {
    fn get(&self, name: &str) -> Value {
        self.0.get(name).cloned().unwrap_or(Value::Blank)
    }
}

fn bench(c: &mut Criterion) {
    let schema = schema();
    c.bench_function("prepare typical formula (parse+check+compile)", |b| {
        b.iter(|| {
            let checked = analyze(black_box(TYPICAL), &schema).expect("valid formula");
            let mut out = SqlBuilder::new(1);
            compile_sql(&checked, &JsonbColumns { row: "r.data" }, &mut out);
            out
        })
    });

    let arithmetic = analyze("price * quantity * 1.2 - 5", &schema).expect("valid formula");
    let row = MapRow(HashMap::from([
        ("price", Value::Number(19.99)),
        ("quantity", Value::Number(3.0)),
    ]));
    let now = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time");
    c.bench_function("evaluate simple arithmetic per row", |b| {
        b.iter(|| evaluate(black_box(&arithmetic), &row, now))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
