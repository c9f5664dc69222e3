//! The app-spawning helper and a small typed client.
//!
//! `TestApp::spawn()` creates a fresh database (created and migrated by the same start-up code
//! production runs), starts the real router on 127.0.0.1 with a random port, and talks to it
//! with reqwest. Databases are named `panels_test_*`; `scripts/test` removes leftovers.

#![allow(dead_code)] // not every test file uses every helper

use std::collections::HashMap;
use std::net::SocketAddr;

use panels::auth::Role;
use panels::config::Config;
use panels::state::AppState;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// The PostgreSQL server the tests use (its maintenance database).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if url.is_empty() => None,
        Ok(url) => Some(url),
        Err(_) => Some("redis://127.0.0.1:6379".to_owned()),
    }
}

fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

fn fresh_name() -> String {
    format!("panels_test_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh, migrated database; the pool connects as the owner.
pub async fn migrated_pool() -> PgPool {
    let url = database_url(&fresh_name());
    panels::db::ensure_database(&url)
        .await
        .expect("create test database");
    panels::db::migrate(&url)
        .await
        .expect("migrate test database");
    PgPool::connect(&url)
        .await
        .expect("connect to test database")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Spawns with extra configuration (`NAME`, `value`) on top of the test defaults.
    pub async fn spawn_with(vars: &[(&str, &str)]) -> Self {
        let database_url = database_url(&fresh_name());
        Self::spawn_on(&database_url, vars).await
    }

    /// Spawns with the server's clock stopped at `at` (relative dates, NOW() and TODAY()).
    pub async fn spawn_at(at: chrono::DateTime<chrono::Utc>, vars: &[(&str, &str)]) -> Self {
        let database_url = database_url(&fresh_name());
        let config = Self::config(&database_url, vars);
        let state = panels::build_state(config).await.expect("start-up");
        Self::serve(state.with_clock(at), database_url).await
    }

    /// Spawns another instance on an existing database (several instances, one database).
    pub async fn spawn_on(database_url: &str, vars: &[(&str, &str)]) -> Self {
        let config = Self::config(database_url, vars);
        let state = panels::build_state(config).await.expect("start-up");
        Self::serve(state, database_url.to_owned()).await
    }

    /// The test defaults with `vars` on top (an empty value removes a default). With `TEST_LOG`
    /// set (a `RUST_LOG` filter), the servers' logs go to the test's output.
    fn config(database_url: &str, vars: &[(&str, &str)]) -> Config {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut env: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".to_owned(), database_url.to_owned()),
            ("JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
            ("DATABASE_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
            ("RATE_LIMIT_TENANT_RPS".to_owned(), "0".to_owned()),
            ("RATE_LIMIT_LOGIN_PER_MINUTE".to_owned(), "0".to_owned()),
            ("ALLOW_PRIVATE_SOURCE_HOSTS".to_owned(), "true".to_owned()),
            ("SHUTDOWN_TIMEOUT_MS".to_owned(), "2000".to_owned()),
        ]);
        if let Some(redis) = redis_url() {
            env.insert("REDIS_URL".to_owned(), redis);
        }
        for (k, v) in vars {
            if v.is_empty() {
                env.remove(*k);
            } else {
                env.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        Config::from_lookup(|name| env.get(name).cloned()).expect("valid test configuration")
    }

    async fn serve(state: AppState, database_url: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state_for_server = state.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let workers = panels::spawn_workers(&state, state.config.worker_concurrency, stop.clone());
        let server = tokio::spawn(async move {
            let served = panels::serve_on(state_for_server, listener, async {
                let _ = rx.await;
            })
            .await;
            stop.cancel();
            for worker in workers {
                let _ = worker.await;
            }
            served
        });
        Self {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().build().expect("client"),
            state,
            database_url,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and waits for it to drain.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// The owner connection to this app's database (for assertions beneath the API).
    pub async fn owner_pool(&self) -> PgPool {
        PgPool::connect(&self.database_url)
            .await
            .expect("owner connection")
    }

    pub fn request(&self, method: Method, path: &str) -> Req {
        Req {
            inner: self.client.request(method, format!("{}{path}", self.base)),
        }
    }

    pub fn get(&self, path: &str) -> Req {
        self.request(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> Req {
        self.request(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> Req {
        self.request(Method::PUT, path)
    }
    pub fn delete(&self, path: &str) -> Req {
        self.request(Method::DELETE, path)
    }

    /// Creates a panel as `token` through the API; answers its id.
    pub async fn create_panel(&self, token: &str, name: &str) -> i64 {
        let res = self
            .post("/api/panels")
            .bearer(token)
            .json(&json!({ "name": name }))
            .send()
            .await;
        assert_eq!(res.status, 201, "create panel {name}: {}", res.text);
        res.body["id"].as_i64().expect("panel id")
    }

    /// Adds a data source of `kind` with `config` to a panel; answers its id.
    pub async fn create_source(&self, token: &str, panel: i64, kind: &str, config: Value) -> i64 {
        let res = self
            .post(&format!("/api/panels/{panel}/datasources"))
            .bearer(token)
            .json(&json!({"type": kind, "config": config}))
            .send()
            .await;
        assert_eq!(res.status, 201, "create {kind} source: {}", res.text);
        res.body["id"].as_i64().expect("source id")
    }

    /// Registers a new organisation with its admin through the API; answers the admin's session.
    pub async fn register_tenant(&self, slug: &str) -> Session {
        let email = format!("admin@{slug}.example");
        let res = self
            .post("/api/auth/register")
            .json(&json!({"email": email, "password": "correct horse battery", "tenantSlug": slug, "tenantName": slug}))
            .send()
            .await;
        assert_eq!(res.status, 201, "register {slug}: {}", res.body);
        Session::from_tokens(&res.body)
    }
}

/// Signs an access token as the server would, for a user that need not exist.
pub fn token_for(tenant: &str, email: &str, role: Role) -> String {
    token_with(&json!({
        "sub": format!("user-{email}"),
        "email": email,
        "tenant": tenant,
        "role": role.as_str(),
    }))
}

/// Signs arbitrary claims with the test secret (HS256); adds `exp`/`iat` unless present.
pub fn token_with(claims: &Value) -> String {
    let mut claims = claims.clone();
    let now = panels::auth::jwt::now_secs();
    if let Some(map) = claims.as_object_mut() {
        map.entry("exp").or_insert(json!(now + 600));
        map.entry("iat").or_insert(json!(now));
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: i64,
    pub email: String,
    pub tenant: String,
}

impl Session {
    pub fn from_tokens(body: &Value) -> Self {
        Self {
            access: body["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
            refresh: body["refreshToken"]
                .as_str()
                .expect("refreshToken")
                .to_owned(),
            user_id: body["user"]["id"].as_i64().expect("user.id"),
            email: body["user"]["email"]
                .as_str()
                .expect("user.email")
                .to_owned(),
            tenant: body["user"]["tenant"]
                .as_str()
                .expect("user.tenant")
                .to_owned(),
        }
    }
}

pub struct Req {
    inner: reqwest::RequestBuilder,
}

impl Req {
    pub fn bearer(self, token: &str) -> Self {
        Self {
            inner: self.inner.bearer_auth(token),
        }
    }
    pub fn header(self, name: &str, value: &str) -> Self {
        Self {
            inner: self.inner.header(name, value),
        }
    }
    pub fn json(self, body: &Value) -> Self {
        Self {
            inner: self.inner.json(body),
        }
    }
    pub fn body(self, content_type: &str, body: impl Into<reqwest::Body>) -> Self {
        Self {
            inner: self.inner.header("content-type", content_type).body(body),
        }
    }
    pub async fn send(self) -> Res {
        let response = self.inner.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Res {
            status,
            headers,
            body,
            text,
        }
    }
}

#[derive(Debug)]
pub struct Res {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the one error envelope with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.body["statusCode"], status,
            "envelope statusCode: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "envelope code: {}", self.text);
        assert!(
            self.body["message"].is_string(),
            "envelope message: {}",
            self.text
        );
        assert!(
            self.body["error"].is_string(),
            "envelope error: {}",
            self.text
        );
        assert!(
            self.body["requestId"].is_string(),
            "envelope requestId: {}",
            self.text
        );
    }
}
