//! `/acls/...`: the existing client's sharing endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::ResourceType;
use super::model::*;
use super::service;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_acls, create_acl))
        .routes(routes!(list_user_acls))
        .routes(routes!(update_acl, delete_acl))
        .routes(routes!(share_public))
}

/// Entries of a panel or view (needs read access to it).
#[utoipa::path(get, path = "/acls/{resourceType}/{resourceId}", tag = "ACLs",
    params(("resourceType" = ResourceType, Path), ("resourceId" = i64, Path)),
    responses(
        (status = 200, description = "Entries", body = AclListResponse),
        (status = 400, description = "Invalid resource type or id", body = ErrorBody),
        (status = 404, description = "No such resource in this tenant", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_acls(
    principal: Principal,
    State(state): State<AppState>,
    Path((resource_type, resource_id)): Path<(ResourceType, i64)>,
) -> Result<Json<AclListResponse>> {
    service::list(&state, &principal, resource_type, resource_id)
        .await
        .map(Json)
}

/// Grant a user (or `_all`) a permission (owner or admin only); 409 if the entry exists.
#[utoipa::path(post, path = "/acls/{resourceType}/{resourceId}", tag = "ACLs",
    params(("resourceType" = ResourceType, Path), ("resourceId" = i64, Path)),
    request_body = CreateAclRequest,
    responses(
        (status = 201, description = "Created", body = AclResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "No such resource in this tenant", body = ErrorBody),
        (status = 409, description = "Entry already exists", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_acl(
    principal: Principal,
    State(state): State<AppState>,
    Path((resource_type, resource_id)): Path<(ResourceType, i64)>,
    ValidJson(req): ValidJson<CreateAclRequest>,
) -> Result<impl IntoResponse> {
    let response = service::create(&state, &principal, resource_type, resource_id, req).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// A user's entries and every tenant-wide entry (the user themselves, or an admin).
#[utoipa::path(get, path = "/acls/user/{userEmail}", tag = "ACLs",
    params(("userEmail" = String, Path, format = Email, description = "The user's e-mail address", example = "grace@example.com"), UserAclQuery),
    responses(
        (status = 200, description = "Entries", body = AclListResponse),
        (status = 400, description = "Invalid e-mail", body = ErrorBody),
        (status = 403, description = "Another user's entries, and not an admin", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_user_acls(
    principal: Principal,
    State(state): State<AppState>,
    Path(email): Path<String>,
    Query(query): Query<UserAclQuery>,
) -> Result<Json<AclListResponse>> {
    service::list_for_user(&state, &principal, &email, query.resource_type)
        .await
        .map(Json)
}

/// Change an entry's permission (owner or admin only).
#[utoipa::path(put, path = "/acls/{resourceType}/{resourceId}/{userEmail}", tag = "ACLs",
    params(("resourceType" = ResourceType, Path), ("resourceId" = i64, Path), ("userEmail" = String, Path, pattern = "^(_all|[^@/\\s]+@[^@/\\s]+)$", description = "An e-mail address, or `_all` for the tenant-wide entry", example = "grace@example.com")),
    request_body = PermissionRequest,
    responses(
        (status = 200, description = "Updated", body = AclResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "No such resource or entry", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn update_acl(
    principal: Principal,
    State(state): State<AppState>,
    Path((resource_type, resource_id, email)): Path<(ResourceType, i64, String)>,
    ValidJson(req): ValidJson<PermissionRequest>,
) -> Result<Json<AclResponse>> {
    service::update(
        &state,
        &principal,
        resource_type,
        resource_id,
        &email,
        req.permission,
    )
    .await
    .map(Json)
}

/// Remove an entry (owner or admin only); removing `_all` un-shares.
#[utoipa::path(delete, path = "/acls/{resourceType}/{resourceId}/{userEmail}", tag = "ACLs",
    params(("resourceType" = ResourceType, Path), ("resourceId" = i64, Path), ("userEmail" = String, Path, pattern = "^(_all|[^@/\\s]+@[^@/\\s]+)$", description = "An e-mail address, or `_all` for the tenant-wide entry", example = "grace@example.com")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "No such resource or entry", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_acl(
    principal: Principal,
    State(state): State<AppState>,
    Path((resource_type, resource_id, email)): Path<(ResourceType, i64, String)>,
) -> Result<StatusCode> {
    service::delete(&state, &principal, resource_type, resource_id, &email).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Share with everyone in the tenant: 201 when the entry is created, 200 when updated.
#[utoipa::path(post, path = "/acls/{resourceType}/{resourceId}/share-public", tag = "ACLs",
    params(("resourceType" = ResourceType, Path), ("resourceId" = i64, Path)),
    request_body = PermissionRequest,
    responses(
        (status = 200, description = "Updated", body = AclResponse),
        (status = 201, description = "Created", body = AclResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn share_public(
    principal: Principal,
    State(state): State<AppState>,
    Path((resource_type, resource_id)): Path<(ResourceType, i64)>,
    ValidJson(req): ValidJson<PermissionRequest>,
) -> Result<impl IntoResponse> {
    let (response, created) = service::share_public(
        &state,
        &principal,
        resource_type,
        resource_id,
        req.permission,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)))
}
