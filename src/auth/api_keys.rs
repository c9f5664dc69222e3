//! API keys for machine clients: `pnl_<random>`, shown once, stored as a SHA-256 digest (looked up
//! by digest, then compared in constant time), with a scope, an optional expiry and `lastUsedAt`.

use chrono::{Duration as ChronoDuration, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::dto::{ApiKeyResponse, ApiKeyScope, CreateApiKeyRequest, CreatedApiKeyResponse};
use super::model::{Credential, Principal, Role, TenantId};
use super::service::require_admin;
use super::{repo, tokens};
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// Every key starts with this, so a leaked key is recognisable (e.g. by secret scanners).
pub const PREFIX: &str = "pnl_";

fn revoked() -> ApiError {
    ApiError::Unauthorized {
        code: "INVALID_API_KEY",
        message: "Invalid API key".to_owned(),
    }
}

/// Resolves an API key to the principal it acts as: its creator's tenant, with the scope of the key.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Principal> {
    if !key.starts_with(PREFIX) || key.len() > 128 {
        return Err(revoked());
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut conn = state.db.pool().acquire().await?;
    let row = repo::find_api_key(&mut conn, &digest)
        .await?
        .ok_or_else(revoked)?;
    drop(conn);
    // The digest matched in the index; compare again in constant time so no timing difference
    // depends on how much of a guessed key was right.
    let stored = Sha256::digest(key.as_bytes());
    if !bool::from(stored[..].ct_eq(&digest[..])) {
        return Err(revoked());
    }
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at < Utc::now()) {
        return Err(revoked());
    }
    let tenant = TenantId::parse(&row.tenant_id).ok_or_else(revoked)?;
    // One write a minute at most: `lastUsedAt` is for people, not an audit log.
    if row
        .last_used_at
        .is_none_or(|at| Utc::now() - at > ChronoDuration::minutes(1))
    {
        let mut tx = state.db.begin(&tenant).await?;
        repo::touch_api_key(&mut tx, &tenant, row.id).await?;
        tx.commit().await?;
    }
    let write = row.scope == "write";
    Ok(Principal {
        user_id: format!("api-key:{}", row.id),
        email: row.created_by_email,
        tenant,
        // A key acts with builder rights at most: it can push records and read, never administer.
        role: Role::Builder,
        credential: Credential::ApiKey { id: row.id, write },
    })
}

fn scope_of(raw: &str) -> ApiKeyScope {
    if raw == "write" {
        ApiKeyScope::Write
    } else {
        ApiKeyScope::Read
    }
}

pub async fn create(
    state: &AppState,
    principal: &Principal,
    req: CreateApiKeyRequest,
) -> Result<CreatedApiKeyResponse> {
    require_admin(principal)?;
    if matches!(principal.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::forbidden("API keys cannot create API keys"));
    }
    if req.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::invalid("expiresAt", "must be in the future"));
    }
    // The stored name is trimmed: one of blanks only would be empty.
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be blank"));
    }
    let key = tokens::random_token(PREFIX);
    let prefix: String = key.chars().take(PREFIX.len() + 6).collect();
    let digest = Sha256::digest(key.as_bytes());
    let scope = match req.scope {
        ApiKeyScope::Read => "read",
        ApiKeyScope::Write => "write",
    };
    let mut tx = state.db.begin(&principal.tenant).await?;
    let row = repo::insert_api_key(
        &mut tx,
        &principal.tenant,
        req.name.trim(),
        &prefix,
        &digest,
        scope,
        req.expires_at,
        &principal.user_id,
        &principal.email,
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedApiKeyResponse {
        id: row.id,
        name: row.name,
        key,
        prefix: row.prefix,
        scope: scope_of(&row.scope),
        expires_at: row.expires_at,
        created_at: row.created_at,
    })
}

pub async fn list(state: &AppState, principal: &Principal) -> Result<Vec<ApiKeyResponse>> {
    require_admin(principal)?;
    let mut tx = state.db.begin(&principal.tenant).await?;
    let rows = repo::list_api_keys(&mut tx, &principal.tenant).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|row| ApiKeyResponse {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scope: scope_of(&row.scope),
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            created_at: row.created_at,
        })
        .collect())
}

pub async fn revoke(state: &AppState, principal: &Principal, id: i64) -> Result<()> {
    require_admin(principal)?;
    let mut tx = state.db.begin(&principal.tenant).await?;
    let found = repo::revoke_api_key(&mut tx, &principal.tenant, id).await?;
    tx.commit().await?;
    if found {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "API_KEY_NOT_FOUND",
            "API key not found",
        ))
    }
}
