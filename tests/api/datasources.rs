//! Data sources: a builder connects a panel to where its rows come from. Configs are checked per
//! type, secrets are encrypted in the database and never come back (not in responses, not in
//! change records), and the old client's requests keep working.

use panels::auth::Role;
use panels::datasources::crypto::{SecretScope, decrypt_config};
use serde_json::{Value, json};

use crate::helpers::{Res, TestApp, token_for};

const TENANT: &str = "acme";
const DB_SECRET: &str = "postgres://reader:hunter2-db-pw@db.internal/clinic";

struct Story {
    app: TestApp,
    admin: String,
    panel: i64,
}

async fn story() -> Story {
    let app = TestApp::spawn().await;
    let admin = token_for(TENANT, "admin@acme.example", Role::Admin);
    let panel = app.create_panel(&admin, "Diabetes follow-up").await;
    Story { app, admin, panel }
}

fn database_config() -> Value {
    json!({"connectionString": DB_SECRET, "query": "SELECT * FROM patients", "keyField": "patient_id"})
}

async fn create(app: &TestApp, token: &str, panel: i64, body: &Value) -> Res {
    app.post(&format!("/panels/{panel}/datasources"))
        .bearer(token)
        .json(body)
        .send()
        .await
}

async fn create_ok(app: &TestApp, token: &str, panel: i64, body: &Value) -> i64 {
    let res = create(app, token, panel, body).await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["id"].as_i64().expect("data source id")
}

async fn changes(app: &TestApp, token: &str, panel: i64) -> Vec<Value> {
    let res = app
        .get(&format!("/changes/panels?panelId={panel}"))
        .bearer(token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["changes"].as_array().expect("changes").clone()
}

/// Where the secrets of source `id` of the test tenant belong.
fn scope(id: i64) -> SecretScope<'static> {
    SecretScope {
        tenant: TENANT,
        data_source_id: panels::ids::DataSourceId(id),
    }
}

/// The stored config of a data source, read beneath the API.
async fn raw_config(app: &TestApp, id: i64) -> Value {
    let pool = app.owner_pool().await;
    sqlx::query_scalar("select config from data_source where id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("stored row")
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn the_old_clients_create_list_and_sync_requests_work_as_written() {
    let Story { app, admin, panel } = story().await;
    // The source database: a table in a real PostgreSQL (this test's own database).
    let owner = app.owner_pool().await;
    sqlx::query("create table patients (id int primary key, name text)")
        .execute(&owner)
        .await
        .expect("table");
    sqlx::query("insert into patients values (1, 'Ada'), (2, 'Grace')")
        .execute(&owner)
        .await
        .expect("rows");
    let source_url = app.database_url.clone();

    // Given the Bruno "Create DataSource" request, exactly as the collection sends it (no keyField).
    let res = create(
        &app,
        &admin,
        panel,
        &json!({
            "name": "Patients DB",
            "type": "database",
            "config": {"connectionString": source_url, "query": "SELECT * FROM patients", "refreshInterval": 3600},
            "isActive": true,
            "metadata": {"owner": "qa"},
            "tenantId": "someone-else",
            "userId": "test-user-123",
        }),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(res.body["id"].is_i64());
    assert_eq!(res.body["type"], "database");
    assert_eq!(
        keys(&res.body),
        [
            "config",
            "createdAt",
            "id",
            "lastSync",
            "panelId",
            "type",
            "updatedAt"
        ]
    );
    assert_eq!(res.body["panelId"], panel);
    assert_eq!(
        res.body["config"],
        json!({
            "connectionString": "********",
            "query": "SELECT * FROM patients",
            "refreshInterval": 3600,
            "keyField": "id",
            "deletePolicy": "keep",
        }),
        "unknown keys kept, keyField defaults to id, the secret masked"
    );
    let id = res.body["id"].as_i64().expect("id");
    let created = res.body.clone();

    // The "List DataSources" request (with its ignored query) answers a bare array.
    let res = app
        .get(&format!("/panels/{panel}/datasources?tenantId=x&userId=y"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body, json!([created]));

    // The "Sync DataSource" request, with its body, answers as the reference did.
    let res = app
        .post(&format!("/panels/{panel}/datasources/{id}/sync"))
        .bearer(&admin)
        .json(&json!({"tenantId": "t", "userId": "u"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let answered = keys(&res.body);
    for key in [
        "config",
        "id",
        "lastSync",
        "message",
        "syncStatus",
        "type",
        "status",
        "recordsProcessed",
    ] {
        assert!(
            answered.contains(&key),
            "sync answer lacks {key}: {}",
            res.text
        );
    }
    assert_eq!(res.body["syncStatus"], "success");
    assert_eq!(
        res.body["recordsProcessed"], 2,
        "the sync really read the source's rows"
    );
    assert_eq!(res.body["message"], "Data source synced successfully");
    assert_eq!(res.body["config"]["connectionString"], "********");
    let synced =
        chrono::DateTime::parse_from_rfc3339(res.body["lastSync"].as_str().expect("lastSync"))
            .expect("date");
    let before =
        chrono::DateTime::parse_from_rfc3339(created["lastSync"].as_str().expect("lastSync"))
            .expect("date");
    assert!(synced > before, "lastSync moves forward");

    // Sync needs no body either (the reference required one), and /api serves the same routes.
    let res = app
        .post(&format!("/api/panels/{panel}/datasources/{id}/sync"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["syncStatus"], "success");
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_never_answered_or_recorded() {
    let Story { app, admin, panel } = story().await;
    let db = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "database", "config": database_config()}),
    )
    .await;
    let api = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "api", "config": {
            "url": "https://api.example.com/patients",
            "headers": {"Authorization": "Bearer sk-live-header-secret", "Accept": "application/json"},
            "recordsPointer": "/data", "nextPointer": "/next", "timeoutMs": 5000,
            "clientSecret": "oauth-client-secret-value",
        }}),
    )
    .await;
    let custom = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "custom", "config": {"auth": {"user": "svc", "password": "nested-pw-value"}, "API_KEY": "k-12345-abc"}}),
    )
    .await;
    let secrets = [
        "hunter2-db-pw",
        "sk-live-header-secret",
        "application/json",
        "oauth-client-secret-value",
        "nested-pw-value",
        "k-12345-abc",
    ];

    // Whatever the API answers, no secret is in it.
    let mut answers = vec![
        app.get(&format!("/panels/{panel}/datasources"))
            .bearer(&admin)
            .send()
            .await
            .text,
        app.get(&format!("/changes/panels?panelId={panel}"))
            .bearer(&admin)
            .send()
            .await
            .text,
    ];
    for id in [db, api, custom] {
        answers.push(
            app.get(&format!("/panels/{panel}/datasources/{id}"))
                .bearer(&admin)
                .send()
                .await
                .text,
        );
        answers.push(
            app.post(&format!("/panels/{panel}/datasources/{id}/sync"))
                .bearer(&admin)
                .send()
                .await
                .text,
        );
    }
    for answer in &answers {
        for secret in secrets {
            assert!(!answer.contains(secret), "{secret} leaked in {answer}");
        }
    }
    let res = app
        .get(&format!("/panels/{panel}/datasources/{api}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        res.body["config"]["headers"],
        json!({"Authorization": "********", "Accept": "********"})
    );
    assert_eq!(res.body["config"]["clientSecret"], "********");
    assert_eq!(
        res.body["config"]["url"],
        "https://api.example.com/patients"
    );
    let res = app
        .get(&format!("/panels/{panel}/datasources/{custom}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        res.body["config"]["auth"],
        json!({"user": "svc", "password": "********"})
    );
    assert_eq!(res.body["config"]["API_KEY"], "********");

    // Beneath the API: the database holds no plaintext secret anywhere (sources, change records,
    // stored idempotent responses), only ciphertext the server itself can decrypt.
    let pool = app.owner_pool().await;
    let dump: Vec<String> = sqlx::query_scalar(
        "select config::text from data_source
         union all select coalesce(old_values::text, '') || coalesce(new_values::text, '') from panel_change
         union all select coalesce(response::text, '') from idempotency_key",
    )
    .fetch_all(&pool)
    .await
    .expect("dump");
    for row in &dump {
        for secret in secrets {
            assert!(!row.contains(secret), "{secret} stored in clear: {row}");
        }
    }
    let stored = raw_config(&app, db).await;
    assert!(
        stored["connectionString"]["$enc"]
            .as_str()
            .expect("encrypted")
            .starts_with(&format!("v2:{}:", app.state.crypto.current_key_id())),
        "{stored}"
    );
    assert_eq!(
        stored["query"], "SELECT * FROM patients",
        "non-secrets stay readable"
    );
    let plain =
        decrypt_config(&app.state.crypto, scope(db), &stored).expect("the server can decrypt");
    assert_eq!(plain["connectionString"], DB_SECRET);
    let plain = decrypt_config(&app.state.crypto, scope(api), &raw_config(&app, api).await)
        .expect("decrypt");
    assert_eq!(
        plain["headers"]["Authorization"],
        "Bearer sk-live-header-secret"
    );
}

#[tokio::test]
async fn the_mask_round_trips_on_update_and_new_secrets_replace_old_ones() {
    let Story { app, admin, panel } = story().await;
    let id = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "database", "config": database_config()}),
    )
    .await;
    let path = format!("/panels/{panel}/datasources/{id}");

    // The client sends back what it read, changing only the query: the secret is kept.
    let read = app.get(&path).bearer(&admin).send().await;
    let mut config = read.body["config"].clone();
    config["query"] = json!("with recent as (select * from patients) select * from recent");
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "database", "config": config}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["config"]["connectionString"], "********");
    assert_eq!(res.body["config"]["query"], config["query"]);
    assert_eq!(
        res.body["lastSync"], read.body["lastSync"],
        "an update does not sync"
    );
    assert_ne!(res.header("etag"), read.header("etag"));
    let plain =
        decrypt_config(&app.state.crypto, scope(id), &raw_config(&app, id).await).expect("decrypt");
    assert_eq!(plain["connectionString"], DB_SECRET);

    // A new secret replaces the stored one; the change record names it without showing it.
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "database", "config": {"connectionString": "postgres://new-secret-pw@db/x", "query": "select 1"}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let plain =
        decrypt_config(&app.state.crypto, scope(id), &raw_config(&app, id).await).expect("decrypt");
    assert_eq!(plain["connectionString"], "postgres://new-secret-pw@db/x");
    assert_eq!(
        plain["keyField"], "id",
        "config replaced wholesale, defaults filled again"
    );
    let all = changes(&app, &admin, panel).await;
    let change = all
        .iter()
        .find(|c| c["newValues"]["changedSecrets"].is_array())
        .expect("secret change recorded");
    assert_eq!(change["changeType"], "source_changed");
    assert_eq!(change["description"], "Data source changed");
    assert_eq!(
        change["newValues"]["changedSecrets"],
        json!(["config.connectionString"])
    );
    assert_eq!(
        change["oldValues"]["config"]["connectionString"],
        "********"
    );
    assert_eq!(change["newValues"]["config"]["query"], "select 1");
    assert!(
        !serde_json::to_string(&all)
            .expect("json")
            .contains("new-secret-pw")
    );

    // Sending the same thing again changes nothing: same version, no new change record.
    let before = app.get(&path).bearer(&admin).send().await;
    let count = changes(&app, &admin, panel).await.len();
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "database", "config": before.body["config"]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("etag"), before.header("etag"));
    assert_eq!(changes(&app, &admin, panel).await.len(), count);

    // The mask stands only for a secret that is stored.
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "api", "config": {"url": "https://x.example", "headers": {"Authorization": "********"}}}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        res.body["details"][0]["field"],
        "config.headers.Authorization"
    );
    let res = create(&app, &admin, panel, &json!({"type": "database", "config": {"connectionString": "********", "query": "select 1"}})).await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(res.body["details"][0]["field"], "config.connectionString");

    // Update needs both type and config, as the reference did.
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"config": {}}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "custom"}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn configs_are_validated_per_type_and_nothing_is_written_on_error() {
    let Story { app, admin, panel } = story().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "database", "config": {"query": "select 1"}}),
            "config.connectionString",
        ),
        (
            json!({"type": "database", "config": {"connectionString": "x"}}),
            "config.query",
        ),
        (
            json!({"type": "database", "config": {"connectionString": "x", "query": "DELETE FROM patients"}}),
            "config.query",
        ),
        (
            json!({"type": "database", "config": {"connectionString": 42, "query": "select 1"}}),
            "config.connectionString",
        ),
        (json!({"type": "api", "config": {}}), "config.url"),
        (
            json!({"type": "api", "config": {"url": "ftp://files.example.com"}}),
            "config.url",
        ),
        (
            json!({"type": "api", "config": {"url": "https://x.example", "headers": {"X-Count": 3}}}),
            "config.headers.X-Count",
        ),
        (
            json!({"type": "api", "config": {"url": "https://x.example", "headers": ["a"]}}),
            "config.headers",
        ),
        (
            json!({"type": "api", "config": {"url": "https://x.example", "recordsPointer": "data"}}),
            "config.recordsPointer",
        ),
        (
            json!({"type": "api", "config": {"url": "https://x.example", "nextPointer": "next"}}),
            "config.nextPointer",
        ),
        (
            json!({"type": "api", "config": {"url": "https://x.example", "timeoutMs": 120001}}),
            "config.timeoutMs",
        ),
        (
            json!({"type": "api", "config": {"url": "https://x.example", "timeoutMs": 0}}),
            "config.timeoutMs",
        ),
        (
            json!({"type": "file", "config": {"format": "xlsx"}}),
            "config.format",
        ),
        (
            json!({"type": "file", "config": {"delimiter": ";;"}}),
            "config.delimiter",
        ),
        (
            json!({"type": "custom", "config": {"keyField": ""}}),
            "config.keyField",
        ),
        (
            json!({"type": "custom", "config": {"keyField": 7}}),
            "config.keyField",
        ),
        (
            json!({"type": "custom", "config": {"deletePolicy": "purge"}}),
            "config.deletePolicy",
        ),
        (
            json!({"type": "custom", "config": {"schedule": {"everyMinutes": 0}}}),
            "config.schedule.everyMinutes",
        ),
        (
            json!({"type": "custom", "config": {"schedule": {"cron": "whenever"}}}),
            "config.schedule.cron",
        ),
        (
            json!({"type": "custom", "config": {"schedule": {}}}),
            "config.schedule",
        ),
        (json!({"type": "webhook", "config": {}}), "body"),
        (json!({"type": "custom"}), "body"),
        (json!({"type": "custom", "config": "x"}), "body"),
        (json!({"config": {}}), "body"),
    ];
    for (body, field) in cases {
        let res = create(&app, &admin, panel, &body).await;
        res.assert_error(400, "VALIDATION_ERROR");
        let fields: Vec<&str> = res.body["details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: expected {field} in {}",
            res.text
        );
    }
    let res = app
        .post(&format!("/panels/{panel}/datasources"))
        .bearer(&admin)
        .body("application/json", "{not json")
        .send()
        .await;
    assert_eq!(res.status, 400, "{}", res.text);
    let list = app
        .get(&format!("/panels/{panel}/datasources"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(list.body, json!([]), "no invalid source was stored");
    assert!(
        changes(&app, &admin, panel).await.is_empty(),
        "no change recorded either"
    );

    // Valid configs of each type, with their defaults.
    let res = create(
        &app,
        &admin,
        panel,
        &json!({"type": "file", "config": {"keyField": "mrn", "schedule": {"everyMinutes": 30}}}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        res.body["config"],
        json!({"keyField": "mrn", "deletePolicy": "keep", "format": "csv", "delimiter": ",", "schedule": {"everyMinutes": 30}})
    );
    let res = create(&app, &admin, panel, &json!({"type": "file", "config": {"format": "ndjson", "delimiter": "\t", "deletePolicy": "delete"}})).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = create(
        &app,
        &admin,
        panel,
        &json!({"type": "api", "config": {"url": "http://localhost:8080/x", "recordsPointer": "", "schedule": {"cron": "*/5 * * * *"}}}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let res = create(
        &app,
        &admin,
        panel,
        &json!({"type": "custom", "config": {}}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        res.body["config"],
        json!({"keyField": "id", "deletePolicy": "keep"})
    );
}

#[tokio::test]
async fn ids_of_other_panels_and_tenants_answer_not_found_alike() {
    let Story { app, admin, panel } = story().await;
    let ds = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "custom", "config": {}}),
    )
    .await;
    let other_panel = app.create_panel(&admin, "Diabetes follow-up").await;
    let rival = token_for("globex", "admin@globex.example", Role::Admin);
    let rival_panel = app.create_panel(&rival, "Diabetes follow-up").await;
    let rival_ds = create_ok(
        &app,
        &rival,
        rival_panel,
        &json!({"type": "custom", "config": {}}),
    )
    .await;

    // Another tenant's panel is not found, for every route.
    let unknown_panel = app
        .get("/panels/999999/datasources")
        .bearer(&admin)
        .send()
        .await;
    unknown_panel.assert_error(404, "PANEL_NOT_FOUND");
    assert_eq!(unknown_panel.body["message"], "Panel not found");
    for res in [
        app.get(&format!("/panels/{rival_panel}/datasources"))
            .bearer(&admin)
            .send()
            .await,
        create(
            &app,
            &admin,
            rival_panel,
            &json!({"type": "custom", "config": {}}),
        )
        .await,
        app.get(&format!("/panels/{rival_panel}/datasources/{rival_ds}"))
            .bearer(&admin)
            .send()
            .await,
        app.delete(&format!("/panels/{rival_panel}/datasources/{rival_ds}"))
            .bearer(&admin)
            .send()
            .await,
    ] {
        res.assert_error(404, "PANEL_NOT_FOUND");
        assert_eq!(res.body["message"], unknown_panel.body["message"]);
    }

    // A source of another panel (same tenant) or of another tenant is not found, like an unknown id.
    let unknown = app
        .get(&format!("/panels/{panel}/datasources/999999"))
        .bearer(&admin)
        .send()
        .await;
    unknown.assert_error(404, "DATA_SOURCE_NOT_FOUND");
    assert_eq!(unknown.body["message"], "Data source not found");
    let put_body = json!({"type": "custom", "config": {}});
    for (p, d) in [(other_panel, ds), (panel, rival_ds)] {
        let path = format!("/panels/{p}/datasources/{d}");
        for res in [
            app.get(&path).bearer(&admin).send().await,
            app.put(&path).bearer(&admin).json(&put_body).send().await,
            app.delete(&path).bearer(&admin).send().await,
            app.post(&format!("{path}/sync"))
                .bearer(&admin)
                .send()
                .await,
        ] {
            res.assert_error(404, "DATA_SOURCE_NOT_FOUND");
            assert_eq!(res.body["message"], unknown.body["message"]);
        }
    }
    // The rival's source is untouched.
    let res = app
        .get(&format!("/panels/{rival_panel}/datasources/{rival_ds}"))
        .bearer(&rival)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);

    // Ids that are not numbers are a 400, not a 500.
    let res = app
        .get(&format!("/panels/{panel}/datasources/abc"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(res.status, 400, "{}", res.text);
    let res = app
        .get("/panels/99999999999999999999999/datasources")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(res.status, 400, "{}", res.text);
}

#[tokio::test]
async fn viewers_read_and_only_builders_with_editor_permission_change_sources() {
    let app = TestApp::spawn().await;
    let owner = token_for(TENANT, "owner@acme.example", Role::Builder);
    let panel = app.create_panel(&owner, "Diabetes follow-up").await;
    let ds = create_ok(
        &app,
        &owner,
        panel,
        &json!({"type": "database", "config": database_config()}),
    )
    .await;
    for (email, permission) in [
        ("viewer@acme.example", "viewer"),
        ("editor-user@acme.example", "editor"),
        ("editor@acme.example", "editor"),
    ] {
        let res = app
            .post(&format!("/acls/panel/{panel}"))
            .bearer(&owner)
            .json(&json!({"userEmail": email, "permission": permission}))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let viewer = token_for(TENANT, "viewer@acme.example", Role::Builder);
    let editor_user = token_for(TENANT, "editor-user@acme.example", Role::User);
    let editor = token_for(TENANT, "editor@acme.example", Role::Builder);
    let stranger = token_for(TENANT, "stranger@acme.example", Role::Builder);
    let list = format!("/panels/{panel}/datasources");
    let one = format!("/panels/{panel}/datasources/{ds}");
    let body = json!({"type": "custom", "config": {}});

    // A viewer reads (masked), but changes nothing.
    let res = app.get(&list).bearer(&viewer).send().await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body[0]["config"]["connectionString"], "********");
    assert_eq!(app.get(&one).bearer(&viewer).send().await.status, 200);
    create(&app, &viewer, panel, &body)
        .await
        .assert_error(403, "FORBIDDEN");
    app.put(&one)
        .bearer(&viewer)
        .json(&body)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    app.delete(&one)
        .bearer(&viewer)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    app.post(&format!("{one}/sync"))
        .bearer(&viewer)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");

    // An editor with the plain user role may not change a panel's structure either.
    create(&app, &editor_user, panel, &body)
        .await
        .assert_error(403, "FORBIDDEN");
    app.put(&one)
        .bearer(&editor_user)
        .json(&body)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");

    // Someone without any entry does not even see the panel.
    app.get(&list)
        .bearer(&stranger)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    create(&app, &stranger, panel, &body)
        .await
        .assert_error(404, "PANEL_NOT_FOUND");

    // A builder with editor permission and an admin do.
    assert_eq!(create(&app, &editor, panel, &body).await.status, 201);
    let admin = token_for(TENANT, "admin@acme.example", Role::Admin);
    assert_eq!(create(&app, &admin, panel, &body).await.status, 201);
    let res = app.get(&list).bearer(&owner).send().await;
    assert_eq!(
        res.body.as_array().map(Vec::len),
        Some(3),
        "the refused requests wrote nothing"
    );
}

#[tokio::test]
async fn delete_needs_no_body_keeps_columns_and_is_recorded() {
    let Story { app, admin, panel } = story().await;
    let first = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "database", "config": database_config()}),
    )
    .await;
    let second = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "custom", "config": {}}),
    )
    .await;

    // A base column reads from the first source.
    let pool = app.owner_pool().await;
    sqlx::query(
        "insert into panel_column (tenant_id, panel_id, kind, name, type, source_field, data_source_id)
         values ($1, $2, 'base', 'Email', 'text', 'email', $3)",
    )
    .bind(TENANT)
    .bind(panel)
    .bind(first)
    .execute(&pool)
    .await
    .expect("column");

    // DELETE without any body (the reference demanded `{}`), and with `{}` still works.
    let res = app
        .delete(&format!("/panels/{panel}/datasources/{first}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert!(res.text.is_empty());
    let res = app
        .delete(&format!("/api/panels/{panel}/datasources/{second}"))
        .bearer(&admin)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);

    app.get(&format!("/panels/{panel}/datasources/{first}"))
        .bearer(&admin)
        .send()
        .await
        .assert_error(404, "DATA_SOURCE_NOT_FOUND");
    app.delete(&format!("/panels/{panel}/datasources/{first}"))
        .bearer(&admin)
        .send()
        .await
        .assert_error(404, "DATA_SOURCE_NOT_FOUND");
    let source: Option<i64> =
        sqlx::query_scalar("select data_source_id from panel_column where panel_id = $1")
            .bind(panel)
            .fetch_one(&pool)
            .await
            .expect("the column is still there");
    assert_eq!(source, None);

    let all = changes(&app, &admin, panel).await;
    let descriptions: Vec<&str> = all
        .iter()
        .filter_map(|c| c["description"].as_str())
        .collect();
    assert_eq!(
        descriptions
            .iter()
            .filter(|d| **d == "Data source added")
            .count(),
        2
    );
    assert_eq!(
        descriptions
            .iter()
            .filter(|d| **d == "Data source removed")
            .count(),
        2
    );
    assert!(all.iter().all(|c| c["changeType"] == "source_changed"));
    let removed = all
        .iter()
        .find(|c| c["description"] == "Data source removed" && c["oldValues"]["id"] == first)
        .expect("removal of the first source");
    assert_eq!(
        removed["oldValues"]["config"]["connectionString"],
        "********"
    );
    assert_eq!(removed["oldValues"]["type"], "database");
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412() {
    let Story { app, admin, panel } = story().await;
    let id = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "custom", "config": {}}),
    )
    .await;
    let path = format!("/panels/{panel}/datasources/{id}");
    let read = app.get(&path).bearer(&admin).send().await;
    let tag = read.header("etag").expect("an ETag").to_owned();

    let res = app
        .put(&path)
        .bearer(&admin)
        .header("if-match", &tag)
        .json(&json!({"type": "custom", "config": {"keyField": "a"}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let fresh = res.header("etag").expect("new ETag").to_owned();
    assert_ne!(fresh, tag);

    // Someone still holding the old tag loses, for update and delete, and nothing changes.
    let res = app
        .put(&path)
        .bearer(&admin)
        .header("if-match", &tag)
        .json(&json!({"type": "custom", "config": {"keyField": "b"}}))
        .send()
        .await;
    res.assert_error(412, "PRECONDITION_FAILED");
    app.delete(&path)
        .bearer(&admin)
        .header("if-match", &tag)
        .send()
        .await
        .assert_error(412, "PRECONDITION_FAILED");
    let res = app.get(&path).bearer(&admin).send().await;
    assert_eq!(res.body["config"]["keyField"], "a");
    assert_eq!(res.header("etag"), Some(fresh.as_str()));

    let res = app
        .delete(&path)
        .bearer(&admin)
        .header("if-match", &fresh)
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_create() {
    let Story { app, admin, panel } = story().await;
    let body = json!({"type": "database", "config": database_config()});
    let path = format!("/panels/{panel}/datasources");

    let first = app
        .post(&path)
        .bearer(&admin)
        .header("idempotency-key", "ds-1")
        .json(&body)
        .send()
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = app
        .post(&path)
        .bearer(&admin)
        .header("idempotency-key", "ds-1")
        .json(&body)
        .send()
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the same source, masked as before");

    // The key with another body, or on another panel, is another request.
    let other = app
        .post(&path)
        .bearer(&admin)
        .header("idempotency-key", "ds-1")
        .json(&json!({"type": "custom", "config": {}}))
        .send()
        .await;
    other.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    let other_panel = app.create_panel(&admin, "Diabetes follow-up").await;
    let res = app
        .post(&format!("/panels/{other_panel}/datasources"))
        .bearer(&admin)
        .header("idempotency-key", "ds-1")
        .json(&body)
        .send()
        .await;
    res.assert_error(422, "IDEMPOTENCY_KEY_REUSED");

    let list = app.get(&path).bearer(&admin).send().await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1), "created once");
    assert_eq!(changes(&app, &admin, panel).await.len(), 1, "recorded once");
}

#[tokio::test]
async fn lists_are_ordered_by_id_and_paged_with_link_headers() {
    let Story { app, admin, panel } = story().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            create_ok(
                &app,
                &admin,
                panel,
                &json!({"type": "custom", "config": {}}),
            )
            .await,
        );
    }
    let res = app
        .get(&format!("/panels/{panel}/datasources?limit=2"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let page: Vec<i64> = res
        .body
        .as_array()
        .expect("bare array")
        .iter()
        .filter_map(|d| d["id"].as_i64())
        .collect();
    assert_eq!(page, ids[..2]);
    let link = res
        .header("link")
        .expect("Link to the next page")
        .to_owned();
    assert!(link.contains("rel=\"next\""), "{link}");
    let cursor = res.header("x-next-cursor").expect("cursor").to_owned();

    let res = app
        .get(&format!(
            "/panels/{panel}/datasources?limit=2&cursor={cursor}"
        ))
        .bearer(&admin)
        .send()
        .await;
    let page: Vec<i64> = res
        .body
        .as_array()
        .expect("bare array")
        .iter()
        .filter_map(|d| d["id"].as_i64())
        .collect();
    assert_eq!(page, ids[2..]);
    assert!(res.header("link").is_none());

    let res = app
        .get(&format!("/panels/{panel}/datasources?limit=0"))
        .bearer(&admin)
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
}

/// The review's item: an editor points an `api` source at their own host and sends the stored
/// `Authorization` header back as the mask, hoping it follows. A kept secret stays only while
/// scheme, host and port (api) or host, port and database (database) stay the same.
#[tokio::test]
async fn a_kept_secret_never_follows_a_source_to_another_destination() {
    let Story { app, admin, panel } = story().await;
    let api = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "api", "config": {"url": "https://api.clinic.example/v1/patients", "headers": {"Authorization": "Bearer admin-only-secret"}}}),
    )
    .await;
    let path = format!("/panels/{panel}/datasources/{api}");
    let moved = |url: &str| json!({"type": "api", "config": {"url": url, "headers": {"Authorization": "********"}}});
    for elsewhere in [
        "https://attacker.example/v1/patients",
        "http://api.clinic.example/v1/patients",
        "https://api.clinic.example:8443/v1/patients",
    ] {
        let res = app
            .put(&path)
            .bearer(&admin)
            .json(&moved(elsewhere))
            .send()
            .await;
        res.assert_error(400, "SECRET_REQUIRED");
        assert_eq!(
            res.body["details"][0]["field"], "config.headers.Authorization",
            "{}",
            res.text
        );
    }
    // Same destination, another path: the secret is kept.
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&moved("https://API.clinic.example:443/v2/patients"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let plain = decrypt_config(&app.state.crypto, scope(api), &raw_config(&app, api).await)
        .expect("decrypt");
    assert_eq!(
        plain["headers"]["Authorization"],
        "Bearer admin-only-secret"
    );
    // Sending the value again moves it wherever the editor likes.
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "api", "config": {"url": "https://other.example/p", "headers": {"Authorization": "Bearer new"}}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);

    let db = create_ok(
        &app,
        &admin,
        panel,
        &json!({"type": "database", "config": {"connectionString": DB_SECRET, "password": "extra-pw", "query": "select 1"}}),
    )
    .await;
    let path = format!("/panels/{panel}/datasources/{db}");
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "database", "config": {"connectionString": "postgres://reader@attacker.example/clinic", "password": "********", "query": "select 1"}}))
        .send()
        .await;
    res.assert_error(400, "SECRET_REQUIRED");
    assert_eq!(
        res.body["details"][0]["field"], "config.password",
        "{}",
        res.text
    );
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "database", "config": {"connectionString": "********", "password": "********", "query": "select 2"}}))
        .send()
        .await;
    assert_eq!(
        res.status, 200,
        "the same destination keeps both: {}",
        res.text
    );
}

/// Credentials in an `api` URL's query (and userinfo) are secrets like headers: encrypted at rest,
/// masked in every answer, kept when sent back masked, and sent to the source whole.
#[tokio::test]
async fn credentials_in_an_api_url_are_masked_like_headers() {
    let Story { app, admin, panel } = story().await;
    let url = "https://svc:url-pw-secret@api.clinic.example/v1/p?page=1&access_token=tok-secret-1&api_key=key-secret-2&signature=sig-secret-3";
    let res = create(
        &app,
        &admin,
        panel,
        &json!({"type": "api", "config": {"url": url}}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["id"].as_i64().expect("id");
    let masked = "https://svc:********@api.clinic.example/v1/p?page=1&access_token=********&api_key=********&signature=********";
    assert_eq!(res.body["config"]["url"], masked);
    assert!(
        res.body["config"].get("$urlSecrets").is_none(),
        "{}",
        res.text
    );
    let stored = raw_config(&app, id).await.to_string();
    for secret in [
        "url-pw-secret",
        "tok-secret-1",
        "key-secret-2",
        "sig-secret-3",
    ] {
        assert!(
            !stored.contains(secret),
            "{secret} stored in clear: {stored}"
        );
        assert!(!res.text.contains(secret));
    }
    let plain =
        decrypt_config(&app.state.crypto, scope(id), &raw_config(&app, id).await).expect("decrypt");
    assert_eq!(plain["url"], url, "the sync reads the whole URL");
    // Sent back as read, with another page size: the credentials are kept.
    let path = format!("/panels/{panel}/datasources/{id}");
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(
            &json!({"type": "api", "config": {"url": masked.replace("page=1", "page=1&size=50")}}),
        )
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let plain =
        decrypt_config(&app.state.crypto, scope(id), &raw_config(&app, id).await).expect("decrypt");
    assert_eq!(plain["url"], url.replace("page=1", "page=1&size=50"));
    // Another host: the masked credentials must be sent again.
    let res = app
        .put(&path)
        .bearer(&admin)
        .json(&json!({"type": "api", "config": {"url": masked.replace("api.clinic.example", "attacker.example")}}))
        .send()
        .await;
    res.assert_error(400, "SECRET_REQUIRED");
    assert!(res.text.contains("access_token"), "{}", res.text);
}
