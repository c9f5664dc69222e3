//! Request and response bodies of the identity endpoints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::model::Role;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple", "name": "Ada Lovelace", "tenantSlug": "acme-health", "tenantName": "Acme Health"}))]
pub struct RegisterRequest {
    #[validate(email(message = "must be a valid e-mail address"), length(max = 254))]
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    pub email: String,
    #[validate(length(min = 8, max = 256, message = "length must be between 8 and 256"))]
    #[schema(
        example = "correct horse battery staple",
        min_length = 8,
        max_length = 256
    )]
    pub password: String,
    #[validate(length(min = 1, max = 255))]
    #[schema(min_length = 1, max_length = 255, example = "Ada Lovelace")]
    pub name: Option<String>,
    /// A new organisation's slug (required unless joining with `invitationToken`).
    #[validate(length(min = 2, max = 63), custom(function = "slug"))]
    #[schema(
        example = "acme-health",
        min_length = 2,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]{1,62}$"
    )]
    pub tenant_slug: Option<String>,
    #[validate(length(min = 1, max = 255))]
    #[schema(example = "Acme Health", min_length = 1, max_length = 255)]
    pub tenant_name: Option<String>,
    /// An invitation issued by an admin of an existing organisation.
    pub invitation_token: Option<String>,
}

/// `^[a-z0-9][a-z0-9-]{1,62}$` (the schema's `pattern`), checked without a regex to build.
fn slug(raw: &str) -> Result<(), validator::ValidationError> {
    let bytes = raw.as_bytes();
    let ok = (2..=63).contains(&bytes.len())
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(validator::ValidationError::new("regex")
            .with_message("must be lower-case letters, digits and '-'".into()))
    }
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    #[validate(length(min = 1, max = 254))]
    #[schema(example = "ada@example.com", min_length = 1, max_length = 254)]
    pub email: String,
    #[validate(length(min = 1, max = 256))]
    #[schema(
        example = "correct horse battery staple",
        min_length = 1,
        max_length = 256
    )]
    pub password: String,
    /// The organisation, needed only when the e-mail belongs to several.
    #[validate(length(min = 1, max = 128))]
    #[schema(example = "acme-health", min_length = 1, max_length = 128)]
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"refreshToken": "rt_3q2-…"}))]
pub struct RefreshRequest {
    #[validate(length(min = 1, max = 512))]
    #[schema(min_length = 1, max_length = 512)]
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserResponse {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub tenant: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    pub user: UserResponse,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    /// The token's subject.
    pub id: String,
    pub email: String,
    pub tenant: String,
    pub role: Role,
    /// `jwt` or `api_key`.
    pub auth: &'static str,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "grace@example.com", "role": "builder", "expiresInHours": 72}))]
pub struct InvitationRequest {
    #[validate(email(message = "must be a valid e-mail address"), length(max = 254))]
    #[schema(format = Email, max_length = 254, example = "grace@example.com")]
    pub email: String,
    pub role: Role,
    /// Hours until the invitation expires (default 72, at most 720).
    #[validate(range(min = 1, max = 720))]
    #[schema(minimum = 1, maximum = 720, example = 72)]
    pub expires_in_hours: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationResponse {
    pub id: i64,
    pub email: String,
    pub role: Role,
    /// Shown once: pass it as `invitationToken` to `POST /api/auth/register`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyScope {
    Read,
    Write,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "EHR push client", "scope": "write", "expiresAt": "2030-01-01T00:00:00Z"}))]
pub struct CreateApiKeyRequest {
    #[validate(length(min = 1, max = 255))]
    #[schema(
        example = "EHR push client",
        min_length = 1,
        max_length = 255,
        pattern = "\\S"
    )]
    pub name: String,
    pub scope: ApiKeyScope,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKeyResponse {
    pub id: i64,
    pub name: String,
    /// The secret: shown only in this response.
    pub key: String,
    pub prefix: String,
    pub scope: ApiKeyScope,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyResponse {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub scope: ApiKeyScope,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}
