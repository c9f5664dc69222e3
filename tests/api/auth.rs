//! Identity: registration, login, refresh rotation, logout, invitations, API keys, and the JWT
//! rejection matrix.

use std::time::Instant;

use panels::auth::Role;
use serde_json::json;

use crate::helpers::{JWT_SECRET, Session, TestApp, token_for, token_with};

#[tokio::test]
async fn a_new_organisation_registers_logs_in_and_reads_who_it_is() {
    let app = TestApp::spawn().await;
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "Ada@Example.com", "password": "correct horse battery", "tenantSlug": "acme", "tenantName": "Acme"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["tokenType"], "Bearer");
    assert_eq!(res.body["user"]["role"], "admin");
    assert_eq!(res.body["user"]["email"], "ada@example.com");
    assert!(
        res.body["refreshToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("rt_"))
    );

    let login = app
        .post("/api/auth/login")
        .json(&json!({"email": "ada@example.com", "password": "correct horse battery"}))
        .send()
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let session = Session::from_tokens(&login.body);
    let me = app.get("/api/auth/me").bearer(&session.access).send().await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["tenant"], "acme");
    assert_eq!(me.body["role"], "admin");
    assert_eq!(me.body["email"], "ada@example.com");
    // The same handlers at the root, for the existing client.
    assert_eq!(
        app.get("/auth/me")
            .bearer(&session.access)
            .send()
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn registration_rejects_bad_input_and_duplicates() {
    let app = TestApp::spawn().await;
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "not-an-email", "password": "short"}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let fields: Vec<&str> = res.body["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"email") && fields.contains(&"password"),
        "{fields:?}"
    );

    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "a@b.co", "password": "long enough pw"}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");

    // A slug must be lower-case letters, digits and '-', not starting with '-'.
    for slug in ["Acme", "-acme", "acme_health", "a"] {
        let res = app
            .post("/api/auth/register")
            .json(&json!({"email": "ada@slug.example", "password": "long enough pw", "tenantSlug": slug}))
            .send()
            .await;
        res.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(
            res.body["details"][0]["field"], "tenantSlug",
            "{slug}: {}",
            res.text
        );
        if slug.len() >= 2 {
            assert_eq!(
                res.body["details"][0]["message"],
                "must be lower-case letters, digits and '-'"
            );
        }
    }
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "ada@slug.example", "password": "long enough pw", "tenantSlug": "acme-2"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);

    app.register_tenant("dupe").await;
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "other@dupe.example", "password": "long enough pw", "tenantSlug": "dupe"}))
        .send()
        .await;
    res.assert_error(409, "TENANT_EXISTS");
}

#[tokio::test]
async fn unknown_user_and_wrong_password_answer_the_same_in_about_the_same_time() {
    let app = TestApp::spawn().await;
    app.register_tenant("timing").await;
    let login = |email: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let res = app
                .post("/api/auth/login")
                .json(&json!({"email": email, "password": "wrong password"}))
                .send()
                .await;
            (res, started.elapsed())
        }
    };
    // The first unknown-user login also computes the dummy hash once; warm it up, then keep
    // the fastest of three tries each, so a busy machine's noise cannot decide the outcome.
    login("nobody@timing.example").await;
    let (mut wrong_time, mut unknown_time) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..3 {
        let (wrong, took) = login("admin@timing.example").await;
        wrong.assert_error(401, "INVALID_CREDENTIALS");
        wrong_time = wrong_time.min(took);
        let (unknown, took) = login("nobody@timing.example").await;
        unknown.assert_error(401, "INVALID_CREDENTIALS");
        assert_eq!(wrong.body["message"], unknown.body["message"]);
        unknown_time = unknown_time.min(took);
    }
    // Both run one argon2 verification; neither may be an order of magnitude faster.
    let (fast, slow) = if wrong_time < unknown_time {
        (wrong_time, unknown_time)
    } else {
        (unknown_time, wrong_time)
    };
    assert!(
        slow < fast * 5,
        "wrong password {wrong_time:?} vs unknown user {unknown_time:?}"
    );
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_token_revokes_the_family() {
    let app = TestApp::spawn().await;
    let first = app.register_tenant("rotate").await;

    let res = app
        .post("/api/auth/refresh")
        .json(&json!({"refreshToken": first.refresh}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let second = Session::from_tokens(&res.body);
    assert_ne!(second.refresh, first.refresh);

    // The first token comes back: someone copied it. Both it and its successor stop working.
    let replay = app
        .post("/api/auth/refresh")
        .json(&json!({"refreshToken": first.refresh}))
        .send()
        .await;
    replay.assert_error(401, "INVALID_REFRESH_TOKEN");
    let successor = app
        .post("/api/auth/refresh")
        .json(&json!({"refreshToken": second.refresh}))
        .send()
        .await;
    successor.assert_error(401, "INVALID_REFRESH_TOKEN");

    // Stored only as SHA-256 digests: no stored value contains a token's text, and each
    // token's digest is there. (Compared as bytes: a digest may hold a NUL byte, which no
    // text encoding accepts.)
    let pool = app.owner_pool().await;
    for token in [&first.refresh, &second.refresh] {
        let (plain, digest): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where position(convert_to($1, 'UTF8') in token_hash) > 0),
                    count(*) filter (where token_hash = sha256(convert_to($1, 'UTF8')))
               from refresh_tokens",
        )
        .bind(token)
        .fetch_one(&pool)
        .await
        .expect("query");
        assert_eq!((plain, digest), (0, 1), "token {token}");
    }
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::spawn().await;
    let session = app.register_tenant("logout").await;
    let res = app
        .post("/api/auth/logout")
        .json(&json!({"refreshToken": session.refresh}))
        .send()
        .await;
    assert_eq!(res.status, 204);
    let res = app
        .post("/api/auth/refresh")
        .json(&json!({"refreshToken": session.refresh}))
        .send()
        .await;
    res.assert_error(401, "INVALID_REFRESH_TOKEN");
}

#[tokio::test]
async fn an_admin_invites_and_the_invitee_joins_with_the_invited_role() {
    let app = TestApp::spawn().await;
    let admin = app.register_tenant("invites").await;
    let res = app
        .post("/api/auth/invitations")
        .bearer(&admin.access)
        .json(&json!({"email": "bob@invites.example", "role": "builder"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let token = res.body["token"].as_str().expect("token").to_owned();

    // Someone else's e-mail cannot use it.
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "eve@invites.example", "password": "long enough pw", "invitationToken": token}))
        .send()
        .await;
    res.assert_error(400, "INVALID_INVITATION");

    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "bob@invites.example", "password": "long enough pw", "invitationToken": token}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["user"]["tenant"], "invites");
    assert_eq!(res.body["user"]["role"], "builder");

    // Used once only.
    let res = app
        .post("/api/auth/register")
        .json(&json!({"email": "bob@invites.example", "password": "long enough pw", "invitationToken": token}))
        .send()
        .await;
    res.assert_error(400, "INVALID_INVITATION");

    // Only admins invite.
    let bob = Session::from_tokens(&res_login(&app, "bob@invites.example").await);
    let res = app
        .post("/api/auth/invitations")
        .bearer(&bob.access)
        .json(&json!({"email": "x@invites.example", "role": "user"}))
        .send()
        .await;
    res.assert_error(403, "FORBIDDEN");
}

async fn res_login(app: &TestApp, email: &str) -> serde_json::Value {
    let res = app
        .post("/api/auth/login")
        .json(&json!({"email": email, "password": "long enough pw"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_and_revocable() {
    let app = TestApp::spawn().await;
    let admin = token_for("keys", "admin@keys.example", Role::Admin);
    let res = app
        .post("/api/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "push client", "scope": "read"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let key = res.body["key"].as_str().expect("key").to_owned();
    let id = res.body["id"].as_i64().expect("id");
    assert!(key.starts_with("pnl_"));
    assert!(key.starts_with(res.body["prefix"].as_str().expect("prefix")));

    let list = app.get("/api/api-keys").bearer(&admin).send().await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body.as_array().expect("array").len(), 1);
    assert!(!list.text.contains(&key), "the key is never listed");

    // Both header forms authenticate, as the creator's tenant.
    let me = app
        .get("/api/auth/me")
        .header("x-api-key", &key)
        .send()
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["tenant"], "keys");
    assert_eq!(me.body["auth"], "api_key");
    assert_eq!(
        app.get("/api/auth/me").bearer(&key).send().await.status,
        200
    );

    // A read key cannot write.
    let res = app
        .post("/api/panels")
        .header("x-api-key", &key)
        .json(&json!({}))
        .send()
        .await;
    res.assert_error(403, "FORBIDDEN");

    // lastUsedAt is recorded.
    let list = app.get("/api/api-keys").bearer(&admin).send().await;
    assert!(list.body[0]["lastUsedAt"].is_string(), "{}", list.text);

    assert_eq!(
        app.delete(&format!("/api/api-keys/{id}"))
            .bearer(&admin)
            .send()
            .await
            .status,
        204
    );
    let me = app
        .get("/api/auth/me")
        .header("x-api-key", &key)
        .send()
        .await;
    me.assert_error(401, "INVALID_API_KEY");

    // Only admins manage keys; another tenant's key id is unknown.
    let builder = token_for("keys", "b@keys.example", Role::Builder);
    app.get("/api/api-keys")
        .bearer(&builder)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    let other = token_for("other", "admin@other.example", Role::Admin);
    app.delete(&format!("/api/api-keys/{id}"))
        .bearer(&other)
        .send()
        .await
        .assert_error(404, "API_KEY_NOT_FOUND");
}

#[tokio::test]
async fn expired_api_keys_are_refused() {
    let app = TestApp::spawn().await;
    let admin = token_for("expiry", "admin@expiry.example", Role::Admin);
    let res = app
        .post("/api/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "k", "scope": "write", "expiresAt": "2000-01-01T00:00:00Z"}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = app
        .post("/api/api-keys")
        .bearer(&admin)
        .json(&json!({"name": "k", "scope": "write"}))
        .send()
        .await;
    let key = res.body["key"].as_str().expect("key").to_owned();
    let pool = app.owner_pool().await;
    sqlx::query("update api_keys set expires_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .expect("expire");
    app.get("/api/auth/me")
        .header("x-api-key", &key)
        .send()
        .await
        .assert_error(401, "INVALID_API_KEY");
}

/// Every way a token can be wrong answers 401 with the envelope and `WWW-Authenticate`.
#[tokio::test]
async fn the_jwt_rejection_matrix() {
    let app = TestApp::spawn().await;
    let now = panels::auth::jwt::now_secs();
    let valid_claims = json!({"sub": "u1", "email": "u@t.example", "tenant": "t", "role": "admin"});
    let sign = |claims: &serde_json::Value, secret: &str, alg: jsonwebtoken::Algorithm| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "u1", "tenant": "t", "role": "admin", "exp": now + 600}))
    );
    let rs256_header = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "nope"})),
        b64(&json!({"sub": "u1", "tenant": "t", "exp": now + 600}))
    );
    let mut claims_no_exp = valid_claims.clone();
    claims_no_exp["iat"] = json!(now);

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("not bearer", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("bare bearer", Some("Bearer".to_owned())),
        ("malformed", Some("Bearer not.a.jwt".to_owned())),
        ("garbage", Some("Bearer abc".to_owned())),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                sign(
                    &json!({"sub": "u1", "tenant": "t", "exp": now + 600}),
                    "another-secret-another-secret-123",
                    jsonwebtoken::Algorithm::HS256
                )
            )),
        ),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        (
            "HS512 instead of HS256",
            Some(format!(
                "Bearer {}",
                sign(
                    &json!({"sub": "u1", "tenant": "t", "exp": now + 600}),
                    JWT_SECRET,
                    jsonwebtoken::Algorithm::HS512
                )
            )),
        ),
        (
            "RS256 with unknown kid",
            Some(format!("Bearer {rs256_header}")),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                token_with(&json!({"sub": "u1", "tenant": "t", "exp": now - 3600}))
            )),
        ),
        (
            "missing exp",
            Some(format!(
                "Bearer {}",
                sign(&claims_no_exp, JWT_SECRET, jsonwebtoken::Algorithm::HS256)
            )),
        ),
        (
            "missing sub",
            Some(format!("Bearer {}", token_with(&json!({"tenant": "t"})))),
        ),
        (
            "missing tenant",
            Some(format!("Bearer {}", token_with(&json!({"sub": "u1"})))),
        ),
        (
            "bad tenant",
            Some(format!(
                "Bearer {}",
                token_with(&json!({"sub": "u1", "tenant": "x'; drop table panel; --"}))
            )),
        ),
        (
            "bad role",
            Some(format!(
                "Bearer {}",
                token_with(&json!({"sub": "u1", "tenant": "t", "role": "root"}))
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                token_with(&json!({"sub": "u1", "tenant": "t", "nbf": now + 3600}))
            )),
        ),
        (
            "revoked api key",
            Some("Bearer pnl_doesnotexist".to_owned()),
        ),
    ];
    for (name, header) in cases {
        let mut req = app.get("/api/panels");
        if let Some(header) = header {
            req = req.header("authorization", &header);
        }
        let res = req.send().await;
        assert_eq!(res.status, 401, "{name}: {}", res.text);
        assert_eq!(res.body["statusCode"], 401, "{name}");
        assert!(res.body["code"].is_string(), "{name}");
        assert!(
            res.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{name}"
        );
    }
    // The valid one passes.
    assert_eq!(
        app.get("/api/auth/me")
            .bearer(&token_with(&valid_claims))
            .send()
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let app = TestApp::spawn_with(&[
        ("JWT_ISSUER", "https://id.example"),
        ("JWT_AUDIENCE", "panels"),
    ])
    .await;
    let base = json!({"sub": "u1", "email": "u@t.example", "tenant": "t", "role": "user"});
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = base.clone();
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        token_with(&c)
    };
    assert_eq!(
        app.get("/api/auth/me")
            .bearer(&with(Some("https://id.example"), Some("panels")))
            .send()
            .await
            .status,
        200
    );
    for (name, token) in [
        ("no iss", with(None, Some("panels"))),
        (
            "wrong iss",
            with(Some("https://evil.example"), Some("panels")),
        ),
        ("no aud", with(Some("https://id.example"), None)),
        ("wrong aud", with(Some("https://id.example"), Some("other"))),
    ] {
        assert_eq!(
            app.get("/api/auth/me").bearer(&token).send().await.status,
            401,
            "{name}"
        );
    }
}

/// Tokens of the existing identity provider: tenant and roles from its claims, `iss`/`aud`
/// accepted as they are when none is configured, signature and expiry checked all the same.
#[tokio::test]
async fn identity_provider_tokens_map_tenant_and_roles() {
    let app = TestApp::spawn().await;
    let provider = |roles: serde_json::Value| {
        token_with(&json!({
            "sub": "member-live-123",
            "email": "Nurse@Clinic.example",
            "iss": "stytch.com/project-live-1",
            "aud": ["project-live-1"],
            "https://stytch.com/organization": {"organization_id": "org-1", "slug": "clinic"},
            "https://stytch.com/session": {"id": "s1", "roles": roles},
        }))
    };
    for (roles, expected) in [
        (json!(["stytch_member", "Panels Admin"]), "admin"),
        (json!(["Org Admin"]), "admin"),
        (json!(["Panels Builder"]), "builder"),
        (json!(["stytch_member"]), "user"),
    ] {
        let res = app
            .get("/api/auth/me")
            .bearer(&provider(roles))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(res.body["tenant"], "clinic");
        assert_eq!(res.body["role"], expected);
        assert_eq!(res.body["email"], "nurse@clinic.example");
    }
}

#[tokio::test]
async fn login_is_rate_limited_per_account_and_address() {
    let app = TestApp::spawn_with(&[("RATE_LIMIT_LOGIN_PER_MINUTE", "3")]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = app
            .post("/api/auth/login")
            .json(&json!({"email": "someone@x.example", "password": "nope nope"}))
            .send()
            .await;
        statuses.push(res.status);
        if res.status == 429 {
            res.assert_error(429, "RATE_LIMITED");
            assert!(res.header("retry-after").is_some());
            assert!(res.header("ratelimit-limit").is_some());
        }
    }
    assert_eq!(statuses, vec![401, 401, 401, 429, 429]);
}

#[tokio::test]
async fn a_noisy_tenant_is_limited_without_starving_another() {
    let app = TestApp::spawn_with(&[
        ("RATE_LIMIT_TENANT_RPS", "2"),
        ("RATE_LIMIT_TENANT_BURST", "3"),
    ])
    .await;
    let noisy = token_for("noisy", "a@noisy.example", Role::Admin);
    let quiet = token_for("quiet", "a@quiet.example", Role::Admin);
    let mut limited = 0;
    for _ in 0..8 {
        if app.get("/api/auth/me").bearer(&noisy).send().await.status == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 4, "noisy tenant limited {limited} times");
    assert_eq!(
        app.get("/api/auth/me").bearer(&quiet).send().await.status,
        200
    );
}
