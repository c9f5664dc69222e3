//! `database`: a SELECT run against the source's own PostgreSQL, on a connection made for this
//! sync only, inside a READ ONLY transaction with a statement timeout, rows streamed as JSON.
//!
//! The connection string is the tenant's, so it is parsed here, strictly, and nothing else of
//! the driver's defaults is used: a `postgres://` URL with exactly one host (a name or an IP
//! literal; no unix socket, no `host=`/`hostaddr=` parameter, no host list), an explicit user,
//! and of the parameters only `sslmode`. The server's own environment and files (`PGPASSWORD`,
//! `~/.pgpass`, `PGSSLCERT`, a default socket) never flow into a tenant's connection: the
//! options are built field by field, the password always set. The host goes through the address
//! policy of [`crate::netguard`] when the source is stored and again at every connect, and the
//! connection is made to the address that was checked (except with `sslmode=verify-full`, where
//! the certificate must match the name, which an internal server's cannot).

use std::time::Duration;

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Executor};

use super::{Common, Connector, Sink, SyncError, required_str};
use crate::netguard::{self, Blocked};

/// A `database` source's connection string, parsed.
#[derive(Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub database: String,
    pub ssl_mode: PgSslMode,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses a connection string; the error is a message for `config.connectionString` that
    /// never quotes the string (it holds a password).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw.trim()).map_err(|_| {
            "must be a postgres:// URL (postgres://user:password@host:5432/database)".to_owned()
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err("must be a postgres:// or postgresql:// URL".to_owned());
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => {
                let decoded = percent_decode(name);
                if decoded.contains(',') {
                    return Err(
                        "must name exactly one host (host lists are not supported)".to_owned()
                    );
                }
                if decoded.starts_with('/')
                    || decoded.contains('%')
                    || !netguard::is_host_name(&decoded)
                {
                    return Err(
                        "must name a host by DNS name or IP address (no unix socket)".to_owned(),
                    );
                }
                decoded
            }
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("must name a host (postgres://user@host/database)".to_owned()),
        };
        let mut ssl_mode = PgSslMode::Prefer;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "sslmode" | "ssl-mode" => {
                    ssl_mode = value.parse().map_err(|_| {
                        "sslmode must be disable, allow, prefer, require, verify-ca or verify-full"
                            .to_owned()
                    })?;
                }
                // Harmless, and set by us anyway.
                "application_name" | "connect_timeout" => {}
                "host" | "hostaddr" => {
                    return Err(format!(
                        "the {key} parameter is not allowed: name the host in the URL"
                    ));
                }
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(format!(
                        "the parameter {shown:?} is not allowed (only sslmode)"
                    ));
                }
            }
        }
        let user = percent_decode(url.username());
        if user.is_empty() {
            return Err("must name the user (postgres://user:password@host/database)".to_owned());
        }
        let password = url.password().map(percent_decode);
        let path = percent_decode(url.path().trim_start_matches('/'));
        let database = if path.is_empty() { user.clone() } else { path };
        Ok(Self {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database,
            ssl_mode,
        })
    }

    /// Where the connection goes: the address policy's unit of comparison (a kept secret must
    /// not follow a source to another destination).
    pub fn destination(&self) -> (String, u16, String) {
        (
            self.host.to_ascii_lowercase(),
            self.port,
            self.database.clone(),
        )
    }

    /// The driver's options, every field set from this target: nothing comes from the
    /// environment or from files of the server.
    fn options(&self, connect_host: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(connect_host)
            .port(self.port)
            .username(&self.user)
            .password(self.password.as_deref().unwrap_or(""))
            .database(&self.database)
            .ssl_mode(self.ssl_mode)
            .application_name("panels-sync")
            .disable_statement_logging()
    }

    /// Resolves the host under the address policy and connects to an address that passed it,
    /// within `timeout`.
    pub async fn connect(
        &self,
        allow_private: bool,
        timeout: Duration,
    ) -> Result<sqlx::PgConnection, SyncError> {
        let addrs = netguard::resolve(&self.host, self.port, allow_private)
            .await
            .map_err(blocked)?;
        let connect_host = if allow_private || matches!(self.ssl_mode, PgSslMode::VerifyFull) {
            self.host.clone()
        } else {
            addrs[0].ip().to_string()
        };
        let options = self.options(&connect_host);
        // The error of a failed connection (refused, reset, timed out, bad password) is not
        // passed on: it would tell a tenant what listens where.
        match tokio::time::timeout(timeout, options.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                tracing::info!(error = %redact(&e), "a database source could not be reached");
                Err(SyncError::Source(netguard::UNREACHABLE.to_owned()))
            }
            Err(_) => Err(SyncError::Source(netguard::UNREACHABLE.to_owned())),
        }
    }
}

/// A policy refusal is the configuration's fault (the run ends at once); a name that does not
/// resolve may resolve later (the run retries).
pub fn blocked(reason: Blocked) -> SyncError {
    match reason {
        Blocked::Refused => SyncError::Config(netguard::REFUSED.to_owned()),
        Blocked::Unresolvable => SyncError::Source(netguard::UNREACHABLE.to_owned()),
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub struct DatabaseConnector {
    target: PgTarget,
    query: String,
    statement_timeout: Duration,
    allow_private: bool,
}

impl DatabaseConnector {
    pub fn from_config(config: &Value, allow_private: bool) -> Result<Self, SyncError> {
        let target = PgTarget::parse(required_str(config, "connectionString")?)
            .map_err(|reason| SyncError::Config(format!("config.connectionString {reason}")))?;
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
            target,
            query,
            statement_timeout: Duration::from_millis(timeout_ms),
            allow_private,
        })
    }

    pub fn common(config: &Value) -> Common {
        Common::from_config(config)
    }
}

impl Connector for DatabaseConnector {
    async fn pull(&self, sink: &mut Sink) -> Result<(), SyncError> {
        let connect_timeout = self.statement_timeout.min(Duration::from_secs(10));
        let mut conn = self
            .target
            .connect(self.allow_private, connect_timeout)
            .await?;
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

/// An error of the tenant's own database once connected (their query, their data): its message
/// helps them and reveals nothing of ours. Anything else is "unreachable".
fn source(e: sqlx::Error) -> SyncError {
    match &e {
        sqlx::Error::Database(db) => {
            SyncError::Source(format!("source database: {}", db.message()))
        }
        _ => SyncError::Source(netguard::UNREACHABLE.to_owned()),
    }
}

/// Database errors as text for our own log, without anything that looks like a URL.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> String {
        PgTarget::parse(raw).expect_err(raw)
    }

    #[test]
    fn only_one_named_host_and_sslmode_are_accepted() {
        let t =
            PgTarget::parse("postgres://reader:p%40ss@db.example.com:6543/clinic?sslmode=require")
                .expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.database.as_str()),
            ("db.example.com", 6543, "clinic")
        );
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert!(matches!(t.ssl_mode, PgSslMode::Require));
        let t = PgTarget::parse("postgresql://u@[2606:4700::1]/").expect("v6");
        assert_eq!(
            (t.host.as_str(), t.database.as_str()),
            ("2606:4700::1", "u")
        );

        assert!(refused("postgres://%2Fvar%2Frun%2Fpostgresql/postgres").contains("socket"));
        assert!(refused("postgres://u@x/db?host=/var/run/postgresql").contains("host"));
        assert!(refused("postgres://u@example.com/db?hostaddr=127.0.0.1").contains("hostaddr"));
        assert!(refused("postgres://u@a.example,b.example/db").contains("one host"));
        assert!(refused("postgres:///postgres").contains("host"));
        assert!(refused("postgres://example.com/db").contains("user"));
        assert!(
            refused("postgres://u@example.com/db?sslrootcert=/etc/ssl/key").contains("sslrootcert")
        );
        assert!(refused("mysql://u@example.com/db").contains("postgres"));
        assert!(refused("host=localhost user=postgres").contains("URL"));
        // The message never quotes the string, which holds the password.
        assert!(!refused("postgres://u:hunter2@a,b/db").contains("hunter2"));
    }
}
