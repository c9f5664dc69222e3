//! Panels: the reference's panel tests (create, defaults, list, get, update, delete, 404s) and
//! the defects it had (permissions, atomic create, NULL metadata, cascade, pagination).

use panels::auth::Role;
use serde_json::json;

use crate::helpers::{TestApp, token_for};

fn admin(tenant: &str) -> String {
    token_for(tenant, &format!("admin@{tenant}.example"), Role::Admin)
}

#[tokio::test]
async fn create_echoes_fields_ignores_client_tenant_and_defaults_the_rest() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let res = app
        .post("/panels")
        .bearer(&token)
        .json(&json!({"name": "Test Panel", "description": "Test", "tenantId": "evil", "userId": "mallory", "metadata": {"category": "x"}}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(res.body["id"].is_i64());
    assert_eq!(res.body["name"], "Test Panel");
    assert_eq!(res.body["description"], "Test");
    assert_eq!(res.body["tenantId"], "acme");
    assert_eq!(res.body["userId"], "user-admin@acme.example");
    assert_eq!(res.body["metadata"], json!({"category": "x"}));
    assert_eq!(
        res.body["cohortRule"],
        json!({"conditions": [], "logic": "AND"})
    );
    assert!(
        res.body["createdAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );

    let res = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(res.status, 201);
    assert_eq!(res.body["name"], "New Panel");
    assert_eq!(res.body["description"], serde_json::Value::Null);
    assert_eq!(res.body["metadata"], json!({}));
}

#[tokio::test]
async fn create_makes_the_creator_owner_in_the_same_transaction() {
    let app = TestApp::spawn().await;
    let builder = token_for("acme", "bea@acme.example", Role::Builder);
    let res = app
        .post("/api/panels")
        .bearer(&builder)
        .json(&json!({"name": "Mine"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["id"].as_i64().expect("id");
    let acls = app
        .get(&format!("/api/acls/panel/{id}"))
        .bearer(&builder)
        .send()
        .await;
    assert_eq!(acls.status, 200, "{}", acls.text);
    assert_eq!(acls.body["acls"][0]["userEmail"], "bea@acme.example");
    assert_eq!(acls.body["acls"][0]["permission"], "owner");
    // A builder sees what they own.
    let list = app.get("/api/panels").bearer(&builder).send().await;
    assert_eq!(list.body.as_array().expect("array").len(), 1);
}

#[tokio::test]
async fn validation_errors_are_400_with_details_never_500() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let res = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"name": "x".repeat(256)}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(res.body["details"][0]["field"], "name");
    let res = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"name": 5}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"cohortRule": {"conditions": [{"field": "age", "operator": "gt", "value": 3}], "logic": "AND"}}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert!(
        res.body["details"][0]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("cohortRule"))
    );
    for bad in [
        "/api/panels/abc",
        "/api/panels/99999999999999999999999",
        "/api/panels/1.5",
    ] {
        let res = app.get(bad).bearer(&token).send().await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
    }
    app.get("/api/panels/999")
        .bearer(&token)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    assert_eq!(
        app.get("/api/panels/999").bearer(&token).send().await.body["message"],
        "Panel not found"
    );
}

#[tokio::test]
async fn get_update_and_delete_a_panel() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let id = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({"name": "P", "metadata": {"a": 1, "b": 2}}))
        .send()
        .await
        .body["id"]
        .as_i64()
        .expect("id");

    let res = app
        .get(&format!("/panels/{id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["id"], id);
    let etag = res.header("etag").expect("etag").to_owned();

    let res = app
        .put(&format!("/panels/{id}"))
        .bearer(&token)
        .json(&json!({"name": "", "description": "new", "metadata": {"b": 3, "c": null}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["name"], "P", "an empty name is ignored");
    assert_eq!(res.body["description"], "new");
    assert_eq!(
        res.body["metadata"],
        json!({"a": 1, "b": 3, "c": null}),
        "metadata is shallow-merged"
    );
    assert_ne!(res.header("etag"), Some(etag.as_str()));

    // The old ETag is stale now.
    let res = app
        .put(&format!("/panels/{id}"))
        .bearer(&token)
        .header("if-match", &etag)
        .json(&json!({"name": "Q"}))
        .send()
        .await;
    res.assert_error(412, "PRECONDITION_FAILED");
    let fresh = app
        .get(&format!("/panels/{id}"))
        .bearer(&token)
        .send()
        .await
        .header("etag")
        .expect("etag")
        .to_owned();
    let res = app
        .put(&format!("/panels/{id}"))
        .bearer(&token)
        .header("if-match", &fresh)
        .json(&json!({"name": "Q"}))
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["name"], "Q");

    app.put("/panels/999")
        .bearer(&token)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    let res = app
        .delete(&format!("/panels/{id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.status, 204);
    assert!(res.text.is_empty());
    app.get(&format!("/panels/{id}"))
        .bearer(&token)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    app.delete("/panels/999")
        .bearer(&token)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
}

#[tokio::test]
async fn null_metadata_in_the_database_never_breaks_a_read() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let id = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({}))
        .send()
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    let pool = app.owner_pool().await;
    sqlx::query(
        "update panel set metadata = 'null'::jsonb, cohort_rule = '{\"bogus\": 1}' where id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .expect("corrupt");
    let res = app
        .get(&format!("/api/panels/{id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["metadata"], json!({}));
    let list = app.get("/api/panels").bearer(&token).send().await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body[0]["metadata"], json!({}));
    assert_eq!(
        list.body[0]["cohortRule"],
        json!({"conditions": [], "logic": "AND"})
    );
}

#[tokio::test]
async fn lists_are_paged_with_a_cursor_in_the_link_header() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    for i in 0..5 {
        app.post("/api/panels")
            .bearer(&token)
            .json(&json!({"name": format!("P{i}")}))
            .send()
            .await;
    }
    let mut names = Vec::new();
    let mut path = "/api/panels?limit=2".to_owned();
    loop {
        let res = app.get(&path).bearer(&token).send().await;
        assert_eq!(res.status, 200, "{}", res.text);
        names.extend(
            res.body
                .as_array()
                .expect("bare array")
                .iter()
                .map(|p| p["name"].as_str().expect("name").to_owned()),
        );
        match res.header("x-next-cursor") {
            Some(cursor) => {
                assert!(
                    res.header("link")
                        .is_some_and(|l| l.contains("rel=\"next\""))
                );
                path = format!("/api/panels?limit=2&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(names, vec!["P0", "P1", "P2", "P3", "P4"]);
    app.get("/api/panels?limit=0")
        .bearer(&token)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
    app.get("/api/panels?limit=1001")
        .bearer(&token)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
    app.get("/api/panels?cursor=garbage")
        .bearer(&token)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn idempotency_key_replays_the_first_create() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let body = json!({"name": "Once"});
    let first = app
        .post("/api/panels")
        .bearer(&token)
        .header("idempotency-key", "k-1")
        .json(&body)
        .send()
        .await;
    assert_eq!(first.status, 201);
    let again = app
        .post("/api/panels")
        .bearer(&token)
        .header("idempotency-key", "k-1")
        .json(&body)
        .send()
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = app
        .post("/api/panels")
        .bearer(&token)
        .header("idempotency-key", "k-1")
        .json(&json!({"name": "Twice"}))
        .send()
        .await;
    other.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    let list = app.get("/api/panels").bearer(&token).send().await;
    assert_eq!(list.body.as_array().expect("array").len(), 1);
}

#[tokio::test]
async fn cohort_rule_changes_are_validated_against_columns_and_recorded() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let id = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({}))
        .send()
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    let pool = app.owner_pool().await;
    sqlx::query("insert into panel_column (tenant_id, panel_id, kind, name, type, source_field) values ('acme', $1, 'base', 'age', 'number', 'age')")
        .bind(id)
        .execute(&pool)
        .await
        .expect("column");
    let rule =
        json!({"conditions": [{"field": "age", "operator": "gte", "value": 18}], "logic": "AND"});
    let res = app
        .put(&format!("/api/panels/{id}"))
        .bearer(&token)
        .json(&json!({"cohortRule": rule}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["cohortRule"], rule);
    let bad = json!({"conditions": [{"field": "age", "operator": "contains", "value": "x"}], "logic": "AND"});
    app.put(&format!("/api/panels/{id}"))
        .bearer(&token)
        .json(&json!({"cohortRule": bad}))
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");

    let changes = app
        .get(&format!("/api/changes/panels?panelId={id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(changes.status, 200, "{}", changes.text);
    assert_eq!(changes.body["total"], 1);
    assert_eq!(changes.body["changes"][0]["changeType"], "cohort_changed");
    assert_eq!(
        changes.body["changes"][0]["changedBy"],
        "user-admin@acme.example"
    );
    assert_eq!(changes.body["changes"][0]["newValues"]["cohortRule"], rule);
}

#[tokio::test]
async fn deleting_a_panel_removes_everything_it_owns_in_one_go() {
    let app = TestApp::spawn().await;
    let token = admin("acme");
    let id = app
        .post("/api/panels")
        .bearer(&token)
        .json(&json!({}))
        .send()
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    let pool = app.owner_pool().await;
    // Children of every kind, written beneath the API.
    sqlx::query(
        "with ds as (insert into data_source (tenant_id, panel_id, type) values ('acme', $1, 'custom') returning id),
              col as (insert into panel_column (tenant_id, panel_id, kind, name, type, source_field, data_source_id)
                      select 'acme', $1, 'base', 'c', 'text', 'c', id from ds returning id),
              v as (insert into view (tenant_id, panel_id, name, owner_user_id, is_published) values ('acme', $1, 'v', 'u', true) returning id),
              s as (insert into view_sort (tenant_id, view_id, column_name, direction, \"order\") select 'acme', id, 'c', 'asc', 0 from v returning id),
              ch as (insert into panel_change (tenant_id, panel_id, change_type, description, changed_by) values ('acme', $1, 'column_added', 'x', 'u') returning id),
              n as (insert into view_notification (tenant_id, view_id, panel_change_id, user_email, impact, message)
                    select 'acme', v.id, ch.id, 'a@b.co', 'info', 'm' from v, ch returning id),
              a as (insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
                    select 'acme', 'view', id, 'x@acme.example', 'viewer' from v returning id)
         select 1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .expect("children");
    assert_eq!(
        app.delete(&format!("/api/panels/{id}"))
            .bearer(&token)
            .send()
            .await
            .status,
        204
    );
    for table in [
        "data_source",
        "panel_column",
        "view",
        "view_sort",
        "panel_change",
        "view_notification",
        "access_control_lists",
    ] {
        let left: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        assert_eq!(left, 0, "{table} left behind");
    }
}

/// Concurrent creates are committed in groups; each caller still gets its own panel, in its own
/// tenant, owned by itself, and nobody else's.
#[tokio::test]
async fn concurrent_creates_each_answer_their_own_panel_owned_by_their_caller() {
    let app = TestApp::spawn().await;
    let callers: Vec<(String, String, String)> = (0..40)
        .map(|i| {
            let tenant = if i % 2 == 0 { "group-a" } else { "group-b" };
            let email = format!("builder{i}@{tenant}.example");
            let token = token_for(tenant, &email, Role::Builder);
            (tenant.to_owned(), email, token)
        })
        .collect();
    let answers = futures::future::join_all(callers.iter().enumerate().map(|(i, (_, _, token))| {
        app.post("/api/panels")
            .bearer(token)
            .json(&json!({"name": format!("Panel {i}"), "description": format!("of caller {i}"), "metadata": {"caller": i}}))
            .send()
    }))
    .await;

    let pool = app.owner_pool().await;
    for (i, (res, (tenant, email, token))) in answers.iter().zip(&callers).enumerate() {
        assert_eq!(res.status, 201, "{}", res.text);
        assert_eq!(res.body["name"], format!("Panel {i}"));
        assert_eq!(res.body["description"], format!("of caller {i}"));
        assert_eq!(res.body["metadata"], json!({"caller": i}));
        assert_eq!(res.body["tenantId"], tenant.as_str());
        assert_eq!(res.body["userId"], format!("user-{email}"));
        let id = res.body["id"].as_i64().expect("id");
        // Its caller reads it; the owner entry is the caller's, and the only one.
        let read = app
            .get(&format!("/api/panels/{id}"))
            .bearer(token)
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["name"], format!("Panel {i}"));
        let owners: Vec<(String, String)> = sqlx::query_as(
            "select user_email, permission from access_control_lists
              where resource_type = 'panel' and resource_id = $1",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .expect("acl");
        assert_eq!(owners, vec![(email.clone(), "owner".to_owned())]);
        // Another caller of the same tenant, with no entry, does not see it.
        let other = &callers[(i + 2) % callers.len()].2;
        app.get(&format!("/api/panels/{id}"))
            .bearer(other)
            .send()
            .await
            .assert_error(404, "PANEL_NOT_FOUND");
    }
    for tenant in ["group-a", "group-b"] {
        let list = app.get("/api/panels").bearer(&admin(tenant)).send().await;
        assert_eq!(
            list.body.as_array().map(Vec::len),
            Some(20),
            "{}",
            list.text
        );
        assert!(
            list.body
                .as_array()
                .expect("array")
                .iter()
                .all(|p| p["tenantId"] == tenant)
        );
    }
}

/// The grouped statement itself: every input gets its own row, in order, with its owner entry.
#[tokio::test]
async fn a_create_group_answers_each_input_with_its_own_row() {
    let app = TestApp::spawn().await;
    let tenant = panels::auth::TenantId::parse("grouped").expect("tenant slug");
    let new = |i: usize| panels::panels::batch::NewPanel {
        audit: None,
        user_id: format!("u{i}"),
        owner: format!("u{i}@grouped.example"),
        name: format!("Grouped {i}"),
        description: i.is_multiple_of(2).then(|| format!("d{i}")),
        cohort_rule: json!({"conditions": [], "logic": "AND"}),
        metadata: json!({"i": i}),
        actor: json!({"type": "user", "id": format!("u{i}"), "email": format!("u{i}@grouped.example")}),
    };
    let rows =
        futures::future::join_all((0..30).map(|i| app.state.creates.create(&tenant, new(i)))).await;
    let pool = app.owner_pool().await;
    for (i, row) in rows.into_iter().enumerate() {
        let row = row.expect("created");
        assert_eq!(row.name, format!("Grouped {i}"));
        assert_eq!(row.user_id, format!("u{i}"));
        assert_eq!(
            row.description,
            i.is_multiple_of(2).then(|| format!("d{i}"))
        );
        assert_eq!(row.metadata, json!({"i": i}));
        let owner: String = sqlx::query_scalar(
            "select user_email from access_control_lists where resource_type = 'panel' and resource_id = $1",
        )
        .bind(row.id)
        .fetch_one(&pool)
        .await
        .expect("owner");
        assert_eq!(owner, format!("u{i}@grouped.example"));
    }

    // The statement alone (as the request role), so a failure of it cannot hide behind the
    // one-by-one retry: positions map to their own inputs.
    let inputs = serde_json::to_value((100..103).map(new).collect::<Vec<_>>()).expect("json");
    let mut conn = app.state.db.acquire().await.expect("conn");
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "select ord, name, user_id from create_panels('grouped', $1) order by id desc",
    )
    .bind(&inputs)
    .fetch_all(&mut *conn)
    .await
    .expect("create_panels");
    let mut rows = rows;
    rows.sort();
    assert_eq!(
        rows,
        (100..103)
            .enumerate()
            .map(|(k, i)| (k as i64 + 1, format!("Grouped {i}"), format!("u{i}")))
            .collect::<Vec<_>>()
    );
}
