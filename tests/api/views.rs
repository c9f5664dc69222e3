//! Views: a user's look at a panel. Creating and sharing them, who sees what, sorts and filters
//! replaced all or nothing, publishing, concurrency guards, and the older client's requests.

use std::collections::HashMap;

use panels::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{Res, TestApp, token_for};

const TENANT: &str = "acme";

/// A tenant with a panel and a few columns, and its admin.
struct World {
    app: TestApp,
    admin: String,
    panel: i64,
    columns: HashMap<&'static str, i64>,
}

const COLUMNS: &[(&str, &str)] = &[
    ("lastName", "text"),
    ("firstName", "text"),
    ("email", "text"),
    ("status", "text"),
    ("age", "number"),
];

impl World {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let admin = token_for(TENANT, "admin@acme.test", Role::Admin);
        let panel = app.create_panel(&admin, "Follow-up").await;
        let columns = add_columns(&app, TENANT, panel, COLUMNS).await;
        Self {
            app,
            admin,
            panel,
            columns,
        }
    }

    fn col(&self, name: &str) -> String {
        self.columns[name].to_string()
    }

    /// Grants `email` a permission on a panel or view, as the admin.
    async fn grant(&self, resource: &str, id: i64, email: &str, permission: &str) {
        let res = self
            .app
            .post(&format!("/api/acls/{resource}/{id}"))
            .bearer(&self.admin)
            .json(&json!({"userEmail": email, "permission": permission}))
            .send()
            .await;
        assert_eq!(res.status, 201, "grant: {}", res.text);
    }

    async fn create_view(&self, token: &str, body: Value) -> Res {
        self.app
            .post("/api/views")
            .bearer(token)
            .json(&body)
            .send()
            .await
    }

    /// Creates a view as the admin and answers its id.
    async fn view(&self, name: &str) -> i64 {
        let res = self
            .create_view(
                &self.admin,
                json!({"name": name, "panelId": self.panel, "visibleColumns": []}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body["id"].as_i64().expect("id")
    }

    async fn get(&self, token: &str, path: &str) -> Res {
        self.app.get(path).bearer(token).send().await
    }
}

/// Columns are written beneath the API: this module is about views, not columns.
async fn add_columns(
    app: &TestApp,
    tenant: &str,
    panel: i64,
    columns: &[(&'static str, &str)],
) -> HashMap<&'static str, i64> {
    let pool = app.owner_pool().await;
    let mut ids = HashMap::new();
    for (name, column_type) in columns {
        let id: i64 = sqlx::query_scalar(
            "insert into panel_column (tenant_id, panel_id, kind, name, type, source_field)
             values ($1, $2, 'base', $3, $4, $3) returning id",
        )
        .bind(tenant)
        .bind(panel)
        .bind(name)
        .bind(column_type)
        .fetch_one(&pool)
        .await
        .expect("insert column");
        ids.insert(*name, id);
    }
    ids
}

fn ids(res: &Res) -> Vec<i64> {
    res.body["views"]
        .as_array()
        .expect("views array")
        .iter()
        .map(|v| v["id"].as_i64().expect("id"))
        .collect()
}

/// The envelope without its request id, to compare two error answers.
fn without_request_id(res: &Res) -> Value {
    let mut body = res.body.clone();
    body.as_object_mut().expect("envelope").remove("requestId");
    body
}

#[tokio::test]
async fn the_bruno_view_requests_pass_as_written() {
    let w = World::new().await;
    let (app, token, panel) = (&w.app, &w.admin, w.panel);

    // Views/List Views: GET /views?tenantId&userId&panelId (extra query keys are ignored).
    let res = app
        .get(&format!(
            "/views?tenantId=awell&userId=manuel&panelId={panel}"
        ))
        .bearer(token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["views"].is_array());
    assert!(res.body["total"].is_number());

    // Views/Create View: no visibleColumns, plus description/config/tenantId/userId (ignored).
    let res = app
        .post("/views")
        .bearer(token)
        .json(&json!({
            "name": "Test View",
            "description": "A test view",
            "panelId": panel,
            "config": {"columns": ["firstName", "lastName"], "groupBy": null, "layout": "table"},
            "metadata": {"category": "test"},
            "tenantId": "awell",
            "userId": "manuel"
        }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(res.body["id"].is_number());
    assert_eq!(res.body["isPublished"], false);
    assert_eq!(res.body["visibleColumns"], json!([]));
    let view = res.body["id"].as_i64().expect("id");

    // Views/Publish View: a body of tenantId/userId that the server ignores.
    let res = app
        .post(&format!("/views/{view}/publish"))
        .bearer(token)
        .json(&json!({"tenantId": "awell", "userId": "manuel"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["isPublished"], true);
    assert_eq!(res.body["publishedBy"], "user-admin@acme.test");
    assert!(res.body["publishedAt"].is_string());

    // View Configuration/Update View Sorts.
    let res = app
        .put(&format!("/views/{view}/sorts"))
        .bearer(token)
        .json(&json!({
            "sorts": [
                {"columnName": "lastName", "direction": "asc", "order": 1},
                {"columnName": "firstName", "direction": "asc", "order": 2},
                {"columnName": "email", "direction": "desc", "order": 3}
            ],
            "tenantId": "awell",
            "userId": "manuel"
        }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["sorts"].as_array().map(Vec::len), Some(3));

    // View Configuration/Update View Filters: the older flat list.
    let res = app
        .put(&format!("/views/{view}/filters"))
        .bearer(token)
        .json(&json!({
            "filters": [
                {"columnName": "status", "operator": "equals", "value": "active"},
                {"columnName": "age", "operator": "greater_than", "value": 18, "logicalOperator": "AND"},
                {"columnName": "lastName", "operator": "contains", "value": "Smith", "logicalOperator": "AND"}
            ],
            "tenantId": "awell",
            "userId": "manuel"
        }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["filters"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        res.body["filters"][1],
        json!({"columnName": "age", "operator": "gt", "value": 18, "logicalOperator": "AND"})
    );
    assert_eq!(res.body["filterTree"]["logic"], "AND");
    assert_eq!(
        res.body["filterTree"]["conditions"][0],
        json!({"field": "status", "operator": "eq", "value": "active"})
    );

    // What was stored reads back the same way.
    let res = app
        .get(&format!("/views/{view}/filters"))
        .bearer(token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["filters"].as_array().map(Vec::len), Some(3));
    let res = app
        .get(&format!("/views/{view}"))
        .bearer(token)
        .send()
        .await;
    let orders: Vec<i64> = res.body["sort"]
        .as_array()
        .expect("sort")
        .iter()
        .map(|s| s["order"].as_i64().expect("order"))
        .collect();
    assert_eq!(orders, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_new_view_has_the_reference_shape_and_an_owner_entry() {
    let w = World::new().await;
    let (first, age) = (w.col("firstName"), w.columns["age"]);
    let res = w
        .create_view(&w.admin, json!({"name": "  Mine  ", "panelId": w.panel, "visibleColumns": [first, age], "metadata": {"density": "compact"}}))
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let view = &res.body;
    let keys: Vec<&str> = view
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "id",
        "panelId",
        "name",
        "ownerUserId",
        "tenantId",
        "isPublished",
        "publishedAt",
        "visibleColumns",
        "metadata",
        "createdAt",
        "updatedAt",
        "sort",
    ] {
        assert!(keys.contains(&key), "{key} missing from {view}");
    }
    assert_eq!(view["name"], "Mine");
    assert_eq!(view["panelId"], w.panel);
    assert_eq!(view["ownerUserId"], "user-admin@acme.test");
    assert_eq!(view["tenantId"], TENANT);
    assert_eq!(view["publishedAt"], Value::Null);
    // Ids are answered as strings, whichever way they were sent.
    assert_eq!(
        view["visibleColumns"],
        json!([w.col("firstName"), age.to_string()])
    );
    assert_eq!(view["metadata"], json!({"density": "compact"}));
    assert_eq!(view["sort"], json!([]));
    let id = view["id"].as_i64().expect("id");

    let res = w.get(&w.admin, &format!("/api/acls/view/{id}")).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["acls"].as_array().map(Vec::len), Some(1));
    assert_eq!(res.body["acls"][0]["userEmail"], "admin@acme.test");
    assert_eq!(res.body["acls"][0]["permission"], "owner");

    // The GET carries an ETag and the same shape.
    let res = w.get(&w.admin, &format!("/api/views/{id}")).await;
    assert_eq!(res.status, 200);
    assert!(res.header("etag").is_some());
    assert_eq!(
        res.body["visibleColumns"],
        json!([w.col("firstName"), age.to_string()])
    );
}

#[tokio::test]
async fn creating_a_view_validates_its_panel_and_columns() {
    let w = World::new().await;
    let res = w.create_view(&w.admin, json!({"name": "x", "panelId": w.panel, "visibleColumns": ["999999", w.col("age"), 888888]})).await;
    res.assert_error(400, "VALIDATION_ERROR");
    assert!(
        res.body["message"]
            .as_str()
            .expect("message")
            .contains("999999, 888888"),
        "{}",
        res.text
    );

    let res = w
        .create_view(
            &w.admin,
            json!({"name": "x", "panelId": w.panel, "visibleColumns": [true]}),
        )
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = w
        .create_view(&w.admin, json!({"name": "   ", "panelId": w.panel}))
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = w
        .create_view(
            &w.admin,
            json!({"name": "x".repeat(256), "panelId": w.panel}),
        )
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = w
        .create_view(&w.admin, json!({"name": "x", "panelId": "one"}))
        .await;
    res.assert_error(400, "VALIDATION_ERROR");

    // A column of another panel is not one of this panel's.
    let other = w.app.create_panel(&w.admin, "Follow-up").await;
    let foreign = add_columns(&w.app, TENANT, other, &[("elsewhere", "text")]).await;
    let res = w.create_view(&w.admin, json!({"name": "x", "panelId": w.panel, "visibleColumns": [foreign["elsewhere"].to_string()]})).await;
    res.assert_error(400, "VALIDATION_ERROR");

    // A user who cannot read the panel cannot tell it exists.
    let stranger = token_for(TENANT, "stranger@acme.test", Role::User);
    let res = w
        .create_view(&stranger, json!({"name": "x", "panelId": w.panel}))
        .await;
    res.assert_error(404, "PANEL_NOT_FOUND");
    let res = w
        .create_view(&stranger, json!({"name": "x", "panelId": 987654}))
        .await;
    res.assert_error(404, "PANEL_NOT_FOUND");

    // Any reader of the panel may make a view of it, whatever their role.
    w.grant("panel", w.panel, "reader@acme.test", "viewer")
        .await;
    let reader = token_for(TENANT, "reader@acme.test", Role::User);
    let res = w
        .create_view(
            &reader,
            json!({"name": "x", "panelId": w.panel, "visibleColumns": [w.columns["age"]]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);

    // Nothing was recorded as a change of the panel.
    let pool = w.app.owner_pool().await;
    let changes: i64 = sqlx::query_scalar("select count(*) from panel_change")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(changes, 0);
}

#[tokio::test]
async fn who_sees_a_view() {
    let w = World::new().await;
    w.grant("panel", w.panel, "owner@acme.test", "viewer").await;
    let owner = token_for(TENANT, "owner@acme.test", Role::User);
    let viewer = token_for(TENANT, "viewer@acme.test", Role::User);
    let stranger = token_for(TENANT, "stranger@acme.test", Role::User);

    let res = w
        .create_view(&owner, json!({"name": "Owner's", "panelId": w.panel}))
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let view = res.body["id"].as_i64().expect("id");
    let path = format!("/api/views/{view}");

    // The owner and the admin see it; nobody else can tell it exists.
    assert_eq!(w.get(&owner, &path).await.status, 200);
    assert_eq!(w.get(&w.admin, &path).await.status, 200);
    let hidden = w.get(&stranger, &path).await;
    hidden.assert_error(404, "VIEW_NOT_FOUND");
    assert_eq!(hidden.body["message"], "View not found");
    w.get(&viewer, &format!("{path}/sorts"))
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.get(&viewer, &format!("{path}/filters"))
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    let unknown = w.get(&stranger, "/api/views/987654").await;
    assert_eq!(without_request_id(&hidden), without_request_id(&unknown));

    // The owner shares it read-only.
    let res = w
        .app
        .post(&format!("/api/acls/view/{view}"))
        .bearer(&owner)
        .json(&json!({"userEmail": "viewer@acme.test", "permission": "viewer"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(w.get(&viewer, &path).await.status, 200);
    assert_eq!(w.get(&viewer, &format!("{path}/sorts")).await.status, 200);
    let res = w
        .app
        .put(&path)
        .bearer(&viewer)
        .json(&json!({"name": "mine now"}))
        .send()
        .await;
    res.assert_error(403, "FORBIDDEN");
    let res = w
        .app
        .put(&format!("{path}/sorts"))
        .bearer(&viewer)
        .json(&json!({"sorts": []}))
        .send()
        .await;
    res.assert_error(403, "FORBIDDEN");
    w.app
        .delete(&path)
        .bearer(&viewer)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    w.get(&stranger, &path)
        .await
        .assert_error(404, "VIEW_NOT_FOUND");

    // The lists agree.
    assert_eq!(ids(&w.get(&owner, "/api/views").await), vec![view]);
    assert_eq!(ids(&w.get(&viewer, "/api/views").await), vec![view]);
    assert_eq!(
        ids(&w.get(&stranger, "/api/views").await),
        Vec::<i64>::new()
    );
    assert_eq!(ids(&w.get(&w.admin, "/api/views").await), vec![view]);

    // Published, it is readable by everyone in the tenant (still not writable) …
    let res = w
        .app
        .post(&format!("{path}/publish"))
        .bearer(&w.admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(w.get(&stranger, &path).await.status, 200);
    assert_eq!(w.get(&stranger, &format!("{path}/sorts")).await.status, 200);
    assert_eq!(
        w.get(&stranger, &format!("{path}/filters")).await.status,
        200
    );
    let res = w
        .app
        .put(&path)
        .bearer(&stranger)
        .json(&json!({"name": "mine now"}))
        .send()
        .await;
    res.assert_error(403, "FORBIDDEN");
    // … and listed for those who can read its panel.
    assert_eq!(
        ids(&w.get(&stranger, "/api/views").await),
        Vec::<i64>::new()
    );
    w.grant("panel", w.panel, "stranger@acme.test", "viewer")
        .await;
    let res = w.get(&stranger, "/api/views").await;
    assert_eq!(ids(&res), vec![view]);
    assert_eq!(res.body["total"], 1);

    // Another tenant sees nothing of it, exactly as of an unknown id, even as admin.
    let foreign = token_for("globex", "admin@globex.test", Role::Admin);
    let res = w.get(&foreign, &path).await;
    res.assert_error(404, "VIEW_NOT_FOUND");
    let unknown = w.get(&foreign, "/api/views/987654").await;
    assert_eq!(without_request_id(&res), without_request_id(&unknown));
    for res in [
        w.app
            .put(&path)
            .bearer(&foreign)
            .json(&json!({"name": "x"}))
            .send()
            .await,
        w.app.delete(&path).bearer(&foreign).send().await,
        w.app
            .put(&format!("{path}/sorts"))
            .bearer(&foreign)
            .json(&json!({"sorts": []}))
            .send()
            .await,
        w.app
            .post(&format!("{path}/unpublish"))
            .bearer(&foreign)
            .send()
            .await,
    ] {
        res.assert_error(404, "VIEW_NOT_FOUND");
    }
    assert_eq!(ids(&w.get(&foreign, "/api/views").await), Vec::<i64>::new());
    let res = w
        .create_view(&foreign, json!({"name": "x", "panelId": w.panel}))
        .await;
    res.assert_error(404, "PANEL_NOT_FOUND");
}

#[tokio::test]
async fn lists_honour_panel_and_published_for_every_role() {
    let w = World::new().await;
    let other = w.app.create_panel(&w.admin, "Follow-up").await;
    let (a, b) = (w.view("a").await, w.view("b").await);
    let res = w
        .create_view(&w.admin, json!({"name": "c", "panelId": other}))
        .await;
    let c = res.body["id"].as_i64().expect("id");
    assert_eq!(
        w.app
            .post(&format!("/api/views/{b}/publish"))
            .bearer(&w.admin)
            .send()
            .await
            .status,
        200
    );

    let user = token_for(TENANT, "user@acme.test", Role::User);
    for id in [a, b, c] {
        w.grant("view", id, "user@acme.test", "viewer").await;
    }
    for token in [&w.admin, &user] {
        let res = w.get(token, "/api/views").await;
        assert_eq!(
            (ids(&res), res.body["total"].clone()),
            (vec![c, b, a], json!(3))
        );
        let res = w
            .get(token, &format!("/api/views?panelId={}", w.panel))
            .await;
        assert_eq!(
            (ids(&res), res.body["total"].clone()),
            (vec![b, a], json!(2))
        );
        let res = w.get(token, "/api/views?published=true").await;
        assert_eq!((ids(&res), res.body["total"].clone()), (vec![b], json!(1)));
        let res = w
            .get(
                token,
                &format!("/api/views?published=false&panelId={other}"),
            )
            .await;
        assert_eq!((ids(&res), res.body["total"].clone()), (vec![c], json!(1)));
        w.get(token, "/api/views?published=maybe")
            .await
            .assert_error(400, "VALIDATION_ERROR");
        w.get(token, "/api/views?panelId=x")
            .await
            .assert_error(400, "VALIDATION_ERROR");
    }

    // Pages: newest id first, `total` counts every page, the next page is announced.
    let res = w.get(&user, "/api/views?limit=2").await;
    assert_eq!(
        (ids(&res), res.body["total"].clone()),
        (vec![c, b], json!(3))
    );
    let cursor = res.header("x-next-cursor").expect("next cursor").to_owned();
    assert!(res.header("link").expect("link").contains("rel=\"next\""));
    let res = w
        .get(&user, &format!("/api/views?limit=2&cursor={cursor}"))
        .await;
    assert_eq!((ids(&res), res.body["total"].clone()), (vec![a], json!(3)));
    assert!(res.header("x-next-cursor").is_none());
    w.get(&user, "/api/views?limit=0")
        .await
        .assert_error(400, "VALIDATION_ERROR");

    // Each listed view carries its sorts.
    let res = w
        .app
        .put(&format!("/api/views/{a}/sorts"))
        .bearer(&w.admin)
        .json(&json!({"sorts": [{"columnName": "age", "direction": "desc", "order": 0}]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let res = w.get(&user, "/api/views").await;
    let listed = res.body["views"].as_array().expect("views");
    assert_eq!(listed[2]["sort"][0]["columnName"], "age");
    assert_eq!(listed[0]["sort"], json!([]));
}

#[tokio::test]
async fn sorts_are_replaced_all_or_nothing() {
    let w = World::new().await;
    let view = w.view("sorted").await;
    let path = format!("/api/views/{view}/sorts");
    let before = w.get(&w.admin, &format!("/api/views/{view}")).await;

    // Sent out of order, answered by order.
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"sorts": [
            {"columnName": "age", "direction": "desc", "order": 5},
            {"columnName": "lastName", "direction": "asc", "order": 0}
        ]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let names: Vec<&str> = res.body["sorts"]
        .as_array()
        .expect("sorts")
        .iter()
        .map(|s| s["columnName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["lastName", "age"]);
    assert!(res.body["sorts"][0]["id"].is_number());
    let kept = w.get(&w.admin, &path).await.body;
    assert_eq!(kept["sorts"].as_array().map(Vec::len), Some(2));

    // The view itself changed: new version, new updatedAt.
    let after = w.get(&w.admin, &format!("/api/views/{view}")).await;
    assert_ne!(before.header("etag"), after.header("etag"));
    assert_ne!(before.body["updatedAt"], after.body["updatedAt"]);
    assert_eq!(after.body["sort"], kept["sorts"]);

    // Every bad list is refused and leaves the old sorts as they were.
    for (bad, code) in [
        (
            json!({"sorts": [{"columnName": "lastName", "direction": "asc", "order": 0}, {"columnName": "nope", "direction": "asc", "order": 1}]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"sorts": [{"columnName": "lastName", "direction": "asc", "order": 1}, {"columnName": "age", "direction": "asc", "order": 1}]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"sorts": [{"columnName": "lastName", "direction": "asc", "order": -1}]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"sorts": [{"columnName": "lastName", "direction": "asc", "order": 1.5}]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"sorts": [{"columnName": "lastName", "direction": "up", "order": 1}]}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"sorts": [{"columnName": "lastName", "direction": "asc", "order": 4_000_000_000_i64}]}),
            "VALIDATION_ERROR",
        ),
        (json!({"sorts": "lastName"}), "VALIDATION_ERROR"),
    ] {
        let res = w.app.put(&path).bearer(&w.admin).json(&bad).send().await;
        res.assert_error(400, code);
        assert_eq!(w.get(&w.admin, &path).await.body, kept, "after {bad}");
    }
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"sorts": [{"columnName": "nope", "direction": "asc", "order": 0}]}))
        .send()
        .await;
    assert!(
        res.body["message"]
            .as_str()
            .expect("message")
            .contains("nope"),
        "{}",
        res.text
    );

    // An editor of the view may replace them; an empty list clears them.
    w.grant("view", view, "editor@acme.test", "editor").await;
    let editor = token_for(TENANT, "editor@acme.test", Role::User);
    let res = w
        .app
        .put(&path)
        .bearer(&editor)
        .json(&json!({"sorts": []}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(w.get(&w.admin, &path).await.body, json!({"sorts": []}));
    w.get(&w.admin, "/api/views/987654/sorts")
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
}

#[tokio::test]
async fn filters_are_a_validated_tree() {
    let w = World::new().await;
    let view = w.view("filtered").await;
    let path = format!("/api/views/{view}/filters");

    // A new view filters nothing.
    let res = w.get(&w.admin, &path).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body,
        json!({"filters": [], "filterTree": {"conditions": [], "logic": "AND"}})
    );

    let tree = json!({"logic": "OR", "conditions": [
        {"field": "age", "operator": "gte", "value": 65},
        {"logic": "AND", "conditions": [{"field": "status", "operator": "in", "value": ["open", "new"]}]}
    ]});
    let res = w.app.put(&path).bearer(&w.admin).json(&tree).send().await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["filterTree"], tree);
    assert_eq!(res.body["filters"].as_array().map(Vec::len), Some(2));
    assert_eq!(res.body["filters"][1]["logicalOperator"], "AND");
    assert_eq!(w.get(&w.admin, &path).await.body["filterTree"], tree);

    // Unknown columns, operators that do not suit the column, malformed lists: 400, nothing kept.
    for bad in [
        json!({"conditions": [{"field": "nope", "operator": "eq", "value": 1}]}),
        json!({"conditions": [{"field": "lastName", "operator": "gt", "value": 1}]}),
        json!({"conditions": [{"field": "age", "operator": "eq", "value": "old"}]}),
        json!({"filters": [{"columnName": "age", "operator": "between", "value": 1}]}),
        json!({"filters": [{"columnName": "age", "operator": "eq", "value": 1, "logicalOperator": "XOR"}]}),
        json!({"filters": [{"operator": "eq", "value": 1}]}),
        json!({"filters": [{"columnName": "ghost", "operator": "equals", "value": 1}]}),
        json!([1, 2]),
    ] {
        let res = w.app.put(&path).bearer(&w.admin).json(&bad).send().await;
        res.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(
            w.get(&w.admin, &path).await.body["filterTree"],
            tree,
            "after {bad}"
        );
    }

    // The older client's operator names, with numbers sent as text.
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"filters": [
            {"columnName": "age", "operator": "less_than", "value": "30"},
            {"columnName": "status", "operator": "not_equals", "value": "closed", "logicalOperator": "OR"}
        ]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body["filterTree"],
        json!({"logic": "OR", "conditions": [
            {"field": "age", "operator": "lt", "value": 30},
            {"field": "status", "operator": "neq", "value": "closed"}
        ]})
    );

    // Viewers read filters but cannot change them.
    w.grant("view", view, "viewer@acme.test", "viewer").await;
    let viewer = token_for(TENANT, "viewer@acme.test", Role::User);
    assert_eq!(w.get(&viewer, &path).await.status, 200);
    w.app
        .put(&path)
        .bearer(&viewer)
        .json(&json!({"conditions": []}))
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn updates_apply_the_reference_rules() {
    let w = World::new().await;
    let res = w
        .create_view(&w.admin, json!({"name": "v", "panelId": w.panel, "visibleColumns": [w.col("age")], "metadata": {"a": 1, "b": 2}}))
        .await;
    let view = res.body["id"].as_i64().expect("id");
    let path = format!("/api/views/{view}");

    // An empty name is ignored, metadata merges, the column list is replaced.
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"name": "", "metadata": {"b": 3, "c": 4}, "visibleColumns": [w.col("email"), w.columns["status"]]}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["name"], "v");
    assert_eq!(res.body["metadata"], json!({"a": 1, "b": 3, "c": 4}));
    assert_eq!(
        res.body["visibleColumns"],
        json!([w.col("email"), w.col("status")])
    );
    assert!(res.header("etag").is_some());

    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"name": "renamed", "visibleColumns": []}))
        .send()
        .await;
    assert_eq!(
        (res.body["name"].clone(), res.body["visibleColumns"].clone()),
        (json!("renamed"), json!([]))
    );
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"visibleColumns": ["12345678"]}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"name": "y".repeat(300)}))
        .send()
        .await;
    res.assert_error(400, "VALIDATION_ERROR");

    // An editor of the view may update it, but only its owner (or an admin) may delete it.
    w.grant("view", view, "editor@acme.test", "editor").await;
    let editor = token_for(TENANT, "editor@acme.test", Role::User);
    let res = w
        .app
        .put(&path)
        .bearer(&editor)
        .json(&json!({"name": "edited"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    w.app
        .delete(&path)
        .bearer(&editor)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    w.app
        .put("/api/views/987654")
        .bearer(&w.admin)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.app
        .put("/api/views/abc")
        .bearer(&w.admin)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn a_stale_if_match_is_refused() {
    let w = World::new().await;
    let view = w.view("guarded").await;
    let path = format!("/api/views/{view}");
    let first = w.get(&w.admin, &path).await;
    let stale = first.header("etag").expect("etag").to_owned();

    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .header("if-match", &stale)
        .json(&json!({"name": "one"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let fresh = res.header("etag").expect("etag").to_owned();
    assert_ne!(fresh, stale);

    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .header("if-match", &stale)
        .json(&json!({"name": "two"}))
        .send()
        .await;
    res.assert_error(412, "PRECONDITION_FAILED");
    let res = w
        .app
        .put(&format!("{path}/sorts"))
        .bearer(&w.admin)
        .header("if-match", &stale)
        .json(&json!({"sorts": []}))
        .send()
        .await;
    res.assert_error(412, "PRECONDITION_FAILED");
    let res = w
        .app
        .put(&format!("{path}/filters"))
        .bearer(&w.admin)
        .header("if-match", &stale)
        .json(&json!({"conditions": []}))
        .send()
        .await;
    res.assert_error(412, "PRECONDITION_FAILED");
    w.app
        .delete(&path)
        .bearer(&w.admin)
        .header("if-match", &stale)
        .send()
        .await
        .assert_error(412, "PRECONDITION_FAILED");
    assert_eq!(w.get(&w.admin, &path).await.body["name"], "one");

    let res = w
        .app
        .delete(&path)
        .bearer(&w.admin)
        .header("if-match", &fresh)
        .send()
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
}

#[tokio::test]
async fn a_retried_create_is_replayed() {
    let w = World::new().await;
    let body = json!({"name": "once", "panelId": w.panel});
    let send = |body: Value| {
        w.app
            .post("/api/views")
            .bearer(&w.admin)
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
    };

    let first = send(body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = send(body.clone()).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let other = send(json!({"name": "twice", "panelId": w.panel})).await;
    other.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(w.get(&w.admin, "/api/views").await.body["total"], 1);

    // A failed create does not use up its key.
    let fail = w
        .app
        .post("/api/views")
        .bearer(&w.admin)
        .header("idempotency-key", "k-2")
        .json(&json!({"name": "x", "panelId": 987654}))
        .send()
        .await;
    fail.assert_error(404, "PANEL_NOT_FOUND");
    let ok = w
        .app
        .post("/api/views")
        .bearer(&w.admin)
        .header("idempotency-key", "k-2")
        .json(&body)
        .send()
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

#[tokio::test]
async fn a_view_stored_without_metadata_reads_fine() {
    let w = World::new().await;
    let view = w.view("legacy").await;
    let pool = w.app.owner_pool().await;
    sqlx::query(
        "update view set metadata = null, visible_columns = '[\"5\", 7, null]' where id = $1",
    )
    .bind(view)
    .execute(&pool)
    .await
    .expect("null metadata");
    let path = format!("/api/views/{view}");

    let res = w.get(&w.admin, &path).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body.get("metadata").is_none(), "{}", res.text);
    assert_eq!(res.body["visibleColumns"], json!(["5", "7"]));
    assert_eq!(w.get(&w.admin, "/api/views").await.status, 200);
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"name": "renamed"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body.get("metadata").is_none());
    let res = w
        .app
        .put(&path)
        .bearer(&w.admin)
        .json(&json!({"metadata": {"k": "v"}}))
        .send()
        .await;
    assert_eq!(res.body["metadata"], json!({"k": "v"}));

    // A filter tree an older version stored that no longer parses reads as "no filters".
    sqlx::query("update view set filters = '{\"conditions\": [{\"field\": 1}]}' where id = $1")
        .bind(view)
        .execute(&pool)
        .await
        .expect("odd filters");
    let res = w.get(&w.admin, &format!("{path}/filters")).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["filters"], json!([]));
}

#[tokio::test]
async fn publishing_needs_editor_and_builder_and_is_recorded() {
    let w = World::new().await;
    let view = w.view("shared").await;
    let path = format!("/api/views/{view}");
    w.grant("view", view, "user@acme.test", "editor").await;
    w.grant("view", view, "builder@acme.test", "editor").await;
    w.grant("view", view, "reader@acme.test", "viewer").await;
    let user = token_for(TENANT, "user@acme.test", Role::User);
    let builder = token_for(TENANT, "builder@acme.test", Role::Builder);
    let reader = token_for(TENANT, "reader@acme.test", Role::Builder);

    w.app
        .post(&format!("{path}/publish"))
        .bearer(&user)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    w.app
        .post(&format!("{path}/publish"))
        .bearer(&reader)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    let res = w
        .app
        .post(&format!("{path}/publish"))
        .bearer(&builder)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["isPublished"], true);
    assert_eq!(res.body["publishedBy"], "user-builder@acme.test");
    assert!(res.body["publishedAt"].is_string());
    assert_eq!(res.body["sort"], json!([]));

    // Publishing twice changes nothing and records nothing more.
    let again = w
        .app
        .post(&format!("{path}/publish"))
        .bearer(&w.admin)
        .send()
        .await;
    assert_eq!(
        (again.status, again.body["publishedAt"].clone()),
        (200, res.body["publishedAt"].clone())
    );

    let res = w
        .app
        .post(&format!("{path}/unpublish"))
        .bearer(&builder)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["isPublished"], false);
    assert_eq!(res.body["publishedAt"], Value::Null);
    assert_eq!(res.body["publishedBy"], Value::Null);
    w.app
        .post("/api/views/987654/publish")
        .bearer(&w.admin)
        .send()
        .await
        .assert_error(404, "VIEW_NOT_FOUND");

    let pool = w.app.owner_pool().await;
    let changes: Vec<(String, i64, String)> =
        sqlx::query_as("select change_type, panel_id, changed_by from panel_change order by id")
            .fetch_all(&pool)
            .await
            .expect("changes");
    assert_eq!(
        changes,
        vec![
            (
                "view_published".to_owned(),
                w.panel,
                "user-builder@acme.test".to_owned()
            ),
            (
                "view_unpublished".to_owned(),
                w.panel,
                "user-builder@acme.test".to_owned()
            ),
        ]
    );
    let notified: i64 = sqlx::query_scalar("select count(*) from view_notification")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(notified, 0);
}

#[tokio::test]
async fn deleting_a_view_takes_everything_of_it() {
    let w = World::new().await;
    let view = w.view("doomed").await;
    let keep = w.view("kept").await;
    let path = format!("/api/views/{view}");
    w.grant("view", view, "someone@acme.test", "viewer").await;
    for id in [view, keep] {
        let res = w
            .app
            .put(&format!("/api/views/{id}/sorts"))
            .bearer(&w.admin)
            .json(&json!({"sorts": [{"columnName": "age", "direction": "asc", "order": 0}]}))
            .send()
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let pool = w.app.owner_pool().await;
    sqlx::query("insert into view_notification (tenant_id, view_id, user_email, impact, message) values ($1, $2, 'someone@acme.test', 'info', 'hi')")
        .bind(TENANT)
        .bind(view)
        .execute(&pool)
        .await
        .expect("notification");

    let res = w.app.delete(&path).bearer(&w.admin).send().await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert!(res.text.is_empty());
    w.get(&w.admin, &path)
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    w.app
        .delete(&path)
        .bearer(&w.admin)
        .send()
        .await
        .assert_error(404, "VIEW_NOT_FOUND");

    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(view)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(
        count("select count(*) from view_sort where view_id = $1").await,
        0
    );
    assert_eq!(
        count("select count(*) from view_notification where view_id = $1").await,
        0
    );
    assert_eq!(count("select count(*) from access_control_lists where resource_type = 'view' and resource_id = $1").await, 0);
    // The other view is untouched.
    assert_eq!(
        w.get(&w.admin, &format!("/api/views/{keep}/sorts"))
            .await
            .body["sorts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
