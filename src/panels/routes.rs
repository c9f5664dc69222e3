//! `/panels`: create, list, read, update, delete.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::service;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::etag::{self, IfMatch};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::idempotency::{self, HashedJson, IdempotencyKey};
use crate::ids::PanelId;
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::page::{self, PageParams};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_panel, list_panels))
        .routes(routes!(get_panel, update_panel, delete_panel))
}

/// Create a panel (builder or admin); the caller becomes its owner.
#[utoipa::path(post, path = "/panels", tag = "Panels", request_body = CreatePanelRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried create")),
    responses(
        (status = 201, description = "Created", body = PanelResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "Role may not create panels", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is in flight", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_panel(
    principal: Principal,
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    body: HashedJson<CreatePanelRequest>,
) -> Result<Response> {
    let outcome =
        service::create(&state, &principal, body.value, key.as_deref(), &body.digest).await?;
    Ok(idempotency::created(outcome))
}

/// Panels the caller can see (admins: the whole tenant), by id; the next page is in `Link`.
#[utoipa::path(get, path = "/panels", tag = "Panels", params(PageParams),
    responses(
        (status = 200, description = "A page of panels (a bare array)", body = [PanelResponse],
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid query", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_panels(
    principal: Principal,
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
    uri: Uri,
) -> Result<impl IntoResponse> {
    let cached = service::list_cached(&state, &principal, params.page()?).await?;
    let next = Some(cached.header.as_str()).filter(|n| !n.is_empty());
    Ok((page::next_headers(&uri, next), cached.json()))
}

/// One panel, with its `ETag`.
#[utoipa::path(get, path = "/panels/{id}", tag = "Panels", params(("id" = i64, Path)),
    responses(
        (status = 200, description = "The panel", body = PanelResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn get_panel(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<PanelId>,
) -> Result<impl IntoResponse> {
    Ok(service::get_cached(&state, &principal, id)
        .await?
        .with_etag())
}

/// Update name, description, metadata (merged) or cohort rule; `If-Match` guards against lost updates.
#[utoipa::path(put, path = "/panels/{id}", tag = "Panels", params(("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = UpdatePanelRequest,
    responses(
        (status = 200, description = "Updated", body = PanelResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid body or cohort rule", body = ErrorBody),
        (status = 403, description = "No editor permission or role", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn update_panel(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<PanelId>,
    if_match: IfMatch,
    ValidJson(req): ValidJson<UpdatePanelRequest>,
) -> Result<impl IntoResponse> {
    let (panel, tag) = service::update(&state, &principal, id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(panel)))
}

/// Delete a panel (owner or admin) and everything in it, in one transaction.
#[utoipa::path(delete, path = "/panels/{id}", tag = "Panels", params(("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_panel(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<PanelId>,
    if_match: IfMatch,
) -> Result<StatusCode> {
    service::delete(&state, &principal, id, &if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
