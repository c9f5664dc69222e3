//! HTTP surface of identity: `/auth/*` and `/api-keys`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::*;
use super::model::{Credential, Principal};
use super::{api_keys, service};
use crate::error::{ErrorBody, Result};
use crate::extract::{ClientAddr, Json, Path, ValidJson};
use crate::openapi::{AuthErrors, BodyErrors, ServerErrors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_invitation))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(delete_api_key))
}

/// Create an organisation and its first admin, or join one with an invitation.
#[utoipa::path(post, path = "/auth/register", tag = "Auth", request_body = RegisterRequest,
    security(()),
    responses(
        (status = 201, description = "Registered; tokens issued", body = TokenResponse),
        (status = 400, description = "Invalid body or invitation", body = ErrorBody),
        (status = 403, description = "Registration is closed (REGISTRATION_CLOSED): only invitations", body = ErrorBody),
        (status = 409, description = "E-mail or organisation already exists (TENANT_EXISTS)", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address", body = ErrorBody),
        BodyErrors, ServerErrors,
    ))]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ValidJson(req): ValidJson<RegisterRequest>,
) -> Result<impl IntoResponse> {
    let response = service::register(&state, &client, req).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// Exchange e-mail and password for an access token and a refresh token.
#[utoipa::path(post, path = "/auth/login", tag = "Auth", request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Invalid e-mail or password", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        BodyErrors, ServerErrors,
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ValidJson(req): ValidJson<LoginRequest>,
) -> Result<Json<TokenResponse>> {
    service::login(&state, &client, req).await.map(Json)
}

/// Rotate a refresh token: answers a new pair; replaying a used token revokes its family.
#[utoipa::path(post, path = "/auth/refresh", tag = "Auth", request_body = RefreshRequest,
    security(()),
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        BodyErrors, ServerErrors,
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ValidJson(req): ValidJson<RefreshRequest>,
) -> Result<Json<TokenResponse>> {
    service::refresh(&state, &client, req).await.map(Json)
}

/// Revoke a refresh token (and every token rotated from the same login) and, when the request
/// carries one, its access token: every instance refuses it from then on until it expires.
#[utoipa::path(post, path = "/auth/logout", tag = "Auth", request_body = RefreshRequest,
    security(()),
    responses(
        (status = 204, description = "Logged out"),
        (status = 400, description = "Invalid body", body = ErrorBody),
        BodyErrors, ServerErrors,
    ))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(req): ValidJson<RefreshRequest>,
) -> Result<StatusCode> {
    let access = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    service::logout(&state, access, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the token is for.
#[utoipa::path(get, path = "/auth/me", tag = "Auth",
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        AuthErrors, ServerErrors,
    ))]
pub async fn me(principal: Principal) -> Json<MeResponse> {
    Json(MeResponse {
        id: principal.user_id,
        email: principal.email,
        tenant: principal.tenant.as_str().to_owned(),
        role: principal.role,
        auth: match principal.credential {
            Credential::Jwt => "jwt",
            Credential::ApiKey { .. } => "api_key",
        },
    })
}

/// Invite someone to the caller's organisation (admin only).
#[utoipa::path(post, path = "/auth/invitations", tag = "Auth", request_body = InvitationRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Invitation created; the token is shown once", body = InvitationResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_invitation(
    principal: Principal,
    State(state): State<AppState>,
    ValidJson(req): ValidJson<InvitationRequest>,
) -> Result<impl IntoResponse> {
    let response = service::invite(&state, &principal, req).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// Create an API key (admin only); the key is in this response and nowhere else.
#[utoipa::path(post, path = "/api-keys", tag = "API keys", request_body = CreateApiKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedApiKeyResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        AuthErrors, BodyErrors, ServerErrors,
    ))]
pub async fn create_api_key(
    principal: Principal,
    State(state): State<AppState>,
    ValidJson(req): ValidJson<CreateApiKeyRequest>,
) -> Result<impl IntoResponse> {
    let response = api_keys::create(&state, &principal, req).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// List the organisation's active API keys (never the keys themselves).
#[utoipa::path(get, path = "/api-keys", tag = "API keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Active keys", body = [ApiKeyResponse]),
        (status = 403, description = "Not an admin", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn list_api_keys(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<Vec<ApiKeyResponse>>> {
    api_keys::list(&state, &principal).await.map(Json)
}

/// Revoke an API key.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "API keys",
    params(("id" = i64, Path, description = "API key id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such key in this organisation", body = ErrorBody),
        AuthErrors, ServerErrors,
    ))]
pub async fn delete_api_key(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    api_keys::revoke(&state, &principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
