//! Prometheus metrics: one registry per process (held in `AppState`, no global), the HTTP
//! metrics middleware, and the text exposition for `GET /metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub db_pool: IntGaugeVec,
    pub db_waiting: IntGauge,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_errors: IntCounterVec,
    pub cache_latency: HistogramVec,
    pub cache_bypassed: IntCounterVec,
}

impl Metrics {
    /// Builds the registry; fails only if a metric definition is invalid (a programming error
    /// caught at start-up, not at request time).
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["method", "route", "status"],
        )?;
        let db_pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["state"],
        )?;
        let db_waiting = IntGauge::new(
            "db_pool_waiting",
            "Requests waiting for a database connection",
        )?;
        let cache_hits = IntCounterVec::new(
            Opts::new("cache_hits_total", "Cache hits by cache and layer"),
            &["cache", "layer"],
        )?;
        let cache_misses = IntCounterVec::new(
            Opts::new("cache_misses_total", "Cache misses by cache"),
            &["cache"],
        )?;
        let cache_errors = IntCounterVec::new(
            Opts::new(
                "cache_errors_total",
                "Redis errors and timeouts by cache and command",
            ),
            &["cache", "op"],
        )?;
        let cache_latency = HistogramVec::new(
            HistogramOpts::new(
                "cache_command_duration_seconds",
                "Redis command latency by cache and command",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1,
            ]),
            &["cache", "op"],
        )?;
        let cache_bypassed = IntCounterVec::new(
            Opts::new(
                "cache_bypassed_total",
                "Reads served from PostgreSQL without the cache because Redis was not trusted",
            ),
            &["cache"],
        )?;

        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(db_pool.clone()),
            Box::new(db_waiting.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(cache_errors.clone()),
            Box::new(cache_latency.clone()),
            Box::new(cache_bypassed.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector)?;
        }
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            db_pool,
            db_waiting,
            cache_hits,
            cache_misses,
            cache_errors,
            cache_latency,
            cache_bypassed,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = encoder.encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Counts and times every request by method, matched route (never the raw path, which would
/// explode the label space with ids) and status.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
