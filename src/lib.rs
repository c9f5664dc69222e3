//! Panels: a multi-tenant REST API for configurable data worklists.
//!
//! `app(state)` builds the router production serves and the tests drive; `serve(config)` does
//! everything `panels serve` does: create and migrate the database, connect, listen, drain on
//! shutdown.

pub mod acls;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod changes;
pub mod columns;
pub mod config;
pub mod datasources;
pub mod db;
pub mod error;
pub mod etag;
pub mod events;
pub mod extract;
pub mod filter;
pub mod formula;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod jobs;
pub mod metrics;
pub mod netguard;
pub mod openapi;
pub mod page;
pub mod panels;
pub mod ratelimit;
pub mod router;
pub mod rows;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod views;
pub mod webhooks;
pub mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use router::app;

use crate::config::Config;
use crate::state::AppState;

/// Prepares the database (create, migrate) and builds the state shared by every request.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    tls::install_crypto_provider();
    db::ensure_database(config.database_url()).await?;
    db::migrate(config.database_url()).await?;
    let metrics = metrics::Metrics::new()?;
    let pool = db::connect(&config).await?;
    let cache = cache::Cache::new(
        config.redis_url.as_ref(),
        config.redis_command_timeout,
        &cache_namespace(config.database_url())?,
        config.cache_enabled,
        metrics.clone(),
    )?;
    let auth = auth::AuthKeys::from_config(&config)?;
    let crypto = datasources::crypto::Crypto::from_config(&config)?;
    let db = db::Db::new(pool, metrics.db_waiting.clone());
    let auth = Arc::new(auth);
    auth::revocations::spawn(db.clone(), auth.clone());
    // Signing keys derived from JWT_SECRET (random for a process without one, like its tokens).
    let (cursor_key, index_key) = match &config.jwt_secret {
        Some(secret) => {
            use secrecy::ExposeSecret;
            let secret = secret.expose_secret().as_bytes();
            (
                rows::cursor::CursorKey::derive(secret),
                rows::indexes::IndexKey::derive(secret),
            )
        }
        None => (
            rows::cursor::CursorKey::random(),
            rows::indexes::IndexKey::random(),
        ),
    };
    let (index_wants, _recorder) = rows::indexes::Wants::start(db.clone(), index_key.clone());
    let (db_for_events, cache_for_events) = (db.clone(), cache.clone());
    let (db_for_audit, metrics_for_audit) = (db.clone(), metrics.clone());
    Ok(AppState::new(state::Shared {
        wakeup: jobs::Wakeup::default(),
        creates: panels::batch::CreateBatcher::new(db.clone()),
        db,
        limits: ratelimit::RateLimiter::new(&config, cache.clone()),
        cache,
        auth,
        crypto: Arc::new(crypto),
        metrics,
        cursor_key,
        index_key,
        index_wants: Arc::new(index_wants),
        clock: state::Clock::default(),
        exports: Arc::new(tokio::sync::Semaphore::new(config.export_concurrency)),
        events: events::hub::Hub::start(db_for_events, cache_for_events, config.event_poll),
        audit: audit::buffer::AuditBuffer::start(
            db_for_audit,
            config.audit_buffer_size,
            config.audit_flush,
            metrics_for_audit.audit_dropped.clone(),
            metrics_for_audit.audit_written.clone(),
        ),
        config: Arc::new(config),
    }))
}

/// The cache's namespace: the database's name (checked to be `[A-Za-z0-9_-]` by
/// `ensure_database`), so instances of one database share their cache and deployments of different
/// databases on one Redis never read each other's keys.
fn cache_namespace(database_url: &str) -> anyhow::Result<String> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid URL")?;
    Ok(options.get_database().unwrap_or("postgres").to_owned())
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most `SHUTDOWN_TIMEOUT_MS`.
pub async fn serve_on(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let deadline = state.config.shutdown_timeout;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let events = state.events.clone();
    let audit = state.audit.clone();
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    // Answers go out when written: without TCP_NODELAY, Nagle's algorithm holds a small write
    // while an earlier one is unacknowledged, until the client's delayed ACK.
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // Open event streams end (with `retry:`) rather than hold the drain up.
        events.shutdown();
        let _ = stopping_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            audit.flush().await;
            return result.context("server failed");
        }
        _ = stopping_rx => {}
    }
    tracing::info!(
        deadline_ms = deadline.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let drained = match tokio::time::timeout(deadline, server).await {
        Ok(result) => result.context("server failed"),
        Err(_) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
            Ok(())
        }
    };
    // The last requests' audit entries, before the process goes.
    audit.flush().await;
    drained
}

/// The background work of a process with workers: `concurrency` sync workers (with the
/// scheduler), the filler of new typed slots, the builder of the indexes row queries want, and the
/// webhooks' dispatcher and delivery workers; none with `concurrency` 0.
pub fn spawn_workers(
    state: &AppState,
    concurrency: usize,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = datasources::sync::spawn_workers(state, concurrency, stop.clone());
    if concurrency > 0 {
        handles.push(rows::slots::spawn_filler(state.db.clone(), stop.clone()));
        handles.push(events::retention::spawn(
            state.db.clone(),
            state.config.event_retention_hours,
            stop.clone(),
        ));
        handles.push(rows::membership::spawn(
            state.clone(),
            state.config.membership_refresh,
            stop.clone(),
        ));
        handles.extend(webhooks::spawn_workers(state, stop.clone()));
        handles.push(audit::retention::spawn_sealer(
            state.db.clone(),
            stop.clone(),
        ));
        handles.push(audit::retention::spawn(
            state.config.database_url().to_owned(),
            state.config.audit_retention_days,
            stop.clone(),
        ));
        handles.push(rows::indexes::spawn_builder(
            state.db.clone(),
            state.config.database_url().to_owned(),
            state.index_key.clone(),
            state.config.index_min_rows,
            stop,
        ));
    }
    handles
}

/// `panels serve`: everything from configuration to a listening, draining server, with the
/// sync workers of `WORKER_CONCURRENCY` unless `workers` is false.
pub async fn serve(config: Config, workers: bool) -> anyhow::Result<()> {
    let addr = config.bind_addr();
    let state = build_state(config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "listening");
    let stop = tokio_util::sync::CancellationToken::new();
    let handles = if workers {
        spawn_workers(&state, state.config.worker_concurrency, stop.clone())
    } else {
        Vec::new()
    };
    let served = serve_on(state, listener, shutdown_signal()).await;
    stop.cancel();
    for handle in handles {
        let _ = handle.await;
    }
    served
}

/// `panels worker`: sync workers and the scheduler only, until SIGINT/SIGTERM.
pub async fn work(config: Config) -> anyhow::Result<()> {
    let state = build_state(config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let concurrency = state.config.worker_concurrency.max(1);
    let handles = spawn_workers(&state, concurrency, stop.clone());
    tracing::info!(concurrency, "worker running");
    shutdown_signal().await;
    stop.cancel();
    for handle in handles {
        let _ = handle.await;
    }
    state.audit.flush().await;
    Ok(())
}

/// `panels create-admin`: an admin account for `tenant` (created when new), without registration.
pub async fn create_admin(
    config: Config,
    tenant: &str,
    email: &str,
    password: String,
) -> anyhow::Result<i64> {
    let tenant = auth::TenantId::parse(tenant)
        .ok_or_else(|| anyhow::anyhow!("--tenant must be letters, digits, '.', '_', '~' or '-'"))?;
    let state = build_state(config).await?;
    auth::service::create_admin(&state, &tenant, email, password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `panels rotate-secrets`: every data source's secrets re-encrypted with the current
/// `ENCRYPTION_KEY` (those under an old key of `ENCRYPTION_KEYS`, or in an older format). Answers
/// (sources checked, sources rewritten).
pub async fn rotate_secrets(config: Config) -> anyhow::Result<(usize, usize)> {
    let owner_url = config.database_url().to_owned();
    let state = build_state(config).await?;
    // The sources of every tenant, listed as the worker role (the only one that may see them all).
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&owner_url).await?;
    sqlx::Executor::execute(&mut owner, "set role panels_worker").await?;
    let sources: Vec<(String, ids::DataSourceId)> =
        sqlx::query_as("select tenant_id, id from data_source order by tenant_id, id")
            .fetch_all(&mut owner)
            .await?;
    drop(owner);
    let mut rewritten = 0;
    for (tenant, id) in &sources {
        let tenant = auth::TenantId::parse(tenant)
            .ok_or_else(|| anyhow::anyhow!("data source {id} has an invalid tenant"))?;
        if datasources::service::reseal(&state, &tenant, *id).await? {
            rewritten += 1;
        }
    }
    Ok((sources.len(), rewritten))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
