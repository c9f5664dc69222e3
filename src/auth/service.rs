//! Registration, login, token refresh and logout, invitations and API keys.

use chrono::{Duration as ChronoDuration, Utc};
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::dto::*;
use super::model::{Principal, Role, TenantId};
use super::{password, repo, tokens};
use crate::audit;
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// A dummy hash at today's cost: an unknown e-mail is checked against it, so it takes as long as
/// a wrong password and the two answers cannot be told apart by timing.
static DUMMY_HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

async fn dummy_hash() -> Result<&'static str> {
    DUMMY_HASH
        .get_or_try_init(|| password::hash("not-a-real-password-0000".to_owned()))
        .await
        .map(String::as_str)
        .map_err(ApiError::Internal)
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "INVALID_CREDENTIALS",
        message: "Invalid email or password".to_owned(),
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// `POST /auth/register`: joins an organisation with an invitation, or creates a new one (when
/// `REGISTRATION_ENABLED`) under a slug nobody has: not registered, not seen in any verified
/// token, holding no data. Limited per client address before any password is hashed.
#[instrument(skip_all, fields(tenant))]
pub async fn register(
    state: &AppState,
    client: &str,
    req: RegisterRequest,
) -> Result<TokenResponse> {
    state.limits.check_register(&format!("ip:{client}")).await?;
    if req.invitation_token.is_none() && !state.config.registration_enabled {
        return Err(ApiError::forbidden_coded(
            "REGISTRATION_CLOSED",
            "Registration is closed: ask an administrator for an invitation",
        ));
    }
    let email = req.email.trim().to_lowercase();
    let hash = password::hash(req.password.clone()).await?;
    let name = req.name.as_deref();

    let (tenant, role, user) = match req.invitation_token.as_deref() {
        Some(token) => {
            let digest = sha256(token.as_bytes());
            let mut tx = state.db.begin_anonymous().await?;
            let invitation = repo::find_invitation(&mut tx, &digest).await?;
            tx.commit().await?;
            let invalid = || {
                ApiError::bad_request(
                    "INVALID_INVITATION",
                    "The invitation is invalid or has expired",
                )
            };
            let invitation = invitation.ok_or_else(invalid)?;
            if invitation.accepted_at.is_some()
                || invitation.expires_at < Utc::now()
                || invitation.email != email
            {
                if let Some(tenant) = TenantId::parse(&invitation.tenant_id) {
                    audit::note(
                        &tenant,
                        audit::Actor::user(&email, &email),
                        Some("auth.registerRefused"),
                    );
                }
                return Err(invalid());
            }
            let tenant = TenantId::parse(&invitation.tenant_id).ok_or_else(invalid)?;
            let role = Role::parse(&invitation.role).unwrap_or(Role::User);
            let mut tx = state.db.begin(&tenant).await?;
            if !repo::accept_invitation(&mut tx, &tenant, invitation.id).await? {
                return Err(invalid());
            }
            let user =
                repo::insert_user(&mut tx, &tenant, &email, name, &hash, role.as_str()).await?;
            let entry = audit::NewEntry::new(
                &tenant,
                &audit::Actor::user(user.id, &email),
                "invitation.accept",
            )
            .status(201)
            .entity("invitation", invitation.id)
            .changes(Some(serde_json::json!({
                "user": {"to": user.id}, "email": {"to": email}, "role": {"to": role.as_str()},
            })));
            audit::repo::insert(&mut tx, std::slice::from_ref(&entry)).await?;
            let response = tokens::issue_pair(
                state,
                &mut tx,
                &tenant,
                user.id,
                &email,
                role,
                user.name.clone(),
            )
            .await?;
            tx.commit().await?;
            audit::written();
            return Ok(response);
        }
        None => {
            let slug = req.tenant_slug.as_deref().ok_or_else(|| {
                ApiError::invalid("tenantSlug", "is required to create an organisation")
            })?;
            let tenant = TenantId::parse(slug)
                .ok_or_else(|| ApiError::invalid("tenantSlug", "is not a valid slug"))?;
            let tenant_name = req.tenant_name.as_deref().unwrap_or(slug);
            let mut tx = state.db.begin(&tenant).await?;
            if repo::tenant_has_data(&mut tx, &tenant).await? {
                tracing::warn!(tenant = %tenant, "registration refused: the organisation exists");
                // The organisation's admins see who tried to register it again.
                audit::note(
                    &tenant,
                    audit::Actor::user(&email, &email),
                    Some("auth.registerRefused"),
                );
                return Err(ApiError::conflict(
                    "TENANT_EXISTS",
                    "This organisation already exists",
                ));
            }
            repo::insert_tenant(&mut tx, &tenant, tenant_name).await?;
            let user =
                repo::insert_user(&mut tx, &tenant, &email, name, &hash, Role::Admin.as_str())
                    .await?;
            let entry = audit::NewEntry::new(
                &tenant,
                &audit::Actor::user(user.id, &email),
                "auth.register",
            )
            .status(201)
            .entity("user", user.id)
            .changes(Some(serde_json::json!({
                "tenantName": {"to": tenant_name}, "email": {"to": email},
            })));
            audit::repo::insert(&mut tx, std::slice::from_ref(&entry)).await?;
            let response = tokens::issue_pair(
                state,
                &mut tx,
                &tenant,
                user.id,
                &email,
                Role::Admin,
                user.name.clone(),
            )
            .await?;
            tx.commit().await?;
            audit::written();
            (tenant, Role::Admin, response)
        }
    };
    tracing::Span::current().record("tenant", tenant.as_str());
    tracing::info!(role = role.as_str(), "registered a new organisation");
    Ok(user)
}

#[instrument(skip_all)]
pub async fn login(state: &AppState, client: &str, req: LoginRequest) -> Result<TokenResponse> {
    let email = req.email.trim().to_lowercase();
    state.limits.check_login(&format!("ip:{client}")).await?;
    state
        .limits
        .check_login(&format!("account:{email}"))
        .await?;

    let mut tx = state.db.begin_anonymous().await?;
    let mut candidates = repo::find_logins(&mut tx, &email).await?;
    tx.commit().await?;
    if let Some(wanted) = req.tenant.as_deref() {
        candidates.retain(|c| c.tenant_id == wanted);
    }
    if candidates.len() > 1 {
        return Err(ApiError::bad_request(
            "TENANT_REQUIRED",
            "This e-mail belongs to several organisations: add `tenant` to choose one",
        ));
    }
    let Some(user) = candidates.pop() else {
        // Same work as a wrong password, same answer.
        let _ = password::verify(req.password, dummy_hash().await?.to_owned()).await?;
        return Err(invalid_credentials());
    };
    let checked = password::verify(req.password.clone(), user.password_hash.clone()).await?;
    if !checked.ok {
        if let Some(tenant) = TenantId::parse(&user.tenant_id) {
            audit::note(
                &tenant,
                audit::Actor::user(user.id, &user.email),
                Some("auth.login_failed"),
            );
        }
        return Err(invalid_credentials());
    }
    let tenant = TenantId::parse(&user.tenant_id).ok_or_else(invalid_credentials)?;
    let role = Role::parse(&user.role).unwrap_or(Role::User);
    let mut tx = state.db.begin(&tenant).await?;
    if checked.needs_rehash {
        let fresh = password::hash(req.password).await?;
        repo::update_password_hash(&mut tx, &tenant, user.id, &fresh).await?;
    }
    let found = repo::find_user(&mut tx, &tenant, user.id).await?;
    let name = found.and_then(|u| u.name);
    let response =
        tokens::issue_pair(state, &mut tx, &tenant, user.id, &user.email, role, name).await?;
    let entry = audit::NewEntry::new(
        &tenant,
        &audit::Actor::user(user.id, &user.email),
        "auth.login",
    )
    .status(200)
    .entity("user", user.id);
    audit::repo::insert(&mut tx, std::slice::from_ref(&entry)).await?;
    tx.commit().await?;
    audit::written();
    Ok(response)
}

#[instrument(skip_all)]
pub async fn refresh(state: &AppState, client: &str, req: RefreshRequest) -> Result<TokenResponse> {
    state.limits.check_login(&format!("ip:{client}")).await?;
    let digest = sha256(req.refresh_token.as_bytes());
    let invalid = || ApiError::Unauthorized {
        code: "INVALID_REFRESH_TOKEN",
        message: "Invalid refresh token".to_owned(),
    };

    let mut tx = state.db.begin_anonymous().await?;
    let row = repo::find_refresh_token(&mut tx, &digest)
        .await?
        .ok_or_else(invalid)?;
    tx.commit().await?;
    let tenant = TenantId::parse(&row.tenant_id).ok_or_else(invalid)?;

    let mut tx = state.db.begin(&tenant).await?;
    let now = Utc::now();
    let login_ends = row.family_started_at
        + ChronoDuration::from_std(state.auth.refresh_max_age).unwrap_or(ChronoDuration::MAX);
    if row.revoked_at.is_some() || row.expires_at < now || login_ends < now {
        return Err(invalid());
    }
    if row.rotated_at.is_some() || !repo::mark_refresh_rotated(&mut tx, &tenant, row.id).await? {
        // A rotated token came back: someone holds a copy. Revoke the whole family.
        repo::revoke_refresh_family(&mut tx, &tenant, row.family_id).await?;
        let entry = audit::NewEntry::new(
            &tenant,
            &audit::Actor::user(row.user_id, &row.email),
            "auth.refresh_reuse",
        )
        .status(401)
        .entity("user", row.user_id);
        audit::repo::insert(&mut tx, std::slice::from_ref(&entry)).await?;
        tx.commit().await?;
        audit::written();
        tracing::warn!(family = %row.family_id, "refresh token reuse detected; family revoked");
        return Err(invalid());
    }
    let role = Role::parse(&row.role).unwrap_or(Role::User);
    let user = repo::find_user(&mut tx, &tenant, row.user_id)
        .await?
        .ok_or_else(invalid)?;
    let response = tokens::issue_in_family(
        state,
        &mut tx,
        &tenant,
        row.user_id,
        &row.email,
        role,
        user.name,
        row.family_id,
        row.family_started_at,
    )
    .await?;
    tx.commit().await?;
    Ok(response)
}

/// Ends a login: its refresh tokens (the whole family) and the access token the request carries,
/// which every instance refuses from then on until it expires.
#[instrument(skip_all)]
pub async fn logout(
    state: &AppState,
    access_token: Option<&str>,
    req: RefreshRequest,
) -> Result<()> {
    if let Some(token) = access_token
        && let Some((tenant, digest, exp)) = state.auth.revocable(token)
    {
        let expires_at = chrono::DateTime::from_timestamp(exp as i64, 0).unwrap_or_else(Utc::now);
        let mut tx = state.db.begin(&tenant).await?;
        repo::revoke_access_token(&mut tx, &tenant, &digest, expires_at).await?;
        tx.commit().await?;
        state.auth.revoke(digest, exp);
    }
    let digest = sha256(req.refresh_token.as_bytes());
    let mut tx = state.db.begin_anonymous().await?;
    let row = repo::find_refresh_token(&mut tx, &digest).await?;
    tx.commit().await?;
    // Logging out with an unknown token is not an error: the token is unusable either way.
    if let Some(row) = row
        && let Some(tenant) = TenantId::parse(&row.tenant_id)
    {
        let mut tx = state.db.begin(&tenant).await?;
        repo::revoke_refresh_family(&mut tx, &tenant, row.family_id).await?;
        let entry = audit::NewEntry::new(
            &tenant,
            &audit::Actor::user(row.user_id, &row.email),
            "auth.logout",
        )
        .status(204)
        .entity("user", row.user_id);
        audit::repo::insert(&mut tx, std::slice::from_ref(&entry)).await?;
        tx.commit().await?;
        audit::written();
    }
    Ok(())
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn invite(
    state: &AppState,
    principal: &Principal,
    req: InvitationRequest,
) -> Result<InvitationResponse> {
    require_admin(principal)?;
    let token = tokens::random_token("inv_");
    let expires_at =
        Utc::now() + ChronoDuration::hours(i64::from(req.expires_in_hours.unwrap_or(72)));
    let email = req.email.trim().to_lowercase();
    let created_by = principal.user_id.parse::<i64>().ok();
    let (role, address, digest) = (req.role, &email, sha256(token.as_bytes()));
    let id = crate::write::write(state, principal, |mut w| async move {
        let tenant = &principal.tenant;
        let role = role.as_str();
        let id = repo::insert_invitation(
            &mut w.tx, tenant, address, role, &digest, expires_at, created_by,
        )
        .await?;
        w.audit_entity("invitation", id, None);
        w.audit_changes(serde_json::json!({
            "email": {"to": address},
            "role": {"to": role},
            "expiresAt": {"to": expires_at},
        }));
        Ok((w, id))
    })
    .await?;
    Ok(InvitationResponse {
        id,
        email,
        role: req.role,
        token,
        expires_at,
    })
}

/// `panels create-admin`: the first admin of an organisation (when registration is closed, or for
/// a tenant of an identity provider that wants a local account). Creates the tenant row when the
/// tenant is new; an existing user of that e-mail is refused.
pub async fn create_admin(
    state: &AppState,
    tenant: &TenantId,
    email: &str,
    password: String,
) -> Result<i64> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 255 {
        return Err(ApiError::invalid("email", "is not an e-mail address"));
    }
    if password.chars().count() < 8 {
        return Err(ApiError::invalid(
            "password",
            "must be at least 8 characters",
        ));
    }
    let hash = password::hash(password).await?;
    let mut tx = state.db.begin(tenant).await?;
    repo::ensure_tenant(&mut tx, tenant).await?;
    let user =
        repo::insert_user(&mut tx, tenant, &email, None, &hash, Role::Admin.as_str()).await?;
    tx.commit().await?;
    Ok(user.id)
}

pub fn require_admin(principal: &Principal) -> Result<()> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("This action needs the admin role"))
    }
}
