//! `GET /ws`: the event stream over a WebSocket, for clients that want one connection for several
//! subscriptions (a worklist and its views) and to change them without reconnecting. The same
//! events, rules and resumption as `GET /events`; see docs/events.md for the protocol.
//!
//! Memory per connection is small and bounded: 4 KiB socket buffers (tungstenite's defaults are
//! 128 KiB each way), client messages of at most 64 KiB, and [`QUEUE`] frames queued for the
//! socket. A subscription whose client reads slower than events come waits on that queue; the
//! tenant's broadcast then moves on without it and it reads what it missed from the event log
//! (as an SSE stream does): a slow client costs a read of the log, never unbounded memory, and
//! loses nothing. Only a client that falls behind retention gets a `reset`.

use std::collections::HashMap;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::routes::{DEFAULT_RETRY, StreamCaller};
use super::service::{self, Filters, Next};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(websocket))
}

/// Subscriptions one connection may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 16;
/// Frames queued for one connection's socket.
const QUEUE: usize = 64;
/// The socket's read and write buffers.
const BUFFER: usize = 4 * 1024;
/// The largest message a client may send.
const MAX_MESSAGE: usize = 64 * 1024;

/// What a client sends (JSON text frames).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Starts (or replaces) the subscription `id` (default `"default"`).
    #[serde(rename_all = "camelCase")]
    Subscribe {
        id: Option<String>,
        panel_id: Option<i64>,
        view_id: Option<i64>,
        /// Types or families (`view.*`); absent: every type.
        types: Option<Vec<String>>,
        /// Resume after this event id.
        last_event_id: Option<String>,
    },
    /// Ends the subscription `id` (default `"default"`).
    Unsubscribe { id: Option<String> },
    /// Answered with `{"type": "pong"}` (for clients that cannot send ping frames).
    Ping,
}

/// The events of the caller's tenant over a WebSocket. Send
/// `{"type": "subscribe", "id"?, "panelId"?, "viewId"?, "types"?: [...], "lastEventId"?}`
/// (answered `{"type": "subscribed", "subscription", "lastEventId"}`), then receive
/// `{"type": "event", "subscription", "event": EventPayload}`; `{"type": "unsubscribe", "id"?}`
/// ends one. At most 16 subscriptions a connection. Errors come as
/// `{"type": "error", "subscription"?, "error": ErrorBody}`. The server pings every
/// `EVENT_HEARTBEAT_MS` and closes a connection that does not answer two; on shutdown and after
/// `EVENT_STREAM_MAX_MS` it sends `{"type": "reconnect", "retryMs"}` and closes (1012): the client
/// reconnects and resumes each subscription with its last event id. Browsers authenticate with
/// `?ticket=` from `POST /api/events/tickets`.
#[utoipa::path(get, path = "/ws", tag = "Events",
    params(("ticket" = Option<String>, Query, description = "A single-use ticket from POST /api/events/tickets")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request (WEBSOCKET_REQUIRED)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn websocket(
    StreamCaller(principal): StreamCaller,
    State(state): State<AppState>,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::bad_request(
            "WEBSOCKET_REQUIRED",
            format!("GET /api/ws opens a WebSocket: {rejection}"),
        )
    })?;
    Ok(upgrade
        .read_buffer_size(BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(BUFFER + MAX_MESSAGE)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection(socket, state, principal)))
}

/// One subscription's task, aborted when it ends.
struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connection(socket: WebSocket, state: AppState, principal: Principal) {
    let (mut sink, mut incoming) = socket.split();
    let (frames, mut queued) = mpsc::channel::<String>(QUEUE);
    let mut subscriptions: HashMap<String, Running> = HashMap::new();
    let stop = state.events.stopping();
    let ends_at = tokio::time::Instant::now() + state.config.event_stream_max;
    let mut heartbeat = tokio::time::interval(state.config.event_heartbeat);
    heartbeat.tick().await;
    let mut unanswered = 0u8;
    let reconnect = loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    unanswered = 0;
                    let reply =
                        handle(&state, &principal, text.as_str(), &frames, &mut subscriptions).await;
                    if let Some(reply) = reply
                        && sink.send(Message::text(reply)).await.is_err()
                    {
                        break false;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = ApiError::bad_request("INVALID_MESSAGE", "Messages are JSON text");
                    if sink.send(Message::text(error_frame(None, &error))).await.is_err() {
                        break false;
                    }
                }
                // Pings are answered by the socket itself; any frame shows the client is there.
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => unanswered = 0,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break false,
            },
            Some(frame) = queued.recv() => {
                if sink.send(Message::text(frame)).await.is_err() {
                    break false;
                }
            }
            _ = heartbeat.tick() => {
                if unanswered >= 2 {
                    tracing::debug!("a WebSocket client stopped answering pings; closing");
                    break false;
                }
                unanswered += 1;
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break false;
                }
            }
            _ = stop.cancelled() => break true,
            _ = tokio::time::sleep_until(ends_at) => break true,
        }
    };
    drop(subscriptions);
    if reconnect {
        let retry = DEFAULT_RETRY.as_millis() as u64;
        let _ = sink
            .send(Message::text(
                json!({"type": "reconnect", "retryMs": retry}).to_string(),
            ))
            .await;
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: close_code::RESTART,
                reason: "reconnect and resume with your last event ids".into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}

/// Acts on one client message; answers the frame to send back at once, if any.
async fn handle(
    state: &AppState,
    principal: &Principal,
    text: &str,
    frames: &mpsc::Sender<String>,
    subscriptions: &mut HashMap<String, Running>,
) -> Option<String> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => {
            let error = ApiError::bad_request(
                "INVALID_MESSAGE",
                format!(
                    "Not a message this server knows ({e}): send subscribe, unsubscribe or ping"
                ),
            );
            return Some(error_frame(None, &error));
        }
    };
    match message {
        ClientMessage::Ping => Some(json!({"type": "pong"}).to_string()),
        ClientMessage::Unsubscribe { id } => {
            let id = id.unwrap_or_else(default_id);
            subscriptions.remove(&id);
            Some(json!({"type": "unsubscribed", "subscription": id}).to_string())
        }
        ClientMessage::Subscribe {
            id,
            panel_id,
            view_id,
            types,
            last_event_id,
        } => {
            let id = id.unwrap_or_else(default_id);
            // A subscription under the same id is replaced: its stream ends first.
            subscriptions.remove(&id);
            if subscriptions.len() >= MAX_SUBSCRIPTIONS {
                let error = ApiError::bad_request(
                    "TOO_MANY_SUBSCRIPTIONS",
                    format!("A connection holds at most {MAX_SUBSCRIPTIONS} subscriptions"),
                );
                return Some(error_frame(Some(&id), &error));
            }
            let subscribed = async {
                let filters = Filters {
                    panel_id,
                    view_id,
                    types: Filters::parse_types(types.map(|t| t.join(",")).as_deref())?,
                };
                service::subscribe(state, principal.clone(), filters, last_event_id.as_deref())
                    .await
            }
            .await;
            let subscription = match subscribed {
                Ok(subscription) => subscription,
                Err(error) => return Some(error_frame(Some(&id), &error)),
            };
            let reply = json!({
                "type": "subscribed",
                "subscription": id,
                "lastEventId": subscription.last().to_string(),
            })
            .to_string();
            let task = tokio::spawn(forward(subscription, id.clone(), frames.clone()));
            subscriptions.insert(id, Running(task));
            Some(reply)
        }
    }
}

/// Sends a subscription's events to the connection's queue until it ends or the connection goes.
async fn forward(
    mut subscription: service::Subscription,
    id: String,
    frames: mpsc::Sender<String>,
) {
    let quoted = serde_json::Value::from(id.as_str()).to_string();
    loop {
        let frame = match subscription.next().await {
            Ok(Next::Event(event)) => format!(
                r#"{{"type":"event","subscription":{quoted},"event":{}}}"#,
                event.json()
            ),
            Ok(Next::Reset) => json!({
                "type": "reset",
                "subscription": id,
                "lastEventId": subscription.last().to_string(),
            })
            .to_string(),
            // The connection sends `reconnect` itself.
            Ok(Next::Shutdown) => return,
            Err(error) => {
                tracing::warn!(%error, "a WebSocket subscription failed");
                let _ = frames.send(error_frame(Some(&id), &error)).await;
                return;
            }
        };
        if frames.send(frame).await.is_err() {
            return;
        }
    }
}

fn default_id() -> String {
    "default".to_owned()
}

fn error_frame(subscription: Option<&str>, error: &ApiError) -> String {
    json!({"type": "error", "subscription": subscription, "error": error.body()}).to_string()
}
