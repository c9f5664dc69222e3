//! A panel's rows through its columns, and the formula dry run.

use panels::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, token_for};

struct Given {
    app: TestApp,
    token: String,
    panel: i64,
    ds: i64,
}

async fn given() -> Given {
    let app = TestApp::spawn().await;
    let token = token_for("rows", "admin@rows.example", Role::Admin);
    let panel = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"name": "Rows"}))
        .send()
        .await
        .body["id"]
        .as_i64()
        .expect("panel");
    let ds = app
        .post(&format!("/api/panels/{panel}/datasources"))
        .bearer(&token)
        .json(&json!({"type": "custom", "config": {"keyField": "mrn"}}))
        .send()
        .await
        .body["id"]
        .as_i64()
        .expect("ds");
    Given {
        app,
        token,
        panel,
        ds,
    }
}

impl Given {
    async fn base(&self, name: &str, column_type: &str, source: &str) {
        let res = self
            .app
            .post(&format!("/api/panels/{}/columns/base", self.panel))
            .bearer(&self.token)
            .json(&json!({"name": name, "type": column_type, "sourceField": source, "dataSourceId": self.ds, "properties": {}}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }

    async fn calculated(&self, name: &str, column_type: &str, formula: &str) -> Value {
        let res = self
            .app
            .post(&format!("/api/panels/{}/columns/calculated", self.panel))
            .bearer(&self.token)
            .json(&json!({"name": name, "type": column_type, "formula": formula, "properties": {}}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body
    }

    async fn push(&self, records: Value) {
        let res = self
            .app
            .post(&format!(
                "/api/panels/{}/datasources/{}/records",
                self.panel, self.ds
            ))
            .bearer(&self.token)
            .json(&json!({"records": records}))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
}

#[tokio::test]
async fn rows_are_projected_through_base_and_calculated_columns() {
    let g = given().await;
    g.base("name", "text", "name").await;
    g.base("age", "number", "age").await;
    g.base("city", "text", "address.city").await;
    g.base("heart rate", "number", "/vitals/hr").await;
    g.base("seen", "date", "seen").await;
    let calc = g
        .calculated(
            "label",
            "text",
            "UPPER(name) & \" (\" & TEXT(age * 2) & \")\"",
        )
        .await;
    assert_eq!(calc["resultType"], "text");
    assert_eq!(calc["dependencies"], json!(["name", "age"]));
    g.calculated("risk", "number", "100 / ({heart rate} - 60)")
        .await;
    g.push(json!([
        {"mrn": "M1", "name": "ada", "age": 36, "address": {"city": "London"}, "vitals": {"hr": 70}, "seen": "2026-03-01"},
        {"mrn": "M2", "name": "grace", "age": "eighty", "vitals": {"hr": 60}, "seen": "not a date"},
        {"mrn": "M3", "name": "alan", "age": "41"}
    ]))
    .await;

    let res = g
        .app
        .get(&format!("/api/panels/{}/rows", g.panel))
        .bearer(&g.token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let rows = res.body["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["key"], "M1");
    assert_eq!(rows[0]["dataSourceId"], g.ds);
    let ada = &rows[0]["values"];
    assert_eq!(ada["name"], "ada");
    assert_eq!(ada["age"], 36.0);
    assert_eq!(ada["city"], "London", "dotted paths reach nested fields");
    assert_eq!(ada["heart rate"], 70.0, "JSON pointers too");
    assert_eq!(ada["seen"], "2026-03-01");
    assert_eq!(ada["label"], "ADA (72)");
    assert_eq!(ada["risk"], 10.0);

    let grace = &rows[1]["values"];
    assert_eq!(
        grace["age"],
        Value::Null,
        "a value that does not coerce is null"
    );
    assert_eq!(grace["seen"], Value::Null);
    assert_eq!(
        grace["risk"],
        Value::Null,
        "division by zero is a null cell, not a failed page"
    );
    assert_eq!(
        grace["label"], "GRACE (0)",
        "a blank counts as 0 in arithmetic"
    );
    assert_eq!(rows[2]["values"]["age"], 41.0, "numeric text coerces");

    let warnings = res.body["warnings"].as_array().expect("warnings");
    let age = warnings
        .iter()
        .find(|w| w["column"] == "age")
        .expect("age warning");
    assert_eq!(age["count"], 1);
    assert!(
        warnings
            .iter()
            .any(|w| w["column"] == "seen" && w["count"] == 1),
        "{warnings:?}"
    );
    assert_eq!(res.body["nextCursor"], Value::Null);
}

#[tokio::test]
async fn rows_are_keyset_paged_and_bounded() {
    let g = given().await;
    g.base("n", "number", "n").await;
    let records: Vec<Value> = (1..=7)
        .map(|i| json!({"mrn": format!("M{i}"), "n": i}))
        .collect();
    g.push(json!(records)).await;
    let mut seen = Vec::new();
    let mut path = format!("/api/panels/{}/rows?limit=3", g.panel);
    loop {
        let res = g.app.get(&path).bearer(&g.token).send().await;
        assert_eq!(res.status, 200, "{}", res.text);
        seen.extend(
            res.body["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| r["values"]["n"].as_f64().expect("n")),
        );
        match res.body["nextCursor"].as_str() {
            Some(cursor) => {
                assert_eq!(res.header("x-next-cursor"), Some(cursor));
                path = format!("/api/panels/{}/rows?limit=3&cursor={cursor}", g.panel);
            }
            None => break,
        }
    }
    assert_eq!(seen, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    g.app
        .get(&format!("/api/panels/{}/rows?limit=1001", g.panel))
        .bearer(&g.token)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
    let other = token_for("elsewhere", "x@elsewhere.example", Role::Admin);
    g.app
        .get(&format!("/api/panels/{}/rows", g.panel))
        .bearer(&other)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
}

#[tokio::test]
async fn the_formula_check_gives_type_dependencies_and_sample_values() {
    let g = given().await;
    g.base("age", "number", "age").await;
    g.base("weight", "number", "weight").await;
    g.push(json!([{"mrn": "A", "age": 30, "weight": 60}, {"mrn": "B", "age": 0, "weight": 50}]))
        .await;
    let path = format!("/api/panels/{}/formulas/check", g.panel);
    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .json(&json!({"formula": "weight / age"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["resultType"], "number");
    assert_eq!(res.body["dependencies"], json!(["weight", "age"]));
    let samples = res.body["samples"].as_array().expect("samples");
    assert_eq!(samples[0]["value"], 2.0);
    assert_eq!(samples[1]["value"], Value::Null);
    assert!(
        !samples[1]["warnings"]
            .as_array()
            .expect("warnings")
            .is_empty(),
        "division by zero is reported"
    );

    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .json(&json!({"formula": "IF(age > 3, 1"}))
        .send()
        .await;
    res.assert_error(400, "FORMULA_SYNTAX");
    assert!(
        res.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("1:")),
        "{}",
        res.text
    );
    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .json(&json!({"formula": "age > \"x\""}))
        .send()
        .await;
    res.assert_error(400, "FORMULA_TYPE");
    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .json(&json!({"formula": "nope + 1"}))
        .send()
        .await;
    res.assert_error(400, "FORMULA_UNKNOWN_COLUMN");
}
