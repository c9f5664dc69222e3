//! `GET /api/ws`: the event stream over a WebSocket, driven by a real WebSocket client.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use panels::auth::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{TestApp, token_for};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Long enough for a commit to reach a subscriber even when another test holds the horizon back.
const ARRIVES: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(1500);

async fn connect(app: &TestApp, query: &str, token: Option<&str>) -> Socket {
    let url = format!("ws://{}/api/ws{query}", app.addr);
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens");
    assert_eq!(response.status(), 101);
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
}

/// The next JSON message (pings are answered by the client library), `None` after `wait` or at
/// the close.
async fn next(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON"));
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The next message of type `kind`, skipping events of earlier work.
async fn expect(socket: &mut Socket, kind: &str) -> Value {
    let message = next(socket, ARRIVES).await.expect("a message");
    assert_eq!(message["type"], kind, "{message}");
    message
}

#[tokio::test]
async fn subscribe_receive_unsubscribe_and_resume_by_the_last_event_id() {
    let app = TestApp::spawn().await;
    let token = token_for("sockets", "admin@sockets.example", Role::Admin);
    let mut socket = connect(&app, "", Some(&token)).await;
    send(&mut socket, json!({"type": "ping"})).await;
    expect(&mut socket, "pong").await;

    send(
        &mut socket,
        json!({"type": "subscribe", "id": "panels", "types": ["panel.*"]}),
    )
    .await;
    let subscribed = expect(&mut socket, "subscribed").await;
    assert_eq!(subscribed["subscription"], "panels");
    let first = app.create_panel(&token, "First").await;
    let event = expect(&mut socket, "event").await;
    assert_eq!(event["subscription"], "panels");
    assert_eq!(event["event"]["type"], "panel.created");
    assert_eq!(event["event"]["panelId"], first);
    let seen = event["event"]["id"].as_str().expect("event id").to_owned();

    // Unsubscribed, nothing comes; the panel made meanwhile is there on resuming.
    send(&mut socket, json!({"type": "unsubscribe", "id": "panels"})).await;
    assert_eq!(
        expect(&mut socket, "unsubscribed").await["subscription"],
        "panels"
    );
    let missed = app.create_panel(&token, "Missed").await;
    assert!(next(&mut socket, QUIET).await.is_none());
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "again", "types": ["panel.created"], "lastEventId": seen}),
    )
    .await;
    expect(&mut socket, "subscribed").await;
    let event = expect(&mut socket, "event").await;
    assert_eq!(event["subscription"], "again");
    assert_eq!(event["event"]["panelId"], missed);
    assert!(
        next(&mut socket, QUIET).await.is_none(),
        "exactly the missed one"
    );
}

#[tokio::test]
async fn two_subscriptions_on_one_connection_each_get_their_own_events() {
    let app = TestApp::spawn().await;
    let token = token_for("sockets2", "admin@sockets2.example", Role::Admin);
    let a = app.create_panel(&token, "A").await;
    let b = app.create_panel(&token, "B").await;
    let mut socket = connect(&app, "", Some(&token)).await;
    for (id, panel) in [("a", a), ("b", b)] {
        send(
            &mut socket,
            json!({"type": "subscribe", "id": id, "panelId": panel, "types": ["panel.updated"]}),
        )
        .await;
        expect(&mut socket, "subscribed").await;
    }
    for panel in [a, b] {
        let res = app
            .put(&format!("/api/panels/{panel}"))
            .bearer(&token)
            .json(&json!({"name": format!("Renamed {panel}")}))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let event = expect(&mut socket, "event").await;
        got.push((
            event["subscription"].as_str().expect("id").to_owned(),
            event["event"]["panelId"].as_i64().expect("panel"),
        ));
    }
    got.sort();
    assert_eq!(got, vec![("a".to_owned(), a), ("b".to_owned(), b)]);
    assert!(next(&mut socket, QUIET).await.is_none());
}

#[tokio::test]
async fn bad_messages_and_unreadable_panels_answer_errors_on_the_socket() {
    let app = TestApp::spawn().await;
    let token = token_for("sockets3", "admin@sockets3.example", Role::Admin);
    let other = token_for("elsewhere", "admin@elsewhere.example", Role::Admin);
    let foreign = app.create_panel(&other, "Not yours").await;
    let mut socket = connect(&app, "", Some(&token)).await;

    socket.send(Message::text("{not json")).await.expect("send");
    let error = expect(&mut socket, "error").await;
    assert_eq!(error["error"]["code"], "INVALID_MESSAGE");
    assert_eq!(error["error"]["statusCode"], 400);

    send(
        &mut socket,
        json!({"type": "subscribe", "id": "x", "types": ["nope.*"]}),
    )
    .await;
    let error = expect(&mut socket, "error").await;
    assert_eq!(error["subscription"], "x");
    assert_eq!(error["error"]["statusCode"], 400);

    // Another tenant's panel answers exactly as one that does not exist.
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "y", "panelId": foreign}),
    )
    .await;
    let theirs = expect(&mut socket, "error").await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "y", "panelId": 987_654_321}),
    )
    .await;
    let missing = expect(&mut socket, "error").await;
    assert_eq!(theirs["error"]["statusCode"], 404);
    assert_eq!(theirs["error"]["code"], missing["error"]["code"]);
    assert_eq!(theirs["error"]["message"], missing["error"]["message"]);

    // At most 16 subscriptions a connection.
    for i in 0..16 {
        send(
            &mut socket,
            json!({"type": "subscribe", "id": format!("s{i}")}),
        )
        .await;
        expect(&mut socket, "subscribed").await;
    }
    send(&mut socket, json!({"type": "subscribe", "id": "s16"})).await;
    let error = expect(&mut socket, "error").await;
    assert_eq!(error["error"]["code"], "TOO_MANY_SUBSCRIPTIONS");

    // The other tenant's change reaches none of them.
    let res = app
        .put(&format!("/api/panels/{foreign}"))
        .bearer(&other)
        .json(&json!({"name": "Still not yours"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(next(&mut socket, QUIET).await.is_none());
}

#[tokio::test]
async fn opening_needs_credentials_and_an_upgrade_and_a_ticket_works_once() {
    let app = TestApp::spawn().await;
    let token = token_for("sockets4", "admin@sockets4.example", Role::Admin);
    let anonymous = app.get("/api/ws").send().await;
    anonymous.assert_error(401, "UNAUTHORIZED");
    let plain = app.get("/api/ws").bearer(&token).send().await;
    plain.assert_error(400, "WEBSOCKET_REQUIRED");

    let res = app.post("/api/events/tickets").bearer(&token).send().await;
    let ticket = res.body["ticket"].as_str().expect("ticket").to_owned();
    let mut socket = connect(&app, &format!("?ticket={ticket}"), None).await;
    send(&mut socket, json!({"type": "subscribe"})).await;
    assert_eq!(
        expect(&mut socket, "subscribed").await["subscription"],
        "default"
    );
    let panel = app.create_panel(&token, "By ticket").await;
    assert_eq!(
        expect(&mut socket, "event").await["event"]["panelId"],
        panel
    );
    let url = format!("ws://{}/api/ws?ticket={ticket}", app.addr);
    let again = tokio_tungstenite::connect_async(url).await;
    assert!(again.is_err(), "a ticket opens one connection once");
}

#[tokio::test]
async fn shutdown_tells_subscribers_to_reconnect_and_closes_inside_the_deadline() {
    let mut app = TestApp::spawn().await;
    let token = token_for("sockets5", "admin@sockets5.example", Role::Admin);
    let mut socket = connect(&app, "", Some(&token)).await;
    send(&mut socket, json!({"type": "subscribe"})).await;
    expect(&mut socket, "subscribed").await;
    let started = std::time::Instant::now();
    app.stop().await;
    let reconnect = expect(&mut socket, "reconnect").await;
    assert_eq!(reconnect["retryMs"], 1000);
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("closed");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1012),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}
