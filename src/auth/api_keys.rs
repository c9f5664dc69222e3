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

/// Keys looked up and found unusable (unknown, revoked, expired, creator gone), remembered
/// briefly so that repeating one costs no database look-up.
pub struct Refused(moka::sync::Cache<[u8; 32], ()>);

impl Default for Refused {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        )
    }
}

/// Resolves an API key to the principal it acts as: its creator's tenant and e-mail, with the
/// scope of the key and the role of its creator as it is now (at most builder). A key stops
/// working when it is revoked or expires, and when its creator is removed or no longer holds
/// the builder role (a key never does more than its creator could). Failed attempts count per
/// client address and, past the limit, are refused before any look-up; a refused key is
/// remembered for a minute, so neither random nor repeated keys can drain the pool.
pub async fn authenticate(state: &AppState, key: &str, client: &str) -> Result<Principal> {
    let refuse = |refused: Option<[u8; 32]>| {
        state.limits.record_auth_failure(client);
        if let Some(digest) = refused {
            state.auth.refused_keys.0.insert(digest, ());
        }
        revoked()
    };
    state.limits.check_auth_failures(client)?;
    if !key.starts_with(PREFIX) || key.len() > 128 {
        return Err(refuse(None));
    }
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if state.auth.refused_keys.0.contains_key(&digest) {
        return Err(refuse(None));
    }
    let mut conn = state.db.acquire().await?;
    let row = repo::find_api_key(&mut conn, &digest).await?;
    drop(conn);
    let Some(row) = row else {
        return Err(refuse(Some(digest)));
    };
    // The digest matched in the index; compare again in constant time so no timing difference
    // depends on how much of a guessed key was right.
    let stored = Sha256::digest(key.as_bytes());
    if !bool::from(stored[..].ct_eq(&digest[..])) {
        return Err(refuse(None));
    }
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at < Utc::now()) {
        return Err(refuse(Some(digest)));
    }
    let creator_role = row.creator_role.as_deref().and_then(Role::parse);
    let role = match creator_role {
        Some(role) if role >= Role::Builder => Role::Builder,
        // The creator is gone, or can no longer do what the key does.
        _ => return Err(refuse(Some(digest))),
    };
    let tenant = TenantId::parse(&row.tenant_id).ok_or_else(revoked)?;
    // One write a minute at most: `lastUsedAt` is for people, not an audit log.
    if row
        .last_used_at
        .is_none_or(|at| Utc::now() - at > ChronoDuration::minutes(1))
    {
        let mut tx = state.db.begin(&tenant).await?;
        repo::touch_api_key(&mut tx, &tenant, row.id).await?;
        if row.last_used_at.is_none() {
            // The key's first use: an entry of its own, beside the request's.
            let actor = crate::audit::Actor {
                kind: "apiKey",
                id: row.id.to_string(),
                email: (!row.created_by_email.is_empty()).then(|| row.created_by_email.clone()),
            };
            let entry = crate::audit::NewEntry::new(&tenant, &actor, "apiKey.firstUse")
                .entity("apiKey", row.id);
            crate::audit::repo::insert(&mut tx, std::slice::from_ref(&entry)).await?;
        }
        tx.commit().await?;
    }
    let write = row.scope == "write";
    Ok(Principal {
        user_id: format!("api-key:{}", row.id),
        email: row.created_by_email,
        tenant,
        role,
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
    let row = crate::write::write(state, principal, |mut w| async move {
        let tenant = &principal.tenant;
        // A local user's key follows the account in `users`; an identity provider's member's,
        // the role last seen in their tokens.
        let local = match principal.user_id.parse::<i64>() {
            Ok(id) => repo::find_user(&mut w.tx, tenant, id).await?.is_some(),
            Err(_) => false,
        };
        let row = repo::insert_api_key(
            &mut w.tx,
            tenant,
            req.name.trim(),
            &prefix,
            &digest,
            scope,
            req.expires_at,
            &principal.user_id,
            &principal.email,
            if local { "user" } else { "external" },
        )
        .await?;
        w.audit_entity("apiKey", row.id, None);
        w.audit_changes(serde_json::json!({
            "name": {"to": row.name},
            "scope": {"to": row.scope},
            "expiresAt": {"to": row.expires_at},
        }));
        Ok((w, row))
    })
    .await?;
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
    crate::db::end_read(tx);
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
    crate::write::write(state, principal, |mut w| async move {
        if !repo::revoke_api_key(&mut w.tx, &principal.tenant, id).await? {
            return Err(ApiError::not_found(
                "API_KEY_NOT_FOUND",
                "API key not found",
            ));
        }
        Ok((w, ()))
    })
    .await
}
