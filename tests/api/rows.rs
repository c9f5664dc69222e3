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
    let panel = app.create_panel(&token, "Rows").await;
    let ds = app
        .create_source(&token, panel, "custom", json!({"keyField": "mrn"}))
        .await;
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

/// Issue 16, item 3: one tenant could stop the whole server with `c1 = CONCAT(a, a)`,
/// `c2 = CONCAT(c1, c1)`, … `c30`: the rows query grew exponentially (7.5 GB, no answer in 30 s)
/// and the formula check pinned a runtime thread. Each column is now computed once per row, a
/// text past 65,536 bytes fails its cell, and the check runs off the async workers: the page and
/// the check answer at once, and the server keeps serving meanwhile.
#[tokio::test]
async fn a_chain_of_doubling_formulas_is_linear_and_bounded() {
    let g = given().await;
    g.base("a", "text", "a").await;
    g.push(json!([{"mrn": "1", "a": "x"}])).await;
    let mut previous = "a".to_owned();
    for i in 1..=30 {
        let name = format!("c{i}");
        g.calculated(&name, "text", &format!("CONCAT({previous}, {previous})"))
            .await;
        previous = name;
    }
    let rows = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        g.app
            .get(&format!("/api/panels/{}/rows", g.panel))
            .bearer(&g.token)
            .send(),
    )
    .await
    .expect("the page answers in time");
    assert_eq!(
        rows.status,
        200,
        "{}",
        &rows.text[..rows.text.len().min(500)]
    );
    let values = &rows.body["rows"][0]["values"];
    assert_eq!(values["c16"].as_str().map(str::len), Some(65_536));
    assert_eq!(
        values["c17"],
        Value::Null,
        "past 65,536 bytes the cell fails"
    );

    let health = g.app.get("/health");
    let check = g
        .app
        .post(&format!("/api/panels/{}/formulas/check", g.panel))
        .bearer(&g.token)
        .json(&json!({"formula": "CONCAT(c30, c30)", "sampleSize": 20}))
        .send();
    let (health, check) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(health.send(), check)
    })
    .await
    .expect("both answer in time");
    assert_eq!(health.status, 200);
    assert_eq!(check.status, 200, "{}", check.text);
    // The evaluator agrees with SQL: c17 failed, so every column built on it failed too.
    assert_eq!(
        check.body["samples"][0]["value"],
        Value::Null,
        "{}",
        check.text
    );
    assert_eq!(
        check.body["samples"][0]["warnings"][0], "1:8: column c30 failed for this row",
        "{}",
        check.text
    );
    assert_eq!(values["c30"], Value::Null);
    let sixteen = g
        .app
        .post(&format!("/api/panels/{}/formulas/check", g.panel))
        .bearer(&g.token)
        .json(&json!({"formula": "LEN(c16) & '/' & ISBLANK(c15)"}))
        .send()
        .await;
    assert_eq!(
        sixteen.body["samples"][0]["value"], "65536/FALSE",
        "{}",
        sixteen.text
    );
}

/// Item 3: the SQL a panel's formulas compile to is capped: the column that would pass the cap
/// is refused with `FORMULA_TOO_COMPLEX`, naming it; the panel keeps answering.
#[tokio::test]
async fn a_panel_whose_formulas_would_compile_too_large_refuses_the_column() {
    let g = given().await;
    g.base("a", "text", "a").await;
    // 330 concatenations in one CONCAT: about the largest formula the language accepts.
    let big = format!("CONCAT({})", vec!["a & a"; 330].join(", "));
    let mut refused = None;
    for i in 0..40 {
        let name = format!("big{i}");
        let res = g
            .app
            .post(&format!("/api/panels/{}/columns/calculated", g.panel))
            .bearer(&g.token)
            .json(&json!({"name": name, "type": "text", "formula": big, "properties": {}}))
            .send()
            .await;
        if res.status != 201 {
            res.assert_error(400, "FORMULA_TOO_COMPLEX");
            assert!(res.text.contains(&name), "{}", res.text);
            refused = Some(i);
            break;
        }
    }
    let refused = refused.expect("the cap was reached");
    assert!(refused >= 2, "several large formulas fit first ({refused})");
    let rows = g
        .app
        .get(&format!("/api/panels/{}/rows", g.panel))
        .bearer(&g.token)
        .send()
        .await;
    assert_eq!(rows.status, 200);
}
