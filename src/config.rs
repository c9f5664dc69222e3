//! One typed configuration, read once from the environment (and `.env` in development).
//!
//! Every variable has a default that works on a developer machine with PostgreSQL running, so
//! `cargo run --release` needs nothing else. A value that does not parse stops start-up with one
//! line naming the variable. Secrets are kept in `SecretString`, whose `Debug` prints a
//! placeholder, so the whole struct can be logged without leaking them.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

/// A 32-byte key for the secrets inside data-source configs, parsed from `ENCRYPTION_KEY` (and
/// `ENCRYPTION_KEYS`). `Debug` never shows it.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// 64 hex characters, or base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let bytes = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(raw).map_err(|e| e.to_string())?
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(raw).ok())
                .ok_or_else(|| "expected 64 hex characters or base64 of 32 bytes".to_owned())?
        };
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| format!("expected 32 bytes, got {}", bytes.len()))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(hidden)")
    }
}

/// Secrets published in this repository (`.env.example`, `docker-compose.yml`, the README):
/// production refuses to start with any of them.
const EXAMPLE_SECRETS: &[&str] = &[
    "change-me-to-a-long-random-string-of-at-least-32-chars",
    "compose-development-secret-change-me-0123456789",
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    "test-secret-0123456789abcdef0123456789abcdef",
    "postgres",
    "secret",
    "panels",
];

/// Whether a secret is one of the published examples (or says it is a placeholder).
fn is_example_secret(secret: &str) -> bool {
    let lower = secret.to_ascii_lowercase();
    EXAMPLE_SECRETS.contains(&secret) || lower.contains("change-me") || lower.contains("changeme")
}

/// Where the service runs: production refuses insecure shortcuts (a generated JWT secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// `LOG_FORMAT`: machine-readable JSON for production, coloured lines for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub host: IpAddr,
    pub port: u16,
    /// The owner (or superuser) connection: creates the database and runs migrations.
    pub database_url: SecretString,
    /// Optional separate login role for serving requests; without it the server switches every
    /// pooled connection to the non-owner runtime role with `SET ROLE`.
    pub database_app_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub database_acquire_timeout: Duration,
    pub redis_url: Option<SecretString>,
    pub redis_command_timeout: Duration,
    /// `CACHE_ENABLED=false` serves every read from PostgreSQL (an operator's switch, and the
    /// benchmark's way to measure the database path); rate limits and events still use Redis.
    pub cache_enabled: bool,
    pub jwt_secret: Option<SecretString>,
    pub jwt_access_ttl: Duration,
    pub jwt_refresh_ttl: Duration,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_public_keys_file: Option<String>,
    pub log_format: LogFormat,
    pub rust_log: String,
    /// Exact origins allowed by CORS; empty means no cross-origin access at all.
    pub cors_allowed_origins: Vec<String>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub rate_limit_tenant_rps: u32,
    pub rate_limit_tenant_burst: u32,
    pub rate_limit_login_per_minute: u32,
    /// The key for secrets inside data-source configs (every new encryption).
    pub encryption_key: Option<EncryptionKey>,
    /// Earlier keys (`ENCRYPTION_KEYS`), for decryption only until `panels rotate-secrets` ran.
    pub encryption_keys_old: Vec<EncryptionKey>,
    pub worker_concurrency: usize,
    /// Threads of the async runtime that serves requests and runs the sync workers; 0 means one
    /// per CPU core.
    pub runtime_threads: usize,
    /// How long a worker holds a sync run without renewing its lease.
    pub sync_lease: Duration,
    /// How long `POST .../sync` waits for the run before answering 202.
    pub sync_wait: Duration,
    /// Largest file upload (bytes), read as a stream.
    pub upload_max_bytes: usize,
    /// Largest pushed batch of records (bytes).
    pub push_max_bytes: usize,
    pub allow_private_source_hosts: bool,
    /// `false`: `POST /auth/register` creates no organisation (invitations still work).
    pub registration_enabled: bool,
    /// Registrations per minute per client address (checked before any password hashing).
    pub rate_limit_register_per_minute: u32,
    /// Failed API-key and token attempts per minute per client address.
    pub rate_limit_auth_failures_per_minute: u32,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers name the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Deadline of an upload (instead of `REQUEST_TIMEOUT_MS`).
    pub upload_timeout: Duration,
    /// Absolute lifetime of a login's refresh tokens: rotation never extends it.
    pub jwt_refresh_max_age: Duration,
    /// How long a statement of a row query may run before it is cancelled (503 `QUERY_TIMEOUT`).
    pub query_timeout: Duration,
    /// How long an export may run (its statement and its whole response).
    pub export_timeout: Duration,
    /// Exports streaming at once from this process (each holds a database connection).
    pub export_concurrency: usize,
    /// Panels with fewer rows get no index for their queries (a scan of them is fast already).
    pub index_min_rows: i64,
    /// How long events are kept for streams to resume from.
    pub event_retention_hours: u64,
    /// How often a tenant's feed reads the event log without a wake-up (Redis down or absent).
    pub event_poll: Duration,
    /// The comment an idle event stream sends to keep proxies from closing it.
    pub event_heartbeat: Duration,
    /// How long one event stream lives before it ends with `retry:` (the client resumes).
    pub event_stream_max: Duration,
    /// How often the worker evaluates again the cohorts and published views whose rules read
    /// relative dates (rows enter and leave them as days pass).
    pub membership_refresh: Duration,
    /// Event streams one tenant may hold open on one instance; more answer 429.
    pub event_max_streams_per_tenant: usize,
    /// Outgoing webhooks (`WEBHOOK_*`).
    pub webhooks: WebhookConfig,
    /// How long audit entries are kept: whole months older than this are dropped.
    pub audit_retention_days: u32,
    /// Audit entries waiting to be written (refused writes, exports, failed logins); more are
    /// dropped and counted.
    pub audit_buffer_size: usize,
    /// How long a buffered audit entry may wait before its batch is written.
    pub audit_flush: Duration,
}

/// The `WEBHOOK_*` settings (docs/webhooks.md).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Webhooks one tenant may have; one more answers 409.
    pub max_per_tenant: i64,
    /// Deliveries one tenant may have waiting; the events beyond are not queued (and counted).
    pub max_queued_per_tenant: i64,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// The delay before each attempt: the first is the first attempt's (0: at once), and a
    /// delivery gets as many attempts as there are steps.
    pub retry_schedule: Vec<Duration>,
    /// A webhook whose every attempt has failed for this long is disabled.
    pub disable_after: Duration,
    /// Deliveries one worker process makes at once (0: none in this process).
    pub concurrency: usize,
    /// How long finished deliveries and their attempts stay in the log.
    pub log_retention_hours: u64,
}

impl WebhookConfig {
    /// The default retry schedule: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    pub const DEFAULT_SCHEDULE: &'static str = "0,5s,5m,30m,2h,5h,10h,10h";

    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw =
            get("WEBHOOK_RETRY_SCHEDULE").unwrap_or_else(|| Self::DEFAULT_SCHEDULE.to_owned());
        let retry_schedule = parse_schedule(&raw).map_err(|reason| ConfigError {
            name: "WEBHOOK_RETRY_SCHEDULE",
            reason,
        })?;
        Ok(Self {
            max_per_tenant: ranged(get, "WEBHOOK_MAX_PER_TENANT", 100i64, 1, 100_000)?,
            max_queued_per_tenant: ranged(
                get,
                "WEBHOOK_MAX_QUEUED_PER_TENANT",
                10_000i64,
                1,
                100_000_000,
            )?,
            timeout: millis(get, "WEBHOOK_TIMEOUT_MS", 10_000, 100, 120_000)?,
            retry_schedule,
            disable_after: millis(
                get,
                "WEBHOOK_DISABLE_AFTER_MS",
                3 * 86_400_000,
                1,
                365 * 86_400_000,
            )?,
            concurrency: ranged(get, "WEBHOOK_CONCURRENCY", 4usize, 0, 256)?,
            log_retention_hours: ranged(get, "WEBHOOK_LOG_RETENTION_HOURS", 168u64, 1, 24 * 365)?,
        })
    }
}

/// `0,5s,5m,30m,2h`: delays with a unit (`ms`, `s`, `m`, `h`, `d`; a bare `0`), 1 to 20 of them,
/// each at most a day.
fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let steps = raw
        .split(',')
        .map(str::trim)
        .map(|step| {
            let split = step
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(step.len());
            let (number, unit) = step.split_at(split);
            let n: u64 = number
                .parse()
                .map_err(|_| format!("{step:?} is not a delay such as 5s, 5m or 2h"))?;
            let ms = match unit {
                "" if n == 0 => 0,
                "ms" => n,
                "s" => n.saturating_mul(1_000),
                "m" => n.saturating_mul(60_000),
                "h" => n.saturating_mul(3_600_000),
                "d" => n.saturating_mul(86_400_000),
                _ => return Err(format!("{step:?} is not a delay such as 5s, 5m or 2h")),
            };
            if ms > 86_400_000 {
                return Err(format!("{step:?} is longer than a day"));
            }
            Ok(Duration::from_millis(ms))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() || steps.len() > 20 {
        return Err("expected 1 to 20 delays".to_owned());
    }
    Ok(steps)
}

/// A configuration value that could not be used; `Display` is the one line start-up prints.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl Config {
    /// Reads the process environment, after loading `.env` if one is present.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is the normal case in production; a malformed one is worth stopping for.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            return Err(ConfigError {
                name: ".env",
                reason: err.to_string(),
            });
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any name → value lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let environment = match get("APP_ENV").as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError {
                    name: "APP_ENV",
                    reason: format!("expected development or production, got {other:?}"),
                });
            }
        };
        let log_format = match get("LOG_FORMAT").as_deref() {
            None => match environment {
                Environment::Production => LogFormat::Json,
                Environment::Development => LogFormat::Pretty,
            },
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError {
                    name: "LOG_FORMAT",
                    reason: format!("expected json or pretty, got {other:?}"),
                });
            }
        };

        let database_url = get("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/panels".to_owned());
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError {
                name: "DATABASE_URL",
                reason: "expected a postgres:// URL".to_owned(),
            });
        }
        let database_app_url = get("DATABASE_APP_URL");
        let redis_url = get("REDIS_URL");
        if let Some(url) = &redis_url
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            return Err(ConfigError {
                name: "REDIS_URL",
                reason: "expected a redis:// URL".to_owned(),
            });
        }

        let jwt_secret = get("JWT_SECRET");
        if let Some(secret) = &jwt_secret
            && secret.len() < 32
        {
            return Err(ConfigError {
                name: "JWT_SECRET",
                reason: "must be at least 32 characters".to_owned(),
            });
        }
        if jwt_secret.is_none() && environment == Environment::Production {
            return Err(ConfigError {
                name: "JWT_SECRET",
                reason: "is required when APP_ENV=production".to_owned(),
            });
        }

        let request_timeout = millis(&get, "REQUEST_TIMEOUT_MS", 10_000, 1, 600_000)?;
        let database_acquire_timeout =
            millis(&get, "DATABASE_ACQUIRE_TIMEOUT_MS", 2_000, 1, 600_000)?;
        if database_acquire_timeout >= request_timeout {
            return Err(ConfigError {
                name: "DATABASE_ACQUIRE_TIMEOUT_MS",
                reason: "must be shorter than REQUEST_TIMEOUT_MS".to_owned(),
            });
        }

        // The sync endpoint waits inside the request: it must answer before the request times out.
        let default_wait = request_timeout
            .as_millis()
            .saturating_sub(1000)
            .clamp(1, 20_000) as u64;
        let sync_wait = millis(&get, "SYNC_WAIT_MS", default_wait, 0, 600_000)?;
        if sync_wait >= request_timeout {
            return Err(ConfigError {
                name: "SYNC_WAIT_MS",
                reason: "must be shorter than REQUEST_TIMEOUT_MS".to_owned(),
            });
        }

        // A row query is cancelled before the request's own deadline, so the client reads why.
        let default_query = request_timeout
            .as_millis()
            .saturating_sub(500)
            .clamp(1, 5_000) as u64;
        let query_timeout = millis(&get, "QUERY_TIMEOUT_MS", default_query, 1, 600_000)?;
        if query_timeout >= request_timeout {
            return Err(ConfigError {
                name: "QUERY_TIMEOUT_MS",
                reason: "must be shorter than REQUEST_TIMEOUT_MS".to_owned(),
            });
        }

        let cors_allowed_origins = get("CORS_ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for origin in &cors_allowed_origins {
            if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError {
                    name: "CORS_ALLOWED_ORIGINS",
                    reason: format!("expected comma-separated http(s) origins, got {origin:?}"),
                });
            }
        }

        // Checked here so a bad key stops start-up with the variable's name, before any secret
        // could be written with a key nobody can reproduce.
        let encryption_key = get("ENCRYPTION_KEY")
            .map(|raw| {
                if environment == Environment::Production && is_example_secret(raw.trim()) {
                    return Err(
                        "is a published example value; generate a key of your own".to_owned()
                    );
                }
                EncryptionKey::parse(&raw)
            })
            .transpose()
            .map_err(|reason| ConfigError {
                name: "ENCRYPTION_KEY",
                reason,
            })?;
        if encryption_key.is_none() && environment == Environment::Production {
            return Err(ConfigError {
                name: "ENCRYPTION_KEY",
                reason: "is required when APP_ENV=production".to_owned(),
            });
        }
        let encryption_keys_old = get("ENCRYPTION_KEYS")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(EncryptionKey::parse)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|reason| ConfigError {
                name: "ENCRYPTION_KEYS",
                reason,
            })?
            .unwrap_or_default();

        if environment == Environment::Production {
            production_checks(
                &get,
                &database_url,
                jwt_secret.as_deref(),
                redis_url.as_deref(),
            )?;
        }
        if get("JWT_PUBLIC_KEYS_FILE").is_some() && get("JWT_AUDIENCE").is_none() {
            return Err(ConfigError {
                name: "JWT_AUDIENCE",
                reason: "is required with JWT_PUBLIC_KEYS_FILE: an identity provider signs tokens for many applications, and only the audience says a token is for this one".to_owned(),
            });
        }
        let trusted_proxies = get("TRUSTED_PROXIES")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse::<IpNet>()
                            .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                            .map_err(|_| format!("{p:?} is not an address or CIDR block"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|reason| ConfigError {
                name: "TRUSTED_PROXIES",
                reason,
            })?
            .unwrap_or_default();
        let jwt_refresh_ttl = Duration::from_secs(ranged(
            &get,
            "JWT_REFRESH_TTL",
            30 * 86_400u64,
            60,
            365 * 86_400,
        )?);
        let jwt_refresh_max_age = Duration::from_secs(ranged(
            &get,
            "JWT_REFRESH_MAX_AGE",
            90 * 86_400u64,
            60,
            3650 * 86_400,
        )?);
        if jwt_refresh_max_age < jwt_refresh_ttl {
            return Err(ConfigError {
                name: "JWT_REFRESH_MAX_AGE",
                reason: "must be at least JWT_REFRESH_TTL".to_owned(),
            });
        }

        Ok(Self {
            environment,
            host: number(&get, "HOST", IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))?,
            port: number(&get, "PORT", 3001u16)?,
            database_url: SecretString::from(database_url),
            database_app_url: database_app_url.map(SecretString::from),
            database_max_connections: ranged(&get, "DATABASE_MAX_CONNECTIONS", 10u32, 1, 1000)?,
            database_acquire_timeout,
            redis_url: redis_url.map(SecretString::from),
            redis_command_timeout: millis(&get, "REDIS_COMMAND_TIMEOUT_MS", 100, 1, 60_000)?,
            cache_enabled: boolean(&get, "CACHE_ENABLED", true)?,
            jwt_secret: jwt_secret.map(SecretString::from),
            jwt_access_ttl: Duration::from_secs(ranged(
                &get,
                "JWT_ACCESS_TTL",
                900u64,
                10,
                86_400,
            )?),
            jwt_refresh_ttl,
            jwt_refresh_max_age,
            jwt_issuer: get("JWT_ISSUER"),
            jwt_audience: get("JWT_AUDIENCE"),
            jwt_public_keys_file: get("JWT_PUBLIC_KEYS_FILE"),
            log_format,
            rust_log: get("RUST_LOG")
                .unwrap_or_else(|| "info,sqlx=warn,tower_http=info".to_owned()),
            cors_allowed_origins,
            request_timeout,
            max_body_bytes: ranged(&get, "MAX_BODY_BYTES", 1_048_576usize, 1024, 1 << 30)?,
            shutdown_timeout: millis(&get, "SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000)?,
            rate_limit_tenant_rps: ranged(&get, "RATE_LIMIT_TENANT_RPS", 500u32, 0, 1_000_000)?,
            rate_limit_tenant_burst: ranged(
                &get,
                "RATE_LIMIT_TENANT_BURST",
                1000u32,
                0,
                10_000_000,
            )?,
            rate_limit_login_per_minute: ranged(
                &get,
                "RATE_LIMIT_LOGIN_PER_MINUTE",
                10u32,
                0,
                100_000,
            )?,
            encryption_key,
            encryption_keys_old,
            worker_concurrency: ranged(&get, "WORKER_CONCURRENCY", 2usize, 0, 256)?,
            runtime_threads: ranged(&get, "RUNTIME_THREADS", 0usize, 0, 1024)?,
            sync_lease: millis(&get, "SYNC_LEASE_MS", 60_000, 500, 3_600_000)?,
            sync_wait,
            upload_max_bytes: ranged(
                &get,
                "UPLOAD_MAX_BYTES",
                256 * 1024 * 1024usize,
                1024,
                1 << 34,
            )?,
            push_max_bytes: ranged(&get, "PUSH_MAX_BYTES", 32 * 1024 * 1024usize, 1024, 1 << 30)?,
            allow_private_source_hosts: boolean(&get, "ALLOW_PRIVATE_SOURCE_HOSTS", false)?,
            registration_enabled: boolean(&get, "REGISTRATION_ENABLED", true)?,
            rate_limit_register_per_minute: ranged(
                &get,
                "RATE_LIMIT_REGISTER_PER_MINUTE",
                10u32,
                0,
                100_000,
            )?,
            rate_limit_auth_failures_per_minute: ranged(
                &get,
                "RATE_LIMIT_AUTH_FAILURES_PER_MINUTE",
                30u32,
                0,
                1_000_000,
            )?,
            trusted_proxies,
            upload_timeout: millis(&get, "UPLOAD_TIMEOUT_MS", 600_000, 1_000, 86_400_000)?,
            query_timeout,
            export_timeout: millis(&get, "EXPORT_TIMEOUT_MS", 600_000, 1_000, 86_400_000)?,
            export_concurrency: ranged(&get, "EXPORT_CONCURRENCY", 2usize, 1, 64)?,
            index_min_rows: ranged(&get, "WORKLIST_INDEX_MIN_ROWS", 20_000i64, 1, i64::MAX)?,
            event_retention_hours: ranged(&get, "EVENT_RETENTION_HOURS", 72u64, 1, 24 * 365)?,
            event_poll: millis(&get, "EVENT_POLL_MS", 1_000, 50, 60_000)?,
            event_heartbeat: millis(&get, "EVENT_HEARTBEAT_MS", 15_000, 100, 300_000)?,
            event_stream_max: millis(&get, "EVENT_STREAM_MAX_MS", 3_600_000, 100, 86_400_000)?,
            membership_refresh: millis(&get, "MEMBERSHIP_REFRESH_MS", 900_000, 100, 86_400_000)?,
            audit_retention_days: ranged(&get, "AUDIT_RETENTION_DAYS", 365u32, 1, 36_500)?,
            audit_buffer_size: ranged(&get, "AUDIT_BUFFER_SIZE", 10_000usize, 1, 1_000_000)?,
            audit_flush: millis(&get, "AUDIT_FLUSH_MS", 1_000, 10, 600_000)?,
            event_max_streams_per_tenant: ranged(
                &get,
                "EVENT_MAX_STREAMS_PER_TENANT",
                2_000usize,
                1,
                1_000_000,
            )?,
            webhooks: WebhookConfig::from_lookup(&get)?,
        })
    }

    /// The address to bind.
    pub fn bind_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.host, self.port)
    }

    /// The owner connection URL (creation of the database and migrations).
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}

/// What production refuses beyond what every environment checks: published example secrets,
/// secrets shorter than 32 bytes, and serving requests without a login role of their own.
fn production_checks(
    get: &impl Fn(&str) -> Option<String>,
    database_url: &str,
    jwt_secret: Option<&str>,
    redis_url: Option<&str>,
) -> Result<(), ConfigError> {
    if let Some(secret) = jwt_secret
        && is_example_secret(secret)
    {
        return Err(ConfigError {
            name: "JWT_SECRET",
            reason: "is a published example value; generate a secret of your own".to_owned(),
        });
    }
    let Some(app_url) = get("DATABASE_APP_URL") else {
        return Err(ConfigError {
            name: "DATABASE_APP_URL",
            reason: "is required when APP_ENV=production: requests must run as a login role without superuser or BYPASSRLS (switching the owner connection with SET ROLE can be undone with RESET ROLE)".to_owned(),
        });
    };
    let urls = [
        ("DATABASE_URL", Some(database_url.to_owned())),
        ("DATABASE_APP_URL", Some(app_url)),
        ("REDIS_URL", redis_url.map(str::to_owned)),
    ];
    for (name, url) in urls {
        let Some(url) = url else { continue };
        let password = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned));
        if let Some(password) = password {
            if is_example_secret(&password) {
                return Err(ConfigError {
                    name,
                    reason: "its password is a published example value".to_owned(),
                });
            }
            if password.len() < 32 {
                return Err(ConfigError {
                    name,
                    reason: "its password is shorter than 32 bytes".to_owned(),
                });
            }
        }
    }
    Ok(())
}

fn number<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| ConfigError {
            name,
            reason: format!("cannot parse {raw:?}"),
        }),
    }
}

fn ranged<T: FromStr + PartialOrd + std::fmt::Display + Copy>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let value = number(get, name, default)?;
    if value < min || value > max {
        return Err(ConfigError {
            name,
            reason: format!("must be between {min} and {max}, got {value}"),
        });
    }
    Ok(value)
}

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    ranged(get, name, default, min, max).map(Duration::from_millis)
}

fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(name).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError {
            name,
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_serve_a_developer_machine() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.port, 3001);
        assert_eq!(
            c.database_url(),
            "postgres://postgres@127.0.0.1:5432/panels"
        );
        assert!(c.database_acquire_timeout < c.request_timeout);
        assert!(c.redis_url.is_none());
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let err = config(&[("PORT", "eighty")]).expect_err("not a port");
        assert_eq!(err.name, "PORT");
        assert!(err.to_string().starts_with("invalid configuration: PORT"));
        assert_eq!(
            config(&[("LOG_FORMAT", "xml")]).expect_err("bad").name,
            "LOG_FORMAT"
        );
        assert_eq!(
            config(&[("MAX_BODY_BYTES", "-1")]).expect_err("bad").name,
            "MAX_BODY_BYTES"
        );
        assert_eq!(
            config(&[("CORS_ALLOWED_ORIGINS", "*")])
                .expect_err("bad")
                .name,
            "CORS_ALLOWED_ORIGINS"
        );
    }

    #[test]
    fn production_requires_a_real_jwt_secret() {
        assert_eq!(
            config(&[("APP_ENV", "production")]).expect_err("bad").name,
            "JWT_SECRET"
        );
        assert_eq!(
            config(&[("JWT_SECRET", "short")]).expect_err("bad").name,
            "JWT_SECRET"
        );
    }

    #[test]
    fn the_encryption_key_is_checked_and_required_in_production() {
        let secret = ("JWT_SECRET", "0123456789abcdef0123456789abcdef-topsecret");
        assert_eq!(
            config(&[("ENCRYPTION_KEY", "too-short")])
                .expect_err("bad")
                .name,
            "ENCRYPTION_KEY"
        );
        assert_eq!(
            config(&[("APP_ENV", "production"), secret])
                .expect_err("missing")
                .name,
            "ENCRYPTION_KEY"
        );
        let hex_key = "a0112233445566778899aabbccddeeff00112233445566778899aabbccddeef0";
        let app_url = (
            "DATABASE_APP_URL",
            "postgres://panels_login:Zx9aQ2kR7mT4vB8nC1dE6fG3hJ5kL0pq@db/panels",
        );
        config(&[
            ("APP_ENV", "production"),
            secret,
            app_url,
            ("ENCRYPTION_KEY", hex_key),
        ])
        .expect("a 64-hex-character key is valid");
        config(&[(
            "ENCRYPTION_KEY",
            "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=",
        )])
        .expect("base64 of 32 bytes is valid");
        config(&[("ENCRYPTION_KEYS", &format!("{hex_key}, bad"))])
            .expect_err("every old key is checked");
    }

    #[test]
    fn production_refuses_examples_short_secrets_and_the_owner_connection() {
        let secret = ("JWT_SECRET", "0123456789abcdef0123456789abcdef-topsecret");
        let key = (
            "ENCRYPTION_KEY",
            "a0112233445566778899aabbccddeeff00112233445566778899aabbccddeef0",
        );
        let app_url = (
            "DATABASE_APP_URL",
            "postgres://panels_login:Zx9aQ2kR7mT4vB8nC1dE6fG3hJ5kL0pq@db/panels",
        );
        let prod = ("APP_ENV", "production");
        let refused = |pairs: &[(&str, &str)]| config(pairs).expect_err("refused").name;
        assert_eq!(refused(&[prod, secret, key]), "DATABASE_APP_URL");
        assert_eq!(
            refused(&[
                prod,
                (
                    "JWT_SECRET",
                    "change-me-to-a-long-random-string-of-at-least-32-chars"
                ),
                key,
                app_url
            ]),
            "JWT_SECRET"
        );
        assert_eq!(
            refused(&[
                prod,
                secret,
                (
                    "ENCRYPTION_KEY",
                    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                ),
                app_url
            ]),
            "ENCRYPTION_KEY"
        );
        assert_eq!(
            refused(&[
                prod,
                secret,
                key,
                ("DATABASE_APP_URL", "postgres://app:short@db/panels")
            ]),
            "DATABASE_APP_URL"
        );
        assert_eq!(
            refused(&[
                prod,
                secret,
                key,
                app_url,
                ("REDIS_URL", "redis://:postgres@redis:6379")
            ]),
            "REDIS_URL"
        );
        config(&[prod, secret, key, app_url]).expect("a real production configuration");
        // Outside production the same shortcuts are allowed.
        config(&[("DATABASE_APP_URL", "postgres://app:short@db/panels")]).expect("development");
    }

    #[test]
    fn an_identity_provider_needs_an_audience_and_proxies_are_cidrs() {
        assert_eq!(
            config(&[("JWT_PUBLIC_KEYS_FILE", "/etc/jwks.json")])
                .expect_err("no audience")
                .name,
            "JWT_AUDIENCE"
        );
        let c = config(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7")]).expect("valid");
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[1].contains(&"192.168.1.7".parse::<IpAddr>().expect("ip")));
        assert_eq!(
            config(&[("TRUSTED_PROXIES", "proxy.local")])
                .expect_err("not a CIDR")
                .name,
            "TRUSTED_PROXIES"
        );
    }

    /// Every variable the configuration reads is documented in `.env.example` and the README's
    /// table, so an operator can find it.
    #[test]
    fn every_variable_is_documented() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let record = |pairs: &[(&str, &str)]| {
            let _ = Config::from_lookup(|name| {
                read.borrow_mut().insert(name.to_owned());
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            });
        };
        record(&[]);
        record(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-topsecret"),
            (
                "ENCRYPTION_KEY",
                "a0112233445566778899aabbccddeeff00112233445566778899aabbccddeef0",
            ),
        ]);
        let example = include_str!("../.env.example");
        let readme = include_str!("../README.md");
        for name in read.into_inner() {
            assert!(
                example.contains(&format!("{name}=")),
                "{name} is missing from .env.example"
            );
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} is missing from the README's table"
            );
        }
    }

    #[test]
    fn webhook_retry_schedules_are_delays_with_units() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.webhooks.retry_schedule.len(), 8);
        assert_eq!(c.webhooks.retry_schedule[0], Duration::ZERO);
        assert_eq!(c.webhooks.retry_schedule[2], Duration::from_secs(300));
        assert_eq!(c.webhooks.retry_schedule[7], Duration::from_secs(36_000));
        assert_eq!(
            parse_schedule("0, 200ms,1s").expect("valid"),
            vec![
                Duration::ZERO,
                Duration::from_millis(200),
                Duration::from_secs(1)
            ]
        );
        for bad in ["", "5", "5x", "-1s", "2d", "1s,,1s"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        assert_eq!(
            config(&[("WEBHOOK_RETRY_SCHEDULE", "soon")])
                .expect_err("bad")
                .name,
            "WEBHOOK_RETRY_SCHEDULE"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = config(&[
            ("DATABASE_URL", "postgres://u:hunter2hunter2@db/panels"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-topsecret"),
        ])
        .expect("valid");
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("topsecret"));
    }
}
