//! ACL shapes, as the existing client reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

/// A permission on a panel or a view: viewer < editor < owner. Admins hold every permission in
/// their tenant; everyone else holds the highest of their ACL entries (by e-mail, by legacy user
/// id, or the tenant-wide `_all` entry).
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

/// The tenant-wide entry: everyone in the tenant.
pub const EVERYONE: &str = "_all";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AclRow {
    pub id: i64,
    pub tenant_id: String,
    pub resource_type: String,
    pub resource_id: i64,
    pub user_email: String,
    pub permission: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Acl {
    pub id: i64,
    pub tenant_id: String,
    pub resource_type: ResourceType,
    pub resource_id: i64,
    pub user_email: String,
    pub permission: Permission,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<AclRow> for Acl {
    fn from(row: AclRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            resource_type: if row.resource_type == "view" {
                ResourceType::View
            } else {
                ResourceType::Panel
            },
            resource_id: row.resource_id,
            user_email: row.user_email,
            permission: Permission::parse(&row.permission).unwrap_or(Permission::Viewer),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AclResponse {
    pub acl: Acl,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AclListResponse {
    pub acls: Vec<Acl>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userEmail": "grace@example.com", "permission": "editor"}))]
pub struct CreateAclRequest {
    /// An e-mail address, or `_all` for everyone in the tenant.
    #[validate(length(min = 1, max = 254))]
    #[schema(example = "grace@example.com", min_length = 1, max_length = 254)]
    pub user_email: String,
    pub permission: Permission,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"permission": "viewer"}))]
pub struct PermissionRequest {
    pub permission: Permission,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserAclQuery {
    pub resource_type: Option<ResourceType>,
}
