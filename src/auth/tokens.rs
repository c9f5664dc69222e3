//! Access + refresh token pairs. Refresh tokens are random, stored only as SHA-256 digests, and
//! grouped in families: each refresh rotates within the family, and a replayed (already rotated)
//! token revokes the family. A family never outlives `JWT_REFRESH_MAX_AGE` from its login:
//! rotation renews a token's own lifetime, not the login's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::dto::{TokenResponse, UserResponse};
use super::model::{Role, TenantId};
use super::repo;
use crate::error::Result;
use crate::state::AppState;

/// A fresh random secret with a recognisable prefix (256 bits of entropy).
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub async fn issue_pair(
    state: &AppState,
    conn: &mut PgConnection,
    tenant: &TenantId,
    user_id: i64,
    email: &str,
    role: Role,
    name: Option<String>,
) -> Result<TokenResponse> {
    issue_in_family(
        state,
        conn,
        tenant,
        user_id,
        email,
        role,
        name,
        Uuid::new_v4(),
        Utc::now(),
    )
    .await
}

#[allow(clippy::too_many_arguments)] // the claims of one token pair, passed as they are
pub async fn issue_in_family(
    state: &AppState,
    conn: &mut PgConnection,
    tenant: &TenantId,
    user_id: i64,
    email: &str,
    role: Role,
    name: Option<String>,
    family: Uuid,
    family_started_at: chrono::DateTime<Utc>,
) -> Result<TokenResponse> {
    let (access_token, expires_in) = state.auth.issue(user_id, email, tenant, role)?;
    let refresh_token = random_token("rt_");
    // A rotated token lives its own lifetime, but never past the login's absolute one.
    let expires_at =
        (Utc::now() + state.auth.refresh_ttl).min(family_started_at + state.auth.refresh_max_age);
    let digest = Sha256::digest(refresh_token.as_bytes());
    repo::insert_refresh_token(
        conn,
        tenant,
        user_id,
        family,
        &digest,
        expires_at,
        family_started_at,
    )
    .await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token,
        user: UserResponse {
            id: user_id,
            email: email.to_owned(),
            name,
            role,
            tenant: tenant.as_str().to_owned(),
        },
    })
}
