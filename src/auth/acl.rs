//! Per-resource permissions on panels and views: viewer < editor < owner. Admins hold every
//! permission in their tenant; everyone else holds the highest of their ACL entries (by e-mail,
//! by legacy user id, or the tenant-wide `_all` entry).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Viewer,
    Editor,
    Owner,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Owner => "owner",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "viewer" => Some(Self::Viewer),
            "editor" => Some(Self::Editor),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    Panel,
    View,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Panel => "panel",
            Self::View => "view",
        }
    }
}

use sqlx::PgConnection;

use super::model::Principal;
use crate::error::{ApiError, Result};

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
    let raw = crate::acls::repo::highest_permission(
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
