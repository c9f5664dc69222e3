//! Live events (issue 19): the event log written with every change, followed over Server-Sent
//! Events across instances, resumed by `Last-Event-ID` without a gap or a repeat, and only what
//! the subscriber may read.

use std::time::Duration;

use futures::StreamExt;
use panels::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, token_for};

/// One message of a stream, as an EventSource parses it.
#[derive(Debug, Default, Clone)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
    retry: Option<String>,
}

impl Message {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// A stream opened as a client would: its status, then its messages as they arrive.
struct Stream {
    status: u16,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    ended: bool,
}

impl Stream {
    async fn open(app: &TestApp, path: &str, token: Option<&str>, last_id: Option<&str>) -> Self {
        let mut req = app.client.get(format!("{}{path}", app.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.expect("stream request");
        let status = res.status().as_u16();
        Self {
            status,
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next message, comments included; `None` when the stream ended or nothing came in
    /// `wait`.
    async fn message(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        message.comment = Some(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                        match field {
                            "id" => message.id = Some(value),
                            "event" => message.event = Some(value),
                            "data" => message.data.push_str(&value),
                            "retry" => message.retry = Some(value),
                            _ => {}
                        }
                    }
                }
                return Some(message);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(_) => self.ended = true,
                Err(_) => return None,
            }
        }
    }

    /// The next event (skipping heartbeats), or `None` after `wait`.
    async fn event(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.message(left).await?;
            if message.event.is_some() {
                return Some(message);
            }
        }
    }

    /// Events until none arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Message> {
        let mut events = Vec::new();
        while let Some(event) = self.event(quiet).await {
            events.push(event);
        }
        events
    }
}

/// Long enough for a commit to reach a stream even when another test's transaction holds the
/// cluster's horizon back for a while (events are delayed then, never lost).
const ARRIVES: Duration = Duration::from_secs(15);
/// How long to wait to conclude that nothing more comes.
const QUIET: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn an_event_made_on_one_instance_arrives_on_another() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(&a.database_url, &[]).await;
    let token = token_for("twin", "admin@twin.example", Role::Admin);
    let mut stream = Stream::open(&b, "/api/events", Some(&token), None).await;
    assert_eq!(stream.status, 200);

    let panel = a.create_panel(&token, "Made on A").await;
    let created = stream.event(ARRIVES).await.expect("panel.created on B");
    assert_eq!(created.event.as_deref(), Some("panel.created"));
    let payload = created.json();
    assert_eq!(payload["type"], "panel.created");
    assert_eq!(payload["panelId"], panel);
    assert_eq!(payload["entityId"], panel.to_string());
    assert_eq!(payload["actor"]["type"], "user");
    assert_eq!(payload["actor"]["email"], "admin@twin.example");
    assert_eq!(
        created.id.as_deref(),
        payload["id"].as_str(),
        "id: is the payload's id"
    );

    let view = a
        .post("/api/views")
        .bearer(&token)
        .json(&json!({"panelId": panel, "name": "Mine"}))
        .send()
        .await;
    assert_eq!(view.status, 201, "{}", view.text);
    let event = stream.event(ARRIVES).await.expect("view.created on B");
    assert_eq!(event.event.as_deref(), Some("view.created"));
    assert_eq!(event.json()["viewId"], view.body["id"]);
    assert_eq!(event.json()["data"]["viewId"], view.body["id"]);
    assert!(
        stream.drain(QUIET).await.is_empty(),
        "each change is one event"
    );
}

#[tokio::test]
async fn an_instance_without_redis_still_gets_every_event_by_polling() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(
        &a.database_url,
        &[("REDIS_URL", ""), ("EVENT_POLL_MS", "200")],
    )
    .await;
    let token = token_for("poll", "admin@poll.example", Role::Admin);
    let mut stream = Stream::open(&b, "/api/events", Some(&token), None).await;
    let panel = a.create_panel(&token, "Polled").await;
    let event = stream
        .event(ARRIVES)
        .await
        .expect("panel.created by polling");
    assert_eq!(event.json()["panelId"], panel);
}

#[tokio::test]
async fn resuming_by_last_event_id_yields_exactly_the_missed_events() {
    let app = TestApp::spawn().await;
    let token = token_for("resume", "admin@resume.example", Role::Admin);
    let mut stream = Stream::open(&app, "/api/events", Some(&token), None).await;
    let first = app.create_panel(&token, "First").await;
    let seen = stream.event(ARRIVES).await.expect("first event");
    assert_eq!(seen.json()["panelId"], first);
    drop(stream);

    // Missed while disconnected, in this order.
    let mut missed = Vec::new();
    for name in ["Second", "Third", "Fourth"] {
        missed.push(app.create_panel(&token, name).await);
    }
    let renamed = app
        .put(&format!("/api/panels/{first}"))
        .bearer(&token)
        .json(&json!({"name": "First, renamed"}))
        .send()
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);

    let last_id = seen.id.clone().expect("id");
    for resume in [
        Stream::open(&app, "/api/events", Some(&token), Some(&last_id)).await,
        Stream::open(
            &app,
            &format!("/api/events?lastEventId={last_id}"),
            Some(&token),
            None,
        )
        .await,
    ] {
        let mut resume = resume;
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(resume.event(ARRIVES).await.expect("a missed event"));
        }
        let kinds: Vec<(String, i64)> = got
            .iter()
            .map(|m| {
                let p = m.json();
                (
                    p["type"].as_str().expect("type").to_owned(),
                    p["panelId"].as_i64().expect("panel"),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("panel.created".to_owned(), missed[0]),
                ("panel.created".to_owned(), missed[1]),
                ("panel.created".to_owned(), missed[2]),
                ("panel.updated".to_owned(), first),
            ]
        );
        assert!(
            resume.drain(QUIET).await.is_empty(),
            "nothing twice, nothing extra"
        );
    }

    let bad = Stream::open(&app, "/api/events", Some(&token), Some("not-an-id")).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn an_id_older_than_retention_answers_reset_and_then_follows() {
    let app = TestApp::spawn().await;
    let token = token_for("retain", "admin@retain.example", Role::Admin);
    let mut stream = Stream::open(&app, "/api/events", Some(&token), None).await;
    app.create_panel(&token, "Old").await;
    let old = stream.event(ARRIVES).await.expect("event").id.expect("id");
    drop(stream);
    app.create_panel(&token, "Also old").await;
    // Retention runs as its worker does (as the request role, through the worker's function),
    // here with every event counted as old.
    let purged = panels::events::retention::purge(&app.state.db, 0)
        .await
        .expect("purge");
    assert!(purged >= 2, "purged {purged}");
    let left: i64 = sqlx::query_scalar("select count(*) from event where tenant_id = 'retain'")
        .fetch_one(&app.owner_pool().await)
        .await
        .expect("count");
    assert_eq!(left, 0);

    let mut resumed = Stream::open(&app, "/api/events", Some(&token), Some(&old)).await;
    assert_eq!(resumed.status, 200);
    let reset = resumed.event(ARRIVES).await.expect("reset");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    let fresh = app.create_panel(&token, "New").await;
    let next = resumed
        .event(ARRIVES)
        .await
        .expect("follows after the reset");
    assert_eq!(next.json()["panelId"], fresh);
}

#[tokio::test]
async fn readers_get_only_panels_they_may_read_until_revoked_and_never_another_tenants() {
    let app = TestApp::spawn().await;
    let admin = token_for("acme", "admin@acme.example", Role::Admin);
    let reader = token_for("acme", "vic@acme.example", Role::User);
    let stranger = token_for("other", "admin@other.example", Role::Admin);
    let shared = app.create_panel(&admin, "Shared").await;
    let hidden = app.create_panel(&admin, "Hidden").await;
    let granted = app
        .post(&format!("/api/acls/panel/{shared}"))
        .bearer(&admin)
        .json(&json!({"userEmail": "vic@acme.example", "permission": "viewer"}))
        .send()
        .await;
    assert_eq!(granted.status, 201, "{}", granted.text);

    let mut vic = Stream::open(&app, "/api/events", Some(&reader), None).await;
    let mut other = Stream::open(&app, "/api/events", Some(&stranger), None).await;
    // A panel the reader may not read answers as one that does not exist.
    let refused = Stream::open(
        &app,
        &format!("/api/events?panelId={hidden}"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(refused.status, 404);
    let unknown = Stream::open(&app, "/api/events?panelId=987654", Some(&reader), None).await;
    assert_eq!(unknown.status, 404);

    for panel in [hidden, shared] {
        let res = app
            .put(&format!("/api/panels/{panel}"))
            .bearer(&admin)
            .json(&json!({"name": format!("Renamed {panel}")}))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let got = vic.event(ARRIVES).await.expect("the shared panel's event");
    assert_eq!(got.json()["type"], "panel.updated");
    assert_eq!(got.json()["panelId"], shared);
    assert!(
        vic.drain(QUIET).await.is_empty(),
        "nothing of the hidden panel"
    );
    assert!(
        other.drain(QUIET).await.is_empty(),
        "another tenant gets nothing"
    );

    // A private view of the admin's: its owner's business only.
    let private = app
        .post("/api/views")
        .bearer(&admin)
        .json(&json!({"panelId": shared, "name": "Admin's own"}))
        .send()
        .await;
    assert_eq!(private.status, 201);
    assert!(
        vic.drain(QUIET).await.is_empty(),
        "a private view of someone else's"
    );

    // Revoked: nothing more of that panel, at once.
    let revoked = app
        .delete(&format!("/api/acls/panel/{shared}/vic@acme.example"))
        .bearer(&admin)
        .send()
        .await;
    assert!(revoked.status < 300, "{}", revoked.text);
    let res = app
        .put(&format!("/api/panels/{shared}"))
        .bearer(&admin)
        .json(&json!({"name": "After revocation"}))
        .send()
        .await;
    assert_eq!(res.status, 200);
    let after: Vec<Value> = vic.drain(QUIET).await.iter().map(Message::json).collect();
    assert!(
        after.iter().all(|e| e["type"] != "panel.updated"),
        "a revoked reader still received {after:?}"
    );
}

#[tokio::test]
async fn filters_by_type_panel_and_view() {
    let app = TestApp::spawn().await;
    let token = token_for("filters", "admin@filters.example", Role::Admin);
    let one = app.create_panel(&token, "One").await;
    let two = app.create_panel(&token, "Two").await;
    let view = app
        .post("/api/views")
        .bearer(&token)
        .json(&json!({"panelId": one, "name": "V"}))
        .send()
        .await;
    let view_id = view.body["id"].as_i64().expect("view id");
    let mut views_only = Stream::open(&app, "/api/events?types=view.*", Some(&token), None).await;
    let mut of_two = Stream::open(
        &app,
        &format!("/api/events?panelId={two}"),
        Some(&token),
        None,
    )
    .await;
    let mut of_view = Stream::open(
        &app,
        &format!("/api/events?viewId={view_id}"),
        Some(&token),
        None,
    )
    .await;
    let bad = Stream::open(&app, "/api/events?types=nonsense", Some(&token), None).await;
    assert_eq!(bad.status, 400);
    // Unknown ids answer 404 to an admin too.
    for path in ["/api/events?panelId=987654", "/api/events?viewId=987654"] {
        assert_eq!(
            Stream::open(&app, path, Some(&token), None).await.status,
            404,
            "{path}"
        );
    }

    for panel in [one, two] {
        app.put(&format!("/api/panels/{panel}"))
            .bearer(&token)
            .json(&json!({"name": format!("Renamed {panel}")}))
            .send()
            .await;
    }
    let renamed = app
        .put(&format!("/api/views/{view_id}"))
        .bearer(&token)
        .json(&json!({"name": "V2"}))
        .send()
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);

    let types = |events: Vec<Message>| -> Vec<(String, i64)> {
        events
            .iter()
            .map(|m| {
                let p = m.json();
                (
                    p["type"].as_str().unwrap_or("").to_owned(),
                    p["panelId"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(
        types(views_only.drain(QUIET).await),
        vec![("view.updated".to_owned(), one)]
    );
    assert_eq!(
        types(of_two.drain(QUIET).await),
        vec![("panel.updated".to_owned(), two)]
    );
    // The view's own events and its panel's events about no view in particular.
    assert_eq!(
        types(of_view.drain(QUIET).await),
        vec![
            ("panel.updated".to_owned(), one),
            ("view.updated".to_owned(), one)
        ]
    );
}

/// Transaction A writes an event, B starts later, writes one and commits first; then A commits.
/// A reader that pages by sequence alone would give B's and never A's; both must arrive, once.
#[tokio::test]
async fn out_of_order_commits_are_both_delivered() {
    let app = TestApp::spawn().await;
    let token = token_for("order", "admin@order.example", Role::Admin);
    let panel = app.create_panel(&token, "Ordered").await;
    let mut stream = Stream::open(&app, "/api/events", Some(&token), None).await;
    let pool = app.owner_pool().await;
    let insert = "insert into event (tenant_id, type, panel_id, entity_id, actor, data)
                  values ('order', 'panel.updated', $1, $1::text, '{\"type\":\"system\",\"id\":\"test\"}', $2)";
    let mut a = pool.begin().await.expect("begin a");
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *a)
        .await
        .expect("a takes its transaction id first");
    let mut b = pool.begin().await.expect("begin b");
    sqlx::query(insert)
        .bind(panel)
        .bind(json!({"tx": "b"}))
        .execute(&mut *b)
        .await
        .expect("b writes");
    sqlx::query(insert)
        .bind(panel)
        .bind(json!({"tx": "a"}))
        .execute(&mut *a)
        .await
        .expect("a writes, with the later sequence number");
    b.commit().await.expect("b commits first");
    assert!(
        stream.event(QUIET).await.is_none(),
        "b's event is held back while a, older, may still commit"
    );
    a.commit().await.expect("a commits");
    let got: Vec<String> = [
        stream.event(ARRIVES).await.expect("first"),
        stream.event(ARRIVES).await.expect("second"),
    ]
    .iter()
    .map(|m| m.json()["data"]["tx"].as_str().unwrap_or("").to_owned())
    .collect();
    assert_eq!(got, vec!["a", "b"], "both, in transaction order");
    assert!(stream.drain(QUIET).await.is_empty());
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once_and_nothing_opens_without_credentials() {
    let app = TestApp::spawn().await;
    let token = token_for("ticket", "admin@ticket.example", Role::Admin);
    let res = app.post("/api/events/tickets").bearer(&token).send().await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["expiresIn"], 60);
    let ticket = res.body["ticket"].as_str().expect("ticket").to_owned();

    let mut stream = Stream::open(&app, &format!("/api/events?ticket={ticket}"), None, None).await;
    assert_eq!(stream.status, 200);
    let panel = app.create_panel(&token, "By ticket").await;
    assert_eq!(
        stream.event(ARRIVES).await.expect("event").json()["panelId"],
        panel
    );
    let again = Stream::open(&app, &format!("/api/events?ticket={ticket}"), None, None).await;
    assert_eq!(again.status, 401, "a ticket is single-use");
    let forged = Stream::open(&app, "/api/events?ticket=evt_forged", None, None).await;
    assert_eq!(forged.status, 401);
    let anonymous = Stream::open(&app, "/api/events", None, None).await;
    assert_eq!(anonymous.status, 401);
    let no_ticket = app.post("/api/events/tickets").send().await;
    assert_eq!(no_ticket.status, 401);
}

#[tokio::test]
async fn idle_streams_get_heartbeats_and_shutdown_ends_them_inside_the_deadline() {
    let mut app = TestApp::spawn_with(&[("EVENT_HEARTBEAT_MS", "200")]).await;
    let token = token_for("beat", "admin@beat.example", Role::Admin);
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Stream::open(&app, "/api/events", Some(&token), None).await);
    }
    let beat = streams[0]
        .message(Duration::from_secs(5))
        .await
        .expect("a heartbeat");
    assert_eq!(beat.comment.as_deref(), Some("heartbeat"));

    let started = std::time::Instant::now();
    app.stop().await;
    let took = started.elapsed();
    // SHUTDOWN_TIMEOUT_MS is 2,000 in the tests: open streams must not hold the drain up to it.
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    for stream in &mut streams {
        let mut retry = None;
        while let Some(message) = stream.message(Duration::from_secs(2)).await {
            if message.retry.is_some() {
                retry = message.retry;
            }
        }
        assert!(retry.is_some(), "the stream ended with retry:");
        assert!(stream.ended, "the stream ended");
    }
}

#[tokio::test]
async fn a_push_tells_its_start_its_rows_and_its_end() {
    let app = TestApp::spawn().await;
    let token = token_for("pushes", "admin@pushes.example", Role::Admin);
    let panel = app.create_panel(&token, "Pushed").await;
    let ds = app
        .create_source(&token, panel, "custom", json!({"keyField": "id"}))
        .await;
    let mut stream = Stream::open(
        &app,
        "/api/events?types=sync.*,rows.changed",
        Some(&token),
        None,
    )
    .await;
    let path = format!("/api/panels/{panel}/datasources/{ds}/records");
    let pushed = app
        .post(&path)
        .bearer(&token)
        .json(&json!({"records": [{"id": 1}, {"id": 2}, {"id": 3}]}))
        .send()
        .await;
    assert_eq!(pushed.status, 200, "{}", pushed.text);
    let again = app
        .post(&path)
        .bearer(&token)
        .json(&json!({"records": [{"id": 1}, {"id": 2, "x": 1}]}))
        .send()
        .await;
    assert_eq!(again.status, 200, "{}", again.text);

    let mut got = Vec::new();
    while got.len() < 6 {
        got.push(stream.event(ARRIVES).await.expect("a sync event").json());
    }
    let kinds: Vec<&str> = got
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "sync.started",
            "sync.succeeded",
            "rows.changed",
            "sync.started",
            "sync.succeeded",
            "rows.changed"
        ]
    );
    assert_eq!(got[2]["data"]["inserted"], 3);
    assert_eq!(got[5]["data"]["inserted"], 0);
    assert_eq!(got[5]["data"]["updated"], 1);
    assert_eq!(got[4]["data"]["unchanged"], 1);
    assert_eq!(got[1]["data"]["dataSourceId"], ds);
    assert_eq!(got[0]["data"]["runId"], got[1]["data"]["runId"]);
    assert!(stream.drain(QUIET).await.is_empty());
}

#[tokio::test]
async fn a_stream_ends_with_retry_after_its_lifetime_and_resumes_without_a_gap() {
    let app = TestApp::spawn_with(&[("EVENT_STREAM_MAX_MS", "500")]).await;
    let token = token_for("lifetime", "admin@lifetime.example", Role::Admin);
    let mut stream = Stream::open(&app, "/api/events", Some(&token), None).await;
    let panel = app.create_panel(&token, "Before the end").await;
    let seen = stream.event(ARRIVES).await.expect("event");
    assert_eq!(seen.json()["panelId"], panel);
    let mut retry = None;
    while let Some(message) = stream.message(Duration::from_secs(3)).await {
        retry = retry.or(message.retry);
    }
    assert!(stream.ended && retry.is_some(), "ended with retry:");
    let after = app.create_panel(&token, "After the end").await;
    let mut resumed = Stream::open(&app, "/api/events", Some(&token), seen.id.as_deref()).await;
    assert_eq!(
        resumed.event(ARRIVES).await.expect("resumed").json()["panelId"],
        after
    );
}

#[tokio::test]
async fn a_notification_reaches_its_recipient_alone() {
    let app = TestApp::spawn().await;
    let admin = token_for("notes", "admin@notes.example", Role::Admin);
    let vic = token_for("notes", "vic@notes.example", Role::User);
    let bob = token_for("notes", "bob@notes.example", Role::User);
    let panel = app.create_panel(&admin, "Noted").await;
    let view = app
        .post("/api/views")
        .bearer(&admin)
        .json(&json!({"panelId": panel, "name": "Published"}))
        .send()
        .await;
    let view_id = view.body["id"].as_i64().expect("view");
    let published = app
        .post(&format!("/api/views/{view_id}/publish"))
        .bearer(&admin)
        .send()
        .await;
    assert!(published.status < 300, "{}", published.text);
    for (kind, id, who) in [
        ("panel", panel, "vic@notes.example"),
        ("panel", panel, "bob@notes.example"),
        ("view", view_id, "vic@notes.example"),
    ] {
        let res = app
            .post(&format!("/api/acls/{kind}/{id}"))
            .bearer(&admin)
            .json(&json!({"userEmail": who, "permission": "viewer"}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let path = "/api/events?types=notification.created";
    let mut vic_stream = Stream::open(&app, path, Some(&vic), None).await;
    let mut bob_stream = Stream::open(&app, path, Some(&bob), None).await;
    let changed = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&admin)
        .json(&json!({"cohortRule": {"logic": "OR", "conditions": []}, "name": "Noted, changed"}))
        .send()
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let note = vic_stream.event(ARRIVES).await.expect("vic's notification");
    let payload = note.json();
    assert_eq!(payload["type"], "notification.created");
    assert_eq!(payload["viewId"], view_id);
    assert!(
        payload["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Published"))
    );
    assert!(vic_stream.drain(QUIET).await.is_empty(), "one notification");
    assert!(
        bob_stream.drain(QUIET).await.is_empty(),
        "bob reads the panel but was not notified"
    );
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_share_of_streams() {
    let app = TestApp::spawn_with(&[("EVENT_MAX_STREAMS_PER_TENANT", "2")]).await;
    let token = token_for("greedy", "admin@greedy.example", Role::Admin);
    let other = token_for("modest", "admin@modest.example", Role::Admin);
    let first = Stream::open(&app, "/api/events", Some(&token), None).await;
    let second = Stream::open(&app, "/api/events", Some(&token), None).await;
    assert_eq!((first.status, second.status), (200, 200));
    let third = Stream::open(&app, "/api/events", Some(&token), None).await;
    assert_eq!(third.status, 429);
    assert_eq!(
        Stream::open(&app, "/api/events", Some(&other), None)
            .await
            .status,
        200,
        "another tenant is not held back"
    );
    drop((first, second));
}

#[tokio::test]
async fn a_private_views_events_reach_its_owner_those_it_is_shared_with_and_admins() {
    let app = TestApp::spawn().await;
    let admin = token_for("private", "admin@private.example", Role::Admin);
    let vic = token_for("private", "vic@private.example", Role::User);
    let bob = token_for("private", "bob@private.example", Role::User);
    let panel = app.create_panel(&admin, "Shared panel").await;
    for who in ["vic@private.example", "bob@private.example"] {
        let res = app
            .post(&format!("/api/acls/panel/{panel}"))
            .bearer(&admin)
            .json(&json!({"userEmail": who, "permission": "viewer"}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let path = "/api/events?types=view.*";
    let mut vic_stream = Stream::open(&app, path, Some(&vic), None).await;
    let mut bob_stream = Stream::open(&app, path, Some(&bob), None).await;
    let mut admin_stream = Stream::open(&app, path, Some(&admin), None).await;

    let view = app
        .post("/api/views")
        .bearer(&vic)
        .json(&json!({"panelId": panel, "name": "Vic's own"}))
        .send()
        .await;
    assert_eq!(view.status, 201, "{}", view.text);
    let view_id = view.body["id"].as_i64().expect("view");
    for stream in [&mut vic_stream, &mut admin_stream] {
        let created = stream.event(ARRIVES).await.expect("view.created");
        assert_eq!(created.json()["type"], "view.created");
        assert_eq!(created.json()["viewId"], view_id);
    }
    assert!(
        bob_stream.drain(QUIET).await.is_empty(),
        "another reader of the panel does not see a private view"
    );

    let shared = app
        .post(&format!("/api/acls/view/{view_id}"))
        .bearer(&vic)
        .json(&json!({"userEmail": "bob@private.example", "permission": "viewer"}))
        .send()
        .await;
    assert_eq!(shared.status, 201, "{}", shared.text);
    let renamed = app
        .put(&format!("/api/views/{view_id}"))
        .bearer(&vic)
        .json(&json!({"name": "Vic's, shared"}))
        .send()
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    let got = bob_stream.event(ARRIVES).await.expect("shared now");
    assert_eq!(got.json()["type"], "view.updated");
    assert_eq!(got.json()["viewId"], view_id);
    let vic_got = vic_stream.event(ARRIVES).await.expect("the owner's own");
    assert_eq!(vic_got.json()["type"], "view.updated");
}

#[tokio::test]
async fn a_long_push_reports_its_progress_with_counts() {
    let app = TestApp::spawn().await;
    let token = token_for("progress", "admin@progress.example", Role::Admin);
    let panel = app.create_panel(&token, "Big push").await;
    let ds = app
        .create_source(&token, panel, "custom", json!({"keyField": "id"}))
        .await;
    let mut stream = Stream::open(
        &app,
        "/api/events?types=sync.progress,sync.succeeded",
        Some(&token),
        None,
    )
    .await;
    // Two and a half batches of 1,000: the first full batch reports its progress.
    let records: Vec<Value> = (0..2500).map(|i| json!({"id": i})).collect();
    let pushed = app
        .post(&format!("/api/panels/{panel}/datasources/{ds}/records"))
        .bearer(&token)
        .json(&json!({"records": records}))
        .send()
        .await;
    assert_eq!(pushed.status, 200, "{}", pushed.text);
    let mut progress = Vec::new();
    loop {
        let event = stream
            .event(ARRIVES)
            .await
            .expect("progress, then the end")
            .json();
        if event["type"] == "sync.succeeded" {
            assert_eq!(event["data"]["inserted"], 2500);
            break;
        }
        progress.push(event);
    }
    assert!(!progress.is_empty(), "no sync.progress");
    assert_eq!(
        progress[0]["data"]["inserted"], 1000,
        "the first batch's counts"
    );
    let run = progress[0]["data"]["runId"].clone();
    let run_entity = run.to_string();
    assert!(
        progress
            .iter()
            .all(|p| p["data"]["runId"] == run && p["entityId"] == run_entity.as_str())
    );
}

/// The row id of each record key of the panel (every row, past the cohort rule).
async fn row_ids(app: &TestApp, token: &str, panel: i64) -> std::collections::HashMap<String, i64> {
    let res = app
        .get(&format!("/api/panels/{panel}/rows?cohort=all&limit=500"))
        .bearer(token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().expect("key").to_owned(),
                r["id"].as_i64().expect("id"),
            )
        })
        .collect()
}

/// Events by type, each event's `rowIds` (and its count, which must agree).
fn moved(events: &[Value]) -> std::collections::HashMap<String, Vec<i64>> {
    let mut out = std::collections::HashMap::new();
    for event in events {
        let ids: Vec<i64> = event["data"]["rowIds"]
            .as_array()
            .expect("rowIds")
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect();
        assert_eq!(event["data"]["count"], ids.len(), "{event}");
        assert_eq!(event["data"]["truncated"], false);
        let previous = out.insert(event["type"].as_str().expect("type").to_owned(), ids);
        assert!(previous.is_none(), "one event per type: {events:?}");
    }
    out
}

#[tokio::test]
async fn cohort_and_published_views_tell_who_entered_and_who_left() {
    let app = TestApp::spawn().await;
    let token = token_for("cohorts", "admin@cohorts.example", Role::Admin);
    let panel = app.create_panel(&token, "Follow-up").await;
    let ds = app
        .create_source(&token, panel, "custom", json!({"keyField": "id"}))
        .await;
    let column = app
        .post(&format!("/api/panels/{panel}/columns/base"))
        .bearer(&token)
        .json(&json!({"name": "score", "type": "number", "sourceField": "score", "dataSourceId": ds, "properties": {}}))
        .send()
        .await;
    assert_eq!(column.status, 201, "{}", column.text);
    let rule = |min: i64| json!({"cohortRule": {"logic": "AND", "conditions": [{"field": "score", "operator": "gte", "value": min}]}});
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .json(&rule(50))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let view_filters = |min: i64| json!({"logic": "AND", "conditions": [{"field": "score", "operator": "gte", "value": min}]});
    let mut views = Vec::new();
    for name in ["High", "Private"] {
        let view = app
            .post("/api/views")
            .bearer(&token)
            .json(&json!({"panelId": panel, "name": name}))
            .send()
            .await;
        let id = view.body["id"].as_i64().expect("view");
        let res = app
            .put(&format!("/api/views/{id}/filters"))
            .bearer(&token)
            .json(&view_filters(80))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        views.push(id);
    }
    let (view, private) = (views[0], views[1]);
    let res = app
        .post(&format!("/api/views/{view}/publish"))
        .bearer(&token)
        .send()
        .await;
    assert!(res.status < 300, "{}", res.text);

    let mut stream = Stream::open(
        &app,
        "/api/events?types=cohort.*,view.rows.*",
        Some(&token),
        None,
    )
    .await;
    let push = |records: Value| {
        app.post(&format!("/api/panels/{panel}/datasources/{ds}/records"))
            .bearer(&token)
            .json(&json!({ "records": records }))
            .send()
    };
    let next = async |stream: &mut Stream, n: usize| {
        let mut got = Vec::new();
        while got.len() < n {
            got.push(
                stream
                    .event(ARRIVES)
                    .await
                    .expect("a membership event")
                    .json(),
            );
        }
        got
    };

    // Three rows arrive: two pass the cohort rule, one of them the view's filters too.
    let res =
        push(json!([{"id": "a", "score": 10}, {"id": "b", "score": 60}, {"id": "c", "score": 90}]))
            .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let ids = row_ids(&app, &token, panel).await;
    let got = next(&mut stream, 2).await;
    let by_type = moved(&got);
    assert_eq!(by_type["cohort.entered"], vec![ids["b"], ids["c"]]);
    assert_eq!(by_type["view.rows.entered"], vec![ids["c"]]);
    let view_event = got
        .iter()
        .find(|e| e["type"] == "view.rows.entered")
        .expect("view");
    assert_eq!(
        view_event["viewId"], view,
        "the published view's, never the private one's"
    );
    assert_eq!(view_event["panelId"], panel);

    // b drops out of the cohort, a comes in and goes straight into the view.
    let res = push(json!([{"id": "a", "score": 85}, {"id": "b", "score": 20}])).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let by_type = moved(&next(&mut stream, 3).await);
    assert_eq!(by_type["cohort.entered"], vec![ids["a"]]);
    assert_eq!(by_type["cohort.left"], vec![ids["b"]]);
    assert_eq!(by_type["view.rows.entered"], vec![ids["a"]]);

    // The cohort rule changes: b is back.
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .json(&rule(0))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        moved(&next(&mut stream, 1).await)["cohort.entered"],
        vec![ids["b"]]
    );

    // The published view's filters change: a and c leave it. The private view's change tells
    // nothing (it has no rows of its own to tell about).
    for id in [view, private] {
        let res = app
            .put(&format!("/api/views/{id}/filters"))
            .bearer(&token)
            .json(&view_filters(95))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let by_type = moved(&next(&mut stream, 1).await);
    assert_eq!(by_type["view.rows.left"], vec![ids["a"], ids["c"]]);

    // A push that moves nobody tells nothing.
    let res = push(json!([{"id": "d", "score": 1}])).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let ids = row_ids(&app, &token, panel).await;
    assert_eq!(
        moved(&next(&mut stream, 1).await)["cohort.entered"],
        vec![ids["d"]]
    );
    let res = push(json!([{"id": "d", "score": 2}])).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(stream.drain(QUIET).await.is_empty());
}

#[tokio::test]
async fn a_relative_date_rule_tells_who_left_as_days_pass() {
    let app = TestApp::spawn().await;
    let token = token_for("days", "admin@days.example", Role::Admin);
    let panel = app.create_panel(&token, "Seen lately").await;
    let ds = app
        .create_source(&token, panel, "custom", json!({"keyField": "id"}))
        .await;
    let column = app
        .post(&format!("/api/panels/{panel}/columns/base"))
        .bearer(&token)
        .json(&json!({"name": "lastVisit", "type": "date", "sourceField": "lastVisit", "dataSourceId": ds, "properties": {}}))
        .send()
        .await;
    assert_eq!(column.status, 201, "{}", column.text);
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .json(&json!({"cohortRule": {"logic": "AND", "conditions": [{"field": "lastVisit", "operator": "gte", "value": {"relative": "-30d"}}]}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let today = chrono::Utc::now().date_naive();
    let day = |ago: i64| (today - chrono::Duration::days(ago)).to_string();
    let mut stream = Stream::open(&app, "/api/events?types=cohort.*", Some(&token), None).await;
    let res = app
        .post(&format!("/api/panels/{panel}/datasources/{ds}/records"))
        .bearer(&token)
        .json(&json!({"records": [{"id": "recent", "lastVisit": day(5)}, {"id": "older", "lastVisit": day(20)}, {"id": "old", "lastVisit": day(90)}]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let ids = row_ids(&app, &token, panel).await;
    let entered = stream.event(ARRIVES).await.expect("entered").json();
    assert_eq!(
        moved(&[entered])["cohort.entered"],
        vec![ids["recent"], ids["older"]]
    );

    // Nothing is due yet; two weeks later, "older" is past 30 days.
    let every = Duration::from_secs(60);
    assert_eq!(
        panels::rows::membership::refresh_due(&app.state, every)
            .await
            .expect("due"),
        0
    );
    let later = app
        .state
        .clone()
        .with_clock(chrono::Utc::now() + chrono::Duration::days(14));
    assert_eq!(
        panels::rows::membership::refresh_due(&later, every)
            .await
            .expect("due"),
        1
    );
    let left = stream.event(ARRIVES).await.expect("left").json();
    assert_eq!(left["actor"]["id"], "system:schedule");
    assert_eq!(moved(&[left])["cohort.left"], vec![ids["older"]]);
    assert!(stream.drain(QUIET).await.is_empty());
}

#[tokio::test]
async fn an_upload_that_deletes_rows_tells_they_left() {
    let app = TestApp::spawn().await;
    let token = token_for("uploads", "admin@uploads.example", Role::Admin);
    let panel = app.create_panel(&token, "Uploaded").await;
    let ds = app
        .create_source(
            &token,
            panel,
            "file",
            json!({"format": "ndjson", "keyField": "id", "deletePolicy": "delete"}),
        )
        .await;
    let column = app
        .post(&format!("/api/panels/{panel}/columns/base"))
        .bearer(&token)
        .json(&json!({"name": "score", "type": "number", "sourceField": "score", "dataSourceId": ds, "properties": {}}))
        .send()
        .await;
    assert_eq!(column.status, 201, "{}", column.text);
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .json(&json!({"cohortRule": {"logic": "AND", "conditions": [{"field": "score", "operator": "gte", "value": 50}]}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let mut stream = Stream::open(&app, "/api/events?types=cohort.*", Some(&token), None).await;
    let upload = |body: &'static str| {
        app.post(&format!("/api/panels/{panel}/datasources/{ds}/upload"))
            .bearer(&token)
            .body("application/x-ndjson", body)
            .send()
    };
    let res = upload("{\"id\": \"a\", \"score\": 60}\n{\"id\": \"b\", \"score\": 70}\n{\"id\": \"c\", \"score\": 10}\n").await;
    assert_eq!(res.status, 200, "{}", res.text);
    let ids = row_ids(&app, &token, panel).await;
    let entered = stream.event(ARRIVES).await.expect("entered").json();
    assert_eq!(
        moved(&[entered])["cohort.entered"],
        vec![ids["a"], ids["b"]]
    );

    // b is gone from the file, c now passes; a did not change and is not mentioned.
    let res = upload("{\"id\": \"a\", \"score\": 60}\n{\"id\": \"c\", \"score\": 80}\n").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["deleted"], 1, "{}", res.text);
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(stream.event(ARRIVES).await.expect("moved").json());
    }
    let by_type = moved(&got);
    assert_eq!(by_type["cohort.entered"], vec![ids["c"]]);
    assert_eq!(by_type["cohort.left"], vec![ids["b"]]);
    assert!(stream.drain(QUIET).await.is_empty());
}
