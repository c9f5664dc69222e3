//! `/changes/panels` and `/notifications/views`.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;

use super::model::*;
use super::service;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::extract::{Json, Query, ValidJson};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_changes))
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
}

/// Structural changes of the tenant's panels (those the caller can read), newest first.
#[utoipa::path(get, path = "/changes/panels", tag = "Changes and notifications",
    params(ChangeQuery),
    responses(
        (status = 200, description = "A page of changes", body = ChangeListResponse),
        (status = 400, description = "Invalid query", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_changes(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<ChangeQuery>,
) -> Result<Json<ChangeListResponse>> {
    query.validate()?;
    service::list_changes(&state, &principal, query)
        .await
        .map(Json)
}

/// The caller's own view notifications, newest first, with the unread count.
#[utoipa::path(get, path = "/notifications/views", tag = "Changes and notifications",
    params(NotificationQuery),
    responses(
        (status = 200, description = "A page of notifications", body = NotificationListResponse),
        (status = 400, description = "Invalid query", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_notifications(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<NotificationQuery>,
) -> Result<Json<NotificationListResponse>> {
    query.validate()?;
    service::list_notifications(&state, &principal, query)
        .await
        .map(Json)
}

/// Mark some of the caller's notifications read; answers how many changed.
#[utoipa::path(put, path = "/notifications/views/mark-read", tag = "Changes and notifications",
    request_body = MarkReadRequest,
    responses(
        (status = 200, description = "Marked", body = MarkReadResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn mark_read(
    principal: Principal,
    State(state): State<AppState>,
    ValidJson(req): ValidJson<MarkReadRequest>,
) -> Result<Json<MarkReadResponse>> {
    service::mark_read(&state, &principal, req).await.map(Json)
}
