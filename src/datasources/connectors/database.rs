//! `database`: a SELECT run against the source's own PostgreSQL, on a connection made for this
//! sync only, inside a READ ONLY transaction with a statement timeout, rows streamed as JSON.

use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

use super::{Common, Connector, Sink, SyncError, required_str};

pub struct DatabaseConnector {
    connection_string: String,
    query: String,
    statement_timeout: Duration,
}

impl DatabaseConnector {
    pub fn from_config(config: &Value) -> Result<Self, SyncError> {
        let connection_string = required_str(config, "connectionString")?.to_owned();
        let query = required_str(config, "query")?
            .trim()
            .trim_end_matches(';')
            .trim()
            .to_owned();
        let lower = query.to_ascii_lowercase();
        if !(lower.starts_with("select") || lower.starts_with("with")) || query.contains(';') {
            return Err(SyncError::Config(
                "config.query must be a single SELECT".to_owned(),
            ));
        }
        let timeout_ms = config
            .get("timeoutMs")
            .and_then(Value::as_u64)
            .unwrap_or(60_000)
            .clamp(1_000, 600_000);
        Ok(Self {
            connection_string,
            query,
            statement_timeout: Duration::from_millis(timeout_ms),
        })
    }

    pub fn common(config: &Value) -> Common {
        Common::from_config(config)
    }
}

impl Connector for DatabaseConnector {
    async fn pull(&self, sink: &mut Sink) -> Result<(), SyncError> {
        let options = PgConnectOptions::from_str(&self.connection_string)
            .map_err(|_| {
                SyncError::Config("config.connectionString is not a PostgreSQL URL".to_owned())
            })?
            .application_name("panels-sync")
            .disable_statement_logging();
        // The error text of a failed connection may quote the connection string: keep it out.
        let mut conn = tokio::time::timeout(Duration::from_secs(10), options.connect())
            .await
            .map_err(|_| {
                SyncError::Source("cannot reach the source database (timed out)".to_owned())
            })?
            .map_err(|e| {
                SyncError::Source(format!(
                    "cannot connect to the source database: {}",
                    redact(&e)
                ))
            })?;
        let mut tx = conn.begin().await.map_err(source)?;
        tx.execute("set transaction read only")
            .await
            .map_err(source)?;
        let timeout = format!(
            "set local statement_timeout = {}",
            self.statement_timeout.as_millis()
        );
        tx.execute(sqlx::AssertSqlSafe(timeout))
            .await
            .map_err(source)?;
        // The query is the source owner's own SQL against their own database, by design; the
        // read-only transaction and the timeout bound what it can do.
        let sql = format!("select row_to_json(q)::text from ({}) as q", self.query);
        let mut rows = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch(&mut *tx);
        let mut line = 0u64;
        while let Some(text) = rows.try_next().await.map_err(source)? {
            line += 1;
            match serde_json::from_str::<Value>(&text) {
                Ok(record) => sink.record(line, record).await?,
                Err(e) => {
                    sink.row_error(line, format!("row is not JSON: {e}"))
                        .await?
                }
            }
        }
        drop(rows);
        tx.rollback().await.map_err(source)?;
        let _ = conn.close().await;
        Ok(())
    }
}

fn source(e: sqlx::Error) -> SyncError {
    SyncError::Source(format!("source database: {}", redact(&e)))
}

/// Database errors as text, without anything that looks like a URL with credentials.
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => {
            let text = other.to_string();
            if text.contains("://") {
                "connection failed".to_owned()
            } else {
                text
            }
        }
    }
}
