//! Mounts every module's routes (under `/api`, and at the root for the existing web client), the
//! operations endpoints, the docs, and the cross-cutting layers, in the order a request meets them.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, REQUEST_ID, envelope};
use crate::openapi::ApiDoc;
use crate::state::AppState;
use crate::{
    acls, audit, auth, changes, columns, datasources, events, health, metrics, panels, rows, views,
    webhooks,
};

/// Every API module, with paths relative to `/api`.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::routes::router())
        .merge(panels::routes::router())
        .merge(columns::routes::router())
        .merge(datasources::routes::router())
        .merge(views::routes::router())
        .merge(rows::routes::router())
        .merge(acls::routes::router())
        .merge(audit::routes::router())
        .merge(changes::routes::router())
        .merge(events::routes::router())
        .merge(events::ws::router())
        .merge(webhooks::routes::router())
}

/// The OpenAPI document of everything served (the API under `/api`, and the operations routes).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = documented().split_for_parts();
    doc
}

fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api", api_routes())
        .routes(routes!(health::liveness))
        .routes(routes!(health::readiness))
        .routes(routes!(health::metrics))
}

/// The whole application: what production serves and what the tests drive.
pub fn app(state: AppState) -> Router {
    let (documented, doc) = documented().split_for_parts();
    let (root_alias, _) = api_routes().split_for_parts();
    let router = Router::new()
        .merge(documented)
        .merge(root_alias)
        // The existing deployment probes: readiness and liveness under their old names.
        .route("/healthz", get(health::readiness))
        .route("/liveness", get(health::liveness))
        .merge(crate::openapi::swagger(doc));
    with_layers(router, &state).with_state(state)
}

/// The fallbacks and the cross-cutting layers, outermost first. Public so tests can put a
/// route of their own (one that panics, one that sleeps) behind exactly what production runs.
pub fn with_layers(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let config = &state.config;
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http().make_span_with(make_span))
                // Metrics and the request id for error envelopes: one middleware, as each one
                // boxes a future and clones the routes behind it for every request.
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    request_context,
                ))
                // Small bodies cost more CPU to compress than they save on the wire: only bodies
                // over 1 KiB are compressed (bench/README.md, finding 11).
                .layer(
                    CompressionLayer::new()
                        .compress_when(DefaultPredicate::new().and(SizeAbove::new(1024))),
                )
                .layer(cors(&config.cors_allowed_origins))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                ))
                // A panic anywhere below answers the 500 envelope (it unwinds through the timeout).
                .layer(CatchPanicLayer::custom(on_panic))
                .layer(middleware::from_fn_with_state(state.config.clone(), limits))
                .layer(DefaultBodyLimit::max(config.max_body_bytes)),
        )
}

fn make_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        route = %route,
        tenant = tracing::field::Empty,
        user = tracing::field::Empty,
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
        ])
        .expose_headers([
            header::ETAG,
            header::LINK,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-next-cursor"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Makes the request id available to every error built while serving the request, gives errors
/// produced outside our handlers (layers, axum itself) the one envelope, counts and times the
/// request by method, matched route and final status, and for a request that is audited (a write,
/// an export) sets its part of the entry and records the entry its write did not commit (a
/// refusal, an export, a failed login).
async fn request_context(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let metrics = &state.metrics;
    let started = std::time::Instant::now();
    // No allocation for the labels: a standard method and a matched path clone as a tag and an
    // `Arc`.
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let route_text = route.as_ref().map(|r| r.as_str());
    let response = if crate::audit::RequestAudit::wanted(&method, route_text) {
        let (parts, body) = request.into_parts();
        let audited = std::sync::Arc::new(crate::audit::RequestAudit::new(
            method.clone(),
            route_text.map(str::to_owned),
            parts.uri.path().to_owned(),
            request_id.clone(),
            crate::extract::client_address(&parts, &state.config.trusted_proxies),
            parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ));
        let request = Request::from_parts(parts, body);
        let response = REQUEST_ID
            .scope(
                request_id,
                crate::audit::scope(audited.clone(), async move {
                    let response = next.run(request).await;
                    ensure_envelope(response).await
                }),
            )
            .await;
        if let Some(entry) = crate::audit::after(&audited, response.status().as_u16()) {
            state.audit.record(entry);
        }
        response
    } else {
        REQUEST_ID
            .scope(request_id, async move {
                let response = next.run(request).await;
                ensure_envelope(response).await
            })
            .await
    };
    metrics::observe_request(
        metrics,
        method.as_str(),
        route.as_ref(),
        response.status(),
        started,
    );
    response
}

async fn ensure_envelope(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Bodies of layer-made errors are short texts; read a bounded amount for the message.
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("PAYLOAD_TOO_LARGE", "Request body is too large".to_owned())
        }
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "Method not allowed".to_owned()),
        StatusCode::NOT_FOUND => ("NOT_FOUND", "Not found".to_owned()),
        StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "Request timed out".to_owned()),
        _ if text.is_empty() => (
            "ERROR",
            status.canonical_reason().unwrap_or("Error").to_owned(),
        ),
        _ => ("ERROR", text),
    };
    let body = envelope(status, code, message, Vec::new());
    let mut rebuilt = (status, axum::Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

/// The request's limits: its time (`REQUEST_TIMEOUT_MS`, or `UPLOAD_TIMEOUT_MS` for an upload;
/// answered 503 `REQUEST_TIMEOUT`) and its body. Uploads and pushes have body limits of their own, everything else `MAX_BODY_BYTES`. A
/// declared length over the cap is refused at once; a streamed body is cut off where it passes the
/// cap (the extractor or the upload then answers 413).
async fn limits(
    State(config): State<std::sync::Arc<crate::config::Config>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let upload = path.ends_with("/upload");
    let limit = if upload {
        config.upload_max_bytes
    } else if path.ends_with("/records") {
        config.push_max_bytes
    } else {
        config.max_body_bytes
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    // An upload of hundreds of megabytes takes longer than an ordinary request may.
    let timeout = if upload {
        config.upload_timeout
    } else {
        config.request_timeout
    };
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable {
            code: "REQUEST_TIMEOUT",
            message: format!(
                "The request did not finish within {} ms",
                timeout.as_millis()
            ),
        }
        .into_response(),
    }
}

fn on_panic(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    // The panic message may hold data; the hook already printed it. Log the fact with the span.
    tracing::error!("handler panicked");
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::NotFound {
        code: "ROUTE_NOT_FOUND".into(),
        message: format!(
            "Route {}:{} not found",
            request.method(),
            request.uri().path()
        ),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
