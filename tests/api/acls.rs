//! ACLs: the existing client's sharing endpoints, with the reference's shapes and codes, and
//! the authorization the reference never had.

use panels::auth::Role;
use serde_json::json;

use crate::helpers::{TestApp, token_for};

async fn panel_owned_by(app: &TestApp, token: &str) -> i64 {
    let res = app
        .post("/api/panels")
        .bearer(token)
        .json(&json!({"name": "Shared"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["id"].as_i64().expect("id")
}

#[tokio::test]
async fn an_owner_shares_updates_and_revokes_with_the_reference_shapes() {
    let app = TestApp::spawn().await;
    let owner = token_for("acme", "olga@acme.example", Role::Builder);
    let id = panel_owned_by(&app, &owner).await;

    let res = app.post(&format!("/acls/panel/{id}")).bearer(&owner).json(&json!({"userEmail": "Vic@Acme.example", "permission": "viewer", "tenantId": "ignored"})).send().await;
    assert_eq!(res.status, 201, "{}", res.text);
    let acl = &res.body["acl"];
    for key in [
        "id",
        "tenantId",
        "resourceType",
        "resourceId",
        "userEmail",
        "permission",
        "createdAt",
        "updatedAt",
    ] {
        assert!(!acl[key].is_null(), "missing {key}");
    }
    assert_eq!(
        acl["userEmail"], "vic@acme.example",
        "e-mails compare case-insensitively"
    );
    assert_eq!(acl["resourceId"], id);

    let dup = app
        .post(&format!("/acls/panel/{id}"))
        .bearer(&owner)
        .json(&json!({"userEmail": "VIC@acme.example", "permission": "editor"}))
        .send()
        .await;
    dup.assert_error(409, "ACL_EXISTS");
    assert_eq!(dup.body["message"], "ACL entry already exists");

    // The viewer can now read the panel, but not change it.
    let vic = token_for("acme", "vic@acme.example", Role::Builder);
    assert_eq!(
        app.get(&format!("/api/panels/{id}"))
            .bearer(&vic)
            .send()
            .await
            .status,
        200
    );
    app.put(&format!("/api/panels/{id}"))
        .bearer(&vic)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .assert_error(403, "FORBIDDEN");

    let res = app
        .put(&format!("/acls/panel/{id}/vic@acme.example"))
        .bearer(&owner)
        .json(&json!({"permission": "editor"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["acl"]["permission"], "editor");
    assert_eq!(
        app.put(&format!("/api/panels/{id}"))
            .bearer(&vic)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .status,
        200
    );

    let list = app
        .get(&format!("/acls/panel/{id}"))
        .bearer(&vic)
        .send()
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["acls"].as_array().expect("acls").len(), 2);

    let res = app
        .delete(&format!("/acls/panel/{id}/vic@acme.example"))
        .bearer(&owner)
        .send()
        .await;
    assert_eq!(res.status, 204);
    assert!(res.text.is_empty());
    app.get(&format!("/api/panels/{id}"))
        .bearer(&vic)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    app.delete(&format!("/acls/panel/{id}/vic@acme.example"))
        .bearer(&owner)
        .send()
        .await
        .assert_error(404, "ACL_NOT_FOUND");
    app.put(&format!("/acls/panel/{id}/nobody@acme.example"))
        .bearer(&owner)
        .json(&json!({"permission": "viewer"}))
        .send()
        .await
        .assert_error(404, "ACL_NOT_FOUND");
}

#[tokio::test]
async fn share_public_creates_then_updates_the_tenant_wide_entry() {
    let app = TestApp::spawn().await;
    let owner = token_for("acme", "olga@acme.example", Role::Builder);
    let id = panel_owned_by(&app, &owner).await;
    let anyone = token_for("acme", "anyone@acme.example", Role::User);
    app.get(&format!("/api/panels/{id}"))
        .bearer(&anyone)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");

    let res = app
        .post(&format!("/acls/panel/{id}/share-public"))
        .bearer(&owner)
        .json(&json!({"permission": "viewer"}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["acl"]["userEmail"], "_all");
    let res = app
        .post(&format!("/acls/panel/{id}/share-public"))
        .bearer(&owner)
        .json(&json!({"permission": "editor"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["acl"]["permission"], "editor");

    assert_eq!(
        app.get(&format!("/api/panels/{id}"))
            .bearer(&anyone)
            .send()
            .await
            .status,
        200
    );
    let listed = app.get("/api/panels").bearer(&anyone).send().await;
    assert_eq!(listed.body.as_array().expect("array").len(), 1);

    // The anyone user still is no owner: cannot re-share or grant themselves ownership.
    let res = app
        .post(&format!("/acls/panel/{id}"))
        .bearer(&anyone)
        .json(&json!({"userEmail": "anyone@acme.example", "permission": "owner"}))
        .send()
        .await;
    res.assert_error(403, "FORBIDDEN");
    assert_eq!(
        app.delete(&format!("/acls/panel/{id}/_all"))
            .bearer(&owner)
            .send()
            .await
            .status,
        204
    );
    app.get(&format!("/api/panels/{id}"))
        .bearer(&anyone)
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
}

#[tokio::test]
async fn acl_targets_must_exist_in_the_callers_tenant_and_inputs_are_checked() {
    let app = TestApp::spawn().await;
    let admin = token_for("acme", "root@acme.example", Role::Admin);
    // Granting on a resource id that does not exist (the reference happily stored it).
    app.post("/acls/panel/424242")
        .bearer(&admin)
        .json(&json!({"userEmail": "x@acme.example", "permission": "owner"}))
        .send()
        .await
        .assert_error(404, "PANEL_NOT_FOUND");
    app.post("/acls/view/424242")
        .bearer(&admin)
        .json(&json!({"userEmail": "x@acme.example", "permission": "owner"}))
        .send()
        .await
        .assert_error(404, "VIEW_NOT_FOUND");
    app.get("/acls/widget/1")
        .bearer(&admin)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
    app.get("/acls/panel/abc")
        .bearer(&admin)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
    let id = panel_owned_by(&app, &admin).await;
    app.post(&format!("/acls/panel/{id}"))
        .bearer(&admin)
        .json(&json!({"userEmail": "not an email", "permission": "owner"}))
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
    app.post(&format!("/acls/panel/{id}"))
        .bearer(&admin)
        .json(&json!({"userEmail": "a@b.co", "permission": "god"}))
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn listing_by_user_shows_their_entries_then_tenant_wide_ones_to_themselves_or_admins() {
    let app = TestApp::spawn().await;
    let owner = token_for("acme", "olga@acme.example", Role::Builder);
    let first = panel_owned_by(&app, &owner).await;
    let second = panel_owned_by(&app, &owner).await;
    app.post(&format!("/acls/panel/{first}"))
        .bearer(&owner)
        .json(&json!({"userEmail": "vic@acme.example", "permission": "viewer"}))
        .send()
        .await;
    app.post(&format!("/acls/panel/{second}/share-public"))
        .bearer(&owner)
        .json(&json!({"permission": "viewer"}))
        .send()
        .await;

    let vic = token_for("acme", "vic@acme.example", Role::User);
    let res = app
        .get("/acls/user/vic@acme.example")
        .bearer(&vic)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let emails: Vec<&str> = res.body["acls"]
        .as_array()
        .expect("acls")
        .iter()
        .map(|a| a["userEmail"].as_str().expect("email"))
        .collect();
    assert_eq!(emails, vec!["vic@acme.example", "_all"]);
    let res = app
        .get("/acls/user/vic@acme.example?resourceType=view")
        .bearer(&vic)
        .send()
        .await;
    assert_eq!(res.body["acls"].as_array().expect("acls").len(), 0);

    app.get("/acls/user/olga@acme.example")
        .bearer(&vic)
        .send()
        .await
        .assert_error(403, "FORBIDDEN");
    let admin = token_for("acme", "root@acme.example", Role::Admin);
    assert_eq!(
        app.get("/acls/user/vic@acme.example")
            .bearer(&admin)
            .send()
            .await
            .status,
        200
    );
    app.get("/acls/user/_all")
        .bearer(&admin)
        .send()
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn concurrent_duplicate_grants_leave_one_entry() {
    let app = TestApp::spawn().await;
    let owner = token_for("acme", "olga@acme.example", Role::Admin);
    let id = panel_owned_by(&app, &owner).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = app
            .post(&format!("/acls/panel/{id}"))
            .bearer(&owner)
            .json(&json!({"userEmail": "race@acme.example", "permission": "viewer"}));
        tasks.push(tokio::spawn(req.send()));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task").status);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
}
