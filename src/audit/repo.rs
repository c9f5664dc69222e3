//! SQL of the audit log.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::NewEntry;
use crate::auth::TenantId;
use crate::error::{Result, to_json};

/// Inserts `entries` (of the transaction's tenant) in one statement, in order; the database
/// chains them.
pub async fn insert(conn: &mut PgConnection, entries: &[NewEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into audit_entry (tenant_id, actor_type, actor_id, actor_email, action, method,
                                  route, status, entity_type, entity_id, panel_id, request_id, ip,
                                  user_agent, changes)
         select r.tenant_id, r.actor_type, r.actor_id, r.actor_email, r.action, r.method, r.route,
                r.status, r.entity_type, r.entity_id, r.panel_id, r.request_id, r.ip, r.user_agent,
                r.changes
           from jsonb_array_elements($1) with ordinality as e(v, n)
           cross join lateral jsonb_to_record(e.v) as r(tenant_id text, actor_type text,
                actor_id text, actor_email text, action text, method text, route text,
                status integer, entity_type text, entity_id text, panel_id bigint,
                request_id text, ip text, user_agent text, changes jsonb)
          order by e.n",
    )
    .bind(to_json(&entries)?)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct EntryRow {
    pub id: i64,
    pub seq: Option<i64>,
    pub at: DateTime<Utc>,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_email: Option<String>,
    pub action: String,
    pub method: Option<String>,
    pub route: Option<String>,
    pub status: Option<i32>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub panel_id: Option<i64>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub changes: Option<serde_json::Value>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

/// What a list or an export selects.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub actor: Option<String>,
    /// An exact action, or a family's prefix with its dot (`view.`).
    pub action: Option<String>,
    pub action_family: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub panel_id: Option<i64>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Entries strictly older than this `(at, id)` (the keyset of the next page).
    pub before: Option<(DateTime<Utc>, i64)>,
}

const COLUMNS: &str =
    "select id, seq, at, actor_type, actor_id, actor_email, action, method, route,
        status, entity_type, entity_id, panel_id, request_id, ip, user_agent, changes, prev_hash,
        hash from audit_entry where tenant_id = ";

/// The entries `filter` selects, newest first (an export streams it as it is). Only the
/// conditions asked for, each a bound value: a generic plan of `$n is null or …` would
/// not use the indexes.
pub fn select(tenant: &TenantId, filter: &Filter) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push_bind(tenant.as_str().to_owned());
    if let Some(actor) = &filter.actor {
        q.push(" and actor_id = ").push_bind(actor.clone());
    }
    if let Some(action) = &filter.action {
        q.push(" and action = ").push_bind(action.clone());
    }
    if let Some(family) = &filter.action_family {
        // A family is letters and one trailing dot (checked by the service): no pattern
        // characters to escape.
        q.push(" and action like ").push_bind(format!("{family}%"));
    }
    if let Some(kind) = &filter.entity_type {
        q.push(" and entity_type = ").push_bind(kind.clone());
    }
    if let Some(id) = &filter.entity_id {
        q.push(" and entity_id = ").push_bind(id.clone());
    }
    if let Some(panel) = filter.panel_id {
        q.push(" and panel_id = ").push_bind(panel);
    }
    if let Some(from) = filter.from {
        q.push(" and at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" and at < ").push_bind(to);
    }
    if let Some((at, id)) = filter.before {
        q.push(" and (at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" order by at desc, id desc");
    q
}

/// A page, newest first: `limit + 1` rows, so the caller knows whether there is more.
pub async fn list(
    conn: &mut PgConnection,
    tenant: &TenantId,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<EntryRow>> {
    let mut q = select(tenant, filter);
    q.push(" limit ").push_bind(limit + 1);
    Ok(q.build_query_as::<EntryRow>().fetch_all(conn).await?)
}

/// The chain's first broken entry, per `audit_verify()`.
#[derive(Debug, sqlx::FromRow)]
pub struct Verdict {
    pub checked: i64,
    pub broken_seq: Option<i64>,
    pub broken_id: Option<i64>,
    pub broken_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// Seals the tenant's committed entries that are not sealed yet (`audit_seal`); answers how many.
pub async fn seal(conn: &mut PgConnection, tenant: Option<&TenantId>, limit: i32) -> Result<i32> {
    Ok(sqlx::query_scalar("select audit_seal($1, $2)")
        .bind(tenant.map(TenantId::as_str))
        .bind(limit)
        .fetch_one(conn)
        .await?)
}

pub async fn verify(conn: &mut PgConnection) -> Result<Verdict> {
    Ok(sqlx::query_as("select * from audit_verify()")
        .fetch_one(conn)
        .await?)
}
