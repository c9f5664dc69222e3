//! The worklist engine over HTTP: a view's rows (cohort rule AND filters, in its order, its
//! columns), ad-hoc queries, keyset pages by signed cursor, counts, exports, and who may read
//! what. Expected rows are computed in the test from the records it pushed: filters by the
//! in-process definition (`panels::filter::eval`), orders by a reference sort written here.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use panels::auth::Role;
use panels::filter::eval::{Cell, matches};
use panels::filter::{FieldKind, FilterGroup, Resolver};
use panels::formula::{self, Checked, Row as _};
use panels::ids::{ColumnId, DataSourceId};
use panels::rows::model::ColumnDef;
use panels::rows::project::RecordRow;
use proptest::collection::vec;
use proptest::prelude::any;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{Res, TestApp, token_for};

/// The server's clock in these tests: a Tuesday evening in UTC, already Wednesday in Tokyo.
const NOW: &str = "2026-03-10T22:30:00Z";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(NOW)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

const TENANT: &str = "wl";
const ADMIN: &str = "admin@wl.example";

/// Base columns: (name, type, source field).
const BASE: &[(&str, &str, &str)] = &[
    ("name", "text", "name"),
    ("age", "number", "age"),
    ("status", "select", "status"),
    ("score", "number", "score"),
    ("seen", "date", "seen"),
    ("at", "datetime", "at"),
    ("active", "boolean", "active"),
    ("tags", "multi_select", "tags"),
    ("assignee", "user", "assignee"),
];

/// Calculated columns: (name, type, formula); `ratio` fails where the score is 0.
const CALCULATED: &[(&str, &str, &str)] = &[
    ("risk", "text", "IF(score > 50, \"high\", \"low\")"),
    ("ratio", "number", "100 / score"),
    ("label", "text", "UPPER(name) & \"!\""),
    ("due", "date", "DATEADD(seen, 30, \"days\")"),
    ("recent", "boolean", "DATEDIFF(TODAY(), seen) < 30"),
    (
        "ageGroup",
        "text",
        "IF(ISBLANK(age), BLANK(), IF(age >= 65, \"senior\", \"adult\"))",
    ),
];

/// The records: every column blank somewhere, of the wrong type somewhere, ties everywhere.
fn records() -> Vec<Value> {
    let names = [
        json!("Ada"),
        json!("ada"),
        json!("Émile"),
        json!("zoë"),
        json!(null),
        json!(""),
        json!("=HYPERLINK(\"http://evil.example\")"),
        json!("+1 555"),
        json!("-dash"),
        json!("@at"),
        json!("Grace Hopper"),
        json!("ALAN"),
    ];
    let ages = [
        json!(36),
        json!(70),
        json!(null),
        json!("41"),
        json!("old"),
        json!(18),
        json!(65),
        json!(12),
    ];
    let statuses = [
        json!("open"),
        json!("pending"),
        json!("closed"),
        json!(null),
        json!("OPEN"),
    ];
    let scores = [
        json!(0),
        json!(12.5),
        json!(50),
        json!(51),
        json!(99.5),
        json!(null),
        json!(-4),
    ];
    let seen = [
        json!("2026-03-10"),
        json!("2026-03-11"),
        json!("2026-03-03"),
        json!("2026-02-01"),
        json!(null),
        json!("not a date"),
        json!("2026-03-09"),
        json!("2025-12-31"),
    ];
    let at = [
        json!("2026-03-10T21:00:00Z"),
        json!("2026-03-10T16:00:00+01:00"),
        json!("2026-03-11T02:00:00+09:00"),
        json!(null),
        json!("2026-03-09T23:59:59Z"),
        json!("2026-03-11T00:00:00Z"),
    ];
    let active = [json!(true), json!(false), json!(null), json!("TRUE")];
    let tags = [
        json!(["vip", "diabetic"]),
        json!([]),
        json!(null),
        json!("vip"),
        json!(["Vip"]),
        json!(["new", null]),
    ];
    let assignees = [
        json!("ann@wl.example"),
        json!("BOB@wl.example"),
        json!(null),
    ];
    (0..60)
        .map(|i: usize| {
            json!({
                "mrn": format!("M{i:02}"),
                "name": names[i % names.len()],
                "age": ages[(i * 3) % ages.len()],
                "status": statuses[(i / 2) % statuses.len()],
                "score": scores[(i * 5) % scores.len()],
                "seen": seen[(i * 7) % seen.len()],
                "at": at[(i / 3) % at.len()],
                "active": active[(i * 11) % active.len()],
                "tags": tags[(i * 13) % tags.len()],
                "assignee": assignees[i % assignees.len()],
            })
        })
        .collect()
}

struct Worklist {
    app: TestApp,
    admin: String,
    panel: i64,
    columns: Vec<ColumnDef>,
    checked: HashMap<String, Checked>,
    /// Record key → row id.
    ids: HashMap<String, i64>,
    records: Vec<Value>,
    ds: i64,
}

impl Worklist {
    /// A panel with every column of [`BASE`] and [`CALCULATED`] and the [`records`], on a server
    /// whose clock reads [`NOW`].
    async fn new(vars: &[(&str, &str)]) -> Self {
        Self::build(vars, false).await
    }

    /// With `records_first`, the records arrive before the columns exist: every column's typed
    /// slot is then filled by the workers for the rows already there (waited for here).
    async fn build(vars: &[(&str, &str)], records_first: bool) -> Self {
        let app = TestApp::spawn_at(now(), vars).await;
        let admin = token_for(TENANT, ADMIN, Role::Admin);
        let panel = app.create_panel(&admin, "Follow-up").await;
        let ds = app
            .create_source(&admin, panel, "custom", json!({"keyField": "mrn"}))
            .await;
        let records = records();
        let push = |app: &TestApp| {
            app.post(&format!("/api/panels/{panel}/datasources/{ds}/records"))
                .bearer(&admin)
                .json(&json!({ "records": records }))
                .send()
        };
        if records_first {
            let res = push(&app).await;
            assert_eq!(res.status, 200, "{}", res.text);
        }
        let mut columns = Vec::new();
        for (name, ty, field) in BASE {
            let res = app
                .post(&format!("/api/panels/{panel}/columns/base"))
                .bearer(&admin)
                .json(&json!({"name": name, "type": ty, "sourceField": field, "dataSourceId": ds, "properties": {}}))
                .send()
                .await;
            assert_eq!(res.status, 201, "{}", res.text);
            columns.push(ColumnDef {
                id: ColumnId(res.body["id"].as_i64().expect("id")),
                name: (*name).into(),
                kind: "base".into(),
                column_type: (*ty).into(),
                source_field: Some((*field).into()),
                data_source_id: Some(DataSourceId(ds)),
                formula: None,
                result_type: None,
                slot: None,
            });
        }
        for (name, ty, formula) in CALCULATED {
            let res = app
                .post(&format!("/api/panels/{panel}/columns/calculated"))
                .bearer(&admin)
                .json(&json!({"name": name, "type": ty, "formula": formula, "properties": {}}))
                .send()
                .await;
            assert_eq!(res.status, 201, "{}", res.text);
            columns.push(ColumnDef {
                id: ColumnId(res.body["id"].as_i64().expect("id")),
                name: (*name).into(),
                kind: "calculated".into(),
                column_type: (*ty).into(),
                source_field: None,
                data_source_id: None,
                formula: Some((*formula).into()),
                result_type: res.body["resultType"].as_str().map(str::to_owned),
                slot: None,
            });
        }
        let schema = columns
            .iter()
            .map(|c| (c.name.clone(), c.value_type()))
            .collect();
        let checked = columns
            .iter()
            .filter_map(|c| {
                let f = c.formula.as_deref()?;
                Some((
                    c.name.clone(),
                    formula::analyze(f, &schema).expect("checks"),
                ))
            })
            .collect();
        if records_first {
            let pool = app.owner_pool().await;
            let mut filling = -1;
            for _ in 0..200 {
                filling = sqlx::query_scalar::<_, i64>(
                    "select count(*) from panel_slot where panel_id = $1 and state <> 'ready'",
                )
                .bind(panel)
                .fetch_one(&pool)
                .await
                .expect("panel_slot");
                if filling == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            assert_eq!(filling, 0, "the workers fill every slot");
        } else {
            let res = push(&app).await;
            assert_eq!(res.status, 200, "{}", res.text);
        }
        let mut w = Self {
            app,
            admin,
            panel,
            columns,
            checked,
            ids: HashMap::new(),
            records,
            ds,
        };
        let all = w
            .get(&w.admin, &format!("/api/panels/{panel}/rows?limit=1000"))
            .await;
        assert_eq!(all.status, 200, "{}", all.text);
        for row in all.body["rows"].as_array().expect("rows") {
            w.ids.insert(
                row["key"].as_str().expect("key").to_owned(),
                row["id"].as_i64().expect("id"),
            );
        }
        assert_eq!(w.ids.len(), 60);
        w
    }

    async fn get(&self, token: &str, path: &str) -> Res {
        self.app.get(path).bearer(token).send().await
    }

    async fn query(&self, token: &str, body: Value) -> Res {
        self.app
            .post(&format!("/api/panels/{}/rows/query", self.panel))
            .bearer(token)
            .json(&body)
            .send()
            .await
    }

    fn column_id(&self, name: &str) -> String {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.0.to_string())
            .expect("column")
    }

    /// Creates a view as `token` with visible columns, sorts `[(column, direction)]` and a
    /// filter tree; answers its id.
    async fn view(
        &self,
        token: &str,
        visible: &[&str],
        sorts: &[(&str, &str)],
        filters: Value,
    ) -> i64 {
        let visible: Vec<String> = visible.iter().map(|c| self.column_id(c)).collect();
        let res = self
            .app
            .post("/api/views")
            .bearer(token)
            .json(
                &json!({"name": "Worklist view", "panelId": self.panel, "visibleColumns": visible}),
            )
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        let view = res.body["id"].as_i64().expect("view id");
        let sorts: Vec<Value> = sorts
            .iter()
            .enumerate()
            .map(|(i, (c, d))| json!({"columnName": c, "direction": d, "order": i}))
            .collect();
        let res = self
            .app
            .put(&format!("/api/views/{view}/sorts"))
            .bearer(token)
            .json(&json!({ "sorts": sorts }))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        let res = self
            .app
            .put(&format!("/api/views/{view}/filters"))
            .bearer(token)
            .json(&filters)
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        view
    }

    /// The cells of one record as the client sees them.
    fn cells(&self, record: &Value) -> HashMap<String, Cell> {
        let by_name: HashMap<&str, &ColumnDef> =
            self.columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let row = RecordRow::new(
            record,
            DataSourceId(self.ds),
            &by_name,
            &self.checked,
            now(),
        );
        self.columns
            .iter()
            .map(|c| {
                let cell = if c.column_type == "multi_select" {
                    Cell::list_from_json(&record[c.name.as_str()])
                } else {
                    Cell::from_value(row.get(&c.name))
                };
                (c.name.clone(), cell)
            })
            .collect()
    }

    fn kind(&self, name: &str) -> Option<FieldKind> {
        let c = self.columns.iter().find(|c| c.name == name)?;
        Some(if c.kind == "calculated" {
            FieldKind::of_column_type(c.value_type().name())
        } else {
            FieldKind::of_column_type(&c.column_type)
        })
    }

    /// The ids of the records a tree selects, decided in process.
    fn expected(&self, tree: &Value, tz: &str, reader: &str) -> Vec<i64> {
        let tree: FilterGroup = serde_json::from_value(tree.clone()).expect("tree");
        let resolver = Resolver {
            now: now(),
            tz: tz.parse().expect("zone"),
            current_user: Some(reader),
        };
        let resolved = resolver
            .resolve(&tree, "filter", &|n| self.kind(n))
            .expect("valid tree");
        let mut ids: Vec<i64> = self
            .records
            .iter()
            .filter(|r| {
                let cells = self.cells(r);
                matches(&resolved, &|name| {
                    cells.get(name).cloned().unwrap_or(Cell::Blank)
                })
            })
            .map(|r| self.ids[r["mrn"].as_str().expect("mrn")])
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The record of a row id.
    fn record(&self, id: i64) -> &Value {
        let key = self
            .ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
            .expect("known id");
        self.records
            .iter()
            .find(|r| r["mrn"] == key.as_str())
            .expect("record")
    }

    /// Every row of a query, page by page with `limit`, following `nextCursor`.
    async fn all_pages(&self, token: &str, body: &Value, limit: i64) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut body = body.clone();
        body["limit"] = json!(limit);
        for _ in 0..1000 {
            let res = self.query(token, body.clone()).await;
            assert_eq!(res.status, 200, "{body}: {}", res.text);
            let page = res.body["rows"].as_array().expect("rows");
            assert!(page.len() as i64 <= limit);
            rows.extend(page.iter().cloned());
            match res.body["nextCursor"].as_str() {
                Some(cursor) => body["cursor"] = json!(cursor),
                None => return rows,
            }
        }
        panic!("more than 1000 pages");
    }
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["id"].as_i64().expect("id")).collect()
}

/// A sort key of the reference sort: `None` when the cell is empty.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Text(String),
    Number(f64),
    Date(chrono::NaiveDate),
    Instant(DateTime<Utc>),
}

fn key_of(cell: &Cell) -> Option<Key> {
    match cell {
        Cell::Blank => None,
        Cell::Text(s) if s.is_empty() => None,
        Cell::Text(s) => Some(Key::Text(s.to_lowercase())),
        Cell::List(items) if items.is_empty() => None,
        Cell::List(items) => Some(Key::Text(items.join(", ").to_lowercase())),
        Cell::Number(n) => Some(Key::Number(*n)),
        Cell::Bool(b) => Some(Key::Number(if *b { 1.0 } else { 0.0 })),
        Cell::Date(d) => Some(Key::Date(*d)),
        Cell::Instant(t) => Some(Key::Instant(*t)),
    }
}

/// The order the engine promises: each key in its direction with empty values where `nulls`
/// says (last by default), then the row id in the last key's direction. Text compares its lower
/// case by code point.
fn reference_order(w: &Worklist, ids: &[i64], sorts: &[(&str, &str, &str)]) -> Vec<i64> {
    let mut keyed: Vec<(i64, Vec<Option<Key>>)> = ids
        .iter()
        .map(|id| {
            let cells = w.cells(w.record(*id));
            let keys = sorts.iter().map(|(c, _, _)| key_of(&cells[*c])).collect();
            (*id, keys)
        })
        .collect();
    let id_desc = sorts.last().is_some_and(|(_, d, _)| *d == "desc");
    keyed.sort_by(|(ia, a), (ib, b)| {
        for (i, (_, direction, nulls)) in sorts.iter().enumerate() {
            let ord = match (&a[i], &b[i]) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => {
                    if *nulls == "first" {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (Some(_), None) => {
                    if *nulls == "first" {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (Some(x), Some(y)) => {
                    let o = x.partial_cmp(y).expect("comparable keys");
                    if *direction == "desc" { o.reverse() } else { o }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        if id_desc { ib.cmp(ia) } else { ia.cmp(ib) }
    });
    keyed.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test]
async fn a_view_lists_its_cohort_and_filters_in_its_order_with_its_columns() {
    let w = Worklist::new(&[]).await;
    // The panel's cohort: adults (a blank or unreadable age is not one).
    let res = w
        .app
        .put(&format!("/api/panels/{}", w.panel))
        .bearer(&w.admin)
        .json(&json!({"cohortRule": {"logic": "AND", "conditions": [{"field": "age", "operator": "gte", "value": 18}]}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let filters = json!({"logic": "AND", "conditions": [
        {"field": "status", "operator": "in", "value": ["open", "pending"]},
        {"logic": "OR", "conditions": [
            {"field": "risk", "operator": "eq", "value": "HIGH"},
            {"field": "ratio", "operator": "is_empty"}
        ]}
    ]});
    let view = w
        .view(
            &w.admin,
            &["name", "ratio", "risk"],
            &[("ratio", "desc"), ("name", "asc")],
            filters.clone(),
        )
        .await;

    let res = w
        .get(&w.admin, &format!("/api/views/{view}/rows?count=exact"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let cohort = json!({"conditions": [{"field": "age", "operator": "gte", "value": 18}]});
    let both = json!({"logic": "AND", "conditions": [cohort, filters]});
    let expected = w.expected(&both, "UTC", ADMIN);
    assert!(
        expected.len() >= 5,
        "the data must exercise the view: {expected:?}"
    );
    let rows = res.body["rows"].as_array().expect("rows");
    assert_eq!(
        ids(rows),
        reference_order(
            &w,
            &expected,
            &[("ratio", "desc", "last"), ("name", "asc", "last")]
        )
    );
    assert_eq!(res.body["total"], expected.len());
    assert_eq!(res.body["totalKind"], "exact");
    // Only the visible columns, with the calculated ones computed.
    for row in rows {
        let values = row["values"].as_object().expect("values");
        let keys: HashSet<&str> = values.keys().map(String::as_str).collect();
        assert_eq!(keys, HashSet::from(["name", "ratio", "risk"]));
        let record = w.record(row["id"].as_i64().expect("id"));
        let score = Value::as_f64(&record["score"]);
        match score {
            Some(s) if s != 0.0 => assert_eq!(values["ratio"], 100.0 / s),
            // 100 / 0 failed: blank, sorted with the empty values (last), and counted.
            _ => assert_eq!(values["ratio"], Value::Null),
        }
    }
    let warning = res.body["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["column"] == "ratio")
        .cloned();
    assert!(
        warning.is_some_and(|w| w["message"]
            .as_str()
            .is_some_and(|m| m.contains("division by zero"))),
        "{}",
        res.text
    );
}

#[tokio::test]
async fn random_filter_trees_select_the_same_rows_in_sql_and_in_process() {
    let cases = std::env::var("WORKLIST_FILTER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    random_trees_agree(Worklist::new(&[]).await, cases).await;
}

/// The same over typed slots the workers filled for rows that were there before their columns.
#[tokio::test]
async fn slots_filled_for_rows_already_there_select_the_same_rows() {
    let w = Worklist::build(&[], true).await;
    let pool = w.app.owner_pool().await;
    let ready: i64 = sqlx::query_scalar(
        "select count(*) from panel_slot where panel_id = $1 and state = 'ready'",
    )
    .bind(w.panel)
    .fetch_one(&pool)
    .await
    .expect("slots");
    // Every base column but the multiple-choice one, and every calculated column whose formula
    // does not read the clock (`recent` reads TODAY()).
    assert_eq!(ready, BASE.len() as i64 - 1 + CALCULATED.len() as i64 - 1);
    random_trees_agree(w, 80).await;
}

async fn random_trees_agree(w: Worklist, cases: u32) {
    let reader = "ann@wl.example";
    let token = token_for(TENANT, reader, Role::Admin);
    let handle = tokio::runtime::Handle::current();
    let w = std::sync::Arc::new(w);
    let shared = w.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&vec(any::<u32>(), 1..48), |tape| {
                let mut g = TreeGen { tape: &tape, pos: 0 };
                let tree = g.group(1);
                let tz = ["UTC", "Asia/Tokyo", "America/Los_Angeles"][g.next(3)];
                let expected = shared.expected(&tree, tz, reader);
                let res = handle.block_on(shared.query(
                    &token,
                    json!({"filter": tree, "limit": 1000, "count": "exact", "tz": tz, "columns": ["name"]}),
                ));
                if res.status != 200 {
                    return Err(TestCaseError::fail(format!("{tree}: {} {}", res.status, res.text)));
                }
                let mut got = ids(res.body["rows"].as_array().map(Vec::as_slice).unwrap_or_default());
                got.sort_unstable();
                if got != expected || res.body["total"] != json!(expected.len()) {
                    return Err(TestCaseError::fail(format!(
                        "tree: {tree}\ntz: {tz}\nsql:        {got:?} (total {})\nin process: {expected:?}",
                        res.body["total"]
                    )));
                }
                Ok(())
            })
            .map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("test task failed: {e}"),
    }
    drop(w);
}

/// Random filter trees over the worklist's columns from a tape of choices (an exhausted tape
/// picks the first option, so shrinking simplifies).
struct TreeGen<'a> {
    tape: &'a [u32],
    pos: usize,
}

impl TreeGen<'_> {
    fn next(&mut self, n: usize) -> usize {
        let v = self.tape.get(self.pos).copied().unwrap_or(0) as usize;
        self.pos += 1;
        v % n
    }

    fn pick<T: Clone>(&mut self, options: &[T]) -> T {
        options[self.next(options.len())].clone()
    }

    fn group(&mut self, depth: usize) -> Value {
        let n = 1 + self.next(3);
        let conditions: Vec<Value> = (0..n)
            .map(|_| {
                if depth < 3 && self.next(4) == 0 {
                    self.group(depth + 1)
                } else {
                    self.condition()
                }
            })
            .collect();
        let logic = self.pick(&["AND", "OR"]);
        json!({"logic": logic, "conditions": conditions})
    }

    fn condition(&mut self) -> Value {
        let field = self.pick(&[
            "name", "age", "status", "score", "seen", "at", "active", "tags", "assignee", "risk",
            "ratio", "label", "due", "recent", "ageGroup",
        ]);
        let kind = match field {
            "age" | "score" | "ratio" => FieldKind::Number,
            "seen" | "due" => FieldKind::Date,
            "at" => FieldKind::DateTime,
            "active" | "recent" => FieldKind::Boolean,
            "tags" => FieldKind::List,
            _ => FieldKind::Text,
        };
        let texts = [
            json!("ada"),
            json!("OPEN"),
            json!("Op"),
            json!("é"),
            json!(""),
            json!("high"),
            json!("!"),
            json!("$CURRENT_USER"),
            json!("+1"),
            json!("ann@wl.example"),
            json!("adult"),
        ];
        let numbers = [
            json!(0),
            json!(12.5),
            json!(18),
            json!(50),
            json!(65),
            json!(-4),
            json!(2),
        ];
        let dates = [
            json!("2026-03-10"),
            json!("2026-03-03"),
            json!({"relative": "today"}),
            json!({"relative": "-7d"}),
            json!({"relative": "start_of_month"}),
            json!({"relative": "start_of_week"}),
            json!({"relative": "+30d"}),
            json!("2026-03-10T22:00:00Z"),
        ];
        let lists = [
            json!("vip"),
            json!("VIP"),
            json!("diabetic"),
            json!("new"),
            json!("vip, diabetic"),
        ];
        let (ops, values): (&[&str], &[Value]) = match kind {
            FieldKind::Text => (
                &[
                    "eq",
                    "neq",
                    "contains",
                    "not_contains",
                    "starts_with",
                    "ends_with",
                    "in",
                    "not_in",
                    "is_empty",
                    "is_not_empty",
                ],
                &texts,
            ),
            FieldKind::Number => (
                &[
                    "eq",
                    "neq",
                    "gt",
                    "gte",
                    "lt",
                    "lte",
                    "between",
                    "in",
                    "not_in",
                    "is_empty",
                    "is_not_empty",
                ],
                &numbers,
            ),
            FieldKind::Date | FieldKind::DateTime => (
                &[
                    "eq",
                    "neq",
                    "gt",
                    "gte",
                    "lt",
                    "lte",
                    "between",
                    "in",
                    "not_in",
                    "is_empty",
                    "is_not_empty",
                ],
                &dates,
            ),
            FieldKind::Boolean => (
                &["eq", "neq", "is_empty", "is_not_empty"],
                &[json!(true), json!(false)],
            ),
            FieldKind::List => (
                &[
                    "eq",
                    "neq",
                    "contains",
                    "not_contains",
                    "in",
                    "not_in",
                    "is_empty",
                    "is_not_empty",
                ],
                &lists,
            ),
        };
        let op = self.pick(ops);
        let value = match op {
            "is_empty" | "is_not_empty" => Value::Null,
            "in" | "not_in" => {
                let n = 1 + self.next(3);
                Value::Array((0..n).map(|_| self.pick(values)).collect())
            }
            "between" => json!([self.pick(values), self.pick(values)]),
            _ => self.pick(values),
        };
        json!({"field": field, "operator": op, "value": value})
    }
}

#[tokio::test]
async fn multi_key_sorts_page_end_to_end_by_cursor_in_the_reference_order() {
    let w = Worklist::new(&[]).await;
    let everyone = w.expected(&json!({"conditions": []}), "UTC", ADMIN);
    let specs: &[&[(&str, &str, &str)]] = &[
        &[
            ("status", "asc", "last"),
            ("score", "desc", "first"),
            ("seen", "asc", "last"),
        ],
        &[("ratio", "desc", "last"), ("name", "asc", "first")],
        &[("name", "desc", "last")],
        &[
            ("at", "desc", "first"),
            ("active", "asc", "last"),
            ("tags", "desc", "last"),
        ],
        &[
            ("label", "asc", "last"),
            ("due", "desc", "last"),
            ("recent", "desc", "first"),
        ],
        &[("ageGroup", "asc", "first"), ("age", "asc", "last")],
    ];
    for spec in specs {
        let sort: Vec<Value> = spec
            .iter()
            .map(|(c, d, n)| json!({"column": c, "direction": d, "nulls": n}))
            .collect();
        let body = json!({"sort": sort, "columns": ["name"]});
        for limit in [7, 1] {
            let rows = w.all_pages(&w.admin, &body, limit).await;
            let got = ids(&rows);
            let unique: HashSet<i64> = got.iter().copied().collect();
            assert_eq!(
                unique.len(),
                got.len(),
                "{spec:?} by {limit}: a row came twice"
            );
            assert_eq!(got.len(), 60, "{spec:?} by {limit}: a row is missing");
            assert_eq!(
                got,
                reference_order(&w, &everyone, spec),
                "{spec:?} by {limit}"
            );
        }
    }
}

#[tokio::test]
async fn relative_dates_are_evaluated_at_the_clock_in_the_readers_time_zone() {
    let w = Worklist::new(&[]).await;
    let q = |field: &str, op: &str, value: Value, tz: &str| json!({"filter": {"conditions": [{"field": field, "operator": op, "value": value}]}, "tz": tz, "columns": ["seen", "at"], "limit": 1000});
    let keys = |res: &Res| -> HashSet<String> {
        res.body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                w.record(r["id"].as_i64().expect("id"))["seen"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    // 22:30 UTC on the 10th is the 11th in Tokyo.
    let utc = w
        .query(
            &w.admin,
            q("seen", "eq", json!({"relative": "today"}), "UTC"),
        )
        .await;
    assert_eq!(
        keys(&utc),
        HashSet::from(["2026-03-10".to_owned()]),
        "{}",
        utc.text
    );
    let tokyo = w
        .query(
            &w.admin,
            q("seen", "eq", json!({"relative": "today"}), "Asia/Tokyo"),
        )
        .await;
    assert_eq!(
        keys(&tokyo),
        HashSet::from(["2026-03-11".to_owned()]),
        "{}",
        tokyo.text
    );
    let week = w
        .query(
            &w.admin,
            q("seen", "gte", json!({"relative": "start_of_week"}), "UTC"),
        )
        .await;
    assert_eq!(
        keys(&week),
        HashSet::from([
            "2026-03-10".to_owned(),
            "2026-03-11".to_owned(),
            "2026-03-09".to_owned()
        ])
    );
    let last_week = w
        .query(
            &w.admin,
            q(
                "seen",
                "between",
                json!([{"relative": "-7d"}, {"relative": "yesterday"}]),
                "UTC",
            ),
        )
        .await;
    assert_eq!(
        keys(&last_week),
        HashSet::from(["2026-03-03".to_owned(), "2026-03-09".to_owned()])
    );
    // A date on a datetime column is the reader's whole local day.
    let instants = |res: &Res| -> HashSet<String> {
        res.body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["values"]["at"].as_str().map(str::to_owned))
            .collect()
    };
    let today_utc = w
        .query(&w.admin, q("at", "eq", json!({"relative": "today"}), "UTC"))
        .await;
    assert_eq!(
        instants(&today_utc),
        HashSet::from([
            "2026-03-10T21:00:00Z".to_owned(),
            "2026-03-10T15:00:00Z".to_owned(),
            "2026-03-10T17:00:00Z".to_owned()
        ]),
        "{}",
        today_utc.text
    );
    let today_tokyo = w
        .query(
            &w.admin,
            q("at", "eq", json!({"relative": "today"}), "Asia/Tokyo"),
        )
        .await;
    assert_eq!(
        instants(&today_tokyo),
        HashSet::from([
            "2026-03-10T21:00:00Z".to_owned(),
            "2026-03-10T17:00:00Z".to_owned(),
            "2026-03-10T15:00:00Z".to_owned(),
            "2026-03-11T00:00:00Z".to_owned()
        ]),
        "{}",
        today_tokyo.text
    );
    let bad = w
        .query(
            &w.admin,
            q("seen", "eq", json!({"relative": "today"}), "Mars/Olympus"),
        )
        .await;
    bad.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(bad.body["details"][0]["field"], "tz");
}

#[tokio::test]
async fn the_current_user_is_each_readers_own_email() {
    let w = Worklist::new(&[]).await;
    let view = w
        .view(
            &w.admin,
            &["assignee"],
            &[],
            json!({"conditions": [{"field": "assignee", "operator": "eq", "value": "$CURRENT_USER"}]}),
        )
        .await;
    let res = w
        .app
        .post(&format!("/api/views/{view}/publish"))
        .bearer(&w.admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    for (email, expected) in [
        ("ann@wl.example", "ann@wl.example"),
        ("bob@wl.example", "BOB@wl.example"),
    ] {
        let token = token_for(TENANT, email, Role::Admin);
        let res = w.get(&token, &format!("/api/views/{view}/rows")).await;
        assert_eq!(res.status, 200, "{}", res.text);
        let rows = res.body["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 20, "{email}: {}", res.text);
        assert!(rows.iter().all(|r| r["values"]["assignee"] == expected));
    }
}

#[tokio::test]
async fn private_views_answer_their_owner_and_published_views_every_reader_of_the_panel() {
    let w = Worklist::new(&[]).await;
    let owner = token_for(TENANT, "owner@wl.example", Role::Builder);
    let reader = token_for(TENANT, "reader@wl.example", Role::User);
    let outsider = token_for(TENANT, "outsider@wl.example", Role::User);
    let foreign = token_for("other", ADMIN, Role::Admin);
    for (email, permission) in [
        ("owner@wl.example", "editor"),
        ("reader@wl.example", "viewer"),
    ] {
        let res = w
            .app
            .post(&format!("/api/acls/panel/{}", w.panel))
            .bearer(&w.admin)
            .json(&json!({"userEmail": email, "permission": permission}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let view = w
        .view(&owner, &["name"], &[], json!({"conditions": []}))
        .await;
    let path = format!("/api/views/{view}/rows");
    assert_eq!(w.get(&owner, &path).await.status, 200);
    w.get(&reader, &path)
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.get(&foreign, &path)
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    let res = w
        .app
        .post(&format!("/api/views/{view}/publish"))
        .bearer(&owner)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let res = w.get(&reader, &path).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["rows"].as_array().map(Vec::len), Some(60));
    // Published, but its panel is not theirs to read: as if it did not exist.
    w.get(&outsider, &path)
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.get(&foreign, &path)
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.get(&foreign, &format!("/api/views/{view}/export"))
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.get(&foreign, &format!("/api/panels/{}/rows", w.panel))
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    w.query(&foreign, json!({}))
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
}

#[tokio::test]
async fn every_row_past_the_cohort_is_for_the_panels_editors() {
    let w = Worklist::new(&[]).await;
    let res = w
        .app
        .put(&format!("/api/panels/{}", w.panel))
        .bearer(&w.admin)
        .json(&json!({"cohortRule": {"conditions": [{"field": "active", "operator": "eq", "value": true}]}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let editor = token_for(TENANT, "ed@wl.example", Role::User);
    let viewer = token_for(TENANT, "vi@wl.example", Role::User);
    for (email, permission) in [("ed@wl.example", "editor"), ("vi@wl.example", "viewer")] {
        let res = w
            .app
            .post(&format!("/api/acls/panel/{}", w.panel))
            .bearer(&w.admin)
            .json(&json!({"userEmail": email, "permission": permission}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let cohort = w.expected(
        &json!({"conditions": [{"field": "active", "operator": "eq", "value": true}]}),
        "UTC",
        ADMIN,
    );
    let path = format!("/api/panels/{}/rows?limit=1000", w.panel);
    for token in [&editor, &viewer] {
        let res = w.get(token, &path).await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(ids(res.body["rows"].as_array().expect("rows")), cohort);
    }
    let all = format!("{path}&cohort=all&count=exact");
    let res = w.get(&editor, &all).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["rows"].as_array().map(Vec::len), Some(60));
    assert_eq!(res.body["total"], 60);
    w.get(&viewer, &all).await.assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn cursors_are_signed_and_go_stale_when_what_the_query_means_changes() {
    let w = Worklist::new(&[]).await;
    let view = w
        .view(
            &w.admin,
            &["name"],
            &[("name", "asc")],
            json!({"conditions": [{"field": "score", "operator": "gte", "value": 0}]}),
        )
        .await;
    let first = w
        .get(&w.admin, &format!("/api/views/{view}/rows?limit=5"))
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let link = first.header("link").expect("Link");
    assert!(
        link.contains(&cursor) && link.contains("rel=\"next\""),
        "{link}"
    );
    let second = w
        .get(
            &w.admin,
            &format!("/api/views/{view}/rows?limit=5&cursor={cursor}"),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(
        second.body["total"].is_null(),
        "later pages count nothing unless asked"
    );

    // Altered by one character, or not ours at all: 400.
    let mut tampered = cursor.clone().into_bytes();
    tampered[4] = if tampered[4] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for bad in [tampered.as_str(), "aWQ6MTA", "x.y"] {
        w.get(&w.admin, &format!("/api/views/{view}/rows?cursor={bad}"))
            .await
            .assert_error(400, "INVALID_CURSOR");
    }
    // Another query's cursor, and this view's after its sorts changed: stale.
    w.query(&w.admin, json!({"cursor": cursor}))
        .await
        .assert_error(409, "CURSOR_STALE");
    let res = w
        .app
        .put(&format!("/api/views/{view}/sorts"))
        .bearer(&w.admin)
        .json(&json!({"sorts": [{"columnName": "name", "direction": "desc", "order": 0}]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    w.get(&w.admin, &format!("/api/views/{view}/rows?cursor={cursor}"))
        .await
        .assert_error(409, "CURSOR_STALE");
    // A formula the query reads changed: stale too.
    let body = json!({"sort": [{"column": "ratio"}], "limit": 3});
    let page = w.query(&w.admin, body.clone()).await;
    let cursor = page.body["nextCursor"].as_str().expect("next").to_owned();
    let ratio = w.column_id("ratio");
    let res = w
        .app
        .put(&format!("/api/panels/{}/columns/{ratio}", w.panel))
        .bearer(&w.admin)
        .json(&json!({"formula": "1000 / score"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let mut again = body;
    again["cursor"] = json!(cursor);
    w.query(&w.admin, again)
        .await
        .assert_error(409, "CURSOR_STALE");
}

#[tokio::test]
async fn an_export_is_every_row_of_the_view_with_spreadsheet_formulas_neutralised() {
    let w = Worklist::new(&[]).await;
    let view = w
        .view(
            &w.admin,
            &["name", "score", "ratio", "tags", "seen"],
            &[("name", "asc"), ("score", "desc")],
            json!({"conditions": [{"field": "age", "operator": "is_not_empty"}]}),
        )
        .await;
    // The same rows through pages of the view.
    let mut paged = Vec::new();
    let mut path = format!("/api/views/{view}/rows?limit=4");
    loop {
        let res = w.get(&w.admin, &path).await;
        assert_eq!(res.status, 200, "{}", res.text);
        paged.extend(res.body["rows"].as_array().expect("rows").iter().cloned());
        match res.body["nextCursor"].as_str() {
            Some(c) => path = format!("/api/views/{view}/rows?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert!(paged.len() > 10);

    let res = w.get(&w.admin, &format!("/api/views/{view}/export")).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"Worklist view.csv\"; filename*=UTF-8''Worklist%20view.csv")
    );
    let mut reader = csv::ReaderBuilder::new().from_reader(res.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, ["name", "score", "ratio", "tags", "seen"]);
    let lines: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(lines.len(), paged.len());
    let mut neutralised = 0;
    for (line, row) in lines.iter().zip(&paged) {
        let name = row["values"]["name"].as_str().unwrap_or("");
        if name.starts_with(['=', '+', '-', '@']) {
            assert_eq!(&line[0], format!("'{name}"));
            neutralised += 1;
        } else {
            assert_eq!(&line[0], name);
        }
        let number = |v: &Value| {
            v.as_f64()
                .map(|n| formula::Value::Number(n).text().expect("text"))
                .unwrap_or_default()
        };
        assert_eq!(&line[1], number(&row["values"]["score"]));
        assert_eq!(&line[2], number(&row["values"]["ratio"]));
        assert_eq!(&line[3], row["values"]["tags"].as_str().unwrap_or(""));
        assert_eq!(&line[4], row["values"]["seen"].as_str().unwrap_or(""));
    }
    assert!(neutralised >= 3, "the data holds formula-like names");
    // A negative number is a number, not a formula.
    assert!(lines.iter().any(|l| &l[1] == "-4"));

    let res = w
        .get(&w.admin, &format!("/api/views/{view}/export?format=ndjson"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/x-ndjson"));
    let objects: Vec<Value> = res
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(objects, paged);
}

#[tokio::test]
async fn bad_queries_answer_400_naming_what_is_wrong() {
    let w = Worklist::new(&[]).await;
    let cases = [
        (
            json!({"filter": {"conditions": [{"field": "nope", "operator": "eq", "value": 1}]}}),
            "filter.conditions[0]",
        ),
        (
            json!({"filter": {"conditions": [{"field": "ratio", "operator": "contains", "value": "1"}]}}),
            "filter.conditions[0]",
        ),
        (
            json!({"filter": {"conditions": [{"field": "seen", "operator": "gt", "value": {"relative": "someday"}}]}}),
            "filter.conditions[0]",
        ),
        (json!({"sort": [{"column": "nope"}]}), "sort[0].column"),
        (json!({"columns": ["name", "nope"]}), "columns[1]"),
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 1001}), "limit"),
        (json!({"q": ""}), "q"),
        (json!({"tz": "Nowhere/City"}), "tz"),
    ];
    for (body, field) in cases {
        let res = w.query(&w.admin, body.clone()).await;
        res.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(
            res.body["details"][0]["field"], field,
            "{body}: {}",
            res.text
        );
    }
    let res = w.query(&w.admin, json!({"count": "maybe"})).await;
    assert_eq!(res.status, 400, "{}", res.text);
    // The search reads the shown text columns only, case-insensitively.
    let res = w
        .query(
            &w.admin,
            json!({"q": "GRACE", "columns": ["name", "age"], "count": "exact"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["total"], 5);
    let res = w
        .query(
            &w.admin,
            json!({"q": "grace", "columns": ["age"], "count": "exact"}),
        )
        .await;
    assert_eq!(res.body["total"], 0);
}

#[tokio::test]
async fn a_query_running_past_its_limit_is_cancelled_with_503_and_frees_its_connection() {
    let w = Worklist::new(&[
        ("QUERY_TIMEOUT_MS", "300"),
        ("DATABASE_MAX_CONNECTIONS", "2"),
    ])
    .await;
    // Twenty thousand rows, and a formula that builds a long text for each, at query time (it
    // reads the clock, so no slot holds it).
    let heavy = w
        .app
        .post(&format!("/api/panels/{}/columns/calculated", w.panel))
        .bearer(&w.admin)
        .json(&json!({"name": "heavy", "type": "text", "formula": "IF(TODAY() > DATE(2000, 1, 1), SUBSTITUTE(SUBSTITUTE(REPT(CONCAT(name, \"-\", assignee), 300), \"a\", \"bb\"), \"t\", \"tt\"))", "properties": {}}))
        .send()
        .await;
    assert_eq!(heavy.status, 201, "{}", heavy.text);
    for batch in 0..2 {
        let records: Vec<Value> = (0..10_000)
            .map(|i| json!({"mrn": format!("H{batch}-{i}"), "name": format!("patient {i}"), "assignee": "ann@wl.example"}))
            .collect();
        let res = w
            .app
            .post(&format!(
                "/api/panels/{}/datasources/{}/records",
                w.panel, w.ds
            ))
            .bearer(&w.admin)
            .json(&json!({ "records": records }))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let started = std::time::Instant::now();
    let res = w
        .query(&w.admin, json!({"filter": {"conditions": [{"field": "heavy", "operator": "contains", "value": "zzz"}]}, "count": "none"}))
        .await;
    res.assert_error(503, "QUERY_TIMEOUT");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Both connections of the pool are free again at once.
    for _ in 0..4 {
        let res = w
            .query(&w.admin, json!({"limit": 1, "count": "none"}))
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
}

#[tokio::test]
async fn the_indexes_a_large_panels_views_want_are_built_and_only_signed_ones() {
    let w = Worklist::new(&[("WORKLIST_INDEX_MIN_ROWS", "50")]).await;
    let view = w
        .view(
            &w.admin,
            &["name", "ratio"],
            &[("ratio", "desc"), ("seen", "asc")],
            json!({"logic": "AND", "conditions": [
                {"field": "status", "operator": "in", "value": ["open", "pending"]},
                {"field": "age", "operator": "gte", "value": 18}
            ]}),
        )
        .await;
    let before = w
        .get(&w.admin, &format!("/api/views/{view}/rows?limit=100"))
        .await;
    assert_eq!(before.status, 200, "{}", before.text);
    let pool = w.app.owner_pool().await;
    let mut built: Vec<(String, String)> = Vec::new();
    for _ in 0..150 {
        built = sqlx::query_as(
            "select i.name, i.state from panel_index i where i.panel_id = $1 order by i.name",
        )
        .bind(w.panel)
        .fetch_all(&pool)
        .await
        .expect("panel_index");
        if built.len() == 3 && built.iter().all(|(_, state)| state == "ready") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The sort keys (mixed directions), the status and the age.
    assert_eq!(built.len(), 3, "{built:?}");
    assert!(built.iter().all(|(_, state)| state == "ready"), "{built:?}");
    for (name, _) in &built {
        let valid: bool = sqlx::query_scalar(
            "select i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = $1",
        )
        .bind(name)
        .fetch_one(&pool)
        .await
        .expect("a physical index");
        assert!(valid, "{name}");
    }
    let after = w
        .get(&w.admin, &format!("/api/views/{view}/rows?limit=100"))
        .await;
    assert_eq!(after.body["rows"], before.body["rows"]);

    // A definition the server did not sign is never run by the table's owner.
    sqlx::query(
        "insert into panel_index (tenant_id, panel_id, name, definition, signature)
         values ($1, $2, 'panel_row_p' || $2 || '_0123456789abcdef', '(id)) ; drop table panel_row; --', 'bad')",
    )
    .bind(TENANT)
    .bind(w.panel)
    .execute(&pool)
    .await
    .expect("insert");
    let mut state = String::new();
    for _ in 0..100 {
        state = sqlx::query_scalar(
            "select state from panel_index where panel_id = $1 and name like '%_0123456789abcdef'",
        )
        .bind(w.panel)
        .fetch_one(&pool)
        .await
        .expect("state");
        if state == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "failed");
    let rows: i64 = sqlx::query_scalar("select count(*) from panel_row")
        .fetch_one(&pool)
        .await
        .expect("the table is still there");
    assert_eq!(rows, 60);
}
