//! `/panels/{id}/columns...`: create (base, calculated), list, read, update, reorder, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::service::{self, ListFilter};
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::etag::{self, IfMatch};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::idempotency::{self, HashedJson, IdempotencyKey};
use crate::ids::{ColumnId, PanelId};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_base_column))
        .routes(routes!(create_calculated_column))
        .routes(routes!(list_columns))
        .routes(routes!(reorder_columns))
        .routes(routes!(get_column, update_column, delete_column))
}

/// Add a base column (a field of one of the panel's data sources) at the end of the order.
#[utoipa::path(post, path = "/panels/{id}/columns/base", tag = "Columns",
    params(("id" = i64, Path), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried create")),
    request_body = CreateBaseColumnRequest,
    responses(
        (status = 201, description = "Created", body = BaseColumnResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "Panel not found, or Data source not found", body = ErrorBody),
        (status = 409, description = "A column with this name exists, or the Idempotency-Key is in flight", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_base_column(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    IdempotencyKey(key): IdempotencyKey,
    body: HashedJson<CreateBaseColumnRequest>,
) -> Result<Response> {
    let outcome = service::create_base(
        &state,
        &principal,
        panel_id,
        body.value,
        key.as_deref(),
        &body.digest,
    )
    .await?;
    Ok(idempotency::created(outcome))
}

/// Add a calculated column; the server derives its dependencies from the formula.
#[utoipa::path(post, path = "/panels/{id}/columns/calculated", tag = "Columns",
    params(("id" = i64, Path), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried create")),
    request_body = CreateCalculatedColumnRequest,
    responses(
        (status = 201, description = "Created", body = CalculatedColumnResponse),
        (status = 400, description = "Invalid body or formula (unknown column, self-reference, cycle)", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 409, description = "A column with this name exists, or the Idempotency-Key is in flight", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_calculated_column(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    IdempotencyKey(key): IdempotencyKey,
    body: HashedJson<CreateCalculatedColumnRequest>,
) -> Result<Response> {
    let outcome = service::create_calculated(
        &state,
        &principal,
        panel_id,
        body.value,
        key.as_deref(),
        &body.digest,
    )
    .await?;
    Ok(idempotency::created(outcome))
}

/// The panel's columns, each half in display order (columns without an order last).
#[utoipa::path(get, path = "/panels/{id}/columns", tag = "Columns",
    params(("id" = i64, Path), ColumnListParams),
    responses(
        (status = 200, description = "The columns", body = ColumnListResponse),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_columns(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<crate::cache::JsonBytes> {
    let filter = ListFilter::from_pairs(pairs)?;
    service::list_cached(&state, &principal, panel_id, filter)
        .await
        .map(|cached| cached.json())
}

/// Put the panel's columns in a new order: `columnIds` lists every column once.
#[utoipa::path(put, path = "/panels/{id}/columns/order", tag = "Columns",
    params(("id" = i64, Path)),
    request_body = ReorderColumnsRequest,
    responses(
        (status = 200, description = "The columns in their new order", body = ColumnListResponse),
        (status = 400, description = "The list is not exactly the panel's columns", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn reorder_columns(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    ValidJson(req): ValidJson<ReorderColumnsRequest>,
) -> Result<Json<ColumnListResponse>> {
    let columns = service::reorder(&state, &principal, panel_id, req).await?;
    Ok(Json(columns))
}

/// One column, with its `ETag`.
#[utoipa::path(get, path = "/panels/{id}/columns/{colId}", tag = "Columns",
    params(("id" = i64, Path), ("colId" = i64, Path)),
    responses(
        (status = 200, description = "The column", body = ColumnResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "Panel not found, or Column not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn get_column(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, column_id)): Path<(PanelId, ColumnId)>,
) -> Result<impl IntoResponse> {
    let (column, tag) = service::get(&state, &principal, panel_id, column_id).await?;
    Ok((etag::header_map(&tag), Json(column)))
}

/// Update a column (properties merged, metadata and tags replaced); a rename follows the column
/// into formulas, sorts and filters. `If-Match` guards against lost updates.
#[utoipa::path(put, path = "/panels/{id}/columns/{colId}", tag = "Columns",
    params(("id" = i64, Path), ("colId" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = UpdateColumnRequest,
    responses(
        (status = 200, description = "Updated", body = ColumnResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid body or formula", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "Panel not found, or Column not found", body = ErrorBody),
        (status = 409, description = "A column with this name exists", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn update_column(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, column_id)): Path<(PanelId, ColumnId)>,
    if_match: IfMatch,
    ValidJson(req): ValidJson<UpdateColumnRequest>,
) -> Result<impl IntoResponse> {
    let (column, tag) =
        service::update(&state, &principal, panel_id, column_id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(column)))
}

/// Delete a column. 409 `COLUMN_IN_USE` when views or formulas use it, unless `force=true`
/// (then views lose their references; dependent formulas are reported as broken).
#[utoipa::path(delete, path = "/panels/{id}/columns/{colId}", tag = "Columns",
    params(("id" = i64, Path), ("colId" = i64, Path), DeleteColumnParams, ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 403, description = "No editor permission or builder role", body = ErrorBody),
        (status = 404, description = "Panel not found, or Column not found", body = ErrorBody),
        (status = 409, description = "The column is in use", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_column(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, column_id)): Path<(PanelId, ColumnId)>,
    Query(params): Query<DeleteColumnParams>,
    if_match: IfMatch,
) -> Result<StatusCode> {
    let force = params.force.unwrap_or(false);
    service::delete(&state, &principal, panel_id, column_id, &if_match, force).await?;
    Ok(StatusCode::NO_CONTENT)
}
