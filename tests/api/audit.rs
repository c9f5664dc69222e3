//! The audit log: every audited request leaves exactly one entry, with the right actor and no
//! secret; a write that does not commit leaves neither change nor entry; the buffer is written at
//! SIGTERM; an entry edited in the database breaks the chain at that entry; no tenant sees
//! another's entries.

use std::collections::HashMap;
use std::time::Duration;

use panels::auth::Role;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{self, TestApp, admin_url, token_for};

/// The buffer's batches go out at once in these tests.
const FAST: &[(&str, &str)] = &[("AUDIT_FLUSH_MS", "20")];

async fn entries(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/audit?limit=50&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let res = app.get(&path).bearer(token).send().await;
        assert_eq!(res.status, 200, "{}", res.text);
        out.extend(res.body["entries"].as_array().expect("entries").clone());
        match res.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Waits until the buffered entries of `request_ids` are written.
async fn wait_for(app: &TestApp, token: &str, request_ids: &[&str]) -> Vec<Value> {
    for _ in 0..100 {
        let all = entries(app, token, "").await;
        if request_ids
            .iter()
            .all(|id| all.iter().any(|e| e["requestId"] == *id))
        {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("entries of {request_ids:?} never written");
}

/// A database of the "clinic" for a source whose connection string carries a password.
async fn clinic() -> String {
    let name = format!("panels_test_src_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&admin_url()).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await
        .expect("create");
    let base = admin_url();
    let url = format!(
        "{}/{name}",
        base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base)
    );
    let pool = PgPool::connect(&url).await.expect("connect");
    sqlx::query(
        "create table patients as select g as id, 'p' || g as name from generate_series(1, 20) g",
    )
    .execute(&pool)
    .await
    .expect("table");
    url
}

#[tokio::test]
async fn every_audited_request_leaves_one_entry_with_its_actor_and_no_secret() {
    let app = TestApp::spawn_with(FAST).await;
    let password = "correct horse battery";
    let admin = app.register_tenant("audit-a").await;
    let mut ids: HashMap<String, &str> = HashMap::new();
    let mut secrets: Vec<String> = vec![password.to_owned(), admin.refresh.clone()];
    let rid = |res: &helpers::Res| res.header("x-request-id").expect("request id").to_owned();

    // Sign-in, right and wrong.
    let res = app
        .post("/api/auth/login")
        .json(&json!({"email": admin.email, "password": password}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let session = helpers::Session::from_tokens(&res.body);
    secrets.push(session.refresh.clone());
    secrets.push(session.access.clone());
    ids.insert(rid(&res), "auth.login");
    let res = app
        .post("/api/auth/login")
        .json(&json!({"email": admin.email, "password": "Tr0ub4dor&3 guess"}))
        .send()
        .await;
    assert_eq!(res.status, 401);
    secrets.push("Tr0ub4dor&3 guess".to_owned());
    ids.insert(rid(&res), "auth.login_failed");
    let token = session.access.clone();

    // Panels: the grouped create, an idempotent create, an update, a refused update.
    let res = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"name": "Ward A"}))
        .send()
        .await;
    assert_eq!(res.status, 201);
    let panel = res.body["id"].as_i64().unwrap();
    ids.insert(rid(&res), "panel.create");
    let res = app
        .post("/api/panels")
        .bearer(&token)
        .header("idempotency-key", "audit-key-1")
        .json(&json!({"name": "Ward B"}))
        .send()
        .await;
    assert_eq!(res.status, 201);
    ids.insert(rid(&res), "panel.create");
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .json(&json!({"name": "Ward A2"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    ids.insert(rid(&res), "panel.update");
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .header("if-match", "\"stale\"")
        .json(&json!({"name": "Ward A3"}))
        .send()
        .await;
    assert_eq!(res.status, 412, "{}", res.text);
    ids.insert(rid(&res), "panel.update");

    // A database source with a password, synced by the worker (the system's entry).
    let source_password = "s3cr3t-db-pass";
    secrets.push(source_password.to_owned());
    // Trust authentication ignores the password; the server must still keep it secret.
    let mut url = url::Url::parse(&clinic().await).expect("url");
    if url.password().is_none() {
        url.set_password(Some(source_password)).expect("password");
    } else {
        secrets.pop();
        secrets.push(url.password().unwrap().to_owned());
    }
    let url = url.to_string();
    let res = app
        .post(&format!("/api/panels/{panel}/datasources"))
        .bearer(&token)
        .json(&json!({"type": "database", "config": {"connectionString": url, "query": "select * from patients", "keyField": "id"}}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let ds = res.body["id"].as_i64().unwrap();
    ids.insert(rid(&res), "datasource.create");
    let res = app
        .post(&format!("/api/panels/{panel}/datasources/{ds}/sync"))
        .bearer(&token)
        .send()
        .await;
    assert!(res.status < 300, "{}", res.text);
    ids.insert(rid(&res), "datasource.sync");

    // An API key: created, used (its first use has an entry of its own), revoked.
    let res = app
        .post("/api/api-keys")
        .bearer(&token)
        .json(&json!({"name": "importer", "scope": "write"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let key = res.body["key"].as_str().unwrap().to_owned();
    let key_id = res.body["id"].as_i64().unwrap();
    secrets.push(key.clone());
    ids.insert(rid(&res), "apiKey.create");
    let res = app
        .post("/api/panels")
        .header("x-api-key", &key)
        .json(&json!({"name": "By key"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let by_key = rid(&res);
    ids.insert(by_key.clone(), "panel.create");
    let res = app
        .delete(&format!("/api/api-keys/{key_id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    ids.insert(rid(&res), "apiKey.revoke");

    // An invitation and a webhook, each with a secret shown once.
    let res = app
        .post("/api/auth/invitations")
        .bearer(&token)
        .json(&json!({"email": "nurse@audit-a.example", "role": "user"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    secrets.push(res.body["token"].as_str().unwrap().to_owned());
    ids.insert(rid(&res), "invitation.create");

    // A user may not delete the panel: refused, recorded with its status.
    let user = token_for("audit-a", "clerk@audit-a.example", Role::User);
    let res = app
        .delete(&format!("/api/panels/{panel}"))
        .bearer(&user)
        .send()
        .await;
    assert!(matches!(res.status, 403 | 404), "{}", res.text);
    let refused = rid(&res);
    ids.insert(refused.clone(), "panel.delete");

    // The sync's end, by the system.
    let mut finished = None;
    for _ in 0..200 {
        let all = entries(&app, &token, "action=sync.finish").await;
        if let Some(e) = all.first() {
            finished = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = finished.expect("the sync's end is audited");
    assert_eq!(finished["actor"]["type"], "system", "{finished}");
    assert_eq!(finished["entityType"], "syncRun");
    assert_eq!(finished["panelId"], panel);

    let wanted: Vec<&str> = ids.keys().map(String::as_str).collect();
    let all = wait_for(&app, &token, &wanted).await;
    for (request, action) in &ids {
        let of: Vec<&Value> = all.iter().filter(|e| e["requestId"] == **request).collect();
        let of_action: Vec<&&Value> = of.iter().filter(|e| e["action"] == *action).collect();
        assert_eq!(of_action.len(), 1, "{action} of {request}: {of:?}");
    }
    // Actors: the user, the key, and its first use.
    let login = all.iter().find(|e| e["action"] == "auth.login").unwrap();
    assert_eq!(login["actor"]["type"], "user");
    assert_eq!(login["actor"]["id"], admin.user_id.to_string());
    assert_eq!(login["actor"]["email"], admin.email);
    assert_eq!(login["status"], 200);
    let key_actor = key_id.to_string();
    let by_key: Vec<&Value> = all.iter().filter(|e| e["requestId"] == by_key).collect();
    assert!(
        by_key
            .iter()
            .all(|e| e["actor"]["type"] == "apiKey" && e["actor"]["id"] == key_actor.as_str()),
        "{by_key:?}"
    );
    assert!(
        by_key.iter().any(|e| e["action"] == "apiKey.firstUse"),
        "{by_key:?}"
    );
    let failed = all
        .iter()
        .find(|e| e["action"] == "auth.login_failed")
        .unwrap();
    assert_eq!(failed["status"], 401);
    let refused = all.iter().find(|e| e["requestId"] == refused).unwrap();
    assert!(
        matches!(refused["status"].as_i64(), Some(403 | 404)),
        "{refused}"
    );
    assert_eq!(refused["actor"]["email"], "clerk@audit-a.example");
    assert_eq!(refused["route"], "/api/panels/{id}");
    assert_eq!(refused["panelId"], panel);
    let stale = all
        .iter()
        .find(|e| e["action"] == "panel.update" && e["status"] == 412)
        .expect("the refused update");
    assert!(stale["changes"].is_null(), "{stale}");
    let update = all
        .iter()
        .find(|e| e["action"] == "panel.update" && e["status"] == 200)
        .unwrap();
    assert_eq!(
        update["changes"]["name"],
        json!({"from": "Ward A", "to": "Ward A2"})
    );
    assert_eq!(update["entityType"], "panel");
    assert_eq!(update["entityId"], panel.to_string());
    assert_eq!(update["method"], "PUT");
    assert_eq!(update["route"], "/api/panels/{id}");
    assert!(
        update["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("127."))
    );
    let created = all
        .iter()
        .find(|e| e["action"] == "datasource.create")
        .unwrap();
    assert_eq!(created["entityId"], ds.to_string());
    assert_eq!(created["status"], 201);

    // No secret anywhere, in the list or in the export.
    let export = app
        .get("/api/audit/export?format=ndjson")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.len() >= all.len(), "{} < {}", lines.len(), all.len());
    for secret in &secrets {
        assert!(
            !export.text.contains(secret.as_str()),
            "a secret in the export: {secret}"
        );
    }
    assert!(
        export.text.contains("[FILTERED]"),
        "the source's connection string is filtered"
    );
    // And the chain holds.
    let verify = app.get("/api/audit/verify").bearer(&token).send().await;
    assert_eq!(verify.status, 200, "{}", verify.text);
    assert_eq!(verify.body["valid"], true, "{}", verify.text);
    assert!(verify.body["checked"].as_i64().unwrap() >= lines.len() as i64);
}

#[tokio::test]
async fn a_write_that_cannot_write_its_entry_changes_nothing() {
    let app = TestApp::spawn_with(FAST).await;
    let token = token_for("audit-b", "admin@audit-b.example", Role::Admin);
    let panel = app.create_panel(&token, "Before").await;
    let owner = app.owner_pool().await;
    // The entry cannot be written: the write must not happen either.
    sqlx::query("revoke insert on audit_entry from panels_app")
        .execute(&owner)
        .await
        .expect("revoke");
    let res = app
        .put(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .json(&json!({"name": "After"}))
        .send()
        .await;
    assert!(res.status >= 500, "{}", res.text);
    sqlx::query("grant insert on audit_entry to panels_app")
        .execute(&owner)
        .await
        .expect("grant");
    let res = app
        .get(&format!("/api/panels/{panel}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.body["name"], "Before", "{}", res.text);
    let updates = entries(&app, &token, "action=panel.update").await;
    assert!(
        updates
            .iter()
            .all(|e| e["status"].as_i64().unwrap_or(0) >= 400),
        "no success entry for a write that did not happen: {updates:?}"
    );
    // A refused write: its entry, and no change.
    let res = app
        .post(&format!("/api/panels/{panel}/columns/calculated"))
        .bearer(&token)
        .json(&json!({"name": "Bad", "formula": "1 +"}))
        .send()
        .await;
    assert_eq!(res.status, 400, "{}", res.text);
    let request = res.header("x-request-id").unwrap().to_owned();
    let all = wait_for(&app, &token, &[&request]).await;
    let entry = all.iter().find(|e| e["requestId"] == request).unwrap();
    assert_eq!(entry["action"], "column.create");
    assert_eq!(entry["status"], 400);
    let columns = app
        .get(&format!("/api/panels/{panel}/columns"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(
        columns.body["calculatedColumns"],
        json!([]),
        "{}",
        columns.text
    );
}

#[tokio::test]
async fn an_entry_edited_or_deleted_in_the_database_breaks_the_chain_there() {
    let app = TestApp::spawn_with(FAST).await;
    let token = token_for("audit-c", "admin@audit-c.example", Role::Admin);
    let panel = app.create_panel(&token, "One").await;
    for name in ["Two", "Three", "Four"] {
        let res = app
            .put(&format!("/api/panels/{panel}"))
            .bearer(&token)
            .json(&json!({ "name": name }))
            .send()
            .await;
        assert_eq!(res.status, 200);
    }
    let verify = app.get("/api/audit/verify").bearer(&token).send().await;
    assert_eq!(verify.body["valid"], true, "{}", verify.text);
    assert_eq!(verify.body["checked"], 4);

    // The application's role cannot edit an entry at all.
    let owner = app.owner_pool().await;
    let mut conn = owner.acquire().await.unwrap();
    let refused = sqlx::raw_sql(
        "begin; set local role panels_app; select set_config('app.tenant', 'audit-c', true);
         update audit_entry set action = 'panel.delete' where seq = 2",
    )
    .execute(&mut *conn)
    .await
    .expect_err("the application role edited an entry");
    let code = refused
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("42501"), "{refused}");
    sqlx::raw_sql("rollback").execute(&mut *conn).await.unwrap();
    // Nor can the sealer's role re-seal an entry already sealed.
    let resealed = sqlx::raw_sql(
        "begin; set local role panels_worker;
         update audit_entry set hash = sha256('x') where tenant_id = 'audit-c' and seq = 2",
    )
    .execute(&mut *conn)
    .await
    .expect_err("a sealed entry was sealed again");
    let code = resealed
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("42501"), "{resealed}");
    sqlx::raw_sql("rollback").execute(&mut *conn).await.unwrap();
    drop(conn);

    // Someone with the owner's rights edits the second entry behind the triggers' back.
    sqlx::raw_sql(
        "alter table audit_entry disable trigger audit_entry_no_update;
         update audit_entry set changes = '{\"name\": {\"to\": \"Forged\"}}' where tenant_id = 'audit-c' and seq = 2;
         alter table audit_entry enable trigger audit_entry_no_update",
    )
    .execute(&owner)
    .await
    .expect("edit");
    let verify = app.get("/api/audit/verify").bearer(&token).send().await;
    assert_eq!(verify.body["valid"], false, "{}", verify.text);
    assert_eq!(verify.body["firstBroken"]["seq"], 2, "{}", verify.text);

    // A deleted entry is named as missing.
    let second = &app;
    let token_d = token_for("audit-d", "admin@audit-d.example", Role::Admin);
    let p = second.create_panel(&token_d, "x").await;
    for name in ["y", "z"] {
        second
            .put(&format!("/api/panels/{p}"))
            .bearer(&token_d)
            .json(&json!({ "name": name }))
            .send()
            .await;
    }
    // Sealed first (verify seals what committed since the workers' last sweep).
    let verify = second
        .get("/api/audit/verify")
        .bearer(&token_d)
        .send()
        .await;
    assert_eq!(verify.body["valid"], true, "{}", verify.text);
    sqlx::query("delete from audit_entry where tenant_id = 'audit-d' and seq = 2")
        .execute(&owner)
        .await
        .expect("delete");
    let verify = second
        .get("/api/audit/verify")
        .bearer(&token_d)
        .send()
        .await;
    assert_eq!(verify.body["valid"], false, "{}", verify.text);
    assert_eq!(verify.body["firstBroken"]["seq"], 3, "{}", verify.text);
    assert!(
        verify.body["firstBroken"]["reason"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{}",
        verify.text
    );
}

#[tokio::test]
async fn nobody_sees_another_tenants_entries_and_only_admins_read_the_log() {
    let app = TestApp::spawn_with(FAST).await;
    let a = token_for("audit-e", "admin@audit-e.example", Role::Admin);
    let b = token_for("audit-f", "admin@audit-f.example", Role::Admin);
    let panel = app.create_panel(&a, "Mine").await;
    app.create_panel(&b, "Theirs").await;
    let of_b = entries(&app, &b, "").await;
    assert!(!of_b.is_empty());
    assert!(
        of_b.iter()
            .all(|e| e["actor"]["email"] == "admin@audit-f.example"),
        "{of_b:?}"
    );
    let of_b_panel = entries(&app, &b, &format!("entityType=panel&entityId={panel}")).await;
    assert!(of_b_panel.is_empty(), "{of_b_panel:?}");
    let of_a = entries(&app, &a, &format!("entityType=panel&entityId={panel}")).await;
    assert_eq!(of_a.len(), 1, "{of_a:?}");
    // Filters and paging.
    let res = app
        .get("/api/audit?action=panel.*&limit=1")
        .bearer(&a)
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["entries"].as_array().unwrap().len(), 1);
    assert!(res.body["nextCursor"].is_null(), "{}", res.text);
    let res = app.get("/api/audit?action=bad%25").bearer(&a).send().await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = app.get("/api/audit?cursor=nope").bearer(&a).send().await;
    res.assert_error(400, "VALIDATION_ERROR");
    let user = token_for("audit-e", "u@audit-e.example", Role::Builder);
    for path in ["/api/audit", "/api/audit/verify", "/api/audit/export"] {
        let res = app.get(path).bearer(&user).send().await;
        res.assert_error(403, "FORBIDDEN");
    }
}

/// The real binary: entries waiting in the buffer are written when it gets SIGTERM.
#[tokio::test]
async fn sigterm_writes_the_buffered_entries() {
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
        // Nothing is written before the shutdown.
        .env("AUDIT_FLUSH_MS", "600000")
        .stdout(std::process::Stdio::null())
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server did not start");
    let user = token_for("audit-g", "u@audit-g.example", Role::User);
    let mut refused = Vec::new();
    for _ in 0..5 {
        let res = client
            .post(format!("{base}/api/api-keys"))
            .bearer_auth(&user)
            .json(&json!({"name": "k", "scope": "read"}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 403);
        refused.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    let owner = app.owner_pool().await;
    let before: i64 =
        sqlx::query_scalar("select count(*) from audit_entry where tenant_id = 'audit-g'")
            .fetch_one(&owner)
            .await
            .unwrap();
    assert_eq!(before, 0, "the batch waits for its flush");
    // SIGTERM, as an orchestrator stops it.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status:?}");
    let written: Vec<(String, String, i32)> = sqlx::query_as(
        "select request_id, action, status from audit_entry where tenant_id = 'audit-g' order by id",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(written.len(), 5, "{written:?}");
    for (request, (id, action, status)) in refused.iter().zip(&written) {
        assert_eq!(request, id);
        assert_eq!(action, "apiKey.create");
        assert_eq!(*status, 403);
    }
}

/// Retention drops whole months past `AUDIT_RETENTION_DAYS` and keeps the rest; the months ahead
/// are made before they are needed.
#[tokio::test]
async fn retention_drops_whole_months_past_the_limit() {
    let app = TestApp::spawn_with(FAST).await;
    let owner = app.owner_pool().await;
    // A month long past, with an entry in it.
    sqlx::raw_sql(
        "create table audit_entry_200001 partition of audit_entry
             for values from ('2000-01-01 00:00:00+00') to ('2000-02-01 00:00:00+00');
         select audit_protect('audit_entry_200001');
         insert into audit_entry (tenant_id, at, actor_type, actor_id, action)
             values ('audit-h', '2000-01-15 00:00:00+00', 'user', '1', 'panel.update');",
    )
    .execute(&owner)
    .await
    .expect("an old month");
    let token = token_for("audit-h", "admin@audit-h.example", Role::Admin);
    app.create_panel(&token, "Kept").await;
    let dropped = panels::audit::retention::maintain(&app.database_url, 365)
        .await
        .expect("maintain");
    assert_eq!(dropped, vec!["audit_entry_200001".to_owned()]);
    let left: Vec<(String,)> =
        sqlx::query_as("select action from audit_entry where tenant_id = 'audit-h' order by id")
            .fetch_all(&owner)
            .await
            .unwrap();
    assert_eq!(left, vec![("panel.create".to_owned(),)]);
    let ahead: i64 = sqlx::query_scalar(
        "select count(*) from pg_inherits where inhparent = 'audit_entry'::regclass
           and inhrelid::regclass::text = 'audit_entry_' || to_char(now() + interval '1 month', 'YYYYMM')",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(ahead, 1, "next month's partition is made ahead");
    // The oldest entry left starts the chain: nothing is reported missing.
    let verify = app.get("/api/audit/verify").bearer(&token).send().await;
    assert_eq!(verify.body["valid"], true, "{}", verify.text);
}
