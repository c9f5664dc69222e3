//! The application state shared by every handler: one `Arc`, so the clones axum makes for every
//! request and layer cost one atomic increment rather than one per field's handle (bench/README.md,
//! finding 11), passed with `State`, with `FromRef` for the parts extractors need.

use std::ops::Deref;
use std::sync::Arc;

use crate::db::Db;
use axum::extract::FromRef;
use chrono::{DateTime, Utc};

use crate::auth::AuthKeys;
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// The same state with its clock stopped at `at`.
    pub fn with_clock(&self, at: DateTime<Utc>) -> Self {
        let mut shared = (*self.0).clone();
        shared.clock = Clock::fixed(at);
        Self::new(shared)
    }

    /// The same state under another configuration (tests put a short timeout behind the layers
    /// production runs).
    pub fn with_config(&self, config: Config) -> Self {
        let mut shared = (*self.0).clone();
        shared.config = Arc::new(config);
        Self::new(shared)
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds (every field a handle, so a clone shares them).
#[derive(Clone)]
pub struct Shared {
    /// Wakes this process's sync workers when it enqueues a run.
    pub wakeup: crate::jobs::Wakeup,
    pub config: Arc<Config>,
    pub db: Db,
    pub cache: Cache,
    pub metrics: Metrics,
    pub auth: Arc<AuthKeys>,
    pub limits: RateLimiter,
    /// Panel creates, committed in groups under load.
    pub creates: crate::panels::batch::CreateBatcher,
    /// The cipher of secrets inside data-source configs.
    pub crypto: Arc<crate::datasources::crypto::Crypto>,
    /// Exports streaming at once (`EXPORT_CONCURRENCY`): each holds a database connection.
    pub exports: Arc<tokio::sync::Semaphore>,
    /// Records the indexes row queries want (`rows::indexes`).
    pub index_wants: Arc<crate::rows::indexes::Wants>,
    /// Signs the definitions of those indexes for the builder.
    pub index_key: crate::rows::indexes::IndexKey,
    /// Signs the cursors of row pages.
    pub cursor_key: crate::rows::cursor::CursorKey,
    /// What time it is (relative dates in filters, NOW() in the rows a query shows).
    pub clock: Clock,
    /// This instance's fan-out of the event log to its streams.
    pub events: crate::events::hub::Hub,
    /// Audit entries written outside a mutation's transaction.
    pub audit: crate::audit::buffer::AuditBuffer,
}

/// The time: the system's clock, or a fixed moment (tests of relative dates).
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock(Option<DateTime<Utc>>);

impl Clock {
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Some(at))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.unwrap_or_else(Utc::now)
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
