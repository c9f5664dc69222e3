//! `/panels/{id}/rows`, `/panels/{id}/rows/query`, `/views/{id}/rows`, `/views/{id}/export` and
//! `/panels/{id}/formulas/check`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::{export, service};
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::ids::{PanelId, ViewId};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::page;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rows))
        .routes(routes!(query_rows))
        .routes(routes!(view_rows))
        .routes(routes!(export_view))
        .routes(routes!(check_formula))
}

/// A page of rows with the next page announced in `Link` (and `X-Next-Cursor`).
fn answer(uri: &Uri, page: RowPage) -> Response {
    (
        page::next_headers(uri, page.next_cursor.as_deref()),
        Json(page),
    )
        .into_response()
}

/// The panel's rows that match its cohort rule (every row with `cohort=all`, for its editors),
/// by id, each with every column; the next page at `?cursor=<nextCursor>` (also in `Link`). A
/// value that does not fit its column, and a formula that fails for a row, give a null cell
/// counted in `warnings`.
#[utoipa::path(get, path = "/panels/{id}/rows", tag = "Rows", params(("id" = i64, Path, description = "Panel id"), PanelRowsParams),
    responses(
        (status = 200, description = "A page of rows", body = RowPage,
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid id or query, a cursor this list did not give out (INVALID_CURSOR), or a cohort rule that no longer fits the columns", body = ErrorBody),
        (status = 403, description = "`cohort=all` without editor permission", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 409, description = "The cohort rule or a column changed since the cursor was given out (CURSOR_STALE)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_rows(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    Query(params): Query<PanelRowsParams>,
    uri: Uri,
) -> Result<Response> {
    let page = service::panel_rows(&state, &principal, panel_id, params).await?;
    Ok(answer(&uri, page))
}

/// Any question of a panel's rows: a filter tree (AND-ed with the cohort rule), sort keys on
/// base and calculated columns, the columns to show, a search, a page from a cursor and a count.
/// The next page is the same body with `cursor` set to `nextCursor`.
#[utoipa::path(post, path = "/panels/{id}/rows/query", tag = "Rows", params(("id" = i64, Path, description = "Panel id")),
    request_body = RowQueryRequest,
    responses(
        (status = 200, description = "A page of rows", body = RowPage),
        (status = 400, description = "Invalid body: an unknown column, an operator that does not fit a column's type (named by its path), a bad time zone, a cursor this query did not give out (INVALID_CURSOR), or a column too complex to filter on (COLUMN_TOO_COMPLEX)", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 409, description = "The query, the cohort rule or a column changed since the cursor was given out (CURSOR_STALE)", body = ErrorBody),
        (status = 503, description = "The query ran longer than QUERY_TIMEOUT_MS and was cancelled (QUERY_TIMEOUT)", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn query_rows(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    ValidJson(req): ValidJson<RowQueryRequest>,
) -> Result<Json<RowPage>> {
    service::query_rows(&state, &principal, panel_id, req)
        .await
        .map(Json)
}

/// The view's rows: those of its panel that match the panel's cohort rule and the view's
/// filters, in the view's order (ties by row id), with the view's visible columns (every column
/// when it lists none). A private view answers those it is shared with; a published view everyone
/// who may read its panel.
#[utoipa::path(get, path = "/views/{id}/rows", tag = "Rows", params(("id" = i64, Path, description = "View id"), RowsParams),
    responses(
        (status = 200, description = "A page of rows", body = RowPage,
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid id or query, a cursor this view did not give out (INVALID_CURSOR), or filters that no longer fit the columns", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        (status = 409, description = "The view, the cohort rule or a column changed since the cursor was given out (CURSOR_STALE)", body = ErrorBody),
        (status = 503, description = "The query ran longer than QUERY_TIMEOUT_MS and was cancelled (QUERY_TIMEOUT)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn view_rows(
    principal: Principal,
    State(state): State<AppState>,
    Path(view_id): Path<ViewId>,
    Query(params): Query<RowsParams>,
    uri: Uri,
) -> Result<Response> {
    let page = service::view_rows(&state, &principal, view_id, params).await?;
    Ok(answer(&uri, page))
}

/// Every row of the view (no page limit), in its order, as CSV with the view's column names as
/// the header or as NDJSON, streamed: the server holds a few rows at a time whatever the size.
/// The file is named after the view (`Content-Disposition`).
#[utoipa::path(get, path = "/views/{id}/export", tag = "Rows", params(("id" = i64, Path, description = "View id"), ExportParams),
    responses(
        (status = 200, description = "The rows: `text/csv` or `application/x-ndjson`", content_type = "text/csv", body = String,
            headers(("Content-Disposition" = String, description = "attachment; filename=\"<view name>.csv\""))),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "View not found", body = ErrorBody),
        (status = 503, description = "EXPORT_CONCURRENCY exports are already running on this server (EXPORTS_BUSY)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn export_view(
    principal: Principal,
    State(state): State<AppState>,
    Path(view_id): Path<ViewId>,
    Query(params): Query<ExportParams>,
) -> Result<Response> {
    let found = service::export(&state, &principal, view_id, params).await?;
    let content_type = match found.format {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Ndjson => "application/x-ndjson",
    };
    let disposition = export::content_disposition(&found.view_name, found.format);
    let body = Body::from_stream(export::body(found.format, &found.header, found.rows));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A dry run of a formula against the panel: its type, its dependencies, and its value on a few
/// of the panel's rows (with the reason a cell is blank). Invalid formulas answer 400 with a
/// `FORMULA_*` code and the position.
#[utoipa::path(post, path = "/panels/{id}/formulas/check", tag = "Rows", params(("id" = i64, Path, description = "Panel id")),
    request_body = FormulaCheckRequest,
    responses(
        (status = 200, description = "The formula is valid", body = FormulaCheckResponse),
        (status = 400, description = "Invalid formula (FORMULA_* codes) or body", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn check_formula(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    ValidJson(req): ValidJson<FormulaCheckRequest>,
) -> Result<Json<FormulaCheckResponse>> {
    service::check(&state, &principal, panel_id, req)
        .await
        .map(Json)
}
