//! Connectors: where a panel's rows come from. One small trait, one implementation per source
//! type; each streams records into a [`Sink`], which upserts them in batches and counts what
//! changed. Nothing holds a whole source in memory: at most one batch (and, for `api`, one page).

pub mod api;
pub mod database;
pub mod file;
pub mod json_stream;
pub mod sink;

use serde_json::Value;

pub use sink::{Sink, SinkCounts};

/// Why a sync could not finish (per-row problems are not errors: the sink records them).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source's configuration cannot be used (a 400 when reported to a client).
    #[error("{0}")]
    Config(String),
    /// The source could not be read (network, remote database, remote HTTP status...).
    #[error("{0}")]
    Source(String),
    /// Our own storage failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    /// A bad row stopped the sync because the source asks to stop on errors.
    #[error("line {line}: {message}")]
    Aborted { line: u64, message: String },
}

/// Streams every record of a source into the sink.
// Used only inside this crate, with concrete types: no `Send` bound is needed on the future.
#[allow(async_fn_in_trait)]
pub trait Connector {
    async fn pull(&self, sink: &mut Sink) -> Result<(), SyncError>;
}

/// The options every source type shares, read from its (decrypted) `config`.
#[derive(Debug, Clone)]
pub struct Common {
    pub key_field: String,
    pub delete_missing: bool,
    pub stop_on_error: bool,
}

impl Common {
    pub fn from_config(config: &Value) -> Self {
        Self {
            key_field: config
                .get("keyField")
                .and_then(Value::as_str)
                .unwrap_or("id")
                .to_owned(),
            delete_missing: config.get("deletePolicy").and_then(Value::as_str) == Some("delete"),
            stop_on_error: config.get("onError").and_then(Value::as_str) == Some("abort"),
        }
    }
}

/// Text of a config field, or a configuration error naming it.
pub fn required_str<'a>(config: &'a Value, name: &str) -> Result<&'a str, SyncError> {
    config
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SyncError::Config(format!("config.{name} is required")))
}
