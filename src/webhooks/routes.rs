//! `/webhooks`: create, list, read, update, delete, rotate the secret, the delivery log, retry a
//! delivery, send a test message.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::service;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::etag::{self, IfMatch};
use crate::extract::{Json, Path, Query, ValidJson};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::page::{self, PageParams};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(test_webhook))
}

/// Create a webhook: the events it receives (types and families of `GET /api/events`), of one
/// panel (its editors and admins) or of the whole organisation (admins). The answer carries the
/// signing secret (`whsec_…`), shown this once. Messages are signed per Standard Webhooks
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`; docs/webhooks.md).
#[utoipa::path(post, path = "/webhooks", tag = "Webhooks",
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "Created; the secret is shown once", body = WebhookSecretResponse),
        (status = 400, description = "Invalid body, unknown event type, or a URL that is not http(s), carries credentials or points at a private address (INVALID_WEBHOOK_URL)", body = ErrorBody),
        (status = 403, description = "Not an editor of the panel, no panelId without the admin role, or a read-only key", body = ErrorBody),
        (status = 404, description = "Panel not found", body = ErrorBody),
        (status = 409, description = "The organisation has WEBHOOK_MAX_PER_TENANT webhooks (WEBHOOK_LIMIT_REACHED)", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_webhook(
    principal: Principal,
    State(state): State<AppState>,
    ValidJson(req): ValidJson<WebhookRequest>,
) -> Result<(StatusCode, Json<WebhookSecretResponse>)> {
    let created = service::create(&state, &principal, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The webhooks the caller manages (every one for an admin; those of the panels it edits
/// otherwise), by id; the next page is in `Link`. Never a secret.
#[utoipa::path(get, path = "/webhooks", tag = "Webhooks",
    params(PageParams),
    responses(
        (status = 200, description = "A page of webhooks (a bare array)", body = [WebhookResponse],
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid query", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_webhooks(
    principal: Principal,
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
    uri: Uri,
) -> Result<impl IntoResponse> {
    let (hooks, next) = service::list(&state, &principal, &params).await?;
    Ok((page::next_headers(&uri, next.as_deref()), Json(hooks)))
}

/// One webhook, with its `ETag` (never its secret).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "Webhook not found (or not one the caller manages)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn get_webhook(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    let (hook, tag) = service::get(&state, &principal, id).await?;
    Ok((etag::header_map(&tag), Json(hook)))
}

/// Replace a webhook's URL, events, panel and description; `enabled: false` stops its
/// deliveries, `enabled: true` starts them again from the present (left out: unchanged).
/// `If-Match` guards against lost updates.
#[utoipa::path(put, path = "/webhooks/{id}", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id"), ("If-Match" = Option<String>, Header)),
    request_body = WebhookRequest,
    responses(
        (status = 200, description = "Updated", body = WebhookResponse, headers(("ETag" = String))),
        (status = 400, description = "Invalid id or body, unknown event type, or a refused URL (INVALID_WEBHOOK_URL)", body = ErrorBody),
        (status = 403, description = "Not an editor of the new panel, no panelId without the admin role, or a read-only key", body = ErrorBody),
        (status = 404, description = "Webhook not found / Panel not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn update_webhook(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    if_match: IfMatch,
    ValidJson(req): ValidJson<WebhookRequest>,
) -> Result<impl IntoResponse> {
    let (hook, tag) = service::update(&state, &principal, id, &if_match, req).await?;
    Ok((etag::header_map(&tag), Json(hook)))
}

/// Delete a webhook and its delivery log; what was queued for it is not sent.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id"), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "A read-only key", body = ErrorBody),
        (status = 404, description = "Webhook not found", body = ErrorBody),
        (status = 412, description = "ETag mismatch", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_webhook(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    if_match: IfMatch,
) -> Result<StatusCode> {
    service::delete(&state, &principal, id, &if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown this once. For 24 hours every message carries two signatures
/// (`v1,<new> v1,<previous>`), so receivers can switch without losing one.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook and its new secret", body = WebhookSecretResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "A read-only key", body = ErrorBody),
        (status = 404, description = "Webhook not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn rotate_secret(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<WebhookSecretResponse>> {
    service::rotate_secret(&state, &principal, id)
        .await
        .map(Json)
}

/// The webhook's deliveries, newest first, each with every attempt (status, duration, response
/// code, error); the next page is in `Link`.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id"), DeliveriesParams),
    responses(
        (status = 200, description = "A page of deliveries (a bare array)", body = [DeliveryResponse],
            headers(("Link" = String, description = "rel=\"next\" when there is a next page"), ("X-Next-Cursor" = String))),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "Webhook not found", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_deliveries(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(params): Query<DeliveriesParams>,
    uri: Uri,
) -> Result<impl IntoResponse> {
    let (deliveries, next) = service::deliveries(&state, &principal, id, &params).await?;
    Ok((page::next_headers(&uri, next.as_deref()), Json(deliveries)))
}

/// Attempt a delivery again now: a finished one (succeeded or failed) gets one more attempt, a
/// pending one is moved forward. Answers 202 with the delivery; follow it in `.../deliveries`.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{deliveryId}/retry", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id"), ("deliveryId" = i64, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Due now", body = DeliveryResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "A read-only key", body = ErrorBody),
        (status = 404, description = "Webhook not found / Delivery not found", body = ErrorBody),
        (status = 409, description = "An attempt is in flight (DELIVERY_IN_FLIGHT), or the webhook is disabled (WEBHOOK_DISABLED)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn retry_delivery(
    principal: Principal,
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(i64, i64)>,
) -> Result<(StatusCode, Json<DeliveryResponse>)> {
    let delivery = service::retry(&state, &principal, id, delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

/// Queue a test message (`"type": "webhook.test"`, `data.webhookId`), signed and delivered like
/// an event. Answers 202 with the delivery; follow it in `.../deliveries`. A 429 also answers when
/// the organisation's queue is full (`WEBHOOK_MAX_QUEUED_PER_TENANT`).
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "Webhooks",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 202, description = "Queued", body = DeliveryResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "A read-only key", body = ErrorBody),
        (status = 404, description = "Webhook not found", body = ErrorBody),
        (status = 409, description = "The webhook is disabled (WEBHOOK_DISABLED)", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn test_webhook(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<DeliveryResponse>)> {
    let delivery = service::test(&state, &principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}
