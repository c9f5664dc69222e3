//! The cache and the state instances share through Redis, told as an operator and a user see
//! them: two instances on one database and one Redis never answer an old or foreign value;
//! Redis dying, hanging or coming back never fails a request; limits and events span instances.
//!
//! Tests that stop Redis run their own `redis-server` on a free port (never the shared one).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use panels::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, token_for};

const TENANT: &str = "cache-co";

/// A `redis-server` of this test, killed when dropped.
struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
    /// Keep everything written (append-only file, synced on every write), so a restart brings
    /// the old keys back as a network partition would.
    durable: bool,
}

impl RedisServer {
    fn start(durable: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("panels-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self {
            port,
            dir,
            child: None,
            durable,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and directory, and waits until it accepts connections.
    fn restart(&mut self) {
        let (appendonly, fsync) = if self.durable {
            ("yes", "always")
        } else {
            ("no", "no")
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                fsync,
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it at once (SIGKILL): connections break, nothing is answered.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Freezes it (SIGSTOP): connections stay open, commands hang.
    fn pause(&self) {
        self.signal("-STOP");
    }

    fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen process ignores everything but SIGKILL and SIGCONT; kill works either way.
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the instance trusts Redis again (its breaker closed after the epoch bump).
async fn wait_trusted(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.state.cache.is_trusted() {
        assert!(Instant::now() < deadline, "the cache never trusted Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hits of one cache on one instance, both layers.
fn hits(app: &TestApp, cache: &str) -> u64 {
    ["local", "redis"]
        .iter()
        .map(|layer| {
            app.state
                .metrics
                .cache_hits
                .with_label_values(&[cache, layer])
                .get()
        })
        .sum()
}

fn admin() -> String {
    token_for(TENANT, "admin@cache.example", Role::Admin)
}

async fn rename(app: &TestApp, token: &str, id: i64, name: &str) {
    let res = app
        .put(&format!("/api/panels/{id}"))
        .bearer(token)
        .json(&json!({ "name": name }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}

/// The panel's name as a reader of `app` sees it.
async fn panel_name(app: &TestApp, token: &str, id: i64) -> String {
    let res = app
        .get(&format!("/api/panels/{id}"))
        .bearer(token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["name"].as_str().expect("name").to_owned()
}

/// The names in the reader's panel list.
async fn listed(app: &TestApp, token: &str) -> Vec<String> {
    let res = app.get("/api/panels").bearer(token).send().await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect()
}

async fn two_instances(vars: &[(&str, &str)]) -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(vars).await;
    let b = TestApp::spawn_on(&a.database_url, vars).await;
    wait_trusted(&a).await;
    wait_trusted(&b).await;
    (a, b)
}

#[tokio::test]
async fn a_write_through_one_instance_is_read_at_once_through_the_other() {
    let (a, b) = two_instances(&[]).await;
    let token = admin();
    let id = a.create_panel(&token, "Before").await;

    // Both instances cache the panel and the list (the second read is a hit).
    for app in [&a, &b] {
        assert_eq!(panel_name(app, &token, id).await, "Before");
        let before = hits(app, "panel");
        assert_eq!(panel_name(app, &token, id).await, "Before");
        assert!(hits(app, "panel") > before, "the second read is a hit");
        assert_eq!(listed(app, &token).await, vec!["Before"]);
        assert_eq!(listed(app, &token).await, vec!["Before"]);
    }

    // A write through A is read at once through A and through B, panel and list.
    rename(&a, &token, id, "After A").await;
    for app in [&a, &b] {
        assert_eq!(panel_name(app, &token, id).await, "After A");
        assert_eq!(listed(app, &token).await, vec!["After A"]);
    }
    // And the other way round, with the ETag following the version.
    rename(&b, &token, id, "After B").await;
    let res = a
        .get(&format!("/api/panels/{id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.body["name"], "After B");
    assert_eq!(
        res.header("etag"),
        Some(format!("\"panel-{id}-v3\"").as_str())
    );
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(listed(&a, &token).await, vec!["After B"]);

    // A delete through B: gone through A, from the panel and from the list.
    let res = b
        .delete(&format!("/api/panels/{id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    a.get(&format!("/api/panels/{id}"))
        .bearer(&token)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    assert!(listed(&a, &token).await.is_empty());

    // The metrics name the cache.
    let metrics = a.get("/metrics").send().await.text;
    assert!(metrics.contains(r#"cache_hits_total{cache="panel",layer="local"}"#));
    assert!(metrics.contains(r#"cache_misses_total{cache="panels"}"#));
    assert!(
        metrics.contains(r#"cache_command_duration_seconds_bucket{cache="panel",op="versions""#)
    );
}

/// `CACHE_ENABLED=false`: every read goes to PostgreSQL, so even a change made behind the
/// server's back (no version bump) is read at once, and the cache counts nothing.
#[tokio::test]
async fn with_the_cache_switched_off_every_read_comes_from_the_database() {
    let app = TestApp::spawn_with(&[("CACHE_ENABLED", "false")]).await;
    let token = admin();
    let id = app.create_panel(&token, "Before").await;
    assert_eq!(panel_name(&app, &token, id).await, "Before");
    assert_eq!(listed(&app, &token).await, vec!["Before"]);

    sqlx::query("update panel set name = 'Behind its back' where id = $1")
        .bind(id)
        .execute(&app.owner_pool().await)
        .await
        .expect("update");
    assert_eq!(panel_name(&app, &token, id).await, "Behind its back");
    assert_eq!(listed(&app, &token).await, vec!["Behind its back"]);

    let metrics = app.get("/metrics").send().await.text;
    for counter in ["cache_hits_total{", "cache_misses_total{"] {
        assert!(
            !metrics.lines().any(|l| l.starts_with(counter)),
            "{counter} in {metrics}"
        );
    }
}

#[tokio::test]
async fn columns_and_views_are_fresh_after_writes_through_either_instance() {
    let (a, b) = two_instances(&[]).await;
    let token = admin();
    let id = a.create_panel(&token, "Worklist").await;
    let columns = format!("/api/panels/{id}/columns");
    let column_names = async |app: &TestApp| -> Vec<String> {
        let res = app.get(&columns).bearer(&token).send().await;
        assert_eq!(res.status, 200, "{}", res.text);
        res.body["calculatedColumns"]
            .as_array()
            .expect("calculated")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert!(column_names(&b).await.is_empty());
    assert!(column_names(&b).await.is_empty());

    // A column added through A is listed through B.
    let res = a
        .post(&format!("/api/panels/{id}/columns/calculated"))
        .bearer(&token)
        .json(&json!({"name": "score", "type": "number", "formula": "1 + 1", "properties": {}}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let column = res.body["id"].as_i64().expect("column id");
    assert_eq!(column_names(&b).await, vec!["score"]);
    assert_eq!(column_names(&b).await, vec!["score"]);

    // A view read through both instances, then its sorts replaced through B.
    let res = a
        .post("/api/views")
        .bearer(&token)
        .json(&json!({"panelId": id, "name": "Mine", "visibleColumns": [column.to_string()]}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let view = res.body["id"].as_i64().expect("view id");
    for app in [&a, &b, &a, &b, &a] {
        let res = app
            .get(&format!("/api/views/{view}"))
            .bearer(&token)
            .send()
            .await;
        assert_eq!(res.body["sort"], json!([]));
    }
    let res = b
        .put(&format!("/api/views/{view}/sorts"))
        .bearer(&token)
        .json(&json!({"sorts": [{"columnName": "score", "direction": "desc", "order": 1}]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let res = a
        .get(&format!("/api/views/{view}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.body["sort"][0]["columnName"], "score", "{}", res.text);
    assert!(hits(&a, "view") > 0, "views are cached");

    // Renaming the column through B carries into the view's sorts, read through A.
    let res = b
        .put(&format!("/api/panels/{id}/columns/{column}"))
        .bearer(&token)
        .json(&json!({"name": "rank"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(column_names(&a).await, vec!["rank"]);
    let res = a
        .get(&format!("/api/views/{view}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.body["sort"][0]["columnName"], "rank", "{}", res.text);

    // Filters, cached too, follow a replace through the other instance.
    let filters = format!("/api/views/{view}/filters");
    for app in [&b, &b] {
        let res = app.get(&filters).bearer(&token).send().await;
        assert_eq!(res.body["filters"], json!([]), "{}", res.text);
    }
    let res = a
        .put(&filters)
        .bearer(&token)
        .json(&json!({"logic": "AND", "conditions": [{"field": "rank", "operator": "gt", "value": 3}]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let res = b.get(&filters).bearer(&token).send().await;
    assert_eq!(
        res.body["filterTree"]["conditions"][0]["field"], "rank",
        "{}",
        res.text
    );
}

#[tokio::test]
async fn one_tenants_cache_never_answers_another_tenant_or_database() {
    let (a, b) = two_instances(&[]).await;
    let owner = admin();
    let id = a.create_panel(&owner, "Secret").await;
    assert_eq!(panel_name(&a, &owner, id).await, "Secret");
    assert_eq!(panel_name(&b, &owner, id).await, "Secret");
    assert_eq!(listed(&b, &owner).await, vec!["Secret"]);

    // Another tenant's admin asks for the same id, on both instances, twice: the same 404 as an
    // id that does not exist, and an empty list.
    let other = token_for("other-co", "admin@other.example", Role::Admin);
    for app in [&a, &b, &a, &b] {
        app.get(&format!("/api/panels/{id}"))
            .bearer(&other)
            .send()
            .await
            .assert_error(404, "PANEL_NOT_FOUND");
        app.get(&format!("/api/panels/{id}/columns"))
            .bearer(&other)
            .send()
            .await
            .assert_error(404, "PANEL_NOT_FOUND");
        assert!(listed(app, &other).await.is_empty());
    }

    // Another deployment (another database) on the same Redis, same tenant, same panel id: each
    // reads its own.
    let elsewhere = TestApp::spawn().await;
    wait_trusted(&elsewhere).await;
    let mut other_id = elsewhere.create_panel(&owner, "Elsewhere").await;
    while other_id < id {
        other_id = elsewhere.create_panel(&owner, "Elsewhere").await;
    }
    assert_eq!(other_id, id, "both databases number panels alike");
    for _ in 0..2 {
        assert_eq!(panel_name(&elsewhere, &owner, id).await, "Elsewhere");
        assert_eq!(panel_name(&a, &owner, id).await, "Secret");
    }
}

#[tokio::test]
async fn revoking_access_hides_a_cached_panel_at_once() {
    let (a, b) = two_instances(&[]).await;
    let owner = admin();
    let viewer = token_for(TENANT, "vic@cache.example", Role::User);
    let id = a.create_panel(&owner, "Shared").await;

    // Not shared yet: absent for the viewer (and that answer is not kept).
    b.get(&format!("/api/panels/{id}"))
        .bearer(&viewer)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    assert!(listed(&b, &viewer).await.is_empty());

    // Shared through A: visible through B at once, then cached there.
    let res = a
        .post(&format!("/api/acls/panel/{id}"))
        .bearer(&owner)
        .json(&json!({"userEmail": "vic@cache.example", "permission": "viewer"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    for _ in 0..2 {
        assert_eq!(panel_name(&b, &viewer, id).await, "Shared");
        assert_eq!(listed(&b, &viewer).await, vec!["Shared"]);
    }

    // Revoked through A: gone through B at once, from the panel, its columns and the list.
    let res = a
        .delete(&format!("/api/acls/panel/{id}/vic@cache.example"))
        .bearer(&owner)
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    for app in [&b, &a] {
        app.get(&format!("/api/panels/{id}"))
            .bearer(&viewer)
            .send()
            .await
            .assert_error(404, "PANEL_NOT_FOUND");
        app.get(&format!("/api/panels/{id}/columns"))
            .bearer(&viewer)
            .send()
            .await
            .assert_error(404, "PANEL_NOT_FOUND");
        assert!(listed(app, &viewer).await.is_empty());
    }
    // The owner still reads it.
    assert_eq!(panel_name(&b, &owner, id).await, "Shared");
}

#[tokio::test]
async fn every_request_succeeds_while_redis_is_down_and_the_cache_comes_back() {
    let mut redis = RedisServer::start(false);
    let url = redis.url();
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_COMMAND_TIMEOUT_MS", "50"),
    ];
    let (a, b) = two_instances(&vars).await;
    let token = admin();
    let id = a.create_panel(&token, "One").await;
    for app in [&a, &b, &a, &b] {
        assert_eq!(panel_name(app, &token, id).await, "One");
    }
    let ready = a.get("/health/ready").send().await;
    assert_eq!(ready.body["status"], "ok", "{}", ready.text);

    redis.kill();

    // Reads and writes through both instances succeed, and nothing cached earlier is served
    // after a write through the other instance.
    assert_eq!(panel_name(&b, &token, id).await, "One");
    rename(&a, &token, id, "Two").await;
    assert_eq!(panel_name(&b, &token, id).await, "Two");
    assert_eq!(listed(&b, &token).await, vec!["Two"]);
    let second = b.create_panel(&token, "Three").await;
    assert_eq!(panel_name(&a, &token, second).await, "Three");
    assert_eq!(listed(&a, &token).await, vec!["Two", "Three"]);
    let ready = a.get("/health/ready").send().await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "degraded", "{}", ready.text);
    assert_eq!(ready.body["cache"]["status"], "down");
    let bypassed = a
        .state
        .metrics
        .cache_bypassed
        .with_label_values(&["panel"])
        .get();
    assert!(bypassed > 0, "reads went to PostgreSQL");

    // Redis back (empty): both instances trust it again by themselves and cache again.
    redis.restart();
    wait_trusted(&a).await;
    wait_trusted(&b).await;
    let ready = a.get("/health/ready").send().await;
    assert_eq!(ready.body["status"], "ok", "{}", ready.text);
    rename(&b, &token, id, "Four").await;
    let before = hits(&a, "panel");
    assert_eq!(panel_name(&a, &token, id).await, "Four");
    assert_eq!(panel_name(&a, &token, id).await, "Four");
    assert!(hits(&a, "panel") > before, "caching resumed");

    // The event subscription reconnected by itself too.
    let mut events = b.state.cache.subscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        rename(&a, &token, id, "Five").await;
        if let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            assert_eq!(event.json().expect("json")["type"], "panel.updated");
            break;
        }
        assert!(Instant::now() < deadline, "no event after Redis came back");
    }
}

#[tokio::test]
async fn a_write_redis_could_not_record_is_never_hidden_by_an_old_entry() {
    // Redis keeps its data across the outage here, as after a partition: the old versions and
    // entries come back with it, and only the epoch bump on recovery keeps them dead.
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_COMMAND_TIMEOUT_MS", "50"),
    ];
    let (a, b) = two_instances(&vars).await;
    let token = admin();
    let id = a.create_panel(&token, "Old").await;
    for _ in 0..2 {
        assert_eq!(panel_name(&b, &token, id).await, "Old");
    }
    let before = hits(&b, "panel");
    assert_eq!(panel_name(&b, &token, id).await, "Old");
    assert!(
        hits(&b, "panel") > before,
        "B serves the panel from its cache"
    );

    redis.kill();
    rename(&a, &token, id, "New").await;
    redis.restart();
    wait_trusted(&a).await;
    for _ in 0..3 {
        assert_eq!(panel_name(&b, &token, id).await, "New");
        assert_eq!(panel_name(&a, &token, id).await, "New");
    }

    // A hanging Redis (commands never answered) costs a command timeout, not a failure.
    redis.pause();
    let started = Instant::now();
    rename(&a, &token, id, "Hung").await;
    assert_eq!(panel_name(&b, &token, id).await, "Hung");
    assert_eq!(panel_name(&a, &token, id).await, "Hung");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests do not wait on a hung Redis"
    );
    redis.resume();
    wait_trusted(&a).await;
    wait_trusted(&b).await;
    for app in [&a, &b, &a, &b] {
        assert_eq!(panel_name(app, &token, id).await, "Hung");
    }
}

#[tokio::test]
async fn concurrent_reads_during_writes_end_with_the_last_write() {
    let (a, b) = two_instances(&[]).await;
    let token = admin();
    let id = a.create_panel(&token, "v0").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..8 {
        let (client, base) = if i % 2 == 0 {
            (a.client.clone(), a.base.clone())
        } else {
            (b.client.clone(), b.base.clone())
        };
        let (stop, token) = (stop.clone(), token.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let path = if reads.is_multiple_of(3) {
                    format!("{base}/api/panels")
                } else {
                    format!("{base}/api/panels/{id}")
                };
                let res = client
                    .get(path)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(res.status(), 200);
                reads += 1;
            }
            reads
        }));
    }
    let last = 30;
    for i in 1..=last {
        let app = if i % 2 == 0 { &a } else { &b };
        rename(app, &token, id, &format!("v{i}")).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    assert!(reads > 30, "readers ran during the writes ({reads} reads)");

    let expected = format!("v{last}");
    for app in [&a, &b, &a, &b] {
        assert_eq!(panel_name(app, &token, id).await, expected);
        assert_eq!(listed(app, &token).await, vec![expected.clone()]);
    }
}

#[tokio::test]
async fn a_fill_that_raced_a_write_is_never_read_by_any_instance() {
    use panels::cache::{Cached, Change, Depends};
    let (a, b) = two_instances(&[]).await;
    let tenant = panels::auth::TenantId::parse(TENANT).expect("tenant slug");
    let value = |name: &str| Cached::new(&json!({ "name": name }), "");

    // A reader on A loads the panel; while it loads, a write commits and bumps through B; the
    // reader then fills the cache with what it loaded before the write.
    let raced = a
        .state
        .cache
        .read_through(
            "panel",
            &tenant,
            Depends::Panel(panels::ids::PanelId(7)),
            "7:r",
            || async {
                b.state
                    .cache
                    .committed(
                        &tenant,
                        Change::panel("panel.updated", panels::ids::PanelId(7)),
                    )
                    .await;
                value("before the write")
            },
        )
        .await
        .expect("read");
    assert_eq!(&raced.body[..], br#"{"name":"before the write"}"#);

    // Nobody reads that fill again: the next read on either instance loads afresh.
    for app in [&a, &b] {
        let next = app
            .state
            .cache
            .read_through(
                "panel",
                &tenant,
                Depends::Panel(panels::ids::PanelId(7)),
                "7:r",
                || async { value("after the write") },
            )
            .await
            .expect("read");
        assert_eq!(&next.body[..], br#"{"name":"after the write"}"#);
    }
}

#[tokio::test]
async fn structural_changes_reach_every_instances_subscribers() {
    let (a, b) = two_instances(&[]).await;
    let mut events = b.state.cache.subscribe();
    assert!(b.state.cache.wait_subscribed(Duration::from_secs(5)).await);
    let token = admin();
    let id = a.create_panel(&token, "Live").await;
    rename(&a, &token, id, "Live 2").await;

    let mut received: Vec<Value> = Vec::new();
    while received.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("event");
        assert_eq!(event.tenant(), Some(TENANT));
        received.push(event.json().expect("json payload"));
    }
    assert_eq!(received[0], json!({"type": "panel.created", "panelId": id}));
    assert_eq!(received[1], json!({"type": "panel.updated", "panelId": id}));

    // Any message published through one instance reaches the other's subscribers.
    let channel = a
        .state
        .cache
        .events_channel(&panels::auth::TenantId::parse(TENANT).expect("tenant slug"));
    a.state.cache.publish(&channel, r#"{"type":"ping"}"#).await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("event");
    assert_eq!(event.payload, r#"{"type":"ping"}"#);
}

#[tokio::test]
async fn a_tenant_rate_limit_holds_across_instances() {
    // Each instance alone would admit a burst of 4; together they must not admit 8.
    let vars = [
        ("RATE_LIMIT_TENANT_RPS", "1"),
        ("RATE_LIMIT_TENANT_BURST", "4"),
    ];
    let (a, b) = two_instances(&vars).await;
    let token = token_for("busy-co", "admin@busy.example", Role::Admin);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        statuses.push(app.get("/api/auth/me").bearer(&token).send().await.status);
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + limited, 8, "{statuses:?}");
    assert!(
        admitted <= 5,
        "shared burst of 4 (+1 refilled): {statuses:?}"
    );
}

/// A limit high enough for leases (each Redis call admits several requests for one instance)
/// still admits no more across instances than the shared limit allows over the time taken:
/// the burst plus one request per emission interval elapsed.
#[tokio::test]
async fn a_leased_tenant_rate_limit_admits_no_more_than_the_shared_limit() {
    // 100/s → leases of 2; a burst of 100 (the burst is at least the rate) shared by both
    // instances, each of which alone would admit all of its 100 requests.
    let vars = [
        ("RATE_LIMIT_TENANT_RPS", "100"),
        ("RATE_LIMIT_TENANT_BURST", "100"),
    ];
    let (a, b) = two_instances(&vars).await;
    let token = token_for("leased-co", "admin@leased.example", Role::Admin);
    let started = Instant::now();
    let send = |app: &TestApp| app.get("/api/auth/me").bearer(&token).send();
    let mut statuses = Vec::new();
    // Twenty concurrent requests per round, half through each instance, ten rounds.
    for _ in 0..10 {
        let round =
            futures::future::join_all((0..20).map(|i| send(if i % 2 == 0 { &a } else { &b })))
                .await;
        statuses.extend(round.into_iter().map(|r| r.status));
    }
    let elapsed = started.elapsed();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + limited, 200, "{statuses:?}");
    let allowed = 100 + (elapsed.as_secs_f64() * 100.0).ceil() as usize + 1;
    assert!(
        admitted <= allowed,
        "{admitted} admitted in {elapsed:?}, the shared limit allows {allowed}"
    );
    // Leases lost to concurrency cost little: most of the burst is served.
    assert!(admitted >= 80, "{admitted} admitted: {statuses:?}");
    assert!(limited > 0 || allowed >= 200, "{statuses:?} in {elapsed:?}");
}

#[tokio::test]
async fn without_redis_the_in_process_cache_serves_alone() {
    let app = TestApp::spawn_with(&[("REDIS_URL", "")]).await;
    let token = admin();
    let id = app.create_panel(&token, "Local").await;
    assert_eq!(panel_name(&app, &token, id).await, "Local");
    let before = hits(&app, "panel");
    assert_eq!(panel_name(&app, &token, id).await, "Local");
    assert_eq!(hits(&app, "panel"), before + 1, "served from the process");
    rename(&app, &token, id, "Local 2").await;
    assert_eq!(panel_name(&app, &token, id).await, "Local 2");
    let ready = app.get("/health/ready").send().await;
    assert_eq!(ready.body["status"], "ok", "{}", ready.text);
    assert_eq!(ready.body["cache"]["status"], "disabled");

    // Events still reach this instance's subscribers.
    let mut events = app.state.cache.subscribe();
    rename(&app, &token, id, "Local 3").await;
    let event = events.try_recv().expect("delivered in process");
    assert_eq!(event.json().expect("json")["type"], "panel.updated");
}
