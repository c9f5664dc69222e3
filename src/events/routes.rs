//! `GET /events` (Server-Sent Events) and `POST /events/tickets`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{StoredEvent, TicketResponse};
use super::service::{self, Filters, Next};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{Json, Query};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stream_events))
        .routes(routes!(create_ticket))
}

/// What a stream follows and where it resumes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct EventsParams {
    /// Only this panel's events.
    pub panel_id: Option<i64>,
    /// Only this view's events and its panel's events that concern no view in particular.
    pub view_id: Option<i64>,
    /// Comma-separated types, or families such as `view.*` (default: every type).
    #[param(example = "rows.changed,view.*")]
    pub types: Option<String>,
    /// Resume after this event id (as `Last-Event-ID`, which takes precedence).
    pub last_event_id: Option<String>,
    /// A single-use ticket from `POST /api/events/tickets`, for clients that cannot send an
    /// `Authorization` header (a browser's `EventSource`).
    pub ticket: Option<String>,
}

/// The caller of a stream: a ticket's holder (`?ticket=`), or the request's credential.
pub struct StreamCaller(pub Principal);

impl FromRequestParts<AppState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct TicketOnly {
            ticket: Option<String>,
        }
        let ticket = axum::extract::Query::<TicketOnly>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.ticket);
        match ticket {
            Some(ticket) => {
                let principal = service::redeem(state, &ticket).await?;
                state.limits.check_tenant(principal.tenant.as_str()).await?;
                Ok(Self(principal))
            }
            None => Principal::from_request_parts(parts, state).await.map(Self),
        }
    }
}

/// The tenant's events as Server-Sent Events: each `id:` is the event's cursor, `event:` its type
/// and `data:` the JSON payload (`EventPayload`). Only events of panels the caller may read (checked
/// again when access changes), and of private views only their owner's. Resume with
/// `Last-Event-ID` (or `?lastEventId=`): exactly the events after it, in commit order; an id older
/// than `EVENT_RETENTION_HOURS` gets `event: reset` (refetch, then follow). A comment every
/// `EVENT_HEARTBEAT_MS` (15 s) keeps proxies from closing an idle stream; on shutdown, and after
/// `EVENT_STREAM_MAX_MS` (an hour), the stream ends with `retry:` and the client resumes.
#[utoipa::path(get, path = "/events", tag = "Events", params(EventsParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "The stream (`text/event-stream`); each event's data is an EventPayload", content_type = "text/event-stream", body = String),
        (status = 400, description = "Unknown type, invalid event id (INVALID_EVENT_ID) or filter", body = ErrorBody),
        (status = 404, description = "Panel or view not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn stream_events(
    StreamCaller(principal): StreamCaller,
    State(state): State<AppState>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Response> {
    let filters = Filters {
        panel_id: params.panel_id,
        view_id: params.view_id,
        types: Filters::parse_types(params.types.as_deref())?,
    };
    let header_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("INVALID_EVENT_ID", "Last-Event-ID is not valid text")
            })
        })
        .transpose()?;
    let last_event_id = header_id.or(params.last_event_id.as_deref());
    let subscription = service::subscribe(&state, principal, filters, last_event_id).await?;
    let retry = DEFAULT_RETRY;
    // A stream lives at most EVENT_STREAM_MAX_MS, then ends with `retry:`: the client resumes by
    // its last id, possibly on another instance (connections rebalance after a scale-out).
    let ends_at = tokio::time::Instant::now() + state.config.event_stream_max;
    let stream = futures::stream::unfold(Some(subscription), move |subscription| async move {
        let mut subscription = subscription?;
        let next = tokio::time::timeout_at(ends_at, subscription.next())
            .await
            .unwrap_or(Ok(Next::Shutdown));
        let (event, more) = match next {
            Ok(Next::Event(event)) => (data_event(&event), true),
            Ok(Next::Reset) => (
                SseEvent::default()
                    .event("reset")
                    .id(subscription.last().to_string())
                    .data("{}"),
                true,
            ),
            Ok(Next::Shutdown) => (
                SseEvent::default().retry(retry).comment("shutting down"),
                false,
            ),
            Err(error) => {
                tracing::warn!(%error, "an event stream failed; the client will reconnect");
                (SseEvent::default().retry(retry).comment("error"), false)
            }
        };
        Some((Ok::<_, Infallible>(event), more.then_some(subscription)))
    });
    let keep_alive = KeepAlive::new()
        .interval(state.config.event_heartbeat)
        .text("heartbeat");
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    // Proxies that buffer responses (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn data_event(event: &StoredEvent) -> SseEvent {
    SseEvent::default()
        .id(event.cursor().to_string())
        .event(event.kind.as_str())
        .data(event.json())
}

/// A single-use ticket (valid 60 seconds) to open `GET /api/events?ticket=` from a browser's
/// `EventSource`, which cannot send an `Authorization` header: never a long-lived token in a URL.
#[utoipa::path(post, path = "/events/tickets", tag = "Events",
    responses(
        (status = 201, description = "The ticket", body = TicketResponse),
        AuthErrors, ServerErrors,
    ))]
pub async fn create_ticket(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<TicketResponse>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::ticket(&state, &principal).await?),
    ))
}

/// The `retry:` a client is told when a stream ends (reconnect after this long).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(1);
