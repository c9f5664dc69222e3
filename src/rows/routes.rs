//! `/panels/{id}/rows` and `/panels/{id}/formulas/check`.

use axum::extract::State;
use axum::http::Uri;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::service;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::ids::PanelId;
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::page::{self, PageParams};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rows))
        .routes(routes!(check_formula))
}

/// The panel's rows through its columns, by id; the next page at `?cursor=<nextCursor>` (also
/// in `Link`). A value that does not fit its column is null and counted in `warnings`.
#[utoipa::path(get, path = "/panels/{id}/rows", tag = "Rows", params(("id" = i64, Path, description = "Panel id"), PageParams),
    responses(
        (status = 200, description = "A page of rows", body = RowPage,
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_rows(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    Query(params): Query<PageParams>,
    uri: Uri,
) -> Result<impl IntoResponse> {
    let page = service::list(&state, &principal, panel_id, params.page()?).await?;
    Ok((
        page::next_headers(&uri, page.next_cursor.as_deref()),
        Json(page),
    ))
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
