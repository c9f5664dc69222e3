//! Webhooks: a tenant's HTTP endpoints that receive its events, signed per Standard Webhooks.
//! The endpoints manage them (`routes`, `service`, `repo`, `model`); the worker process turns the
//! event log into deliveries (`dispatch`, following each tenant's log by the streams' commit-safe
//! cursor) and makes them from a durable queue on PostgreSQL (`deliver`: leases, retries with
//! backoff, the address policy at every attempt, auto-disable). Secrets are sealed at rest and
//! shown once (`signing`). See docs/webhooks.md.

pub mod deliver;
pub mod dispatch;
pub mod model;
pub mod repo;
pub mod routes;
pub mod service;
pub mod signing;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The background work of webhooks in a worker process: the dispatcher, and
/// `WEBHOOK_CONCURRENCY` delivery workers it wakes when it queues deliveries.
pub fn spawn_workers(state: &AppState, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let wake = Arc::new(Notify::new());
    let mut handles = deliver::spawn(state, wake.clone(), stop.clone());
    handles.push(dispatch::spawn(state.clone(), wake, stop));
    handles
}
