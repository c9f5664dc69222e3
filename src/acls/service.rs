//! ACL rules: the resource must exist in the caller's tenant; reading its entries needs read
//! access to it; changing them needs ownership (or the admin role).

use tracing::instrument;

use super::model::*;
use super::repo;
use crate::auth::Principal;
use crate::cache::Change;
use crate::db::Tx;
use crate::error::{ApiError, Result};
use crate::ids::PanelId;
use crate::state::AppState;
use crate::write::{self, Writer};
use sqlx::PgConnection;

/// The caller's permission on a resource of its tenant: admins own everything; others hold the
/// highest of their entries. `None`: no access at all (the resource is answered as not found).
pub async fn permission(
    conn: &mut PgConnection,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
) -> Result<Option<Permission>> {
    if principal.is_admin() {
        return Ok(Some(Permission::Owner));
    }
    let raw = repo::highest_permission(
        conn,
        &principal.tenant,
        resource_type,
        resource_id,
        &principal.email,
        &principal.user_id,
    )
    .await?;
    Ok(raw.as_deref().and_then(Permission::parse))
}

/// Fails unless `held` reaches `needed`: no access at all reads as `not_found`, too little as 403.
pub fn require(
    held: Option<Permission>,
    needed: Permission,
    not_found: ApiError,
) -> Result<Permission> {
    match held {
        None => Err(not_found),
        Some(p) if p >= needed => Ok(p),
        Some(_) => Err(ApiError::forbidden(format!(
            "This needs the {} permission",
            needed.as_str()
        ))),
    }
}

fn not_found(resource_type: ResourceType) -> ApiError {
    match resource_type {
        ResourceType::Panel => ApiError::not_found("PANEL_NOT_FOUND", "Panel not found"),
        ResourceType::View => ApiError::not_found("VIEW_NOT_FOUND", "View not found"),
    }
}

fn acl_not_found() -> ApiError {
    ApiError::not_found("ACL_NOT_FOUND", "ACL entry not found")
}

/// Normalises an ACL target: a lower-cased e-mail address, or `_all`.
fn target_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    if email == EVERYONE || validator::ValidateEmail::validate_email(&email) {
        Ok(email)
    } else {
        Err(ApiError::invalid(
            "userEmail",
            "must be an e-mail address or _all",
        ))
    }
}

/// Checks the caller's permission on an existing resource, or answers 404; answers the panel the
/// resource belongs to.
async fn authorize(
    tx: &mut Tx,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
    needed: Permission,
) -> Result<PanelId> {
    let panel_id = repo::panel_of(tx, &principal.tenant, resource_type, resource_id)
        .await?
        .ok_or_else(|| not_found(resource_type))?;
    let mut held = permission(tx, principal, resource_type, resource_id).await?;
    // A published view is readable by everyone in the tenant.
    if held.is_none()
        && resource_type == ResourceType::View
        && needed == Permission::Viewer
        && repo::is_published_view(tx, &principal.tenant, resource_id).await?
    {
        held = Some(Permission::Viewer);
    }
    require(held, needed, not_found(resource_type))?;
    Ok(panel_id)
}

/// The shape of every change of a resource's entries: in the write path, the caller must own the
/// resource; `op` changes the entries; after the commit the panel's cached reads and every list
/// of the tenant are dead (who may see what changed).
async fn change_entries<'p, T, F, Fut>(
    state: &AppState,
    principal: &'p Principal,
    resource_type: ResourceType,
    resource_id: i64,
    op: F,
) -> Result<T>
where
    F: FnOnce(Writer<'p>) -> Fut,
    Fut: Future<Output = Result<(Writer<'p>, T)>>,
{
    write::write(state, principal, |mut w| async move {
        let panel_id = authorize(
            &mut w.tx,
            principal,
            resource_type,
            resource_id,
            Permission::Owner,
        )
        .await?;
        let (mut w, value) = op(w).await?;
        w.changed(
            Change::panel("acl.changed", panel_id)
                .with("resourceType", resource_type.as_str())
                .with("resourceId", resource_id)
                .lists(),
        );
        Ok((w, value))
    })
    .await
}

#[instrument(skip_all, fields(resource_id))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
) -> Result<AclListResponse> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(
        &mut tx,
        principal,
        resource_type,
        resource_id,
        Permission::Viewer,
    )
    .await?;
    let rows =
        repo::list_for_resource(&mut tx, &principal.tenant, resource_type, resource_id).await?;
    crate::db::end_read(tx);
    Ok(AclListResponse {
        acls: rows.into_iter().map(Acl::from).collect(),
    })
}

pub async fn list_for_user(
    state: &AppState,
    principal: &Principal,
    email: &str,
    resource_type: Option<ResourceType>,
) -> Result<AclListResponse> {
    let email = email.trim().to_lowercase();
    if !validator::ValidateEmail::validate_email(&email) {
        return Err(ApiError::invalid("userEmail", "must be an e-mail address"));
    }
    if !principal.is_admin() && email != principal.email {
        return Err(ApiError::forbidden(
            "Only admins can list another user's access",
        ));
    }
    let mut tx = state.db.begin(&principal.tenant).await?;
    let rows = repo::list_for_user(&mut tx, &principal.tenant, &email, resource_type).await?;
    crate::db::end_read(tx);
    Ok(AclListResponse {
        acls: rows.into_iter().map(Acl::from).collect(),
    })
}

#[instrument(skip_all, fields(resource_id))]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
    req: CreateAclRequest,
) -> Result<AclResponse> {
    let email = target_email(&req.user_email)?;
    change_entries(
        state,
        principal,
        resource_type,
        resource_id,
        |mut w| async move {
            let row = repo::insert(
                &mut w.tx,
                &principal.tenant,
                resource_type,
                resource_id,
                &email,
                req.permission.as_str(),
            )
            .await?;
            Ok((w, AclResponse { acl: row.into() }))
        },
    )
    .await
}

#[instrument(skip_all, fields(resource_id))]
pub async fn update(
    state: &AppState,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
    email: &str,
    permission: Permission,
) -> Result<AclResponse> {
    let email = target_email(email)?;
    change_entries(
        state,
        principal,
        resource_type,
        resource_id,
        |mut w| async move {
            let row = repo::update_permission(
                &mut w.tx,
                &principal.tenant,
                resource_type,
                resource_id,
                &email,
                permission.as_str(),
            )
            .await?
            .ok_or_else(acl_not_found)?;
            Ok((w, AclResponse { acl: row.into() }))
        },
    )
    .await
}

#[instrument(skip_all, fields(resource_id))]
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
    email: &str,
) -> Result<()> {
    let email = target_email(email)?;
    change_entries(
        state,
        principal,
        resource_type,
        resource_id,
        |mut w| async move {
            let tenant = &principal.tenant;
            if !repo::delete(&mut w.tx, tenant, resource_type, resource_id, &email).await? {
                return Err(acl_not_found());
            }
            Ok((w, ()))
        },
    )
    .await
}

/// Shares with everyone in the tenant; answers whether the entry was created (201) or updated (200).
#[instrument(skip_all, fields(resource_id))]
pub async fn share_public(
    state: &AppState,
    principal: &Principal,
    resource_type: ResourceType,
    resource_id: i64,
    permission: Permission,
) -> Result<(AclResponse, bool)> {
    change_entries(
        state,
        principal,
        resource_type,
        resource_id,
        |mut w| async move {
            let (row, created) = repo::upsert_everyone(
                &mut w.tx,
                &principal.tenant,
                resource_type,
                resource_id,
                permission.as_str(),
            )
            .await?;
            Ok((w, (AclResponse { acl: row.into() }, created)))
        },
    )
    .await
}
