//! `/panels/{id}/datasources`: create, list, read, update, delete, sync.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::service;
use super::sync::{self, PushRequest, PushResponse, RunListResponse, SyncResult};
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::etag::{self, IfMatch};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::idempotency::{self, HashedJson, IdempotencyKey};
use crate::ids::{DataSourceId, PanelId};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::page::{self, PageParams};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_data_source, list_data_sources))
        .routes(routes!(
            get_data_source,
            update_data_source,
            delete_data_source
        ))
        .routes(routes!(sync_data_source))
        .routes(routes!(list_runs))
        // Uploads and pushes carry more than an ordinary request: they have limits of their own.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload_file))
                .layer(DefaultBodyLimit::disable()),
        )
        .merge(
            OpenApiRouter::new()
                .routes(routes!(push_records))
                .layer(DefaultBodyLimit::max(usize::MAX)),
        )
}

/// Add a data source to a panel (editor permission and the builder or admin role). Secrets in
/// `config` are encrypted at rest and answered as `********`.
#[utoipa::path(post, path = "/panels/{id}/datasources", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried create")),
    request_body = DataSourceRequest,
    responses(
        (status = 201, description = "Created", body = DataSourceResponse),
        (status = 400, description = "Invalid id, body or config", body = ErrorBody),
        (status = 403, description = "No editor permission or role", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is in flight", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another request", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_data_source(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    IdempotencyKey(key): IdempotencyKey,
    body: HashedJson<DataSourceRequest>,
) -> Result<Response> {
    let outcome = service::create(
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

/// The panel's data sources by id, secrets masked; the next page is in `Link`.
#[utoipa::path(get, path = "/panels/{id}/datasources", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), PageParams),
    responses(
        (status = 200, description = "A page of data sources (a bare array)", body = [DataSourceResponse],
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_data_sources(
    principal: Principal,
    State(state): State<AppState>,
    Path(panel_id): Path<PanelId>,
    Query(params): Query<PageParams>,
    uri: Uri,
) -> Result<impl IntoResponse> {
    let (sources, next) = service::list(&state, &principal, panel_id, params.page()?).await?;
    Ok((page::next_headers(&uri, next.as_deref()), Json(sources)))
}

/// One data source, secrets masked, with its `ETag`.
#[utoipa::path(get, path = "/panels/{id}/datasources/{dsId}", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id")),
    responses(
        (status = 200, description = "The data source", body = DataSourceResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn get_data_source(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
) -> Result<impl IntoResponse> {
    let (source, tag) = service::get(&state, &principal, panel_id, id).await?;
    Ok((etag::header_map(&tag), Json(source)))
}

/// Replace a data source's type and config; a secret sent as `********` keeps its stored value.
/// `If-Match` guards against lost updates.
#[utoipa::path(put, path = "/panels/{id}/datasources/{dsId}", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id"),
        ("If-Match" = Option<String>, Header)),
    request_body = DataSourceRequest,
    responses(
        (status = 200, description = "Updated", body = DataSourceResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id, body or config", body = ErrorBody),
        (status = 403, description = "No editor permission or role", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn update_data_source(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
    if_match: IfMatch,
    ValidJson(req): ValidJson<DataSourceRequest>,
) -> Result<impl IntoResponse> {
    let (source, tag) = service::update(&state, &principal, panel_id, id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(source)))
}

/// Delete a data source (no body needed); columns reading from it stay, without a source.
#[utoipa::path(delete, path = "/panels/{id}/datasources/{dsId}", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id"),
        ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "No editor permission or role", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_data_source(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
    if_match: IfMatch,
) -> Result<StatusCode> {
    service::delete(&state, &principal, panel_id, id, &if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sync a data source now (no body needed; one sent is ignored). Waits for the run up to a
/// bound and answers 200 with its result; with `Prefer: respond-async`, or when the run takes
/// longer, answers 202 with the run to follow at `.../runs`.
#[utoipa::path(post, path = "/panels/{id}/datasources/{dsId}/sync", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async` to answer 202 at once")),
    responses(
        (status = 200, description = "The run ended (syncStatus success or error)", body = SyncResult),
        (status = 202, description = "The run is queued or still running", body = SyncResult),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "No editor permission or role", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        (status = 409, description = "A file source syncs by upload, or a sync of the source is already running", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn sync_data_source(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
    headers: HeaderMap,
) -> Result<Response> {
    let respond_async = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        });
    let (result, finished) = sync::sync(&state, &principal, panel_id, id, respond_async).await?;
    let status = if finished {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(result)).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// How many runs, newest first (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The source's sync runs, newest first, with their counts and row errors.
#[utoipa::path(get, path = "/panels/{id}/datasources/{dsId}/runs", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id"), RunsQuery),
    responses(
        (status = 200, description = "Runs", body = RunListResponse),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_runs(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<RunListResponse>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(crate::error::ApiError::invalid(
            "limit",
            "must be between 1 and 100",
        ));
    }
    sync::list_runs(&state, &principal, panel_id, id, limit)
        .await
        .map(Json)
}

/// Upload a CSV, JSON or NDJSON file to a file source: it is read as it arrives and synced in
/// this request; the answer is the sync's. Bad rows are reported by line.
#[utoipa::path(post, path = "/panels/{id}/datasources/{dsId}/upload", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id")),
    request_body(description = "The file: CSV with a header row, a JSON array of objects, or NDJSON (the source's `config.format`, else the content type, decides; CSV by default)",
        content(
            (String = "text/csv", example = "mrn,firstName,age\n1001,Ada,36"),
            (Vec<Object> = "application/json"),
            (String = "application/x-ndjson"),
        )),
    responses(
        (status = 200, description = "Synced (syncStatus success or error)", body = SyncResult),
        (status = 400, description = "Invalid id or source config", body = ErrorBody),
        (status = 403, description = "No editor permission or role", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        (status = 409, description = "Not a file source, or a sync of the source is already running", body = ErrorBody),
        (status = 413, description = "Larger than UPLOAD_MAX_BYTES", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn upload_file(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SyncResult>> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = state.config.upload_max_bytes;
    let stream = http_body_util::BodyDataStream::new(http_body_util::Limited::new(body, limit))
        .map_err(|e| std::io::Error::other(e.to_string()));
    let reader = tokio_util::io::StreamReader::new(stream);
    let result = sync::upload(
        &state,
        &principal,
        panel_id,
        id,
        content_type.as_deref(),
        reader,
    )
    .await?;
    if result
        .run
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("length limit exceeded"))
    {
        return Err(crate::error::ApiError::PayloadTooLarge { limit });
    }
    Ok(Json(result))
}

/// Push up to 10,000 records into a custom source (made for API-key clients); each is upserted
/// by the source's `keyField`. Answers the counts and the refused records.
#[utoipa::path(post, path = "/panels/{id}/datasources/{dsId}/records", tag = "Data sources",
    params(("id" = i64, Path, description = "Panel id"), ("dsId" = i64, Path, description = "Data source id")),
    request_body = PushRequest,
    responses(
        (status = 200, description = "Upserted", body = PushResponse),
        (status = 400, description = "Invalid id or body, or more than 10,000 records", body = ErrorBody),
        (status = 403, description = "No editor permission or role, or a read-only key", body = ErrorBody),
        (status = 404, description = "Panel not found / Data source not found", body = ErrorBody),
        (status = 409, description = "Not a custom source, or a sync of the source is already running", body = ErrorBody),
        (status = 413, description = "Larger than PUSH_MAX_BYTES", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn push_records(
    principal: Principal,
    State(state): State<AppState>,
    Path((panel_id, id)): Path<(PanelId, DataSourceId)>,
    Json(req): Json<PushRequest>,
) -> Result<Json<PushResponse>> {
    sync::push(&state, &principal, panel_id, id, req)
        .await
        .map(Json)
}
