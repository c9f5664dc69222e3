//! Tenant isolation, two lines deep, and the role × permission matrix.
//!
//! The cross-tenant matrix walks the OpenAPI document, so every id-bearing route a later change
//! adds is covered without touching this file (a body for it goes in `body_for` when `{}` is not
//! a valid one).

use std::collections::HashMap;

use panels::auth::{Role, TenantId};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{Res, TestApp, token_for};

/// Ids of one tenant's resources, created beneath the API so the matrix does not depend on the
/// create endpoints it also tests.
struct Fixture {
    panel: i64,
    data_source: i64,
    column: i64,
    calculated: i64,
    view: i64,
    api_key: i64,
    webhook: i64,
    delivery: i64,
}

async fn seed(pool: &PgPool, tenant: &str, owner: &str) -> Fixture {
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "with p as (insert into panel (tenant_id, user_id, name) values ($1, 'seed', 'Seeded') returning id),
              ds as (insert into data_source (tenant_id, panel_id, type, config) select $1, id, 'custom', '{\"keyField\": \"id\"}' from p returning id),
              c as (insert into panel_column (tenant_id, panel_id, kind, name, type, source_field, data_source_id)
                    select $1, p.id, 'base', 'age', 'number', 'age', ds.id from p, ds returning id),
              k as (insert into panel_column (tenant_id, panel_id, kind, name, type, formula, dependencies)
                    select $1, p.id, 'calculated', 'double', 'number', 'age * 2', '[\"age\"]' from p returning id),
              v as (insert into view (tenant_id, panel_id, name, owner_user_id, owner_email, visible_columns)
                    select $1, p.id, 'Seeded view', 'seed', $2, '[]' from p returning id),
              a1 as (insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
                     select $1, 'panel', id, $2, 'owner' from p),
              a2 as (insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
                     select $1, 'view', id, $2, 'owner' from v),
              key as (insert into api_keys (tenant_id, name, prefix, key_digest, scope, created_by, created_by_email)
                      values ($1, 'k', 'pnl_x', sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'read', 'seed', $2) returning id)
         select p.id, ds.id, c.id, k.id, v.id, key.id from p, ds, c, k, v, key",
    )
    .bind(tenant)
    .bind(owner)
    .fetch_one(pool)
    .await
    .expect("seed");
    let (webhook, delivery): (i64, i64) = sqlx::query_as(
        "with w as (insert into webhook (tenant_id, panel_id, url, events, secret, created_by)
                    values ($1, $2, 'https://hooks.example.com/a', '{panel.updated}', 'sealed', $3) returning id),
              d as (insert into webhook_delivery (tenant_id, webhook_id, event_id, event_type, payload, max_attempts, status)
                    select $1, w.id, '1-1', 'panel.updated', '{}', 8, 'failed' from w returning id)
         select w.id, d.id from w, d",
    )
    .bind(tenant)
    .bind(row.0)
    .bind(owner)
    .fetch_one(pool)
    .await
    .expect("seed a webhook");
    Fixture {
        webhook,
        delivery,
        panel: row.0,
        data_source: row.1,
        column: row.2,
        calculated: row.3,
        view: row.4,
        api_key: row.5,
    }
}

/// A digest of every tenant table's rows: equal before and after means nothing changed.
async fn fingerprint(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id'
         where c.relkind = 'r' and c.relnamespace = 'public'::regnamespace order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut out = String::new();
    for table in tables {
        let sql = format!(
            "select coalesce(md5(string_agg(t::text, ',' order by t::text)), '') from {table} t where t.tenant_id = 'tenant-a'"
        );
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("digest");
        out.push_str(&format!("{table}:{digest};"));
    }
    out
}

fn ids(f: &Fixture) -> HashMap<&'static str, String> {
    HashMap::from([
        ("id", f.panel.to_string()),
        ("panelId", f.panel.to_string()),
        ("dsId", f.data_source.to_string()),
        ("colId", f.column.to_string()),
        ("viewId", f.view.to_string()),
        ("resourceId", f.panel.to_string()),
        ("resourceType", "panel".to_owned()),
        ("userEmail", "owner@a.example".to_owned()),
    ])
}

/// A valid body for routes where `{}` is not one, so the request reaches the id check.
fn body_for(method: &str, path: &str, f: &Fixture) -> Value {
    match (method, path) {
        ("put", "/api/panels/{id}") => json!({"name": "hijacked"}),
        ("post", p) if p.ends_with("/datasources") => {
            json!({"type": "custom", "config": {"keyField": "id"}})
        }
        ("put", p) if p.ends_with("/datasources/{dsId}") => {
            json!({"type": "custom", "config": {"keyField": "id"}})
        }
        ("post", p) if p.ends_with("/columns/base") => {
            json!({"name": "x", "type": "text", "sourceField": "x", "dataSourceId": f.data_source, "properties": {}})
        }
        ("post", p) if p.ends_with("/columns/calculated") => {
            json!({"name": "y", "type": "number", "formula": "1 + 1", "dependencies": [], "properties": {}})
        }
        ("put", p) if p.ends_with("/columns/order") => {
            json!({"columnIds": [f.column, f.calculated]})
        }
        ("put", p) if p.ends_with("/columns/{colId}") => json!({"name": "renamed"}),
        ("put", p) if p.ends_with("/sorts") => {
            json!({"sorts": [{"columnName": "age", "direction": "asc", "order": 0}]})
        }
        ("put", p) if p.ends_with("/filters") => json!({"conditions": [], "logic": "AND"}),
        ("put", "/api/views/{id}") => json!({"name": "hijacked"}),
        ("post", p) if p.ends_with("/share-public") => json!({"permission": "editor"}),
        ("post", "/api/acls/{resourceType}/{resourceId}") => {
            json!({"userEmail": "mallory@b.example", "permission": "owner"})
        }
        ("put", p) if p.starts_with("/api/acls/") => json!({"permission": "owner"}),
        ("post", p) if p.ends_with("/records") => json!({"records": [{"id": "1"}]}),
        ("post", p) if p.ends_with("/formulas/check") => json!({"formula": "1 + 1"}),
        ("put", "/api/webhooks/{id}") => {
            json!({"url": "https://hooks.example.com/b", "events": ["panel.updated"]})
        }
        _ => json!({}),
    }
}

fn without_request_id(res: &Res) -> Value {
    let mut body = res.body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("requestId");
    }
    body
}

/// Tenant B calls every id-bearing route with tenant A's ids: each answers exactly as for an id
/// that does not exist, and nothing of A's changes.
#[tokio::test]
async fn another_tenants_ids_answer_exactly_like_unknown_ids_on_every_route() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    let a = seed(&pool, "tenant-a", "owner@a.example").await;
    let before = fingerprint(&pool).await;
    let mallory = token_for("tenant-b", "mallory@b.example", Role::Admin);

    let unknown = Fixture {
        panel: 987_654_321,
        data_source: 987_654_322,
        column: 987_654_323,
        calculated: 987_654_324,
        view: 987_654_325,
        api_key: 987_654_326,
        webhook: 987_654_327,
        delivery: 987_654_328,
    };
    let doc = serde_json::to_value(panels::router::openapi()).expect("document");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/") || !path.contains('{') || path.starts_with("/api/acls/user/")
        {
            continue;
        }
        for method in item.as_object().expect("item").keys() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let call = |fixture: &Fixture| {
                let mut concrete = path.clone();
                let mut values = ids(fixture);
                // A view route's `{id}` is a view, an API key's is a key.
                if path.starts_with("/api/views/") {
                    values.insert("id", fixture.view.to_string());
                }
                if path.starts_with("/api/api-keys/") {
                    values.insert("id", fixture.api_key.to_string());
                }
                if path.starts_with("/api/webhooks/") {
                    values.insert("id", fixture.webhook.to_string());
                    values.insert("deliveryId", fixture.delivery.to_string());
                }
                for (name, value) in &values {
                    concrete = concrete.replace(&format!("{{{name}}}"), value);
                }
                let body = body_for(method, path, fixture);
                app.request(method.to_uppercase().parse().expect("method"), &concrete)
                    .bearer(&mallory)
                    .json(&body)
            };
            let foreign = call(&a).send().await;
            let missing = call(&unknown).send().await;
            assert_eq!(
                foreign.status, missing.status,
                "{method} {path}: foreign {} vs unknown {}",
                foreign.text, missing.text
            );
            assert_eq!(
                without_request_id(&foreign),
                without_request_id(&missing),
                "{method} {path}"
            );
            assert_eq!(foreign.status, 404, "{method} {path}: {}", foreign.text);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} routes checked");

    // Ids in bodies too: a view on A's panel.
    let res = app
        .post("/api/views")
        .bearer(&mallory)
        .json(&json!({"name": "v", "panelId": a.panel, "visibleColumns": []}))
        .send()
        .await;
    assert_eq!(res.status, 404, "{}", res.text);

    assert_eq!(fingerprint(&pool).await, before, "tenant A's data changed");
}

#[tokio::test]
async fn lists_and_counts_never_show_another_tenants_rows() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    let a = seed(&pool, "tenant-a", "owner@a.example").await;
    sqlx::query("insert into panel_change (tenant_id, panel_id, change_type, description, changed_by) values ('tenant-a', $1, 'column_added', 'x', 'seed')")
        .bind(a.panel)
        .execute(&pool)
        .await
        .expect("change");
    sqlx::query("insert into view_notification (tenant_id, view_id, user_email, impact, message) values ('tenant-a', $1, 'owner@a.example', 'info', 'm')")
        .bind(a.view)
        .execute(&pool)
        .await
        .expect("notification");
    // Mallory even shares A's e-mail address in her own tenant.
    let mallory = token_for("tenant-b", "owner@a.example", Role::Admin);
    for (path, key) in [
        ("/api/panels", None),
        ("/api/views", Some("views")),
        (&format!("/api/views?panelId={}", a.panel), Some("views")),
        ("/api/changes/panels", Some("changes")),
        (
            &format!("/api/changes/panels?panelId={}&tenantId=tenant-a", a.panel),
            Some("changes"),
        ),
        (
            "/api/notifications/views?tenantId=tenant-a",
            Some("notifications"),
        ),
        ("/api/acls/user/owner@a.example", Some("acls")),
        ("/api/api-keys", None),
    ] {
        let res = app.get(path).bearer(&mallory).send().await;
        assert_eq!(res.status, 200, "{path}: {}", res.text);
        let list = match key {
            Some(key) => &res.body[key],
            None => &res.body,
        };
        assert_eq!(
            list.as_array().map(Vec::len),
            Some(0),
            "{path}: {}",
            res.text
        );
        for count in ["total", "unreadCount"] {
            if let Some(n) = res.body.get(count) {
                assert_eq!(n, 0, "{path} {count}");
            }
        }
    }
}

/// The second line: with the application's tenant filter gone, row-level security alone still
/// shows a transaction only its own tenant's rows.
#[tokio::test]
async fn row_level_security_backs_up_a_query_without_a_tenant_filter() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    seed(&pool, "tenant-a", "owner@a.example").await;
    seed(&pool, "tenant-b", "owner@b.example").await;

    let tenant_b = TenantId::parse("tenant-b").expect("tenant slug");
    let mut tx = app.state.db.begin(&tenant_b).await.expect("begin");
    let panels: Vec<(String,)> = sqlx::query_as("select tenant_id from panel")
        .fetch_all(&mut *tx)
        .await
        .expect("query");
    assert_eq!(panels, vec![("tenant-b".to_owned(),)]);
    let keys: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&mut *tx)
        .await
        .expect("query");
    assert_eq!(keys, 1);
    // Writing into another tenant is refused too.
    let err = sqlx::query(
        "insert into panel (tenant_id, user_id, name) values ('tenant-a', 'x', 'smuggled')",
    )
    .execute(&mut *tx)
    .await;
    assert!(err.is_err(), "insert into another tenant must fail");
    tx.rollback().await.expect("rollback");

    // No tenant at all: nothing.
    let mut conn = app.state.db.pool().acquire().await.expect("conn");
    let count: i64 = sqlx::query_scalar("select count(*) from panel")
        .fetch_one(&mut *conn)
        .await
        .expect("query");
    assert_eq!(count, 0);
    let role: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut *conn)
        .await
        .expect("role");
    assert_eq!(role, "panels_app");
}

/// The one-round-trip read binds its tenant for its own statement only: afterwards the
/// connection sees nothing again, and inside a transaction of another tenant it puts that
/// tenant back. A tenant's own function cannot read another tenant's panel either.
#[tokio::test]
async fn the_one_trip_statements_bind_their_tenant_for_their_statement_only() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    let a = seed(&pool, "tenant-a", "owner@a.example").await;
    let b = seed(&pool, "tenant-b", "owner@b.example").await;
    let read = "select id, permission from read_panel($1, $2, $3, $4)";

    let mut conn = app.state.db.acquire().await.expect("conn");
    let found: Option<(i64, Option<String>)> = sqlx::query_as(read)
        .bind("tenant-b")
        .bind(b.panel)
        .bind("owner@b.example")
        .bind("seed")
        .fetch_optional(&mut *conn)
        .await
        .expect("read");
    assert_eq!(found, Some((b.panel, Some("owner".to_owned()))));
    // The statement's transaction is over: no tenant any more.
    let count: i64 = sqlx::query_scalar("select count(*) from panel")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(count, 0);
    // Asking as tenant B for tenant A's panel finds nothing.
    let found: Option<(i64, Option<String>)> = sqlx::query_as(read)
        .bind("tenant-b")
        .bind(a.panel)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .fetch_optional(&mut *conn)
        .await
        .expect("read");
    assert_eq!(found, None);
    drop(conn);

    // Inside tenant A's transaction, a read or a create for B is refused: a function never binds
    // a tenant other than the one the transaction is bound to (a caller's bug cannot cross).
    let tenant_a = TenantId::parse("tenant-a").expect("tenant slug");
    let refused = |err: sqlx::Error| match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let mut tx = app.state.db.begin(&tenant_a).await.expect("begin");
    let err = sqlx::query_as::<_, (i64, Option<String>)>(read)
        .bind("tenant-b")
        .bind(b.panel)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .fetch_optional(&mut *tx)
        .await
        .expect_err("a read for B inside A's transaction");
    assert_eq!(refused(err).as_deref(), Some("42501"));
    tx.rollback().await.expect("rollback");
    let mut tx = app.state.db.begin(&tenant_a).await.expect("begin");
    let err = sqlx::query(
        "select p.id from create_panels('tenant-b',
           '[{\"userId\": \"u\", \"owner\": \"u@b.example\", \"name\": \"New\", \"cohortRule\": {}, \"metadata\": {}}]') p",
    )
    .fetch_one(&mut *tx)
    .await
    .expect_err("a create for B inside A's transaction");
    assert_eq!(refused(err).as_deref(), Some("42501"));
    tx.rollback().await.expect("rollback");
    // The same tenant as the transaction's still reads, and leaves it bound to A.
    let mut tx = app.state.db.begin(&tenant_a).await.expect("begin");
    let found: Option<(i64, Option<String>)> = sqlx::query_as(read)
        .bind("tenant-a")
        .bind(a.panel)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .fetch_optional(&mut *tx)
        .await
        .expect("read");
    assert_eq!(found.map(|f| f.0), Some(a.panel));
    let panels: Vec<(String,)> = sqlx::query_as("select tenant_id from panel")
        .fetch_all(&mut *tx)
        .await
        .expect("query");
    assert_eq!(panels, vec![("tenant-a".to_owned(),)]);
    tx.rollback().await.expect("rollback");

    // A scheduled run is enqueued only for a source of that tenant and panel that has a schedule.
    let mut conn = app.state.db.acquire().await.expect("conn");
    sqlx::query("select enqueue_scheduled_run('tenant-b', $1, $2)")
        .bind(a.panel)
        .bind(a.data_source)
        .execute(&mut *conn)
        .await
        .expect("enqueue");
    drop(conn);
    let runs: i64 = sqlx::query_scalar("select count(*) from sync_run")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(runs, 0, "no run for another tenant's source");
}

/// No function of the schema is callable by a role that is not the server's: another login of the
/// same cluster cannot bind a tenant or look an identity up.
#[tokio::test]
async fn the_schema_functions_answer_only_the_servers_roles() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    let outsider = format!("panels_test_outsider_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("create role {outsider} login")))
        .execute(&pool)
        .await
        .expect("role");
    let url = format!(
        "{}?user={outsider}",
        app.database_url.split('?').next().unwrap_or_default()
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect as the outsider");
    for call in [
        "select panels_bind_tenant('tenant-a')",
        "select * from read_panel('tenant-a', 1, null, null)",
        "select * from auth_find_login('owner@a.example')",
        "select * from claim_sync_run('x', 10)",
        "select app_tenant()",
    ] {
        let err = sqlx::query(call).execute(&mut conn).await.expect_err(call);
        let code = match &err {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        assert_eq!(code.as_deref(), Some("42501"), "{call}: {err}");
    }
    drop(conn);
    sqlx::query(sqlx::AssertSqlSafe(format!("drop role {outsider}")))
        .execute(&pool)
        .await
        .expect("drop role");
}

/// Every table that holds tenant data has RLS enabled and forced, and the runtime role can
/// bypass none of it.
#[tokio::test]
async fn every_tenant_table_has_forced_rls_and_the_runtime_role_cannot_bypass_it() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "select c.relname::text, c.relrowsecurity, c.relforcerowsecurity from pg_class c
         where c.relkind = 'r' and c.relnamespace = 'public'::regnamespace
           and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname in ('tenant_id'))
         order by 1",
    )
    .fetch_all(&pool)
    .await
    .expect("catalog");
    assert!(tables.len() >= 10, "{tables:?}");
    for (table, enabled, forced) in &tables {
        assert!(
            *enabled && *forced,
            "{table}: rls enabled={enabled} forced={forced}"
        );
    }
    let tenants: (bool, bool) = sqlx::query_as(
        "select relrowsecurity, relforcerowsecurity from pg_class where relname = 'tenants'",
    )
    .fetch_one(&pool)
    .await
    .expect("tenants");
    assert_eq!(tenants, (true, true));
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("select rolsuper, rolbypassrls from pg_roles where rolname = 'panels_app'")
            .fetch_one(&pool)
            .await
            .expect("role");
    assert!(!superuser && !bypass);
    let owned: i64 = sqlx::query_scalar(
        "select count(*) from pg_class where relowner = (select oid from pg_roles where rolname = 'panels_app')",
    )
    .fetch_one(&pool)
    .await
    .expect("owned");
    assert_eq!(owned, 0, "panels_app must own no table");
}

/// Many tenants' requests interleaved over a pool of two connections: every answer holds only
/// the asking tenant's rows (a tenant setting leaking across pooled connections would show).
#[tokio::test]
async fn interleaved_tenants_on_a_tiny_pool_never_leak() {
    let app = TestApp::spawn_with(&[("DATABASE_MAX_CONNECTIONS", "2")]).await;
    let pool = app.owner_pool().await;
    let tenants = ["t-one", "t-two", "t-three", "t-four"];
    for t in tenants {
        for _ in 0..3 {
            seed(&pool, t, &format!("owner@{t}.example")).await;
        }
    }
    let mut tasks = Vec::new();
    for i in 0..160 {
        let tenant = tenants[i % tenants.len()];
        let token = token_for(
            tenant,
            &format!("owner@{tenant}.example"),
            if i % 2 == 0 { Role::Admin } else { Role::User },
        );
        let req = app.get("/api/panels").bearer(&token);
        tasks.push(tokio::spawn(async move { (tenant, req.send().await) }));
    }
    for task in tasks {
        let (tenant, res) = task.await.expect("task");
        assert_eq!(res.status, 200, "{}", res.text);
        let panels = res.body.as_array().expect("array");
        assert_eq!(panels.len(), 3, "{tenant}: {}", res.text);
        assert!(
            panels.iter().all(|p| p["tenantId"] == tenant),
            "{tenant} saw {}",
            res.text
        );
    }
}

/// Role × ACL level → status, for every panel action (docs/permissions.md is the same table).
#[tokio::test]
async fn the_role_and_permission_matrix() {
    let app = TestApp::spawn().await;
    let pool = app.owner_pool().await;
    // (role, acl level, action) → status
    let levels = [None, Some("viewer"), Some("editor"), Some("owner")];
    let roles = [Role::User, Role::Builder, Role::Admin];
    for role in roles {
        for level in levels {
            let f = seed(&pool, "matrix", "someone-else@matrix.example").await;
            let email = format!(
                "{}-{}@matrix.example",
                role.as_str(),
                level.unwrap_or("none")
            );
            if let Some(level) = level {
                sqlx::query("insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission) values ('matrix', 'panel', $1, $2, $3)")
                    .bind(f.panel)
                    .bind(&email)
                    .bind(level)
                    .execute(&pool)
                    .await
                    .expect("acl");
            }
            let token = token_for("matrix", &email, role);
            let rank = match level {
                None => 0,
                Some("viewer") => 1,
                Some("editor") => 2,
                _ => 3,
            };
            let admin = role == Role::Admin;
            let builder = role >= Role::Builder;
            let expect = |needed: i32, needs_builder: bool| -> u16 {
                if admin {
                    return 200;
                }
                if rank == 0 {
                    return 404;
                }
                if rank < needed || (needs_builder && !builder) {
                    403
                } else {
                    200
                }
            };
            let cases: Vec<(&str, Res, u16)> = vec![
                (
                    "read panel",
                    app.get(&format!("/api/panels/{}", f.panel))
                        .bearer(&token)
                        .send()
                        .await,
                    expect(1, false),
                ),
                (
                    "read acls",
                    app.get(&format!("/api/acls/panel/{}", f.panel))
                        .bearer(&token)
                        .send()
                        .await,
                    expect(1, false),
                ),
                (
                    "update panel",
                    app.put(&format!("/api/panels/{}", f.panel))
                        .bearer(&token)
                        .json(&json!({"description": "x"}))
                        .send()
                        .await,
                    expect(2, true),
                ),
                (
                    "share panel",
                    app.post(&format!("/api/acls/panel/{}/share-public", f.panel))
                        .bearer(&token)
                        .json(&json!({"permission": "viewer"}))
                        .send()
                        .await,
                    if expect(3, false) == 200 {
                        201
                    } else {
                        expect(3, false)
                    },
                ),
                (
                    "delete panel",
                    app.delete(&format!("/api/panels/{}", f.panel))
                        .bearer(&token)
                        .send()
                        .await,
                    if expect(3, false) == 200 {
                        204
                    } else {
                        expect(3, false)
                    },
                ),
            ];
            for (action, res, expected) in cases {
                assert_eq!(
                    res.status,
                    expected,
                    "{} with {:?} → {action}: {}",
                    role.as_str(),
                    level,
                    res.text
                );
            }
            let create = app
                .post("/api/panels")
                .bearer(&token)
                .json(&json!({}))
                .send()
                .await;
            assert_eq!(
                create.status,
                if builder { 201 } else { 403 },
                "{} create panel",
                role.as_str()
            );
        }
    }
}
