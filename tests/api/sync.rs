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
    let panel = app.create_panel(&token, "Worklist").await;
    Given { app, token, panel }
}

impl Given {
    async fn source(&self, kind: &str, config: Value) -> i64 {
        self.app
            .create_source(&self.token, self.panel, kind, config)
            .await
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

/// The review's attack: a tenant points a `database` source at the server's own PostgreSQL
/// (by address, by name, by socket, by a parameter or host list that bypasses the host) or an
/// `api` source at a private or metadata address. Every form is refused when the source is
/// stored, naming the field, and nothing ever connects.
#[tokio::test]
async fn a_source_can_never_point_at_the_server_itself_or_a_private_network() {
    let g = given(&[("ALLOW_PRIVATE_SOURCE_HOSTS", "")]).await;
    let (url, remote) = start_remote(5, true).await;
    let refused = |res: &crate::helpers::Res, field: &str, what: &str| {
        res.assert_error(400, "INVALID_SOURCE_CONFIG");
        assert_eq!(
            res.body["details"][0]["field"], field,
            "{what}: {}",
            res.text
        );
        assert!(
            !res.text.contains("hunter2"),
            "the secret is never echoed: {}",
            res.text
        );
    };
    for cs in [
        "postgres://postgres:hunter2@127.0.0.1:5432/postgres",
        "postgres://postgres:hunter2@localhost/postgres",
        "postgresql://postgres:hunter2@127.0.0.1/postgres",
        "postgres://postgres:hunter2@%2Fvar%2Frun%2Fpostgresql/postgres",
        "postgres://postgres:hunter2@db.example.com/postgres?host=/var/run/postgresql",
        "postgres://postgres:hunter2@db.example.com/postgres?hostaddr=127.0.0.1",
        "postgres://postgres:hunter2@db.example.com,127.0.0.1/postgres",
        "postgres://postgres:hunter2@[::1]/postgres",
        "postgres://postgres:hunter2@[::ffff:127.0.0.1]/postgres",
        "postgres://postgres:hunter2@2130706433/postgres",
        "postgres://postgres:hunter2@0.0.0.0/postgres",
        "postgres://postgres:hunter2@169.254.169.254/postgres",
        "postgres://postgres:hunter2@[64:ff9b::7f00:1]/postgres",
        "postgres://postgres:hunter2@[2002:7f00:1::]/postgres",
        "postgres://postgres:hunter2@10.0.0.5/postgres",
        "postgres://postgres:hunter2@100.64.0.1/postgres",
        "postgres://postgres:hunter2@db.example.com/postgres?sslrootcert=/etc/ssl/private/server.key",
        "postgres:///postgres",
    ] {
        let res = g
            .app
            .post(&format!("/api/panels/{}/datasources", g.panel))
            .bearer(&g.token)
            .json(&json!({"type": "database", "config": {"connectionString": cs, "query": "select usename as id from pg_user"}}))
            .send()
            .await;
        refused(&res, "config.connectionString", cs);
    }
    for target in [
        url.clone(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://localhost:9/x".to_owned(),
        "http://[::1]:9/x".to_owned(),
        "http://2130706433/x".to_owned(),
        "http://[fd00:ec2::254]/latest".to_owned(),
    ] {
        let res = g
            .app
            .post(&format!("/api/panels/{}/datasources", g.panel))
            .bearer(&g.token)
            .json(&json!({"type": "api", "config": api_config(&target)}))
            .send()
            .await;
        refused(&res, "config.url", &target);
    }
    // An update cannot move a stored source there either.
    let ds = g
        .source(
            "database",
            json!({"connectionString": "postgres://reader:pw@db.clinic.invalid/clinic", "query": "select 1 as id"}),
        )
        .await;
    let res = g
        .app
        .put(&format!("/api/panels/{}/datasources/{ds}", g.panel))
        .bearer(&g.token)
        .json(&json!({"type": "database", "config": {"connectionString": "postgres://postgres@127.0.0.1/postgres", "query": "select 1 as id"}}))
        .send()
        .await;
    refused(&res, "config.connectionString", "update");
    assert_eq!(
        remote.hits.load(Ordering::SeqCst),
        0,
        "no request reached the private address"
    );
}

/// Stores a source's config beneath the API, encrypted as the server would (a name that
/// re-resolved after it was checked, or a source stored before the check existed).
async fn store_config(g: &Given, ds: i64, config: Value) {
    let sealed = panels::datasources::crypto::encrypt_config(
        &g.app.state.crypto,
        panels::datasources::crypto::SecretScope {
            tenant: "sync",
            data_source_id: panels::ids::DataSourceId(ds),
        },
        &config,
    )
    .expect("encrypt");
    let pool = g.app.owner_pool().await;
    sqlx::query("update data_source set config = $2 where id = $1")
        .bind(ds)
        .bind(sealed)
        .execute(&pool)
        .await
        .expect("store");
}

/// The policy holds again at connect time: a source whose stored host is (now) the server's own
/// database or a loopback API is refused when it syncs, reads nothing, and is not retried.
#[tokio::test]
async fn the_address_policy_is_checked_again_when_a_source_connects() {
    let g = given(&[("ALLOW_PRIVATE_SOURCE_HOSTS", "")]).await;
    let (url, remote) = start_remote(5, true).await;
    let pool = g.app.owner_pool().await;
    let db = g
        .source(
            "database",
            json!({"connectionString": "postgres://reader:pw@db.clinic.invalid/clinic", "query": "select 1 as id"}),
        )
        .await;
    store_config(
        &g,
        db,
        json!({"connectionString": format!("{}?sslmode=disable", admin_url()).replace("127.0.0.1", "localhost"), "query": "select usename as id from pg_user", "keyField": "id"}),
    )
    .await;
    let api = g
        .source(
            "api",
            json!({"url": "https://api.clinic.invalid/p", "keyField": "mrn"}),
        )
        .await;
    store_config(
        &g,
        api,
        json!({"url": url.replace("127.0.0.1", "localhost"), "keyField": "mrn"}),
    )
    .await;
    for ds in [db, api] {
        let res = g.sync(ds).await;
        assert_eq!(res.body["status"], "dead", "{}", res.text);
        let run = &res.body["run"];
        assert!(
            run["lastError"]
                .as_str()
                .is_some_and(|e| e.starts_with("refused")),
            "{}",
            res.text
        );
        assert_eq!(g.row_count(&pool, ds).await, 0, "nothing was read");
    }
    assert_eq!(remote.hits.load(Ordering::SeqCst), 0);
}

/// A connection that fails says "unreachable" and nothing more: a closed port, a port that
/// accepts and says nothing, and a port that speaks another protocol answer alike, so a source
/// cannot be used to scan ports (private addresses are allowed here to have something to scan).
#[tokio::test]
async fn a_failed_connection_says_only_unreachable() {
    let g = given(&[]).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let (http_url, _) = start_remote(1, true).await;
    let http_port = http_url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .expect("port");
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut messages = std::collections::BTreeSet::new();
    for port in [
        closed_port.to_string(),
        silent_port.to_string(),
        http_port.to_owned(),
    ] {
        let ds = g
            .source(
                "database",
                json!({"connectionString": format!("postgres://u:pw@127.0.0.1:{port}/x?sslmode=disable"), "query": "select 1 as id", "timeoutMs": 1000}),
            )
            .await;
        let run = g.sync(ds).await.body["run"].clone();
        messages.insert(run["lastError"].as_str().unwrap_or_default().to_owned());
        let ds = g
            .source(
                "api",
                json!({"url": format!("http://127.0.0.1:{port}/none"), "keyField": "id", "timeoutMs": 1000}),
            )
            .await;
        if port != http_port {
            let run = g.sync(ds).await.body["run"].clone();
            messages.insert(run["lastError"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        messages.into_iter().collect::<Vec<_>>(),
        [panels::netguard::UNREACHABLE],
        "every failure reads the same"
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
    let doomed = panels::datasources::sync::spawn_workers(&g.app.state, 1, stop.clone());
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
    let _survivors = panels::datasources::sync::spawn_workers(&g.app.state, 1, stop.clone());
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
        panels::jobs::enqueue_due(&g.app.state.db)
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
        panels::jobs::enqueue_due(&g.app.state.db)
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

/// The peak resident memory of this test process (the server runs in it), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A body sent as a stream of chunks produced on the fly (never whole in the test's memory).
fn streamed(chunks: impl Iterator<Item = Vec<u8>> + Send + 'static) -> reqwest::Body {
    let stream = futures::stream::iter(chunks.map(Ok::<_, std::io::Error>));
    reqwest::Body::wrap_stream(stream)
}

/// Issue 16, item 10: a JSON upload was read whole (a 250 MB file cost gigabytes). It is now split
/// into records as it arrives: a 200 MB document whose first record is 200 MB is read through
/// with a bounded buffer (that record reported as too large), and the records after it land.
#[tokio::test]
async fn a_json_upload_is_read_as_it_arrives_with_bounded_memory() {
    let g = given(&[]).await;
    let ds = g
        .source("file", json!({"format": "json", "keyField": "id"}))
        .await;
    let chunk = vec![b'x'; 1 << 20];
    let head = b"{\"note\": \"skipped\", \"records\": [{\"id\": 0, \"big\": \"".to_vec();
    let tail =
        b"\"}, {\"id\": 1, \"name\": \"Ada\"}, {\"id\": 2, \"name\": \"Grace\"}, not-json, 3]}"
            .to_vec();
    let body = std::iter::once(head)
        .chain(std::iter::repeat_n(chunk, 200))
        .chain(std::iter::once(tail));
    let before = peak_rss();
    let res = g
        .app
        .post(&format!("/api/panels/{}/datasources/{ds}/upload", g.panel))
        .bearer(&g.token)
        .body("application/json", streamed(body))
        .send()
        .await;
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["inserted"], 2, "{}", res.text);
    let errors = res.body["run"]["errors"]
        .as_array()
        .expect("errors")
        .clone();
    let lines: Vec<i64> = errors.iter().filter_map(|e| e["line"].as_i64()).collect();
    assert_eq!(lines, vec![1, 4, 5], "{errors:?}");
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("larger than")),
        "{errors:?}"
    );
    assert!(
        grown < 120 * 1024 * 1024,
        "a 200 MB upload grew the process by {} MB",
        grown >> 20
    );
}

/// Item 10: an upload has its own deadline (`UPLOAD_TIMEOUT_MS`), not the request timeout; and an
/// upload that ends early (past its deadline, or a client that goes away) ends its run at once,
/// so the source takes the next upload straight away instead of after the run's lease.
#[tokio::test]
async fn uploads_have_their_own_deadline_and_an_interrupted_one_frees_its_source() {
    let g = given(&[
        ("REQUEST_TIMEOUT_MS", "1000"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
        ("SYNC_WAIT_MS", "500"),
        ("UPLOAD_TIMEOUT_MS", "3000"),
    ])
    .await;
    let ds = g
        .source("file", json!({"format": "csv", "keyField": "id"}))
        .await;
    let slow = |lines: u32, pause_ms: u64| {
        let stream = futures::stream::unfold(0u32, move |i| async move {
            if i > lines {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            let line = if i == 0 {
                "id,name\n".to_owned()
            } else {
                format!("{i},n{i}\n")
            };
            Some((Ok::<_, std::io::Error>(line.into_bytes()), i + 1))
        });
        reqwest::Body::wrap_stream(stream)
    };
    let path = format!("/api/panels/{}/datasources/{ds}/upload", g.panel);
    // 2 s of upload: over the request timeout, within the upload's.
    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .body("text/csv", slow(10, 200))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["inserted"], 10, "{}", res.text);

    // Past the upload deadline: 503, and the run is over at once.
    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .body("text/csv", slow(40, 100))
        .send()
        .await;
    res.assert_error(503, "REQUEST_TIMEOUT");
    let mut ended = false;
    for _ in 0..30 {
        if g.runs(ds)
            .await
            .first()
            .is_some_and(|r| r["status"] == "dead")
        {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ended,
        "the interrupted run still holds the source: {:?}",
        g.runs(ds).await.first()
    );
    let res = g
        .app
        .post(&path)
        .bearer(&g.token)
        .body("text/csv", "id,name\n1,a\n")
        .send()
        .await;
    assert_eq!(res.status, 200, "the source is free again: {}", res.text);

    // A client that goes away mid-upload.
    let client = reqwest::Client::new();
    let request = client
        .post(format!("{}{path}", g.app.base))
        .bearer_auth(&g.token)
        .header("content-type", "text/csv")
        .body(slow(1000, 50))
        .send();
    let _ = tokio::time::timeout(Duration::from_millis(600), request).await;
    let mut ended = false;
    for _ in 0..30 {
        if g.runs(ds)
            .await
            .first()
            .is_some_and(|r| r["status"] == "dead")
        {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the abandoned upload still holds the source");
}
