//! The PostgreSQL pool, migrations, and the tenant transaction every request runs in.
//!
//! Two lines of tenant isolation meet here. Repositories filter every query by tenant; below
//! them, row-level security checks the `app.tenant` setting, which [`begin`] sets for the
//! transaction only (`set_config(…, true)`), so a pooled connection never carries a tenant over
//! to the next request. The pool serves as the non-owner role `panels_app`, which RLS binds.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Executor, PgPool, Postgres, Transaction};

use crate::auth::TenantId;
use crate::config::Config;

/// The role requests run as: owns nothing, cannot bypass RLS (created by the first migration).
pub const APP_ROLE: &str = "panels_app";

pub type Tx = Transaction<'static, Postgres>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in `DATABASE_URL` when it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid URL")?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!("database name {name:?} must be letters, digits, '_' or '-'");
    }
    let mut admin = options
        .clone()
        .database("postgres")
        .log_statements(tracing::log::LevelFilter::Debug)
        .connect()
        .await
        .context("cannot connect to PostgreSQL")?;
    let exists: Option<i32> = sqlx::query_scalar("select 1 from pg_database where datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        // The name was checked above to hold only safe characters; identifiers cannot be bound.
        let create = format!("create database \"{name}\"");
        match admin.execute(AssertSqlSafe(create)).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another instance created it between our check and our create.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    Ok(())
}

/// Applies the embedded migrations as the owner (sqlx takes an advisory lock, so several
/// instances starting together apply them once).
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?.log_statements(tracing::log::LevelFilter::Debug);
    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL to migrate")?;
    MIGRATOR.run(&owner).await.context("migrations failed")?;
    owner.close().await;
    Ok(())
}

/// The request pool: as `DATABASE_APP_URL` when set, else as the owner switched to [`APP_ROLE`].
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let (url, switch_role) = match &config.database_app_url {
        Some(url) => (url.expose_secret().to_owned(), false),
        None => (config.database_url().to_owned(), true),
    };
    let options = PgConnectOptions::from_str(&url)?
        .application_name("panels")
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    let pool = pool_options(config, switch_role)
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL")?;
    check_request_role(&pool).await?;
    Ok(pool)
}

/// Refuses to serve requests as a role that row-level security does not bind: a superuser, a
/// role with BYPASSRLS, or a member of the tables' owner (which could `SET ROLE` to it).
pub async fn check_request_role(pool: &PgPool) -> anyhow::Result<()> {
    let (role, superuser, bypass, owner): (String, bool, bool, bool) = sqlx::query_as(
        "select current_user::text, r.rolsuper, r.rolbypassrls,
                coalesce(pg_has_role(current_user, t.tableowner, 'MEMBER'), false)
           from pg_roles r
           left join pg_tables t on t.schemaname = 'public' and t.tablename = 'panel'
          where r.rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .context("cannot read the request role")?;
    if superuser || bypass || owner {
        anyhow::bail!(
            "requests would run as {role:?}, which {}: row-level security would not bind them; set DATABASE_APP_URL to a login role that is a member of panels_app only",
            if superuser {
                "is a superuser"
            } else if bypass {
                "has BYPASSRLS"
            } else {
                "can become the owner of the tables"
            }
        );
    }
    Ok(())
}

/// Pool settings shared by the server and the tests.
pub fn pool_options(config: &Config, switch_role: bool) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(1)
        .acquire_timeout(config.database_acquire_timeout)
        // A ping before every checkout is a round trip per request; broken connections surface
        // as errors on first use and are replaced, which is cheaper than testing all of them.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if switch_role {
                    conn.execute("set role panels_app").await?;
                }
                // Guard rails: no request may hold locks or run forever.
                conn.execute("set statement_timeout = '15s'; set lock_timeout = '5s'; set idle_in_transaction_session_timeout = '30s'").await?;
                Ok(())
            })
        })
}

/// Ends a transaction that only read, without waiting for the database. The `ROLLBACK` that
/// dropping it queues goes out with the `Sync` sqlx sends whenever a connection returns to the
/// pool (its release check), so a read answers right after its last query rather than after one
/// more round trip for `COMMIT`. Rolling back a transaction that wrote nothing changes nothing,
/// the transaction-local tenant included. Never for a transaction that wrote.
pub fn end_read(tx: Tx) {
    drop(tx);
}

/// The request pool, with a gauge of the requests waiting for a connection.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    waiting: prometheus::IntGauge,
}

impl Db {
    pub fn new(pool: PgPool, waiting: prometheus::IntGauge) -> Self {
        Self { pool, waiting }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a transaction bound to `tenant` for row-level security, in one round trip.
    pub async fn begin(&self, tenant: &TenantId) -> Result<Tx, sqlx::Error> {
        // `TenantId` admits only [A-Za-z0-9._~-] (checked when it is built), so it can stand in a
        // literal; this saves the extra round trip a bound `set_config` would cost per request.
        let sql = format!(
            "begin; select set_config('app.tenant', '{}', true)",
            tenant.as_str()
        );
        self.waiting.inc();
        let tx = self.pool.begin_with(AssertSqlSafe(sql)).await;
        self.waiting.dec();
        tx
    }

    /// Begins a read-only transaction bound to `tenant` that sees one snapshot for all its
    /// statements (a page and its count agree) and cancels a statement running past `timeout`,
    /// in one round trip.
    pub async fn begin_read(
        &self,
        tenant: &TenantId,
        timeout: Duration,
    ) -> Result<Tx, sqlx::Error> {
        // As in `begin`: the tenant's alphabet cannot leave the literal; the timeout is a number.
        // random_page_cost: the rows a worklist reads are in memory far more often than not (the
        // default, 4, prices a random read as on a spinning disk and steers the planner away from
        // the indexes the engine builds).
        let sql = format!(
            "begin isolation level repeatable read read only; select set_config('app.tenant', '{}', true), set_config('statement_timeout', '{}', true), set_config('random_page_cost', '1.1', true)",
            tenant.as_str(),
            timeout.as_millis().max(1)
        );
        self.waiting.inc();
        let tx = self.pool.begin_with(AssertSqlSafe(sql)).await;
        self.waiting.dec();
        tx
    }

    /// A connection outside any transaction and bound to no tenant: row-level security shows it
    /// nothing until a statement binds one (the one-round-trip read functions do).
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
        self.waiting.inc();
        let conn = self.pool.acquire().await;
        self.waiting.dec();
        conn
    }

    /// Begins a transaction with no tenant: only the identity functions (security definer) answer.
    pub async fn begin_anonymous(&self) -> Result<Tx, sqlx::Error> {
        self.waiting.inc();
        let tx = self.pool.begin().await;
        self.waiting.dec();
        tx
    }
}
