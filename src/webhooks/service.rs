//! Webhook rules: who may manage one (admins; editors of its panel, for a panel's webhook), what
//! it may point at (the address policy of data sources), what it subscribes to (the types of
//! `GET /api/events`), its secret (sealed at rest, shown once), the per-tenant caps, and the
//! delivery log with its manual retry and test message. Each request is one transaction through
//! the write path; webhooks write no events of their own.

use std::collections::HashMap;

use chrono::Utc;
use tracing::instrument;

use super::model::*;
use super::repo::{self, NewDeliveries, WebhookFields};
use super::signing;
use crate::auth::Principal;
use crate::datasources::connectors::api::check_url;
use crate::db::Tx;
use crate::error::{ApiError, FieldError, Result};
use crate::etag::{IfMatch, etag};
use crate::events::model::{EventPayload, actor};
use crate::events::service::Filters;
use crate::ids::PanelId;
use crate::netguard::{self, Blocked};
use crate::page::{self, PageParams};
use crate::panels::{Access, authorize};
use crate::state::AppState;
use crate::write;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_HOURS: i32 = 24;

pub fn not_found() -> ApiError {
    ApiError::not_found("WEBHOOK_NOT_FOUND", "Webhook not found")
}

fn delivery_not_found() -> ApiError {
    ApiError::not_found("DELIVERY_NOT_FOUND", "Delivery not found")
}

fn tag_of(row: &WebhookRow) -> String {
    etag("webhook", row.id, row.version)
}

fn read_only() -> ApiError {
    ApiError::forbidden("This API key is read-only")
}

/// A request checked: its URL against the address policy, its types against the event types.
struct Checked {
    url: String,
    events: Vec<String>,
    description: Option<String>,
}

/// The URL must be http(s) without credentials, and its host must not be (or resolve to) a
/// forbidden address; a name that does not resolve now is accepted (it is checked again at every
/// delivery). Types are those of `GET /api/events?types=`, one per item.
async fn check_request(state: &AppState, req: &WebhookRequest) -> Result<Checked> {
    let invalid_url = |message: &str| {
        ApiError::validation_coded("INVALID_WEBHOOK_URL", vec![FieldError::new("url", message)])
    };
    let raw = req.url.trim();
    let url = reqwest::Url::parse(raw).map_err(|_| invalid_url("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid_url("must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_url(
            "must not carry credentials: the signature authenticates the sender",
        ));
    }
    if url.host().is_none() {
        return Err(invalid_url("has no host"));
    }
    if check_url(&url, state.config.allow_private_source_hosts).await == Err(Blocked::Refused) {
        return Err(invalid_url(netguard::REFUSED));
    }
    // Stored as parsed (percent-encoded), which can be longer than what was sent.
    let url = url.to_string();
    if url.chars().count() > 2048 {
        return Err(invalid_url("is longer than 2,048 characters once encoded"));
    }
    let mut events: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in req.events.iter().enumerate() {
        let item = item.trim();
        let known = !item.is_empty()
            && !item.contains(',')
            && Filters::parse_types(Some(item)).is_ok_and(|types| types.len() == 1);
        if !known {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                format!("unknown event type {item:?}: a type of GET /api/events, or a family such as 'view.*'"),
            ));
        } else if !events.iter().any(|e| e == item) {
            events.push(item.to_owned());
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Checked {
        url,
        events,
        description: req
            .description
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
    })
}

/// Whether the caller may point a webhook at `panel`: an editor of the panel (its 404 and 403 as
/// the panel answers them), or for the whole organisation, an admin; and a credential that writes.
async fn check_target(tx: &mut Tx, principal: &Principal, panel: Option<PanelId>) -> Result<()> {
    match panel {
        Some(panel) => {
            authorize(tx, principal, panel, Access::ReadAll).await?;
        }
        None if !principal.is_admin() => {
            return Err(ApiError::forbidden(
                "A webhook of the whole organisation needs the admin role; give a panelId",
            ));
        }
        None => {}
    }
    if !principal.can_write() {
        return Err(read_only());
    }
    Ok(())
}

/// The webhook, when the caller may manage it: an admin, or an editor of its panel. Any other
/// webhook (another tenant's, one without a panel for a non-admin, one of a panel the caller does
/// not edit) answers exactly as one that does not exist.
async fn manageable(tx: &mut Tx, principal: &Principal, id: i64, lock: bool) -> Result<WebhookRow> {
    let row = repo::find_webhook(tx, &principal.tenant, id, lock)
        .await?
        .ok_or_else(not_found)?;
    let allowed = match row.panel_id {
        None => principal.is_admin(),
        Some(panel) => match authorize(tx, principal, panel, Access::ReadAll).await {
            Ok(_) => true,
            Err(ApiError::NotFound { .. } | ApiError::Forbidden { .. }) => false,
            Err(other) => return Err(other),
        },
    };
    if allowed { Ok(row) } else { Err(not_found()) }
}

/// [`manageable`], for a change: the credential must also write.
async fn changeable(tx: &mut Tx, principal: &Principal, id: i64) -> Result<WebhookRow> {
    let row = manageable(tx, principal, id, true).await?;
    if !principal.can_write() {
        return Err(read_only());
    }
    Ok(row)
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    req: WebhookRequest,
) -> Result<WebhookSecretResponse> {
    let checked = check_request(state, &req).await?;
    let secret = signing::new_secret();
    let plain = secret.as_str();
    let cap = state.config.webhooks.max_per_tenant;
    let row = write::write(state, principal, |mut w| async move {
        check_target(&mut w.tx, principal, req.panel_id).await?;
        let tenant = &principal.tenant;
        repo::lock_tenant_webhooks(&mut w.tx, tenant).await?;
        if repo::count_webhooks(&mut w.tx, tenant).await? >= cap {
            return Err(ApiError::conflict(
                "WEBHOOK_LIMIT_REACHED",
                format!("An organisation has at most {cap} webhooks (WEBHOOK_MAX_PER_TENANT)"),
            ));
        }
        let id = repo::next_webhook_id(&mut w.tx).await?;
        let sealed = signing::seal(&state.crypto, tenant.as_str(), id, plain)?;
        let fields = WebhookFields {
            url: &checked.url,
            events: &checked.events,
            panel_id: req.panel_id,
            description: checked.description.as_deref(),
        };
        let row =
            repo::insert_webhook(&mut w.tx, tenant, id, &fields, &sealed, &principal.email).await?;
        repo::start_at_present(&mut w.tx, tenant, id).await?;
        Ok((w, row))
    })
    .await?;
    Ok(WebhookSecretResponse {
        webhook: WebhookResponse::of(row, Utc::now()),
        secret,
    })
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    params: &PageParams,
) -> Result<(Vec<WebhookResponse>, Option<String>)> {
    let page = params.page()?;
    let user = principal.user_id.to_lowercase();
    let reader = crate::panels::service::reader(principal, &user);
    let mut tx = state.db.begin(&principal.tenant).await?;
    let rows = repo::list_webhooks(
        &mut tx,
        &principal.tenant,
        reader,
        page.after,
        page.limit + 1,
    )
    .await?;
    crate::db::end_read(tx);
    let (rows, next) = page::split(rows, page, |row| row.id);
    let now = Utc::now();
    Ok((
        rows.into_iter()
            .map(|r| WebhookResponse::of(r, now))
            .collect(),
        next,
    ))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id))]
pub async fn get(
    state: &AppState,
    principal: &Principal,
    id: i64,
) -> Result<(WebhookResponse, String)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    let row = manageable(&mut tx, principal, id, false).await?;
    crate::db::end_read(tx);
    let tag = tag_of(&row);
    Ok((WebhookResponse::of(row, Utc::now()), tag))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id))]
pub async fn update(
    state: &AppState,
    principal: &Principal,
    id: i64,
    if_match: &IfMatch,
    req: WebhookRequest,
) -> Result<(WebhookResponse, String)> {
    let checked = check_request(state, &req).await?;
    let row = write::write(state, principal, |mut w| async move {
        let tenant = &principal.tenant;
        let current = changeable(&mut w.tx, principal, id).await?;
        if_match.check(&tag_of(&current))?;
        if req.panel_id != current.panel_id {
            check_target(&mut w.tx, principal, req.panel_id).await?;
        }
        let fields = WebhookFields {
            url: &checked.url,
            events: &checked.events,
            panel_id: req.panel_id,
            description: checked.description.as_deref(),
        };
        repo::update_webhook(&mut w.tx, tenant, id, &fields).await?;
        match req.enabled {
            Some(true) if !current.enabled => repo::start_at_present(&mut w.tx, tenant, id).await?,
            Some(false) if current.enabled => repo::disable(&mut w.tx, tenant, id).await?,
            _ => {}
        }
        let row = repo::find_webhook(&mut w.tx, tenant, id, false)
            .await?
            .ok_or_else(not_found)?;
        let now = Utc::now();
        w.audit_diff(
            &WebhookResponse::of(current, now),
            &WebhookResponse::of(row.clone(), now),
        );
        Ok((w, row))
    })
    .await?;
    let tag = tag_of(&row);
    Ok((WebhookResponse::of(row, Utc::now()), tag))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id))]
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    id: i64,
    if_match: &IfMatch,
) -> Result<()> {
    write::write(state, principal, |mut w| async move {
        let current = changeable(&mut w.tx, principal, id).await?;
        if_match.check(&tag_of(&current))?;
        repo::delete_webhook(&mut w.tx, &principal.tenant, id).await?;
        Ok((w, ()))
    })
    .await
}

/// A new secret, shown once; the previous one keeps signing beside it for
/// [`ROTATION_OVERLAP_HOURS`] (a rotation within that time drops the oldest).
#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id))]
pub async fn rotate_secret(
    state: &AppState,
    principal: &Principal,
    id: i64,
) -> Result<WebhookSecretResponse> {
    let secret = signing::new_secret();
    let plain = secret.as_str();
    let row = write::write(state, principal, |mut w| async move {
        changeable(&mut w.tx, principal, id).await?;
        let tenant = &principal.tenant;
        let sealed = signing::seal(&state.crypto, tenant.as_str(), id, plain)?;
        let row =
            repo::rotate_secret(&mut w.tx, tenant, id, &sealed, ROTATION_OVERLAP_HOURS).await?;
        Ok((w, row))
    })
    .await?;
    Ok(WebhookSecretResponse {
        webhook: WebhookResponse::of(row, Utc::now()),
        secret,
    })
}

/// Deliveries with their attempts, in the order of `rows`.
async fn with_attempts(
    tx: &mut Tx,
    principal: &Principal,
    rows: Vec<DeliveryRow>,
) -> Result<Vec<DeliveryResponse>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut attempts: HashMap<i64, Vec<AttemptResponse>> = HashMap::new();
    for attempt in repo::attempts_of(tx, &principal.tenant, &ids).await? {
        attempts
            .entry(attempt.delivery_id)
            .or_default()
            .push(attempt.into());
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine = attempts.remove(&row.id).unwrap_or_default();
            DeliveryResponse::of(row, mine)
        })
        .collect())
}

#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id))]
pub async fn deliveries(
    state: &AppState,
    principal: &Principal,
    id: i64,
    params: &DeliveriesParams,
) -> Result<(Vec<DeliveryResponse>, Option<String>)> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let before = PageParams {
        limit: None,
        cursor: params.cursor.clone(),
    }
    .page()?
    .after;
    let mut tx = state.db.begin(&principal.tenant).await?;
    manageable(&mut tx, principal, id, false).await?;
    let mut rows = repo::list_deliveries(
        &mut tx,
        &principal.tenant,
        id,
        before,
        params.status.map(DeliveryStatus::as_str),
        limit + 1,
    )
    .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| page::encode(r.id))
    } else {
        None
    };
    let deliveries = with_attempts(&mut tx, principal, rows).await?;
    crate::db::end_read(tx);
    Ok((deliveries, next))
}

/// Another attempt at once: a finished delivery gets one more attempt (its webhook must be
/// enabled); a pending one is moved forward; one in flight answers 409.
#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id, delivery_id))]
pub async fn retry(
    state: &AppState,
    principal: &Principal,
    id: i64,
    delivery_id: i64,
) -> Result<DeliveryResponse> {
    write::write(state, principal, |mut w| async move {
        let webhook = changeable(&mut w.tx, principal, id).await?;
        let tenant = &principal.tenant;
        let delivery = repo::find_delivery(&mut w.tx, tenant, id, delivery_id)
            .await?
            .ok_or_else(delivery_not_found)?;
        if delivery.status == DeliveryStatus::Delivering.as_str() {
            return Err(ApiError::conflict(
                "DELIVERY_IN_FLIGHT",
                "An attempt of this delivery is in flight; retry when it ends",
            ));
        }
        if !webhook.enabled {
            return Err(disabled());
        }
        let row = repo::retry_delivery(&mut w.tx, tenant, delivery_id).await?;
        let delivery = with_attempts(&mut w.tx, principal, vec![row])
            .await?
            .pop()
            .ok_or_else(delivery_not_found)?;
        Ok((w, delivery))
    })
    .await
}

fn disabled() -> ApiError {
    ApiError::conflict(
        "WEBHOOK_DISABLED",
        "The webhook is disabled; enable it first (PUT with \"enabled\": true)",
    )
}

/// Queues a `webhook.test` message (an event's shape, `data.webhookId`), delivered and signed
/// like any other.
#[instrument(skip_all, fields(tenant = %principal.tenant, webhook_id = id))]
pub async fn test(state: &AppState, principal: &Principal, id: i64) -> Result<DeliveryResponse> {
    let max_queued = state.config.webhooks.max_queued_per_tenant;
    let attempts = i32::try_from(state.config.webhooks.retry_schedule.len()).unwrap_or(i32::MAX);
    write::write(state, principal, |mut w| async move {
        let webhook = changeable(&mut w.tx, principal, id).await?;
        if !webhook.enabled {
            return Err(disabled());
        }
        let tenant = &principal.tenant;
        if repo::count_queued(&mut w.tx, tenant).await? >= max_queued {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: 60,
                limit: u64::try_from(max_queued).unwrap_or(u64::MAX),
            });
        }
        let event_id = format!("test_{}", uuid::Uuid::new_v4().simple());
        let payload = EventPayload {
            id: event_id.clone(),
            kind: "webhook.test".to_owned(),
            panel_id: webhook.panel_id.map(|p| p.0),
            view_id: None,
            entity_id: Some(id.to_string()),
            actor: actor(principal),
            at: Utc::now(),
            data: serde_json::json!({ "webhookId": id }),
        };
        let body = serde_json::to_string(&payload).map_err(|e| ApiError::Internal(e.into()))?;
        let mut new = NewDeliveries::default();
        new.push(id, event_id, &payload.kind, &body);
        let row = repo::insert_deliveries(&mut w.tx, tenant, &new, attempts)
            .await?
            .pop()
            .ok_or_else(delivery_not_found)?;
        Ok((w, DeliveryResponse::of(row, Vec::new())))
    })
    .await
}
