//! Prometheus metrics: one registry per process (held in `AppState`, no global), the HTTP
//! metrics middleware, and the text exposition for `GET /metrics`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::StatusCode;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process's metrics: one `Arc`, cloned into layers that clone it again for every request.
#[derive(Clone)]
pub struct Metrics(Arc<MetricsInner>);

impl Deref for Metrics {
    type Target = MetricsInner;

    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

pub struct MetricsInner {
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
    pub cache_version_batch: Histogram,
    pub audit_dropped: IntCounter,
    pub audit_written: IntCounter,
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
        let cache_version_batch = Histogram::with_opts(
            HistogramOpts::new(
                "cache_version_batch_size",
                "Version reads answered by one Redis MGET (concurrent reads share one)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;

        let audit_dropped = IntCounter::new(
            "panels_audit_dropped_total",
            "Audit entries dropped because the buffer was full or could not be written",
        )?;
        let audit_written = IntCounter::new(
            "panels_audit_buffered_written_total",
            "Audit entries written from the buffer (refused writes, exports, failed logins)",
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
            Box::new(cache_version_batch.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(audit_written.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector)?;
        }
        Ok(Self(Arc::new(MetricsInner {
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
            cache_version_batch,
            audit_dropped,
            audit_written,
        })))
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

/// Counts and times a request by method, matched route (never the raw path, which would explode
/// the label space with ids) and status.
pub fn observe_request(
    metrics: &Metrics,
    method: &str,
    route: Option<&MatchedPath>,
    status: StatusCode,
    started: Instant,
) {
    let labels = [
        method,
        route.map_or("unmatched", MatchedPath::as_str),
        status.as_str(),
    ];
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
}
