//! The principals of verified tokens, remembered in the database: a tenant seen in a token is
//! known from then on (registration can never take it over), and each principal's last role is
//! kept (an API key lives only while its creator holds a role that covers it).
//!
//! Each instance notes a principal once per [`NOTE_TTL`] (or when its role changes), so a busy
//! user costs one small upsert every few minutes, not one per request.

use std::time::Duration;

use super::model::{Principal, Role, TenantId};
use super::repo;
use crate::error::Result;
use crate::state::AppState;

/// How long an instance trusts that a noted principal is still noted with the same role.
const NOTE_TTL: Duration = Duration::from_secs(600);

/// Principals this instance has noted lately, with the role noted.
pub struct Noted(moka::sync::Cache<(TenantId, String), Role>);

impl Default for Noted {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(NOTE_TTL)
                .build(),
        )
    }
}

/// Notes the principal of a freshly verified token (a tenant row for its tenant, its role).
pub async fn note(state: &AppState, principal: &Principal) -> Result<()> {
    let key = (principal.tenant.clone(), principal.user_id.clone());
    if state.auth.noted.0.get(&key) == Some(principal.role) {
        return Ok(());
    }
    let mut tx = state.db.begin(&principal.tenant).await?;
    repo::note_principal(
        &mut tx,
        &principal.tenant,
        &principal.user_id,
        &principal.email,
        principal.role.as_str(),
    )
    .await?;
    tx.commit().await?;
    state.auth.noted.0.insert(key, principal.role);
    Ok(())
}
