//! SQL of the identity tables. Cross-tenant look-ups go through the security-definer functions
//! of the identity migration; everything else runs in a tenant transaction like any other query.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::model::TenantId;

#[derive(Debug, sqlx::FromRow)]
pub struct LoginRow {
    pub id: i64,
    pub tenant_id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
}

#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub tenant_id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct RefreshRow {
    pub id: i64,
    pub tenant_id: String,
    pub user_id: i64,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub email: String,
    pub role: String,
    pub family_started_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: i64,
    pub tenant_id: String,
    pub email: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct ApiKeyLookupRow {
    pub id: i64,
    pub tenant_id: String,
    pub scope: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_by_email: String,
    /// The creator's role now (`None`: the creator no longer exists, or was never seen).
    pub creator_role: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub scope: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub async fn find_logins(conn: &mut PgConnection, email: &str) -> sqlx::Result<Vec<LoginRow>> {
    sqlx::query_as("select id, tenant_id, email, password_hash, role from auth_find_login($1)")
        .bind(email)
        .fetch_all(conn)
        .await
}

pub async fn insert_tenant(
    conn: &mut PgConnection,
    tenant: &TenantId,
    name: &str,
) -> sqlx::Result<()> {
    sqlx::query("insert into tenants (id, name) values ($1, $2)")
        .bind(tenant.as_str())
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Whether the tenant holds anything at all (a registration must not take it over). Runs in a
/// transaction bound to `tenant`, so row-level security shows exactly that tenant's rows.
pub async fn tenant_has_data(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from tenants where id = $1)
             or exists (select 1 from users where tenant_id = $1)
             or exists (select 1 from invitations where tenant_id = $1)
             or exists (select 1 from api_keys where tenant_id = $1)
             or exists (select 1 from principal_seen where tenant_id = $1)
             or exists (select 1 from panel where tenant_id = $1)
             or exists (select 1 from access_control_lists where tenant_id = $1)",
    )
    .bind(tenant.as_str())
    .fetch_one(conn)
    .await
}

/// Records a principal of a verified token: its tenant is known from now on (registration cannot
/// take it), and its role as last seen (API keys it created follow it).
pub async fn note_principal(
    conn: &mut PgConnection,
    tenant: &TenantId,
    subject: &str,
    email: &str,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "with known as (
             insert into tenants (id, name, origin) values ($1, $1, 'token') on conflict (id) do nothing
         )
         insert into principal_seen (tenant_id, subject, email, role) values ($1, $2, $3, $4)
         on conflict (tenant_id, subject) do update
            set email = excluded.email, role = excluded.role, last_seen_at = now()",
    )
    .bind(tenant.as_str())
    .bind(subject)
    .bind(email)
    .bind(role)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The tenant row of `panels create-admin` (kept when the tenant is known already).
pub async fn ensure_tenant(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<()> {
    sqlx::query("insert into tenants (id, name, origin) values ($1, $1, 'admin') on conflict (id) do nothing")
        .bind(tenant.as_str())
        .execute(conn)
        .await
        .map(|_| ())
}

/// Remembers an access token as revoked until it expires.
pub async fn revoke_access_token(
    conn: &mut PgConnection,
    tenant: &TenantId,
    digest: &[u8],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into revoked_token (tenant_id, token_digest, expires_at) values ($1, $2, $3)
         on conflict (tenant_id, token_digest) do nothing",
    )
    .bind(tenant.as_str())
    .bind(digest)
    .bind(expires_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Access tokens of every tenant revoked since `since` (and not expired yet).
pub async fn revoked_tokens_since(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<(Vec<u8>, DateTime<Utc>, DateTime<Utc>)>> {
    sqlx::query_as("select token_digest, expires_at, revoked_at from auth_revoked_tokens_since($1)")
        .bind(since)
        .fetch_all(conn)
        .await
}

pub async fn insert_user(
    conn: &mut PgConnection,
    tenant: &TenantId,
    email: &str,
    name: Option<&str>,
    password_hash: &str,
    role: &str,
) -> sqlx::Result<UserRow> {
    sqlx::query_as(
        "insert into users (tenant_id, email, name, password_hash, role) values ($1, $2, $3, $4, $5)
         returning id, tenant_id, email, name, role, created_at",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .bind(role)
    .fetch_one(conn)
    .await
}

pub async fn find_user(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as("select id, tenant_id, email, name, role, created_at from users where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn update_password_hash(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
    hash: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update users set password_hash = $3, updated_at = now() where tenant_id = $1 and id = $2",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(hash)
    .execute(conn)
    .await
    .map(|_| ())
}

#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    tenant: &TenantId,
    user_id: i64,
    family: Uuid,
    hash: &[u8],
    expires_at: DateTime<Utc>,
    family_started_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into refresh_tokens (tenant_id, user_id, family_id, token_hash, expires_at, family_started_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_str())
    .bind(user_id)
    .bind(family)
    .bind(hash)
    .bind(expires_at)
    .bind(family_started_at)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn find_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
) -> sqlx::Result<Option<RefreshRow>> {
    sqlx::query_as(
        "select id, tenant_id, user_id, family_id, expires_at, rotated_at, revoked_at, email, role,
                family_started_at
         from auth_find_refresh_token($1)",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await
}

/// Marks a refresh token used; false when it already was (a replay).
pub async fn mark_refresh_rotated(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update refresh_tokens set rotated_at = now() where tenant_id = $1 and id = $2 and rotated_at is null and revoked_at is null",
    )
    .bind(tenant.as_str())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke_refresh_family(
    conn: &mut PgConnection,
    tenant: &TenantId,
    family: Uuid,
) -> sqlx::Result<u64> {
    sqlx::query(
        "update refresh_tokens set revoked_at = now() where tenant_id = $1 and family_id = $2 and revoked_at is null",
    )
    .bind(tenant.as_str())
    .bind(family)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

pub async fn insert_invitation(
    conn: &mut PgConnection,
    tenant: &TenantId,
    email: &str,
    role: &str,
    hash: &[u8],
    expires_at: DateTime<Utc>,
    created_by: Option<i64>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into invitations (tenant_id, email, role, token_hash, expires_at, created_by)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(role)
    .bind(hash)
    .bind(expires_at)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

pub async fn find_invitation(
    conn: &mut PgConnection,
    hash: &[u8],
) -> sqlx::Result<Option<InvitationRow>> {
    sqlx::query_as(
        "select id, tenant_id, email, role, expires_at, accepted_at from auth_find_invitation($1)",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await
}

/// Claims an invitation; false when another registration claimed it first.
pub async fn accept_invitation(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update invitations set accepted_at = now() where tenant_id = $1 and id = $2 and accepted_at is null",
    )
    .bind(tenant.as_str())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn find_api_key(
    conn: &mut PgConnection,
    digest: &[u8],
) -> sqlx::Result<Option<ApiKeyLookupRow>> {
    sqlx::query_as(
        "select id, tenant_id, scope, expires_at, revoked_at, last_used_at, created_by, created_by_email,
                creator_role
         from auth_find_api_key($1)",
    )
    .bind(digest)
    .fetch_optional(conn)
    .await
}

pub async fn touch_api_key(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<()> {
    sqlx::query("update api_keys set last_used_at = now() where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
pub async fn insert_api_key(
    conn: &mut PgConnection,
    tenant: &TenantId,
    name: &str,
    prefix: &str,
    digest: &[u8],
    scope: &str,
    expires_at: Option<DateTime<Utc>>,
    created_by: &str,
    created_by_email: &str,
    creator_kind: &str,
) -> sqlx::Result<ApiKeyRow> {
    sqlx::query_as(
        "insert into api_keys (tenant_id, name, prefix, key_digest, scope, expires_at, created_by, created_by_email, creator_kind)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning id, name, prefix, scope, expires_at, last_used_at, created_at",
    )
    .bind(tenant.as_str())
    .bind(name)
    .bind(prefix)
    .bind(digest)
    .bind(scope)
    .bind(expires_at)
    .bind(created_by)
    .bind(created_by_email)
    .bind(creator_kind)
    .fetch_one(conn)
    .await
}

pub async fn list_api_keys(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> sqlx::Result<Vec<ApiKeyRow>> {
    sqlx::query_as(
        "select id, name, prefix, scope, expires_at, last_used_at, created_at from api_keys
         where tenant_id = $1 and revoked_at is null order by id",
    )
    .bind(tenant.as_str())
    .fetch_all(conn)
    .await
}

pub async fn revoke_api_key(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query("update api_keys set revoked_at = now() where tenant_id = $1 and id = $2 and revoked_at is null")
        .bind(tenant.as_str())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
