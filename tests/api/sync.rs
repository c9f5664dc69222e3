//! Data sources that really sync: each connector against the real kind of source, the queue's
//! retries, leases and single flight, the SSRF guard, and secrets kept out of answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use panels::auth::Role;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, admin_url, token_for};

struct Given {
    app: TestApp,
    token: String,
    panel: i64,
}

async fn given(vars: &[(&str, &str)]) -> Given {
    let app = TestApp::spawn_with(vars).await;
    let token = token_for("sync", "admin@sync.example", Role::Admin);
    let res = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"name": "Worklist"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let panel = res.body["id"].as_i64().expect("panel id");
    Given { app, token, panel }
}

impl Given {
    async fn source(&self, kind: &str, config: Value) -> i64 {
        let res = self
            .app
            .post(&format!("/api/panels/{}/datasources", self.panel))
            .bearer(&self.token)
            .json(&json!({"type": kind, "config": config}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body["id"].as_i64().expect("source id")
    }

    async fn sync(&self, ds: i64) -> crate::helpers::Res {
        self.app
            .post(&format!("/api/panels/{}/datasources/{ds}/sync", self.panel))
            .bearer(&self.token)
            .send()
            .await
    }

    async fn runs(&self, ds: i64) -> Vec<Value> {
        let res = self
            .app
            .get(&format!("/api/panels/{}/datasources/{ds}/runs", self.panel))
            .bearer(&self.token)
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        res.body["runs"].as_array().expect("runs").clone()
    }

    async fn row_count(&self, pool: &PgPool, ds: i64) -> i64 {
        sqlx::query_scalar("select count(*) from panel_row where data_source_id = $1")
            .bind(ds)
            .fetch_one(pool)
            .await
            .expect("count")
    }

    /// Waits until the source's newest run ends.
    async fn wait_for_end(&self, ds: i64) -> Value {
        for _ in 0..200 {
            if let Some(run) = self.runs(ds).await.first()
                && ["succeeded", "dead", "failed"]
                    .contains(&run["status"].as_str().unwrap_or_default())
            {
                return run.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the run did not end");
    }
}

/// A second, real PostgreSQL database holding the "clinic" data.
async fn clinic_database(rows: i64) -> (String, PgPool) {
    let name = format!("panels_test_src_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&admin_url()).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await
        .expect("create");
    let base = admin_url();
    let url = format!(
        "{}/{name}",
        base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base)
    );
    let pool = PgPool::connect(&url).await.expect("connect");
    sqlx::query("create table patients (id bigint primary key, name text, age int, seen date)")
        .execute(&pool)
        .await
        .expect("table");
    sqlx::query("insert into patients select g, 'patient ' || g, (20 + g % 60)::int, date '2026-01-01' + (g % 300)::int from generate_series(1, $1::int) g")
        .bind(rows)
        .execute(&pool)
        .await
        .expect("rows");
    (url, pool)
}

#[tokio::test]
async fn a_database_source_syncs_idempotently_and_applies_its_delete_policy() {
    let g = given(&[]).await;
    let (url, clinic) = clinic_database(2500).await;
    let ds = g
        .source("database", json!({"connectionString": url, "query": "select id, name, age, seen from patients", "keyField": "id", "deletePolicy": "delete"}))
        .await;

    let res = g.sync(ds).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["syncStatus"], "success", "{}", res.text);
    assert_eq!(res.body["inserted"], 2500);
    assert_eq!(res.body["recordsProcessed"], 2500);
    assert_eq!(
        res.body["config"]["connectionString"], "********",
        "the secret is masked"
    );
    assert!(!res.text.contains("postgres://"), "{}", res.text);

    let owner = g.app.owner_pool().await;
    assert_eq!(g.row_count(&owner, ds).await, 2500);

    // Again: nothing changed, nothing written twice.
    let res = g.sync(ds).await;
    assert_eq!(res.body["unchanged"], 2500, "{}", res.text);
    assert_eq!(res.body["inserted"], 0);
    assert_eq!(g.row_count(&owner, ds).await, 2500);

    // The source changes: one row updated, one gone.
    sqlx::query("update patients set age = 99 where id = 7")
        .execute(&clinic)
        .await
        .expect("update");
    sqlx::query("delete from patients where id = 8")
        .execute(&clinic)
        .await
        .expect("delete");
    let res = g.sync(ds).await;
    assert_eq!(
        (
            res.body["updated"].as_i64(),
            res.body["deleted"].as_i64(),
            res.body["unchanged"].as_i64()
        ),
        (Some(1), Some(1), Some(2498)),
        "{}",
        res.text
    );
    assert_eq!(g.row_count(&owner, ds).await, 2499);

    let runs = g.runs(ds).await;
    assert_eq!(runs.len(), 3);
    assert!(
        runs[0]["id"].as_i64() > runs[1]["id"].as_i64(),
        "newest first"
    );
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));

    let changes = g
        .app
        .get(&format!(
            "/api/changes/panels?panelId={}&changeType=source_changed",
            g.panel
        ))
        .bearer(&g.token)
        .send()
        .await;
    let descriptions: Vec<&str> = changes.body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["description"].as_str())
        .collect();
    assert!(
        descriptions.iter().any(|d| d.contains("2500 added")),
        "{descriptions:?}"
    );
    assert!(
        descriptions
            .iter()
            .any(|d| d.contains("1 updated, 1 removed")),
        "{descriptions:?}"
    );
}

#[tokio::test]
async fn a_database_source_cannot_write_to_its_database() {
    let g = given(&[]).await;
    let (url, clinic) = clinic_database(3).await;
    let ds = g
        .source("database", json!({"connectionString": url, "query": "with gone as (delete from patients returning *) select * from gone", "keyField": "id"}))
        .await;
    let res = g.sync(ds).await;
    assert_eq!(res.body["syncStatus"], "error", "{}", res.text);
    let left: i64 = sqlx::query_scalar("select count(*) from patients")
        .fetch_one(&clinic)
        .await
        .expect("count");
    assert_eq!(left, 3, "the read-only transaction refused the delete");
}

#[derive(Clone)]
struct Remote {
    hits: Arc<AtomicUsize>,
    /// While false, the second page never answers (a source that hangs mid-sync).
    release_second_page: Arc<AtomicBool>,
    first_page: usize,
}

async fn remote_page(
    axum::extract::State(remote): axum::extract::State<Remote>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    remote.hits.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some("Bearer remote-api-secret")
    {
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if page == 2 {
        while !remote.release_second_page.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (from, to) = match page {
        1 => (1, remote.first_page),
        2 => (remote.first_page + 1, remote.first_page + 300),
        _ => (0, 0),
    };
    let items: Vec<Value> = (from..=to).filter(|i| *i > 0).map(|i| json!({"mrn": format!("M{i}"), "name": format!("P{i}"), "vitals": {"hr": 60 + i % 40}})).collect();
    let next = if page < 2 {
        Some(format!("/patients?page={}", page + 1))
    } else {
        None
    };
    axum::Json(json!({"data": {"items": items}, "next": next})).into_response()
}

async fn start_remote(first_page: usize, released: bool) -> (String, Remote) {
    let remote = Remote {
        hits: Arc::default(),
        release_second_page: Arc::new(AtomicBool::new(released)),
        first_page,
    };
    let router = axum::Router::new()
        .route("/patients", get(remote_page))
        .with_state(remote.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/patients?page=1"), remote)
}

fn api_config(url: &str) -> Value {
    json!({"url": url, "headers": {"Authorization": "Bearer remote-api-secret"}, "recordsPointer": "/data/items", "nextPointer": "/next", "keyField": "mrn"})
}

#[tokio::test]
async fn an_api_source_follows_pages_with_secret_headers() {
    let g = given(&[]).await;
    let (url, remote) = start_remote(120, true).await;
    let ds = g.source("api", api_config(&url)).await;
    let res = g.sync(ds).await;
    assert_eq!(res.body["syncStatus"], "success", "{}", res.text);
    assert_eq!(res.body["inserted"], 420);
    assert_eq!(remote.hits.load(Ordering::SeqCst), 2);
    assert!(!res.text.contains("remote-api-secret"));
    let listed = g
        .app
        .get(&format!("/api/panels/{}/datasources/{ds}", g.panel))
        .bearer(&g.token)
        .send()
        .await;
    assert_eq!(
        listed.body["config"]["headers"]["Authorization"],
        "********"
    );
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let g = given(&[("ALLOW_PRIVATE_SOURCE_HOSTS", "false")]).await;
    let (url, remote) = start_remote(5, true).await;
    for target in [
        url.clone(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://localhost:9/x".to_owned(),
    ] {
        let ds = g.source("api", api_config(&target)).await;
        let res = g.sync(ds).await;
        assert_eq!(res.body["syncStatus"], "error", "{target}: {}", res.text);
        assert_eq!(
            res.body["status"], "dead",
            "a refused address is not retried: {}",
            res.text
        );
        assert!(
            res.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("refusing")),
            "{target}: {}",
            res.text
        );
    }
    assert_eq!(
        remote.hits.load(Ordering::SeqCst),
        0,
        "no request reached the private address"
    );
}

#[tokio::test]
async fn a_failing_source_is_retried_with_backoff_then_dead_lettered() {
    let g = given(&[]).await;
    // Nothing listens on this port: every attempt fails.
    let ds = g
        .source(
            "api",
            json!({"url": "http://127.0.0.1:9/none", "keyField": "id", "timeoutMs": 500}),
        )
        .await;
    let res = g.sync(ds).await;
    assert_eq!(res.body["status"], "failed", "{}", res.text);
    let run = &res.body["run"];
    assert_eq!(run["attempts"], 1);
    let next: chrono::DateTime<chrono::Utc> = run["nextAttemptAt"]
        .as_str()
        .expect("next attempt")
        .parse()
        .expect("date");
    assert!(next > chrono::Utc::now(), "the retry waits");

    // Make the retry due now, and the last allowed attempt.
    let owner = g.app.owner_pool().await;
    sqlx::query("update sync_run set run_at = now(), max_attempts = 2")
        .execute(&owner)
        .await
        .expect("due");
    g.app.state.wakeup.wake();
    let mut run = Value::Null;
    for _ in 0..100 {
        run = g.runs(ds).await[0].clone();
        if run["status"] == "dead" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(run["status"], "dead", "{run}");
    assert_eq!(run["attempts"], 2);
    assert!(run["lastError"].as_str().is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn a_second_sync_of_a_running_source_joins_it() {
    let g = given(&[]).await;
    let (url, remote) = start_remote(10, false).await;
    let ds = g.source("api", api_config(&url)).await;
    let first = g
        .app
        .post(&format!("/api/panels/{}/datasources/{ds}/sync", g.panel))
        .bearer(&g.token)
        .header("prefer", "respond-async")
        .send()
        .await;
    assert_eq!(first.status, 202, "{}", first.text);
    let second = g
        .app
        .post(&format!("/api/panels/{}/datasources/{ds}/sync", g.panel))
        .bearer(&g.token)
        .header("prefer", "respond-async")
        .send()
        .await;
    assert_eq!(second.status, 202);
    assert_eq!(first.body["runId"], second.body["runId"], "single flight");
    remote.release_second_page.store(true, Ordering::SeqCst);
    let run = g.wait_for_end(ds).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(g.runs(ds).await.len(), 1);
}

/// A worker dies mid-sync (its task is aborted while the source hangs): the lease runs out,
/// another worker takes the run over, and the result has every row once.
#[tokio::test]
async fn a_worker_killed_mid_sync_is_replaced_without_duplicates_or_losses() {
    let g = given(&[("WORKER_CONCURRENCY", "0"), ("SYNC_LEASE_MS", "1000")]).await;
    let (url, remote) = start_remote(1500, false).await;
    let ds = g.source("api", api_config(&url)).await;
    let res = g
        .app
        .post(&format!("/api/panels/{}/datasources/{ds}/sync", g.panel))
        .bearer(&g.token)
        .header("prefer", "respond-async")
        .send()
        .await;
    assert_eq!(res.status, 202, "{}", res.text);

    let stop = tokio_util::sync::CancellationToken::new();
    let doomed = panels::jobs::spawn(&g.app.state, 1, stop.clone());
    g.app.state.wakeup.wake();
    // Wait until the first page's first batch is stored and the worker hangs on page 2.
    let owner = g.app.owner_pool().await;
    for _ in 0..100 {
        if g.row_count(&owner, ds).await >= 1000 && remote.hits.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        g.row_count(&owner, ds).await >= 1000,
        "the first batch was written before the crash"
    );
    for handle in &doomed {
        handle.abort();
    }

    remote.release_second_page.store(true, Ordering::SeqCst);
    let _survivors = panels::jobs::spawn(&g.app.state, 1, stop.clone());
    let run = g.wait_for_end(ds).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["attempts"], 2,
        "the run was taken over after its lease ran out"
    );
    let (count, distinct): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct record_key) from panel_row where data_source_id = $1",
    )
    .bind(ds)
    .fetch_one(&owner)
    .await
    .expect("rows");
    assert_eq!((count, distinct), (1800, 1800));
    stop.cancel();
}

#[tokio::test]
async fn a_csv_upload_reports_bad_rows_by_line_and_keeps_the_rest() {
    let g = given(&[]).await;
    let ds = g
        .source(
            "file",
            json!({"format": "csv", "delimiter": ";", "keyField": "mrn"}),
        )
        .await;
    let csv = "mrn;name;age\nM1;Ada;36\nM2;Grace\nM3;Alan;41\n;Nobody;3\n";
    let res = g
        .app
        .post(&format!("/api/panels/{}/datasources/{ds}/upload", g.panel))
        .bearer(&g.token)
        .body("text/csv", csv)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["syncStatus"], "success");
    assert_eq!(res.body["inserted"], 2);
    let errors = res.body["run"]["errors"]
        .as_array()
        .expect("errors")
        .clone();
    let lines: Vec<i64> = errors.iter().filter_map(|e| e["line"].as_i64()).collect();
    assert_eq!(lines, vec![3, 5], "{errors:?}");

    // A latin-1 NDJSON file with a broken line.
    let ds = g
        .source(
            "file",
            json!({"format": "ndjson", "encoding": "latin1", "keyField": "id"}),
        )
        .await;
    let mut body = b"{\"id\": 1, \"name\": \"Jos".to_vec();
    body.push(0xe9); // é in latin-1
    body.extend_from_slice(b"\"}\nnot json\n{\"id\": 2}\n");
    let res = g
        .app
        .post(&format!("/api/panels/{}/datasources/{ds}/upload", g.panel))
        .bearer(&g.token)
        .body("application/x-ndjson", body)
        .send()
        .await;
    assert_eq!(res.body["inserted"], 2, "{}", res.text);
    assert_eq!(res.body["run"]["errors"][0]["line"], 2);
    let owner = g.app.owner_pool().await;
    let name: String = sqlx::query_scalar(
        "select data ->> 'name' from panel_row where data_source_id = $1 and record_key = '1'",
    )
    .bind(ds)
    .fetch_one(&owner)
    .await
    .expect("row");
    assert_eq!(name, "José");

    // Only file sources take uploads; a custom one answers 409.
    let custom = g.source("custom", json!({"keyField": "id"})).await;
    let res = g
        .app
        .post(&format!(
            "/api/panels/{}/datasources/{custom}/upload",
            g.panel
        ))
        .bearer(&g.token)
        .body("text/csv", "id\n1\n")
        .send()
        .await;
    res.assert_error(409, "NOT_A_FILE_SOURCE");
}

#[tokio::test]
async fn records_pushed_with_an_api_key_are_upserted_by_key() {
    let g = given(&[]).await;
    let ds = g.source("custom", json!({"keyField": "id"})).await;
    let key = g
        .app
        .post("/api/api-keys")
        .bearer(&g.token)
        .json(&json!({"name": "ehr", "scope": "write"}))
        .send()
        .await
        .body["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let path = format!("/api/panels/{}/datasources/{ds}/records", g.panel);
    let res = g
        .app
        .post(&path)
        .header("x-api-key", &key)
        .json(&json!({"records": [{"id": 1, "a": 1}, {"id": 2, "a": 2}, {"a": 3}]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        (
            res.body["inserted"].as_i64(),
            res.body["errorCount"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(res.body["errors"][0]["line"], 3);
    let res = g
        .app
        .post(&path)
        .header("x-api-key", &key)
        .json(&json!({"records": [{"id": 1, "a": 10}, {"id": 2, "a": 2}]}))
        .send()
        .await;
    assert_eq!(
        (res.body["updated"].as_i64(), res.body["unchanged"].as_i64()),
        (Some(1), Some(1)),
        "{}",
        res.text
    );

    let too_many: Vec<Value> = (0..10_001).map(|i| json!({"id": i})).collect();
    let res = g
        .app
        .post(&path)
        .header("x-api-key", &key)
        .json(&json!({"records": too_many}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");

    // A read-only key cannot push.
    let read = g
        .app
        .post("/api/api-keys")
        .bearer(&g.token)
        .json(&json!({"name": "ro", "scope": "read"}))
        .send()
        .await
        .body["key"]
        .as_str()
        .expect("key")
        .to_owned();
    g.app
        .post(&path)
        .header("x-api-key", &read)
        .json(&json!({"records": []}))
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn scheduled_sources_are_enqueued_when_due() {
    let g = given(&[]).await;
    let (url, _clinic) = clinic_database(5).await;
    let ds = g.source("database", json!({"connectionString": url, "query": "select * from patients", "schedule": {"everyMinutes": 5}})).await;
    assert_eq!(
        panels::jobs::enqueue_due(&g.app.state)
            .await
            .expect("scheduler"),
        0,
        "not due yet"
    );
    let owner = g.app.owner_pool().await;
    sqlx::query("update data_source set last_sync = now() - interval '6 minutes' where id = $1")
        .bind(ds)
        .execute(&owner)
        .await
        .expect("age");
    assert_eq!(
        panels::jobs::enqueue_due(&g.app.state)
            .await
            .expect("scheduler"),
        1
    );
    g.app.state.wakeup.wake();
    let run = g.wait_for_end(ds).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(g.row_count(&owner, ds).await, 5);
}
