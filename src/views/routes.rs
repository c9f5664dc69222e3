//! `/views`: create, list, read, update, delete; sorts, filters, publish and unpublish.

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
use crate::ids::ViewId;
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::page;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_view, list_views))
        .routes(routes!(get_view, update_view, delete_view))
        .routes(routes!(list_view_sorts, replace_view_sorts))
        .routes(routes!(get_view_filters, replace_view_filters))
        .routes(routes!(publish_view))
        .routes(routes!(unpublish_view))
}

/// Create a view of a panel the caller can read; the caller becomes its owner.
#[utoipa::path(post, path = "/views", tag = "Views", request_body = CreateViewRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried create")),
    responses(
        (status = 201, description = "Created", body = ViewResponse),
        (status = 400, description = "Invalid body, or columns that are not the panel's", body = ErrorBody),
        (status = 403, description = "Read-only API key", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is in flight", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_view(
    principal: Principal,
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    body: HashedJson<CreateViewRequest>,
) -> Result<Response> {
    let outcome =
        service::create(&state, &principal, body.value, key.as_deref(), &body.digest).await?;
    Ok(idempotency::created(outcome))
}

/// Views the caller can see (admins: the whole tenant; others: views shared with them and the
/// published views of panels they can read), newest id first; the next page is in `Link`.
#[utoipa::path(get, path = "/views", tag = "Views", params(ViewListQuery),
    responses(
        (status = 200, description = "A page of views and the number matching", body = ViewListResponse,
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid query", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_views(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<ViewListQuery>,
    uri: Uri,
) -> Result<impl IntoResponse> {
    let page = query.page_params().page()?;
    let (views, next) = service::list(&state, &principal, &query, page).await?;
    Ok((page::next_headers(&uri, next.as_deref()), Json(views)))
}

/// One view with its sorts, and its `ETag`.
#[utoipa::path(get, path = "/views/{id}", tag = "Views", params(("id" = i64, Path)),
    responses(
        (status = 200, description = "The view", body = ViewResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn get_view(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
) -> Result<impl IntoResponse> {
    Ok(service::get_cached(&state, &principal, id)
        .await?
        .with_etag())
}

/// Update name, visible columns (replaced) or metadata (merged): editor, owner or admin.
#[utoipa::path(put, path = "/views/{id}", tag = "Views", params(("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = UpdateViewRequest,
    responses(
        (status = 200, description = "Updated", body = ViewResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid body, or columns that are not the panel's", body = ErrorBody),
        (status = 403, description = "No editor permission, or a read-only API key", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn update_view(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
    if_match: IfMatch,
    ValidJson(req): ValidJson<UpdateViewRequest>,
) -> Result<impl IntoResponse> {
    let (view, tag) = service::update(&state, &principal, id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(view)))
}

/// Delete a view (owner or admin) with its sorts, notifications and ACL entries.
#[utoipa::path(delete, path = "/views/{id}", tag = "Views", params(("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_view(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
    if_match: IfMatch,
) -> Result<StatusCode> {
    service::delete(&state, &principal, id, &if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The view's sorts, by `order`.
#[utoipa::path(get, path = "/views/{id}/sorts", tag = "Views", params(("id" = i64, Path)),
    responses(
        (status = 200, description = "The sorts", body = SortsResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_view_sorts(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
) -> Result<Json<SortsResponse>> {
    Ok(Json(service::sorts(&state, &principal, id).await?))
}

/// Replace the view's sorts, all or nothing (editor, owner or admin). Each `columnName` must be a
/// column of the panel and each `order` used once.
#[utoipa::path(put, path = "/views/{id}/sorts", tag = "Views", params(("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = ReplaceSortsRequest,
    responses(
        (status = 200, description = "The new sorts, by order", body = SortsResponse, headers(("ETag" = String, description = "The view's new ETag"))),
        (status = 400, description = "Invalid sorts", body = ErrorBody),
        (status = 403, description = "No editor permission, or a read-only API key", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn replace_view_sorts(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
    if_match: IfMatch,
    ValidJson(req): ValidJson<ReplaceSortsRequest>,
) -> Result<impl IntoResponse> {
    let (sorts, tag) = service::replace_sorts(&state, &principal, id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(sorts)))
}

/// The view's filter tree, and its conditions as a flat list (for the older client).
#[utoipa::path(get, path = "/views/{id}/filters", tag = "Views", params(("id" = i64, Path)),
    responses(
        (status = 200, description = "The filters", body = FiltersResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn get_view_filters(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
) -> Result<crate::cache::JsonBytes> {
    Ok(service::filters_cached(&state, &principal, id)
        .await?
        .json())
}

/// Replace the view's filters (editor, owner or admin): a filter tree over the panel's column
/// names, or the older client's `{"filters": [{columnName, operator, value, logicalOperator}]}`.
#[utoipa::path(put, path = "/views/{id}/filters", tag = "Views", params(("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = ReplaceFiltersRequest,
    responses(
        (status = 200, description = "The new filters", body = FiltersResponse, headers(("ETag" = String, description = "The view's new ETag"))),
        (status = 400, description = "Invalid filters", body = ErrorBody),
        (status = 403, description = "No editor permission, or a read-only API key", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn replace_view_filters(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
    if_match: IfMatch,
    Json(req): Json<ReplaceFiltersRequest>,
) -> Result<impl IntoResponse> {
    let (filters, tag) = service::replace_filters(&state, &principal, id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(filters)))
}

/// Publish a view to everyone in the tenant (editor on the view and the builder role, or admin).
/// Any request body is ignored.
#[utoipa::path(post, path = "/views/{id}/publish", tag = "Views", params(("id" = i64, Path)),
    responses(
        (status = 200, description = "The published view", body = ViewResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn publish_view(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
) -> Result<impl IntoResponse> {
    let (view, tag) = service::set_published(&state, &principal, id, true).await?;
    Ok((etag::header_map(&tag), Json(view)))
}

/// Withdraw a published view (editor on the view and the builder role, or admin).
#[utoipa::path(post, path = "/views/{id}/unpublish", tag = "Views", params(("id" = i64, Path)),
    responses(
        (status = 200, description = "The unpublished view", body = ViewResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn unpublish_view(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<ViewId>,
) -> Result<impl IntoResponse> {
    let (view, tag) = service::set_published(&state, &principal, id, false).await?;
    Ok((etag::header_map(&tag), Json(view)))
}
