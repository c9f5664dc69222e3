//! Identity types: the tenant, the role, and the principal a request acts as.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tenant's slug. Built only from a verified token or API key (or, at registration, from a
/// validated request), and restricted to characters that cannot break out of an SQL literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TenantId(String);

impl TenantId {
    /// Accepts `[A-Za-z0-9._~-]{1,128}`: the slug alphabet of the identity providers we accept.
    /// The server builds tenants only from verified credentials; tests that act as a tenant
    /// beneath the API (the RLS backstop) build theirs with it too.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Builder,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Builder => "builder",
            Self::User => "user",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "builder" => Some(Self::Builder),
            "user" => Some(Self::User),
            _ => None,
        }
    }

    /// The existing identity provider's role names: "Panels Admin" or "Org Admin" → admin,
    /// "Panels Builder" → builder, anything else → user.
    pub fn from_provider_roles<'a>(roles: impl IntoIterator<Item = &'a str>) -> Self {
        let roles: Vec<&str> = roles.into_iter().collect();
        if roles
            .iter()
            .any(|r| *r == "Panels Admin" || *r == "Org Admin")
        {
            Self::Admin
        } else if roles.contains(&"Panels Builder") {
            Self::Builder
        } else {
            Self::User
        }
    }
}

/// How the principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Jwt,
    /// An API key, with its scope: `read` keys may only read.
    ApiKey {
        id: i64,
        write: bool,
    },
}

/// Who the request acts as. The only source of tenant and user for every handler.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub` (a user id of ours, or the identity provider's member id).
    pub user_id: String,
    /// Lower-cased e-mail; ACL entries are keyed by it.
    pub email: String,
    pub tenant: TenantId,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    /// The system acting in `tenant` (`id` such as `system:sync`): the sync worker and the
    /// scheduler, with an admin's reach and no e-mail.
    pub fn system(tenant: TenantId, id: &str) -> Self {
        Self {
            user_id: id.to_owned(),
            email: String::new(),
            tenant,
            role: Role::Admin,
            credential: Credential::Jwt,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Builders and admins change the structure of panels.
    pub fn is_builder(&self) -> bool {
        self.role >= Role::Builder
    }

    /// Whether the credential allows writes at all (read-scoped API keys do not).
    pub fn can_write(&self) -> bool {
        !matches!(self.credential, Credential::ApiKey { write: false, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_slugs_cannot_carry_quotes() {
        assert!(TenantId::parse("acme-health").is_some());
        assert!(TenantId::parse("a.b_c~d").is_some());
        assert!(TenantId::parse("").is_none());
        assert!(TenantId::parse("x'; drop table panel; --").is_none());
        assert!(TenantId::parse("back\\slash").is_none());
        assert!(TenantId::parse(&"a".repeat(129)).is_none());
    }

    #[test]
    fn provider_roles_map_to_ours() {
        assert_eq!(Role::from_provider_roles(["Org Admin"]), Role::Admin);
        assert_eq!(
            Role::from_provider_roles(["stytch_member", "Panels Admin"]),
            Role::Admin
        );
        assert_eq!(Role::from_provider_roles(["Panels Builder"]), Role::Builder);
        assert_eq!(Role::from_provider_roles(["stytch_member"]), Role::User);
        assert_eq!(Role::from_provider_roles([]), Role::User);
    }
}
