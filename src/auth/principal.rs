//! The `Principal` extractor: the verified token or API key of a request, and nothing else,
//! decides its tenant, user and role.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, header};

use super::api_keys;
use super::model::Principal;
use crate::error::ApiError;
use crate::extract::client_address;
use crate::state::AppState;

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let principal = authenticate(parts, state).await?;
        check_scope(parts, &principal)?;
        record_principal(&tracing::Span::current(), &principal);
        crate::audit::note_principal(&principal);
        state.limits.check_tenant(principal.tenant.as_str()).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// Fills the request span's `tenant` and `user` in one record, not two: each record of a span
/// costs the JSON log layer work of its own (bench/README.md, finding 11). (`FieldSet::value_set`
/// is what tracing's own macros expand to.)
fn record_principal(span: &tracing::Span, principal: &Principal) {
    let Some(fields) = span.metadata().map(|m| m.fields()) else {
        return;
    };
    let (Some(tenant), Some(user)) = (fields.field("tenant"), fields.field("user")) else {
        return;
    };
    let tenant_value = principal.tenant.as_str();
    let user_value = principal.user_id.as_str();
    let values: [(&tracing::field::Field, Option<&dyn tracing::Value>); 2] =
        [(&tenant, Some(&tenant_value)), (&user, Some(&user_value))];
    span.record_all(&fields.value_set(&values));
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(value) = parts.headers.get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Invalid API key"))?;
        let client = client_address(parts, &state.config.trusted_proxies);
        return api_keys::authenticate(state, key.trim(), &client).await;
    }
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("No authorization token provided"));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("Invalid token"))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(ApiError::unauthorized(
                "Authorization must use the Bearer scheme",
            ));
        }
    };
    if token.is_empty() {
        return Err(ApiError::unauthorized("No authorization token provided"));
    }
    if token.starts_with(api_keys::PREFIX) {
        let client = client_address(parts, &state.config.trusted_proxies);
        return api_keys::authenticate(state, token, &client).await;
    }
    // The hot path: a token verified lately answers from memory, with nothing else to do.
    if let Some(principal) = state.auth.remembered(token) {
        return Ok(principal);
    }
    let client = client_address(parts, &state.config.trusted_proxies);
    state.limits.check_auth_failures(&client)?;
    let principal = state.auth.verify(token).map_err(|e| {
        state.limits.record_auth_failure(&client);
        ApiError::unauthorized(e.0)
    })?;
    super::identity::note(state, &principal).await?;
    Ok(principal)
}

/// A read-only API key may only read: every method but GET, HEAD and OPTIONS is a write, except
/// the few POSTs that only compute an answer. One rule for every route, checked here once, so a
/// route added later is covered without doing anything.
pub fn check_scope(parts: &Parts, principal: &Principal) -> Result<(), ApiError> {
    if principal.can_write() || matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
    {
        return Ok(());
    }
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or_default();
    let route = route.strip_prefix("/api").unwrap_or(route);
    if parts.method == Method::POST && READ_ONLY_POSTS.contains(&route) {
        return Ok(());
    }
    // The generic code, as before this check was central: the web client reads it.
    Err(ApiError::forbidden("This API key is read-only"))
}

/// POST routes that change nothing (a dry run, a query): open to read-only keys.
const READ_ONLY_POSTS: &[&str] = &["/panels/{id}/formulas/check", "/panels/{id}/rows/query"];
