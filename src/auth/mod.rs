//! Identity: who a request is (verified JWT or API key → `Principal`), accounts and their
//! tokens. Per-resource permissions are the `acls` domain's.

pub mod api_keys;
pub mod dto;
pub mod identity;
pub mod jwt;
pub mod model;
pub mod password;
mod principal;
pub mod repo;
pub mod revocations;
pub mod routes;
pub mod service;
pub mod tokens;

pub use jwt::AuthKeys;
pub use model::{Credential, Principal, Role, TenantId};
