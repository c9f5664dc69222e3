//! `/audit`: the organisation's audit log (admins), its export and the chain's verification.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::service;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::extract::{Json, Query};
use crate::openapi::{AuthErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(export_audit))
}

/// The organisation's audit log, newest first (admins): every write (refused ones too, with
/// their status), every export, and the sign-in events (`auth.login`, `auth.login_failed`,
/// `auth.logout`, `auth.refresh_reuse`, `apiKey.firstUse`, …). Each entry says who (a user, an
/// API key or the system), what, on what, from where, and the fields that changed, secrets
/// `[FILTERED]`. Filters combine; the next page is `nextCursor`.
#[utoipa::path(get, path = "/audit", tag = "Audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_audit(
    principal: Principal,
    State(state): State<AppState>,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>> {
    Ok(Json(service::list(&state, &principal, params).await?))
}

/// Recomputes the organisation's hash chain (admins) and names the first entry that is not the
/// one written (edited, deleted, or out of its place). Entries dropped by retention are not
/// counted as missing: the oldest entry left starts the chain.
#[utoipa::path(get, path = "/audit/verify", tag = "Audit",
    responses(
        (status = 200, description = "The verdict", body = VerifyResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn verify_audit(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<VerifyResponse>> {
    Ok(Json(service::verify(&state, &principal).await?))
}

/// Every matching entry as NDJSON (one entry per line, as `GET /audit` shows it), newest first,
/// streamed (admins). Takes the list's filters.
#[utoipa::path(get, path = "/audit/export", tag = "Audit",
    params(AuditExportParams),
    responses(
        (status = 200, description = "The entries, one JSON object per line", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "Invalid filter or format", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn export_audit(
    principal: Principal,
    State(state): State<AppState>,
    Query(params): Query<AuditExportParams>,
) -> Result<Response> {
    let stream = service::export(&state, &principal, params).await?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.ndjson\""),
    );
    Ok(response)
}
