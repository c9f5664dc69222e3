//! Operations: health, readiness, metrics, docs, the error envelope and the cross-cutting layers.

use std::collections::BTreeSet;

use axum::routing::get;
use serde_json::{Value, json};

use crate::helpers::{self, TestApp, redis_url, token_for};
use panels::auth::Role;

#[tokio::test]
async fn liveness_and_its_aliases_answer_without_a_token() {
    let app = TestApp::spawn().await;
    for path in ["/health", "/liveness"] {
        let res = app.get(path).send().await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.body["status"], "ok");
    }
    let res = app.get("/healthz").send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["database"]["status"], "up");
}

#[tokio::test]
async fn readiness_checks_the_database_and_redis() {
    let app = TestApp::spawn().await;
    let res = app.get("/health/ready").send().await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["database"]["status"], "up");
    assert!(res.body["database"]["latencyMs"].as_f64().is_some());
    if redis_url().is_some() {
        assert_eq!(res.body["status"], "ok");
        assert_eq!(res.body["cache"]["status"], "up");
    }
}

#[tokio::test]
async fn redis_down_at_start_up_still_serves_and_reports_degraded() {
    // Nothing listens on port 1: Redis is configured but unreachable.
    let app = TestApp::spawn_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let res = app.get("/health/ready").send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["status"], "degraded");
    assert_eq!(res.body["cache"]["status"], "down");
    let res = app.get("/health").send().await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn without_redis_the_in_process_cache_serves() {
    let app = TestApp::spawn_with(&[("REDIS_URL", "")]).await;
    let res = app.get("/health/ready").send().await;
    assert_eq!(res.body["status"], "ok");
    assert_eq!(res.body["cache"]["status"], "disabled");
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route() {
    let app = TestApp::spawn().await;
    app.get("/health").send().await;
    app.get("/api/auth/me").send().await;
    let res = app.get("/metrics").send().await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain"))
    );
    assert!(
        res.text
            .contains(r#"http_requests_total{method="GET",route="/health",status="200"} 1"#),
        "{}",
        res.text
    );
    assert!(res.text.contains(r#"route="/api/auth/me",status="401""#));
    assert!(res.text.contains("http_request_duration_seconds_bucket"));
    assert!(res.text.contains(r#"db_pool_connections{state="idle"}"#));
    assert!(res.text.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn docs_serve_swagger_ui_and_an_openapi_3_1_document() {
    let app = TestApp::spawn().await;
    let ui = app.get("/docs/").send().await;
    assert_eq!(ui.status, 200);
    assert!(ui.text.to_lowercase().contains("swagger"));
    let doc = app.get("/docs/openapi.json").send().await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc.body["components"]["securitySchemes"]["apiKey"].is_object());
}

/// Every documented operation is served (the router answers it with something other than
/// "no such route" or "wrong method"), and every other method on a documented path is refused.
#[tokio::test]
async fn every_documented_route_is_served_and_no_other_method_is() {
    let app = TestApp::spawn().await;
    let doc = panels::router::openapi();
    let doc = serde_json::to_value(&doc).expect("document serialises");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let param = regex::Regex::new(r"\{[^}]+\}").expect("regex");
    for (path, item) in paths {
        let concrete = path
            .replace("{resourceType}", "panel")
            .replace("{userEmail}", "a@b.co");
        let concrete = param.replace_all(&concrete, "1").to_string();
        let documented: BTreeSet<String> = item
            .as_object()
            .expect("path item")
            .keys()
            .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
            .cloned()
            .collect();
        for method in ["get", "post", "put", "delete", "patch"] {
            let res = app
                .request(method.to_uppercase().parse().expect("method"), &concrete)
                .header("content-type", "application/json")
                .send()
                .await;
            if documented.contains(method) {
                assert_ne!(
                    res.body["code"], "ROUTE_NOT_FOUND",
                    "{method} {path} documented but not served"
                );
                assert_ne!(res.status, 405, "{method} {path} documented but not served");
            } else {
                assert_eq!(
                    res.status, 405,
                    "{method} {path} served but not documented: {}",
                    res.text
                );
            }
        }
        // The same handlers answer at the root for the existing client (operations excepted).
        if let Some(rest) = path.strip_prefix("/api") {
            let method = documented.iter().next().expect("one method");
            let alias = param.replace_all(rest, "1").to_string();
            let res = app
                .request(method.to_uppercase().parse().expect("method"), &alias)
                .send()
                .await;
            assert_ne!(
                res.body["code"], "ROUTE_NOT_FOUND",
                "{method} {rest} missing at the root"
            );
        }
    }
}

/// Whether an operation needs credentials: its own security requirements, or the document's when
/// it names none; a requirement `{}` (no scheme) means none.
pub fn authenticated(doc: &Value, op: &Value) -> bool {
    let requirements = if op.get("security").is_some() {
        &op["security"]
    } else {
        &doc["security"]
    };
    requirements.as_array().is_some_and(|r| {
        r.iter()
            .any(|req| req.as_object().is_some_and(|o| !o.is_empty()))
    })
}

/// Each operation documents what its extractors and the layers can answer, not only what its
/// handler returns: a client generated from the document must know every status it can get.
#[test]
fn every_api_operation_documents_the_statuses_its_extractors_can_answer() {
    let doc = serde_json::to_value(panels::router::openapi()).expect("document serialises");
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/") {
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            let responses = op["responses"].as_object().expect("responses");
            let mut need = vec!["500", "503"];
            if authenticated(&doc, op) {
                need.extend(["401", "429"]);
            }
            // A JSON-only body goes through the JSON extractor (an upload takes any type).
            let content = op["requestBody"]["content"].as_object();
            if content.is_some_and(|c| c.len() == 1 && c.contains_key("application/json")) {
                need.extend(["400", "413", "415"]);
            }
            let has_path_params = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path"));
            if has_path_params
                || op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
            {
                need.push("400");
            }
            for status in need {
                if !responses.contains_key(status) {
                    missing.push(format!("{name}: {status}"));
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    if schema != "#/components/schemas/ErrorBody" {
                        missing.push(format!("{name}: {status} without the error envelope"));
                    }
                }
            }
            if op["tags"].as_array().is_none_or(|t| t.is_empty()) {
                missing.push(format!("{name}: no tag"));
            }
            if op["summary"].as_str().is_none_or(str::is_empty) {
                missing.push(format!("{name}: no summary"));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:#?}");
}

/// Every schema the document refers to is in it (a `$ref` to nothing makes generated clients
/// and validators skip that part).
#[test]
fn every_schema_reference_resolves() {
    let doc = serde_json::to_value(panels::router::openapi()).expect("document serialises");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    let refs = regex::Regex::new(r##""#/components/schemas/([^"]+)""##).expect("regex");
    let dangling: BTreeSet<&str> = refs
        .captures_iter(&text)
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str())
        .filter(|name| !schemas.contains_key(*name))
        .collect();
    assert!(dangling.is_empty(), "dangling references: {dangling:?}");
}

/// Routes can only be added through utoipa-axum's `routes!`, which documents them; a plain
/// `.route(` under the API would be served without documentation.
#[test]
fn api_routes_are_only_registered_through_routes_macro() {
    let mut offenders = Vec::new();
    for entry in walk("src") {
        let text = std::fs::read_to_string(&entry).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let allowed = entry.ends_with("router.rs")
                && (line.contains("/healthz") || line.contains("/liveness"));
            if line.contains(".route(") && !allowed {
                offenders.push(format!("{}:{}", entry.display(), n + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "undocumented routes: {offenders:?}");
}

fn walk(dir: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(path.to_str().expect("utf-8 path")));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn errors_from_axum_and_the_layers_use_the_envelope() {
    let app = TestApp::spawn_with(&[("MAX_BODY_BYTES", "2048")]).await;

    let res = app.get("/api/no/such/route").send().await;
    res.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(res.body["error"], "Not Found");
    assert_eq!(
        res.body["message"],
        "Route GET:/api/no/such/route not found"
    );

    let res = app.delete("/health").send().await;
    res.assert_error(405, "METHOD_NOT_ALLOWED");

    let res = app
        .post("/api/auth/login")
        .body("application/json", "{not json")
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(res.body["details"][0]["field"], "body");

    let res = app
        .post("/api/auth/login")
        .body("text/plain", "hello")
        .send()
        .await;
    res.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");

    let big = json!({"email": "a@b.co", "password": "x".repeat(4096)});
    let res = app.post("/api/auth/login").json(&big).send().await;
    res.assert_error(413, "PAYLOAD_TOO_LARGE");

    let res = app
        .post("/api/auth/login")
        .json(&json!({"email": 5}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");

    let res = app
        .delete("/api/api-keys/not-a-number")
        .bearer(&crate::helpers::token_for(
            "t1",
            "a@t1.co",
            panels::auth::Role::Admin,
        ))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(res.body["details"][0]["field"], "path");
}

async fn boom() -> &'static str {
    let detail = std::env::var("PANELS_NEVER_SET")
        .unwrap_or_else(|_| "secret detail: SELECT * FROM panel".to_owned());
    if !detail.is_empty() {
        panic!("{detail}");
    }
    "unreachable"
}

#[tokio::test]
async fn a_panic_answers_500_with_the_envelope_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let router = axum::Router::new().route("/boom", get(boom)).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            "late"
        }),
    );
    let mut config = (*app.state.config).clone();
    config.request_timeout = std::time::Duration::from_millis(200);
    let state = app.state.with_config(config);
    let router = panels::router::with_layers(router, &state).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();

    let res = client
        .get(format!("http://{addr}/boom"))
        .header("x-request-id", "boom-1")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["x-request-id"], "boom-1");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "INTERNAL_ERROR");
    assert_eq!(body["message"], "Internal server error");
    assert_eq!(body["requestId"], "boom-1");
    assert!(!body.to_string().contains("SELECT"));

    let res = client
        .get(format!("http://{addr}/slow"))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "REQUEST_TIMEOUT");

    // Still serving after the panic.
    let res = app.get("/health").send().await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn request_ids_are_echoed_whole_or_generated() {
    let app = TestApp::spawn().await;
    let res = app
        .get("/health")
        .header("x-request-id", "client-chosen-id-12345")
        .send()
        .await;
    assert_eq!(res.header("x-request-id"), Some("client-chosen-id-12345"));
    let res = app.get("/nope").send().await;
    let generated = res.header("x-request-id").expect("generated id").to_owned();
    assert_eq!(generated.len(), 36);
    assert_eq!(res.body["requestId"], generated);
}

#[tokio::test]
async fn security_headers_and_compression() {
    let app = TestApp::spawn().await;
    let res = app.get("/health").send().await;
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    assert_eq!(res.header("cache-control"), Some("no-store"));

    let res = app
        .get("/docs/openapi.json")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(res.header("content-encoding"), Some("gzip"));
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let app = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let allowed = app
        .request(reqwest::Method::OPTIONS, "/api/auth/me")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let denied = app
        .request(reqwest::Method::OPTIONS, "/api/auth/me")
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await;
    assert_eq!(denied.header("access-control-allow-origin"), None);
}

#[test]
fn a_bad_configuration_value_stops_start_up_with_one_line_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_panels"))
        .env("PORT", "not-a-port")
        .env("JWT_SECRET", "a-secret-that-must-never-be-printed-anywhere")
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PORT"), "{stderr}");
    assert!(!stderr.contains("never-be-printed"));
}

/// Inputs the fuzzer found answering 500: each must be a 4xx, or round-trip unharmed.
#[tokio::test]
async fn inputs_postgres_cannot_store_as_sent_answer_400_or_round_trip() {
    let app = TestApp::spawn().await;
    let admin = app.register_tenant("fuzzfound").await;

    // PostgreSQL stores no NUL character, in jsonb nor in text.
    for body in [
        json!({"name": "a\u{0}b"}),
        json!({"name": "ok", "metadata": {"k": "\u{0}"}}),
    ] {
        let res = app
            .post("/api/panels")
            .bearer(&admin.access)
            .json(&body)
            .send()
            .await;
        res.assert_error(400, "VALIDATION_ERROR");
    }

    // PostgreSQL prints f64::MAX in full (309 digits); reading it back must not fail.
    let res = app
        .post("/api/panels")
        .bearer(&admin.access)
        .json(&json!({"name": "floats", "metadata": {"max": f64::MAX, "tiny": 5e-324}}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["id"].as_i64().expect("id");
    let res = app
        .get(&format!("/api/panels/{id}"))
        .bearer(&admin.access)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["metadata"]["max"].as_f64(), Some(f64::MAX));

    // An offset near i64::MAX is an empty page, not an overflow.
    for path in ["/api/changes/panels", "/api/notifications/views"] {
        let res = app
            .get(&format!("{path}?offset=9223372036854775807"))
            .bearer(&admin.access)
            .send()
            .await;
        assert_eq!(res.status, 200, "{path}: {}", res.text);
        assert_eq!(res.body["hasMore"], false);
    }

    // A name of blanks only is stored trimmed: refused before the database check.
    let res = app
        .post("/api/api-keys")
        .bearer(&admin.access)
        .json(&json!({"name": "\t", "scope": "read"}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(res.body["details"][0]["field"], "name");

    // Validation details name the JSON fields, not the Rust ones.
    let res = app
        .post("/api/auth/refresh")
        .json(&json!({"refreshToken": ""}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(res.body["details"][0]["field"], "refreshToken");
}

#[tokio::test]
async fn the_sync_scheduler_runs_on_every_supported_postgresql() {
    // Its SQL once held a numeric literal with digit separators, which PostgreSQL before 16
    // rejects: every pass failed and scheduled syncs never ran (found by the load benchmark).
    let app = TestApp::spawn().await;
    let enqueued = panels::jobs::enqueue_due(&app.state.db).await;
    assert!(enqueued.is_ok(), "{enqueued:?}");
}

/// The JSON log of a request names the request, and the tenant and user of its verified token:
/// the real binary, its real log layer, an event inside the request span, on the one-thread
/// runtime.
#[tokio::test]
async fn request_logs_carry_the_request_id_and_the_verified_tenant_and_user() {
    use std::io::Read;

    let app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panels"))
        .args(["serve", "--no-workers"])
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .env("JWT_SECRET", helpers::JWT_SECRET)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        // tower-http logs each response at debug, inside the request span.
        .env("RUST_LOG", "info,tower_http=debug")
        // The one-thread runtime (the current-thread scheduler) serves this request end to end.
        .env("RUNTIME_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the binary");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if let Ok(res) = client.get(format!("{base}/health")).send().await
            && res.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let token = token_for("log-tenant", "ann@example.com", Role::Builder);
    let status = if up {
        client
            .get(format!("{base}/api/panels"))
            .bearer_auth(&token)
            .header("x-request-id", "log-check-1")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
    } else {
        None
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the log");
    assert!(up, "the server did not start: {out}");
    assert_eq!(status, Some(200));

    let line = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["span"]["request_id"] == "log-check-1"
                && l["message"] == "finished processing request"
        })
        .unwrap_or_else(|| panic!("no log line of the request: {out}"));
    assert_eq!(line["span"]["tenant"], "log-tenant", "{line}");
    assert_eq!(line["span"]["user"], "user-ann@example.com", "{line}");
    assert_eq!(line["span"]["route"], "/api/panels", "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
}
