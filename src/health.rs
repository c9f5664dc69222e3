//! Operations endpoints, without authentication: liveness, readiness and metrics.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::cache::CacheStatus;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "ok")]
    pub status: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    /// `up`, `down`, or `disabled` (no Redis configured: the in-process cache serves).
    pub status: &'static str,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`, `degraded` (serving without Redis) or `unavailable` (no database).
    pub status: &'static str,
    pub database: ComponentHealth,
    pub cache: ComponentHealth,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "Operations",
    security(()),
    responses((status = 200, description = "The process is alive", body = Liveness)))]
pub async fn liveness() -> Json<Liveness> {
    Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Readiness: checks PostgreSQL and Redis; 503 when the database does not answer.
#[utoipa::path(get, path = "/health/ready", tag = "Operations",
    security(()),
    responses(
        (status = 200, description = "Ready (possibly degraded: serving without Redis)", body = Readiness),
        (status = 503, description = "The database does not answer", body = Readiness),
    ))]
pub async fn readiness(State(state): State<AppState>) -> impl IntoResponse {
    let started = Instant::now();
    let db_ok = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("select 1").execute(state.db.pool()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let database = ComponentHealth {
        status: if db_ok { "up" } else { "down" },
        latency_ms: db_ok.then(|| started.elapsed().as_secs_f64() * 1000.0),
    };
    let (cache_status, cache_latency) = state.cache.ping().await;
    let cache = ComponentHealth {
        status: match cache_status {
            CacheStatus::Local => "disabled",
            CacheStatus::Up => "up",
            CacheStatus::Down => "down",
        },
        latency_ms: cache_latency.map(|d| d.as_secs_f64() * 1000.0),
    };
    let (code, status) = match (db_ok, cache_status) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, CacheStatus::Down) => (StatusCode::OK, "degraded"),
        (true, _) => (StatusCode::OK, "ok"),
    };
    (
        code,
        Json(Readiness {
            status,
            database,
            cache,
        }),
    )
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "Operations",
    security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pool = state.db.pool();
    state
        .metrics
        .db_pool
        .with_label_values(&["size"])
        .set(i64::from(pool.size()));
    state
        .metrics
        .db_pool
        .with_label_values(&["idle"])
        .set(pool.num_idle() as i64);
    state
        .metrics
        .db_pool
        .with_label_values(&["max"])
        .set(i64::from(pool.options().get_max_connections()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
