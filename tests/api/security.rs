//! The outside security review (issue 16), item by item, as an attacker would try it over HTTP
//! or through the real binary. The address policy of data sources is in `sync.rs`, kept secrets
//! and URL credentials in `datasources.rs`, tenant-binding functions in `isolation.rs`, formula
//! cost in `rows.rs`.

use std::time::Duration;

use panels::auth::Role;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{self, Res, TestApp, token_for, token_with};

async fn register(app: &TestApp, slug: &str, from: Option<&str>) -> Res {
    let mut req = app.post("/api/auth/register").json(&json!({
        "email": format!("boss@{slug}.example"),
        "password": "correct horse battery",
        "tenantSlug": slug,
        "tenantName": slug,
    }));
    if let Some(address) = from {
        req = req.header("x-forwarded-for", address);
    }
    req.send().await
}

/// Item 2: a tenant whose users sign in with the identity provider's tokens has no `tenants` row;
/// registering its slug used to make the caller its admin. A slug seen in any verified token, or
/// holding any data, is taken.
#[tokio::test]
async fn registration_cannot_take_over_a_tenant_known_from_tokens_or_data() {
    let app = TestApp::spawn().await;
    let idp_admin = token_for("idp-clinic", "admin@idp-clinic.example", Role::Admin);
    let res = app
        .post("/api/panels")
        .bearer(&idp_admin)
        .json(&json!({"name": "Diabetes follow-up"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    register(&app, "idp-clinic", None)
        .await
        .assert_error(409, "TENANT_EXISTS");

    // Data written before tokens were noted (a tenant nobody has signed in to since).
    let pool = app.owner_pool().await;
    sqlx::query("insert into panel (tenant_id, user_id, name) values ('quiet-clinic', 'u', 'Old')")
        .execute(&pool)
        .await
        .expect("seed");
    register(&app, "quiet-clinic", None)
        .await
        .assert_error(409, "TENANT_EXISTS");
    // Only a token's signature makes a slug known, not a refused token.
    let forged =
        token_with(&json!({"sub": "x", "tenant": "forged-clinic", "role": "admin", "exp": 1}));
    assert_eq!(
        app.get("/api/panels").bearer(&forged).send().await.status,
        401
    );

    let res = register(&app, "forged-clinic", None).await;
    assert_eq!(res.status, 201, "a new slug registers: {}", res.text);
    register(&app, "forged-clinic", None)
        .await
        .assert_error(409, "TENANT_EXISTS");
    // The panel of the identity provider's tenant stayed invisible to the would-be admin.
    let session = helpers::Session::from_tokens(&res.body);
    let listed = app.get("/api/panels").bearer(&session.access).send().await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        listed.text
    );
}

/// Item 2: with `REGISTRATION_ENABLED=false` nobody creates an organisation over HTTP; an
/// invitation still admits its invitee.
#[tokio::test]
async fn closed_registration_admits_invitations_only() {
    let app = TestApp::spawn_with(&[("REGISTRATION_ENABLED", "false")]).await;
    register(&app, "newcomer", None)
        .await
        .assert_error(403, "REGISTRATION_CLOSED");
    let admin = token_for("closed-org", "admin@closed.example", Role::Admin);
    let res = app
        .post("/api/auth/invitations")
        .bearer(&admin)
        .json(&json!({"email": "new@closed.example", "role": "builder"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "new@closed.example", "password": "correct horse battery", "invitationToken": res.body["token"]}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["user"]["tenant"], "closed-org");
}

/// Items 2 and 8: registrations are limited per client address (with `Retry-After`); behind a
/// trusted proxy the address is the one the proxy names, from anyone else the header is ignored.
#[tokio::test]
async fn registrations_and_logins_are_limited_per_real_client_address() {
    let app = TestApp::spawn_with(&[
        ("RATE_LIMIT_REGISTER_PER_MINUTE", "2"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    assert_eq!(register(&app, "r1", Some("198.51.100.1")).await.status, 201);
    assert_eq!(register(&app, "r2", Some("198.51.100.1")).await.status, 201);
    let res = register(&app, "r3", Some("198.51.100.1")).await;
    res.assert_error(429, "RATE_LIMITED");
    assert!(res.header("retry-after").is_some());
    // Another client behind the same proxy has a bucket of its own.
    assert_eq!(register(&app, "r3", Some("198.51.100.2")).await.status, 201);

    // Logins count per address too (and per account: every attempt here names another one).
    let login = |from: &'static str, n: u32| {
        app.post("/api/auth/login")
            .header("x-forwarded-for", from)
            .json(&json!({"email": format!("nobody{n}@nowhere.example"), "password": "wrong password"}))
            .send()
    };
    assert_eq!(login("203.0.113.1", 1).await.status, 401);
    assert_eq!(login("203.0.113.1", 2).await.status, 401);
    assert_eq!(login("203.0.113.1", 3).await.status, 429);
    assert_eq!(
        login("203.0.113.2", 4).await.status,
        401,
        "another client, another bucket"
    );

    // Without the proxy trusted, the header is the client's own words and counts for nothing.
    let direct = TestApp::spawn_with(&[("RATE_LIMIT_REGISTER_PER_MINUTE", "1")]).await;
    assert_eq!(register(&direct, "d1", Some("192.0.2.1")).await.status, 201);
    register(&direct, "d2", Some("192.0.2.2"))
        .await
        .assert_error(429, "RATE_LIMITED");
}

/// Item 2: `panels create-admin` makes the first admin of an organisation from the command line
/// (the password on standard input), who then signs in over HTTP.
#[tokio::test]
async fn create_admin_makes_the_first_admin_without_registration() {
    use std::io::Write;
    let app = TestApp::spawn_with(&[("REGISTRATION_ENABLED", "false")]).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panels"))
        .args([
            "create-admin",
            "--tenant",
            "cli-org",
            "--email",
            "Boss@CLI.example",
        ])
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .env("JWT_SECRET", helpers::JWT_SECRET)
        .env("WORKER_CONCURRENCY", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long enough password\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let res = app
        .post("/api/auth/login")
        .json(&json!({"email": "boss@cli.example", "password": "a long enough password"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["user"]["role"], "admin");
    assert_eq!(res.body["user"]["tenant"], "cli-org");
}

async fn api_key(app: &TestApp, token: &str, scope: &str) -> String {
    let res = app
        .post("/api/api-keys")
        .bearer(token)
        .json(&json!({"name": "client", "scope": scope}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["key"].as_str().expect("key").to_owned()
}

/// Item 5: a read-only key could mark notifications read. Every route that writes now refuses a
/// read-only key, whatever the route: checked against every operation of the OpenAPI document.
#[tokio::test]
async fn a_read_only_key_is_refused_on_every_route_that_writes() {
    let app = TestApp::spawn().await;
    let admin = token_for("scoped", "admin@scoped.example", Role::Admin);
    let key = api_key(&app, &admin, "read").await;
    let doc = serde_json::to_value(panels::router::openapi()).expect("document");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/") {
            continue;
        }
        for method in item.as_object().expect("item").keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            // The auth routes before a principal exists (register, login, refresh, logout) are
            // documented without security.
            if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
                || !crate::operations::authenticated(&doc, &item[method.as_str().to_lowercase()])
            {
                continue;
            }
            let concrete = path
                .split('/')
                .map(|seg| match seg {
                    "{resourceType}" => "panel",
                    s if s.starts_with('{') => "1",
                    s => s,
                })
                .collect::<Vec<_>>()
                .join("/");
            let res = app
                .request(method.clone(), &concrete)
                .header("x-api-key", &key)
                .json(&json!({}))
                .send()
                .await;
            if path.ends_with("/formulas/check") || path.ends_with("/rows/query") {
                assert_ne!(
                    res.status, 403,
                    "{method} {path} only computes: {}",
                    res.text
                );
            } else {
                assert_eq!(
                    res.status, 403,
                    "{method} {path} ({concrete}): {}",
                    res.text
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations checked");
    let res = app
        .put("/api/notifications/views/mark-read")
        .header("x-api-key", &key)
        .json(&json!({"viewId": 1}))
        .send()
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
}

/// Item 5: a key acts for its creator, so it stops working when the creator is removed or can
/// no longer do what the key does (builder), for local accounts and identity-provider members.
#[tokio::test]
async fn a_key_stops_working_when_its_creator_is_removed_or_demoted() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    let works = |key: String| {
        let app = &app;
        async move {
            app.get("/api/panels")
                .header("x-api-key", &key)
                .send()
                .await
                .status
        }
    };
    // A local admin.
    let boss = app.register_tenant("keyed").await;
    let key = api_key(&app, &boss.access, "write").await;
    assert_eq!(works(key.clone()).await, 200);
    sqlx::query("update users set role = 'builder' where id = $1")
        .bind(boss.user_id)
        .execute(&pool)
        .await
        .expect("demote");
    assert_eq!(
        works(key.clone()).await,
        200,
        "a builder still covers the key"
    );
    sqlx::query("update users set role = 'user' where id = $1")
        .bind(boss.user_id)
        .execute(&pool)
        .await
        .expect("demote");
    assert_eq!(works(key.clone()).await, 401);

    // A second local admin, removed.
    let other = app.post("/api/auth/register").json(&json!({"email": "two@keyed2.example", "password": "correct horse battery", "tenantSlug": "keyed2"})).send().await;
    let other = helpers::Session::from_tokens(&other.body);
    let key = api_key(&app, &other.access, "read").await;
    assert_eq!(works(key.clone()).await, 200);
    sqlx::query("delete from users where id = $1")
        .bind(other.user_id)
        .execute(&pool)
        .await
        .expect("remove");
    assert_eq!(works(key.clone()).await, 401);

    // An identity provider's admin, whose next token says they are a plain user now.
    let idp = json!({"sub": "member-7", "email": "admin@idp.example", "tenant": "idp-keys", "role": "admin"});
    let key = api_key(&app, &token_with(&idp), "write").await;
    assert_eq!(works(key.clone()).await, 200);
    let demoted = json!({"sub": "member-7", "email": "admin@idp.example", "tenant": "idp-keys", "role": "user"});
    assert_eq!(
        app.get("/api/auth/me")
            .bearer(&token_with(&demoted))
            .send()
            .await
            .status,
        200
    );
    assert_eq!(works(key).await, 401);
}

/// Item 9: random API keys each cost a pooled look-up. Failed attempts now count per client
/// address, and past the limit are refused before any look-up, even with a valid key, while
/// other clients are served.
#[tokio::test]
async fn random_api_keys_are_cut_off_per_address_before_they_reach_the_pool() {
    let app = TestApp::spawn_with(&[
        ("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "5"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let admin = token_for("guessed", "admin@guessed.example", Role::Admin);
    let key = api_key(&app, &admin, "read").await;
    let from = |address: &'static str, key: String| {
        let app = &app;
        async move {
            app.get("/api/panels")
                .header("x-forwarded-for", address)
                .header("x-api-key", &key)
                .send()
                .await
        }
    };
    for i in 0..5 {
        let guess = format!("pnl_guess{i:0>40}");
        from("203.0.113.66", guess)
            .await
            .assert_error(401, "INVALID_API_KEY");
    }
    let res = from("203.0.113.66", "pnl_guess-six".to_owned()).await;
    res.assert_error(429, "RATE_LIMITED");
    assert!(res.header("retry-after").is_some());
    // Cut off before the look-up: the real key from that address is refused too, for now.
    assert_eq!(from("203.0.113.66", key.clone()).await.status, 429);
    assert_eq!(
        from("203.0.113.67", key).await.status,
        200,
        "other clients are served"
    );
    // Bad bearer tokens count the same way.
    for _ in 0..6 {
        let _ = app
            .get("/api/panels")
            .header("x-forwarded-for", "203.0.113.68")
            .bearer("not.a.token")
            .send()
            .await;
    }
    let res = app
        .get("/api/panels")
        .header("x-forwarded-for", "203.0.113.68")
        .bearer("not.a.token")
        .send()
        .await;
    assert_eq!(res.status, 429, "{}", res.text);
}

/// Item 11: logout revokes the access token it was called with, on every instance (and on one
/// started later), until it expires.
#[tokio::test]
async fn logout_revokes_the_access_token_on_every_instance() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(&app.database_url, &[]).await;
    let session = app.register_tenant("logout-org").await;
    assert_eq!(
        app.get("/api/panels")
            .bearer(&session.access)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        other
            .get("/api/panels")
            .bearer(&session.access)
            .send()
            .await
            .status,
        200
    );
    let res = app
        .post("/api/auth/logout")
        .bearer(&session.access)
        .json(&json!({"refreshToken": session.refresh}))
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    let res = app.get("/api/panels").bearer(&session.access).send().await;
    res.assert_error(401, "UNAUTHORIZED");
    // The other instance (which had the token verified in memory) refuses it within a poll.
    let mut refused = false;
    for _ in 0..50 {
        if other
            .get("/api/panels")
            .bearer(&session.access)
            .send()
            .await
            .status
            == 401
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the second instance still accepts a logged-out token"
    );
    // A new instance starting later knows it too.
    let third = TestApp::spawn_on(&app.database_url, &[]).await;
    let mut refused = false;
    for _ in 0..50 {
        if third
            .get("/api/panels")
            .bearer(&session.access)
            .send()
            .await
            .status
            == 401
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a later instance accepts a logged-out token");
}

/// Item 11: a login that began longer ago than `JWT_REFRESH_MAX_AGE` (90 days) cannot be
/// refreshed, however recently its token was rotated, and no rotated token outlives it.
#[tokio::test]
async fn a_login_ends_at_its_absolute_lifetime_whatever_the_rotation() {
    let app = TestApp::spawn().await;
    let session = app.register_tenant("lifetime-org").await;
    let login = app
        .post("/api/auth/login")
        .json(&json!({"email": session.email, "password": "correct horse battery"}))
        .send()
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let fresh = helpers::Session::from_tokens(&login.body);
    let rotated = app
        .post("/api/auth/refresh")
        .json(&json!({"refreshToken": fresh.refresh}))
        .send()
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let rotated = helpers::Session::from_tokens(&rotated.body);
    let pool = app.owner_pool().await;
    let (started, expires): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select family_started_at, expires_at from refresh_tokens where user_id = $1 order by id desc limit 1")
            .bind(fresh.user_id)
            .fetch_one(&pool)
            .await
            .expect("token");
    assert!(expires <= started + chrono::Duration::days(90));
    sqlx::query("update refresh_tokens set family_started_at = now() - interval '91 days' where user_id = $1")
        .bind(fresh.user_id)
        .execute(&pool)
        .await
        .expect("age the login");
    app.post("/api/auth/refresh")
        .json(&json!({"refreshToken": rotated.refresh}))
        .send()
        .await
        .assert_error(401, "INVALID_REFRESH_TOKEN");
}

/// Item 11: an identity provider's token that says the e-mail is not verified grants nothing an
/// ACL entry for that e-mail grants.
#[tokio::test]
async fn an_unverified_email_gets_no_acl_identity() {
    let app = TestApp::spawn().await;
    let owner = token_for("acl-mail", "owner@acl-mail.example", Role::Builder);
    let res = app
        .post("/api/panels")
        .bearer(&owner)
        .json(&json!({"name": "Shared"}))
        .send()
        .await;
    let panel = res.body["id"].as_i64().expect("panel");
    let res = app
        .post(&format!("/api/acls/panel/{panel}"))
        .bearer(&owner)
        .json(&json!({"userEmail": "carol@acl-mail.example", "permission": "viewer"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let carol = |verified: bool| {
        token_with(
            &json!({"sub": "m-carol", "email": "carol@acl-mail.example", "email_verified": verified, "tenant": "acl-mail", "role": "user"}),
        )
    };
    let path = format!("/api/panels/{panel}");
    assert_eq!(app.get(&path).bearer(&carol(true)).send().await.status, 200);
    let res = app.get(&path).bearer(&carol(false)).send().await;
    assert!(matches!(res.status, 403 | 404), "{}", res.text);
    let me = app.get("/api/auth/me").bearer(&carol(false)).send().await;
    assert_eq!(me.body["email"], "", "{}", me.text);
}

fn run_binary(vars: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panels"));
    command.arg("migrate").env_clear();
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("run the binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Items 6, 7 and 11 through the real binary: production refuses the repository's example
/// secrets, short secrets, and serving requests through the owner connection; an identity
/// provider's keys need an audience in every environment.
#[test]
fn production_start_up_refuses_example_and_short_secrets_and_the_owner_connection() {
    let secret = ("JWT_SECRET", "9f2c1e7a5b3d4c6e8a0b1c2d3e4f5a6b-prod-like");
    let key = (
        "ENCRYPTION_KEY",
        "a0112233445566778899aabbccddeeff00112233445566778899aabbccddeef0",
    );
    let app_url = (
        "DATABASE_APP_URL",
        "postgres://panels_login:Zx9aQ2kR7mT4vB8nC1dE6fG3hJ5kL0pq@127.0.0.1:1/panels",
    );
    let prod = ("APP_ENV", "production");
    for (vars, named) in [
        (
            vec![
                prod,
                (
                    "JWT_SECRET",
                    "change-me-to-a-long-random-string-of-at-least-32-chars",
                ),
                key,
                app_url,
            ],
            "JWT_SECRET",
        ),
        (
            vec![
                prod,
                secret,
                (
                    "ENCRYPTION_KEY",
                    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                ),
                app_url,
            ],
            "ENCRYPTION_KEY",
        ),
        (vec![prod, secret, key], "DATABASE_APP_URL"),
        (
            vec![
                prod,
                secret,
                key,
                (
                    "DATABASE_APP_URL",
                    "postgres://app:short@127.0.0.1:1/panels",
                ),
            ],
            "DATABASE_APP_URL",
        ),
        (
            vec![("JWT_PUBLIC_KEYS_FILE", "/nonexistent/jwks.json")],
            "JWT_AUDIENCE",
        ),
    ] {
        let (ok, stderr) = run_binary(&vars);
        assert!(!ok, "{named}: started");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{named}: {stderr}");
        assert!(
            !stderr.contains("Zx9aQ2kR7mT4"),
            "a secret was printed: {stderr}"
        );
    }
}

/// Item 6: requests never run as a role row-level security does not bind: a superuser as
/// `DATABASE_APP_URL` stops start-up.
#[tokio::test]
async fn a_request_role_that_bypasses_row_level_security_stops_start_up() {
    let app = TestApp::spawn().await;
    let env = [
        ("DATABASE_URL", app.database_url.as_str()),
        ("DATABASE_APP_URL", app.database_url.as_str()),
        ("JWT_SECRET", helpers::JWT_SECRET),
    ];
    let config = panels::config::Config::from_lookup(|name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .expect("config");
    let err = panels::build_state(config).await.err().expect("refused");
    assert!(format!("{err:#}").contains("superuser"), "{err:#}");
}

/// Item 13: sqlx was built without TLS, so `sslmode=require` failed and `prefer` fell back to
/// plain text. Against a PostgreSQL that refuses anything but TLS, with a certificate of a CA the
/// test made, the server connects with `sslmode=verify-full` and serves requests over it; a
/// certificate of another CA stops start-up, and so does plain text.
#[tokio::test]
async fn the_server_reaches_postgresql_over_verified_tls_only() {
    use crate::cluster::{PgCluster, make_certificates};
    let certs =
        std::env::temp_dir().join(format!("panels-certs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&certs).expect("dir");
    let (ca, cert, key) = make_certificates(&certs, "good");
    let (other_ca, _, _) = make_certificates(&certs, "other");
    let cluster = PgCluster::start(
        "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n",
        Some(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        ),
        |data| {
            std::fs::copy(&cert, data.join("server.pem")).expect("cert");
            std::fs::copy(&key, data.join("server.key")).expect("key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("key mode");
        },
    );
    let verified = cluster.url(
        "localhost",
        "panels_tls",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let app = TestApp::spawn_on(&verified, &[]).await;
    let session = app.register_tenant("tls-org").await;
    let res = app.get("/api/panels").bearer(&session.access).send().await;
    assert_eq!(res.status, 200, "{}", res.text);
    let owner = app.owner_pool().await;
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where s.ssl) from pg_stat_activity a
           join pg_stat_ssl s using (pid) where a.application_name = 'panels'",
    )
    .fetch_one(&owner)
    .await
    .expect("ssl status");
    assert!(connections > 0);
    assert_eq!(
        encrypted, connections,
        "every request connection is encrypted"
    );

    let refused = |url: String| async move {
        let config = panels::config::Config::from_lookup(|name| match name {
            "DATABASE_URL" => Some(url.clone()),
            "JWT_SECRET" => Some(helpers::JWT_SECRET.to_owned()),
            _ => None,
        })
        .expect("config");
        panels::build_state(config).await.err()
    };
    let err = refused(cluster.url(
        "localhost",
        "panels_tls",
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
    ))
    .await
    .expect("a certificate of another CA is refused");
    assert!(format!("{err:#}").contains("connect"), "{err:#}");
    refused(cluster.url("localhost", "panels_tls", "sslmode=disable"))
        .await
        .expect("plain text is refused by this server");
    drop(app);
    let _ = std::fs::remove_dir_all(&certs);
}

/// Item 13: `rediss://` could not connect (redis was built without TLS). Against a Redis that
/// listens for TLS only, with a certificate of a CA the test made (trusted through
/// `SSL_CERT_FILE`, as an operator would add a private CA), the server reaches Redis and
/// reports it up.
#[test]
fn the_server_reaches_redis_over_tls() {
    use crate::cluster::{free_port, make_certificates};
    let certs =
        std::env::temp_dir().join(format!("panels-rcerts-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&certs).expect("dir");
    let (ca, cert, key) = make_certificates(&certs, "redis");
    let port = free_port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    // SAFETY: set before the runtime (or any other thread of this test process) starts.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let up = runtime.block_on(async {
        let url = format!("rediss://localhost:{port}");
        let app = TestApp::spawn_with(&[("REDIS_URL", &url)]).await;
        for _ in 0..50 {
            let res = app.get("/health/ready").send().await;
            if res.body["cache"]["status"] == "up" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&certs);
    assert!(up, "Redis over TLS never came up");
}
