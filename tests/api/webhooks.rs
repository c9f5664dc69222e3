//! Webhooks: a real receiver on a port of this test gets the tenant's events, signed per Standard
//! Webhooks, from the durable queue; failures are retried and logged, a webhook failing for the
//! whole window is disabled and the admins told; secrets rotate with two signatures for a while;
//! nobody manages a webhook they may not, and nothing private is reachable.
//!
//! The signatures are checked here by an implementation of the specification of our own (hmac,
//! sha2, base64), not by the server's code. Time: the retry schedule and the disable window are
//! configuration (`WEBHOOK_RETRY_SCHEDULE`, `WEBHOOK_DISABLE_AFTER_MS`), set to milliseconds
//! here, so every test runs in seconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use panels::auth::Role;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::helpers::{Session, TestApp, token_for};

/// Long enough for a commit to reach a webhook even when another test's transaction holds the
/// cluster's horizon back for a while (deliveries are delayed then, never lost).
const ARRIVES: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }

    /// Each signature of `webhook-signature`, and whether it verifies with `secret`.
    fn verifies_with(&self, secret: &str) -> Vec<bool> {
        let expected = sign(
            secret,
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            &self.body,
        );
        self.header("webhook-signature")
            .split(' ')
            .map(|signature| signature == expected)
            .collect()
    }
}

/// The signature the specification defines, computed independently: HMAC-SHA256 keyed with the
/// base64-decoded bytes after `whsec_`, over `{id}.{timestamp}.{body}`, as `v1,<base64>`.
fn sign(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// An HTTP endpoint on 127.0.0.1 that answers the statuses it is scripted with (then 200) and
/// hands every request to the test.
struct Receiver {
    url: String,
    requests: mpsc::UnboundedReceiver<Received>,
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: Arc<Mutex<u16>>,
}

#[derive(Clone)]
struct ReceiverState {
    sent: mpsc::UnboundedSender<Received>,
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start() -> Self {
        let (sent, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let fallback = Arc::new(Mutex::new(200));
        let state = ReceiverState {
            sent,
            script: script.clone(),
            fallback: fallback.clone(),
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            requests,
            script,
            fallback,
        }
    }

    /// The next answers, in order; then `fallback` for every other.
    fn answer(&self, statuses: &[u16], fallback: u16) {
        self.script.lock().expect("script").extend(statuses);
        *self.fallback.lock().expect("fallback") = fallback;
    }

    async fn next(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.requests.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let status = state
        .script
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or(*state.fallback.lock().expect("fallback"));
    let _ = state.sent.send(Received { headers, body });
    StatusCode::from_u16(status).expect("status")
}

/// Creates a webhook as `token`; answers its body (with the secret).
async fn create_hook(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app
        .post("/api/webhooks")
        .bearer(token)
        .json(&body)
        .send()
        .await;
    assert_eq!(res.status, 201, "create webhook: {}", res.text);
    res.body
}

async fn rename(app: &TestApp, token: &str, panel: i64, name: &str) {
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(token)
        .json(&json!({ "name": name }))
        .send()
        .await;
    assert_eq!(res.status, 200, "rename panel: {}", res.text);
}

/// The webhook's deliveries once `done` holds for them (or fails after ARRIVES).
async fn deliveries_when(
    app: &TestApp,
    token: &str,
    hook: i64,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + ARRIVES;
    loop {
        let res = app
            .get(&format!("/api/webhooks/{hook}/deliveries"))
            .bearer(token)
            .send()
            .await;
        assert_eq!(res.status, 200, "deliveries: {}", res.text);
        let list = res.body.as_array().expect("array").clone();
        if done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never got there: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fast(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars = vec![
        ("EVENT_POLL_MS", "100"),
        ("WEBHOOK_RETRY_SCHEDULE", "0,200ms,200ms"),
        ("WEBHOOK_TIMEOUT_MS", "3000"),
    ];
    vars.extend_from_slice(extra);
    vars
}

#[tokio::test]
async fn a_panel_update_reaches_the_webhook_signed_with_its_secret() {
    let app = TestApp::spawn_with(&fast(&[])).await;
    let admin = app.register_tenant("hooks").await;
    let panel = app.create_panel(&admin.access, "Triage").await;
    let other = app.create_panel(&admin.access, "Elsewhere").await;
    let mut receiver = Receiver::start().await;

    let created = create_hook(
        &app,
        &admin.access,
        json!({"url": receiver.url, "events": ["panel.updated"], "panelId": panel, "description": "ops"}),
    )
    .await;
    let secret = created["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let hook = created["id"].as_i64().expect("id");
    assert_eq!(created["events"], json!(["panel.updated"]));
    assert_eq!(created["enabled"], true);

    // Another panel's update and this panel's other events are not this webhook's.
    rename(&app, &admin.access, other, "Elsewhere, renamed").await;
    rename(&app, &admin.access, panel, "Triage, renamed").await;

    let got = receiver.next(ARRIVES).await.expect("the webhook is called");
    let body = got.json();
    assert_eq!(body["type"], "panel.updated");
    assert_eq!(body["panelId"], panel);
    assert_eq!(body["actor"]["email"], admin.email);
    assert_eq!(
        got.header("webhook-id"),
        body["id"].as_str().expect("event id")
    );
    assert_eq!(got.header("content-type"), "application/json");
    let timestamp: i64 = got
        .header("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    assert!((timestamp - chrono::Utc::now().timestamp()).abs() < 60);
    assert_eq!(got.verifies_with(&secret), vec![true]);
    assert!(
        receiver.next(Duration::from_millis(1500)).await.is_none(),
        "only the one event"
    );

    // The secret is never answered again.
    for path in [format!("/api/webhooks/{hook}"), "/api/webhooks".to_owned()] {
        let res = app.get(&path).bearer(&admin.access).send().await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert!(!res.text.contains(&secret[6..]), "{path} shows the secret");
        assert!(!res.text.contains("\"secret\""), "{path}: {}", res.text);
    }
    let listed = app.get("/api/webhooks").bearer(&admin.access).send().await;
    assert_eq!(listed.body[0]["id"], hook);

    let log = deliveries_when(&app, &admin.access, hook, |list| {
        list.first().is_some_and(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["eventId"], body["id"]);
    assert_eq!(log[0]["eventType"], "panel.updated");
    assert_eq!(log[0]["payload"], body);
    let attempts = log[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "succeeded");
    assert_eq!(attempts[0]["responseCode"], 200);
    assert!(attempts[0]["durationMs"].is_number());
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_the_log_shows_every_attempt() {
    let app = TestApp::spawn_with(&fast(&[])).await;
    let admin = app.register_tenant("hooks").await;
    let panel = app.create_panel(&admin.access, "Triage").await;
    let mut receiver = Receiver::start().await;
    let created = create_hook(
        &app,
        &admin.access,
        json!({"url": receiver.url, "events": ["panel.*"], "panelId": panel}),
    )
    .await;
    let hook = created["id"].as_i64().expect("id");

    // A 500, then a 200: the same message twice, by the same webhook-id.
    receiver.answer(&[500], 200);
    rename(&app, &admin.access, panel, "Renamed").await;
    let first = receiver.next(ARRIVES).await.expect("first attempt");
    let second = receiver.next(ARRIVES).await.expect("the retry");
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    assert_eq!(first.body, second.body);
    let log = deliveries_when(&app, &admin.access, hook, |list| {
        list.first().is_some_and(|d| d["status"] == "succeeded")
    })
    .await;
    let attempts = log[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{log:#?}");
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["responseCode"], 500);
    assert_eq!(attempts[0]["error"], "HTTP 500");
    assert_eq!(attempts[1]["status"], "succeeded");
    assert_eq!(attempts[1]["responseCode"], 200);

    // A 4xx other than 408 and 429 is final: one attempt, failed. A test message shows it.
    receiver.answer(&[410], 200);
    let queued = app
        .post(&format!("/api/webhooks/{hook}/test"))
        .bearer(&admin.access)
        .send()
        .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    assert_eq!(queued.body["eventType"], "webhook.test");
    let test_id = queued.body["id"].as_i64().expect("delivery id");
    let got = receiver.next(ARRIVES).await.expect("the test message");
    assert_eq!(got.json()["type"], "webhook.test");
    assert_eq!(got.json()["data"]["webhookId"], hook);
    let log = deliveries_when(&app, &admin.access, hook, |list| {
        list.iter()
            .any(|d| d["id"] == test_id && d["status"] == "failed")
    })
    .await;
    let test = log
        .iter()
        .find(|d| d["id"] == test_id)
        .expect("test delivery");
    assert_eq!(test["attempts"].as_array().expect("attempts").len(), 1);
    assert_eq!(test["responseCode"], 410);
    assert!(
        receiver.next(Duration::from_millis(800)).await.is_none(),
        "a final failure is not retried"
    );

    // A manual retry gives it one more attempt.
    let retried = app
        .post(&format!("/api/webhooks/{hook}/deliveries/{test_id}/retry"))
        .bearer(&admin.access)
        .send()
        .await;
    assert_eq!(retried.status, 202, "{}", retried.text);
    assert_eq!(retried.body["status"], "pending");
    receiver.next(ARRIVES).await.expect("the retried message");
    let log = deliveries_when(&app, &admin.access, hook, |list| {
        list.iter()
            .any(|d| d["id"] == test_id && d["status"] == "succeeded")
    })
    .await;
    let test = log
        .iter()
        .find(|d| d["id"] == test_id)
        .expect("test delivery");
    assert_eq!(test["attempts"].as_array().expect("attempts").len(), 2);

    // Filters and unknown ids.
    let failed_only = app
        .get(&format!("/api/webhooks/{hook}/deliveries?status=failed"))
        .bearer(&admin.access)
        .send()
        .await;
    assert_eq!(failed_only.body, json!([]));
    app.post(&format!("/api/webhooks/{hook}/deliveries/987654/retry"))
        .bearer(&admin.access)
        .send()
        .await
        .assert_error(404, "DELIVERY_NOT_FOUND");
    app.get(&format!("/api/webhooks/{hook}/deliveries?limit=0"))
        .bearer(&admin.access)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

/// Opens the caller's event stream and reads it until an event of `kind` whose data satisfies
/// `wanted` arrives (`None` after ARRIVES). Owned arguments, so it can run in a task.
async fn watch_stream(
    client: reqwest::Client,
    url: String,
    token: String,
    kind: &'static str,
    wanted: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let res = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + ARRIVES;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(event), Some(data)) = (event, data)
                && event == kind
            {
                let data: Value = serde_json::from_str(data).expect("json");
                if wanted(&data) {
                    return Some(data);
                }
            }
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_webhook_failing_for_the_whole_window_is_disabled_and_the_admins_told() {
    let app = TestApp::spawn_with(&fast(&[
        (
            "WEBHOOK_RETRY_SCHEDULE",
            "0,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
        ),
        ("WEBHOOK_DISABLE_AFTER_MS", "1000"),
    ]))
    .await;
    let admin: Session = app.register_tenant("hooks").await;
    let panel = app.create_panel(&admin.access, "Triage").await;
    let mut receiver = Receiver::start().await;
    receiver.answer(&[], 503);
    let created = create_hook(
        &app,
        &admin.access,
        json!({"url": receiver.url, "events": ["panel.updated"], "panelId": panel}),
    )
    .await;
    let hook = created["id"].as_i64().expect("id");

    let notified = tokio::spawn(watch_stream(
        app.client.clone(),
        format!("{}/api/events", app.base),
        admin.access.clone(),
        "notification.created",
        move |data| data["data"]["webhookId"] == hook,
    ));
    // The stream opens at the present: give it a moment before the failures start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rename(&app, &admin.access, panel, "Renamed").await;
    receiver.next(ARRIVES).await.expect("first attempt");

    let deadline = tokio::time::Instant::now() + ARRIVES;
    let disabled = loop {
        let res = app
            .get(&format!("/api/webhooks/{hook}"))
            .bearer(&admin.access)
            .send()
            .await;
        if res.body["enabled"] == false {
            break res.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never disabled: {}",
            res.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = disabled["disabledReason"].as_str().expect("a reason");
    assert!(
        reason.contains("1 s") && reason.contains("HTTP 503"),
        "{reason}"
    );
    assert!(disabled["disabledAt"].is_string());
    assert!(disabled["failingSince"].is_string());

    let notification = notified
        .await
        .expect("stream task")
        .expect("the admin is notified");
    assert_eq!(notification["data"]["impact"], "warning");
    assert!(
        notification["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("was disabled")),
        "{notification}"
    );

    // Disabled: nothing more is sent, a test message is refused; enabled again, it starts anew.
    app.post(&format!("/api/webhooks/{hook}/test"))
        .bearer(&admin.access)
        .send()
        .await
        .assert_error(409, "WEBHOOK_DISABLED");
    while receiver.next(Duration::from_millis(700)).await.is_some() {}
    rename(&app, &admin.access, panel, "Renamed again").await;
    assert!(receiver.next(Duration::from_millis(1500)).await.is_none());
    receiver.answer(&[], 200);
    let enabled = app
        .put(&format!("/api/webhooks/{hook}"))
        .bearer(&admin.access)
        .json(&json!({"url": receiver.url, "events": ["panel.updated"], "panelId": panel, "enabled": true}))
        .send()
        .await;
    assert_eq!(enabled.status, 200, "{}", enabled.text);
    assert_eq!(enabled.body["enabled"], true);
    assert_eq!(enabled.body["disabledReason"], Value::Null);
    assert_eq!(enabled.body["failingSince"], Value::Null);
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one() {
    let app = TestApp::spawn_with(&fast(&[])).await;
    let admin = app.register_tenant("hooks").await;
    let panel = app.create_panel(&admin.access, "Triage").await;
    let mut receiver = Receiver::start().await;
    let created = create_hook(
        &app,
        &admin.access,
        json!({"url": receiver.url, "events": ["panel.updated"], "panelId": panel}),
    )
    .await;
    let hook = created["id"].as_i64().expect("id");
    let old = created["secret"].as_str().expect("secret").to_owned();

    let rotated = app
        .post(&format!("/api/webhooks/{hook}/rotate-secret"))
        .bearer(&admin.access)
        .send()
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new = rotated.body["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let expires: chrono::DateTime<chrono::Utc> = rotated.body["previousSecretExpiresAt"]
        .as_str()
        .expect("previous secret's end")
        .parse()
        .expect("a time");
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24));

    rename(&app, &admin.access, panel, "Renamed").await;
    let got = receiver.next(ARRIVES).await.expect("delivered");
    // Two signatures: the new secret's first, then the previous one's.
    assert_eq!(got.verifies_with(&new), vec![true, false]);
    assert_eq!(got.verifies_with(&old), vec![false, true]);
}

#[tokio::test]
async fn only_those_who_manage_a_webhook_see_it() {
    let app = TestApp::spawn_with(&fast(&[])).await;
    let admin = token_for("acme", "admin@acme.example", Role::Admin);
    let editor = token_for("acme", "eve@acme.example", Role::User);
    let reader = token_for("acme", "vic@acme.example", Role::User);
    let stranger = token_for("other", "admin@other.example", Role::Admin);
    let panel = app.create_panel(&admin, "Shared").await;
    for (email, permission) in [
        ("eve@acme.example", "editor"),
        ("vic@acme.example", "viewer"),
    ] {
        let granted = app
            .post(&format!("/api/acls/panel/{panel}"))
            .bearer(&admin)
            .json(&json!({"userEmail": email, "permission": permission}))
            .send()
            .await;
        assert_eq!(granted.status, 201, "{}", granted.text);
    }
    let url = "http://127.0.0.1:9/hook";
    let of_panel = create_hook(
        &app,
        &admin,
        json!({"url": url, "events": ["view.*"], "panelId": panel}),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    let of_tenant = create_hook(
        &app,
        &admin,
        json!({"url": url, "events": ["panel.created"]}),
    )
    .await["id"]
        .as_i64()
        .expect("id");

    // An editor of the panel manages its webhooks, not the organisation's.
    let res = app
        .get(&format!("/api/webhooks/{of_panel}"))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.get(&format!("/api/webhooks/{of_tenant}"))
        .bearer(&editor)
        .send()
        .await
        .assert_error(404, "WEBHOOK_NOT_FOUND");
    let mine = create_hook(
        &app,
        &editor,
        json!({"url": url, "events": ["rows.changed"], "panelId": panel}),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    app.post("/api/webhooks")
        .bearer(&editor)
        .json(&json!({"url": url, "events": ["rows.changed"]}))
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    let listed = app.get("/api/webhooks").bearer(&editor).send().await;
    let ids: Vec<i64> = listed
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![of_panel, mine]);

    // A reader of the panel manages none of them: a create is forbidden (the panel's rule), and
    // an existing webhook is not there for it.
    app.post("/api/webhooks")
        .bearer(&reader)
        .json(&json!({"url": url, "events": ["rows.changed"], "panelId": panel}))
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    for hook in [of_panel, of_tenant, mine] {
        app.get(&format!("/api/webhooks/{hook}"))
            .bearer(&reader)
            .send()
            .await
            .assert_error(404, "WEBHOOK_NOT_FOUND");
    }
    let listed = app.get("/api/webhooks").bearer(&reader).send().await;
    assert_eq!(listed.body, json!([]));

    // Another organisation's webhook answers exactly as one that does not exist, whatever is asked.
    let body = json!({"url": url, "events": ["view.*"]});
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/webhooks/{of_panel}")),
        (reqwest::Method::PUT, format!("/api/webhooks/{of_panel}")),
        (reqwest::Method::DELETE, format!("/api/webhooks/{of_panel}")),
        (
            reqwest::Method::POST,
            format!("/api/webhooks/{of_panel}/rotate-secret"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/webhooks/{of_panel}/test"),
        ),
        (
            reqwest::Method::GET,
            format!("/api/webhooks/{of_panel}/deliveries"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/webhooks/{of_panel}/deliveries/1/retry"),
        ),
        (reqwest::Method::GET, "/api/webhooks/987654".to_owned()),
    ] {
        app.request(method.clone(), &path)
            .bearer(&stranger)
            .json(&body)
            .send()
            .await
            .assert_error(404, "WEBHOOK_NOT_FOUND");
    }
    let listed = app.get("/api/webhooks").bearer(&stranger).send().await;
    assert_eq!(listed.body, json!([]));
    app.post("/api/webhooks")
        .bearer(&stranger)
        .json(&json!({"url": url, "events": ["view.*"], "panelId": panel}))
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");

    // The editor deletes its own; the admin still sees the rest.
    let deleted = app
        .delete(&format!("/api/webhooks/{mine}"))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let listed = app.get("/api/webhooks").bearer(&admin).send().await;
    assert_eq!(listed.body.as_array().expect("array").len(), 2);
}

#[tokio::test]
async fn private_addresses_are_refused_at_create_and_at_every_delivery() {
    let app = TestApp::spawn_with(&fast(&[("ALLOW_PRIVATE_SOURCE_HOSTS", "false")])).await;
    let admin = token_for("acme", "admin@acme.example", Role::Admin);
    let panel = app.create_panel(&admin, "Triage").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let res = app
            .post("/api/webhooks")
            .bearer(&admin)
            .json(&json!({"url": url, "events": ["panel.updated"], "panelId": panel}))
            .send()
            .await;
        res.assert_error(400, "INVALID_WEBHOOK_URL");
        assert_eq!(res.body["details"][0]["field"], "url", "{url}");
        assert!(res.text.contains("refused"), "{url}: {}", res.text);
    }
    // Not http(s), credentials in the URL, too long once encoded, unknown types: clear 400s.
    let long = format!("https://example.com/{}", "é".repeat(1500));
    for (body, code) in [
        (
            json!({"url": long, "events": ["panel.updated"]}),
            "INVALID_WEBHOOK_URL",
        ),
        (
            json!({"url": "ftp://example.com/x", "events": ["panel.updated"]}),
            "INVALID_WEBHOOK_URL",
        ),
        (
            json!({"url": "https://user:pw@example.com/x", "events": ["panel.updated"]}),
            "INVALID_WEBHOOK_URL",
        ),
        (
            json!({"url": "not a url", "events": ["panel.updated"]}),
            "INVALID_WEBHOOK_URL",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["panel.exploded"]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["panel.created,view.*"]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"url": "https://example.com/x", "events": []}),
            "VALIDATION_ERROR",
        ),
        (json!({"url": "https://example.com/x"}), "VALIDATION_ERROR"),
    ] {
        app.post("/api/webhooks")
            .bearer(&admin)
            .json(&body)
            .send()
            .await
            .assert_error(400, code);
    }

    // Created where private targets were allowed, they are refused at delivery, by address (an
    // IP literal) or by resolution (a name): nothing reaches the receiver.
    let mut receiver = Receiver::start().await;
    let port = receiver
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook")
        .to_owned();
    let allowed = TestApp::spawn_on(
        &app.database_url,
        &[("WEBHOOK_CONCURRENCY", "0"), ("EVENT_POLL_MS", "100")],
    )
    .await;
    let mut hooks = Vec::new();
    for url in [
        receiver.url.clone(),
        format!("http://localhost:{port}/hook"),
    ] {
        let created = create_hook(
            &allowed,
            &admin,
            json!({"url": url, "events": ["panel.updated"], "panelId": panel}),
        )
        .await;
        hooks.push(created["id"].as_i64().expect("id"));
    }
    rename(&app, &admin, panel, "Renamed").await;
    for hook in hooks {
        let log = deliveries_when(&app, &admin, hook, |list| {
            list.first().is_some_and(|d| d["status"] == "failed")
        })
        .await;
        let attempts = log[0]["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "a refusal is final: {log:#?}");
        assert_eq!(attempts[0]["responseCode"], Value::Null);
        assert!(
            attempts[0]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("refused")),
            "{log:#?}"
        );
    }
    assert!(receiver.next(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn the_tenant_caps_hold_and_overflow_is_counted() {
    // No deliveries in this process: everything stays queued.
    let app = TestApp::spawn_with(&fast(&[
        ("WEBHOOK_MAX_PER_TENANT", "2"),
        ("WEBHOOK_MAX_QUEUED_PER_TENANT", "2"),
        ("WEBHOOK_CONCURRENCY", "0"),
    ]))
    .await;
    let admin = token_for("acme", "admin@acme.example", Role::Admin);
    let panel = app.create_panel(&admin, "Triage").await;
    let url = "http://127.0.0.1:9/hook";
    let hook = create_hook(
        &app,
        &admin,
        json!({"url": url, "events": ["panel.updated"], "panelId": panel}),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    create_hook(
        &app,
        &admin,
        json!({"url": url, "events": ["column.*"], "panelId": panel}),
    )
    .await;
    app.post("/api/webhooks")
        .bearer(&admin)
        .json(&json!({"url": url, "events": ["panel.updated"]}))
        .send()
        .await
        .assert_error(409, "WEBHOOK_LIMIT_REACHED");

    for n in 0..4 {
        rename(&app, &admin, panel, &format!("Name {n}")).await;
    }
    let deadline = tokio::time::Instant::now() + ARRIVES;
    loop {
        let res = app
            .get(&format!("/api/webhooks/{hook}"))
            .bearer(&admin)
            .send()
            .await;
        if res.body["droppedDeliveries"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", res.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = deliveries_when(&app, &admin, hook, |list| list.len() == 2).await;
    assert!(log.iter().all(|d| d["status"] == "pending"), "{log:#?}");
    app.post(&format!("/api/webhooks/{hook}/test"))
        .bearer(&admin)
        .send()
        .await
        .assert_error(429, "RATE_LIMITED");
}

#[tokio::test]
async fn a_restart_neither_loses_nor_repeats_a_delivery() {
    let mut first = TestApp::spawn_with(&fast(&[])).await;
    let admin = token_for("acme", "admin@acme.example", Role::Admin);
    let panel = first.create_panel(&admin, "Triage").await;
    let mut receiver = Receiver::start().await;
    let hook = create_hook(
        &first,
        &admin,
        json!({"url": receiver.url, "events": ["panel.updated"], "panelId": panel}),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    rename(&first, &admin, panel, "Before the restart").await;
    let before = receiver.next(ARRIVES).await.expect("delivered");
    deliveries_when(&first, &admin, hook, |list| {
        list.first().is_some_and(|d| d["status"] == "succeeded")
    })
    .await;
    first.stop().await;

    // While no worker runs, an instance serving requests only commits another change.
    let mut api_only = TestApp::spawn_on(&first.database_url, &[("WORKER_CONCURRENCY", "0")]).await;
    rename(&api_only, &admin, panel, "While the workers are down").await;
    assert!(receiver.next(Duration::from_millis(1500)).await.is_none());
    api_only.stop().await;

    // The workers come back: the missed event arrives, once, and the first is not sent again.
    let restarted = TestApp::spawn_on(
        &first.database_url,
        &[
            ("EVENT_POLL_MS", "100"),
            ("WEBHOOK_RETRY_SCHEDULE", "0,200ms"),
        ],
    )
    .await;
    let after = receiver.next(ARRIVES).await.expect("the missed event");
    assert_eq!(after.json()["data"], json!({}));
    assert_ne!(after.header("webhook-id"), before.header("webhook-id"));
    assert!(
        receiver.next(Duration::from_millis(1500)).await.is_none(),
        "nothing twice"
    );
    let log = deliveries_when(&restarted, &admin, hook, |list| {
        list.len() == 2 && list.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(log[0]["eventId"], after.header("webhook-id"));
    assert_eq!(log[1]["eventId"], before.header("webhook-id"));
}
