//! The event log's statements.

use sqlx::PgConnection;

use super::model::{Cursor, NewEvent, Snapshot, StoredEvent};
use crate::auth::model::TenantId;

/// Appends events in the writing transaction.
pub async fn append(
    conn: &mut PgConnection,
    tenant: &TenantId,
    events: &[NewEvent],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let panels: Vec<Option<i64>> = events.iter().map(|e| e.panel_id).collect();
    let views: Vec<Option<i64>> = events.iter().map(|e| e.view_id).collect();
    let entities: Vec<Option<&str>> = events.iter().map(|e| e.entity_id.as_deref()).collect();
    let audiences: Vec<Option<&str>> = events.iter().map(|e| e.audience.as_deref()).collect();
    let actors: Vec<&serde_json::Value> = events.iter().map(|e| &e.actor).collect();
    let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.data).collect();
    sqlx::query(
        "insert into event (tenant_id, type, panel_id, view_id, entity_id, audience, actor, data)
         select $1, e.* from unnest($2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[],
                                    $7::jsonb[], $8::jsonb[]) as e",
    )
    .bind(tenant.as_str())
    .bind(kinds)
    .bind(panels)
    .bind(views)
    .bind(entities)
    .bind(audiences)
    .bind(actors)
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}

/// The tenant's events after `after` whose transactions are all finished (nothing that sorts
/// before them can still commit), in cursor order, at most `limit`.
pub async fn after(
    conn: &mut PgConnection,
    tenant: &TenantId,
    after: Cursor,
    limit: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(
        "select txid::text as txid, seq, type, panel_id, view_id, entity_id, audience, actor, at, data
           from event
          where tenant_id = $1 and (txid, seq) > ($2::text::xid8, $3)
            and txid < pg_snapshot_xmin(pg_current_snapshot())
          order by txid, seq
          limit $4",
    )
    .bind(tenant.as_str())
    .bind(after.txid.to_string())
    .bind(after.seq)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Where a stream that resumes nothing starts: before the oldest transaction still running,
/// with the snapshot that tells which later ones had already committed (their events are past).
pub async fn now(conn: &mut PgConnection) -> sqlx::Result<(Cursor, Snapshot)> {
    let raw: String = sqlx::query_scalar("select pg_current_snapshot()::text")
        .fetch_one(conn)
        .await?;
    let snapshot = Snapshot::parse(&raw).unwrap_or_default();
    Ok((Cursor::before_transaction(snapshot.xmin), snapshot))
}

/// The last cursor retention deleted for the tenant, if it deleted any.
pub async fn horizon(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<Option<Cursor>> {
    let row: Option<(String, i64)> =
        sqlx::query_as("select txid::text, seq from event_horizon where tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(txid, seq)| Cursor {
        txid: txid.parse().unwrap_or(0),
        seq,
    }))
}

/// Deletes up to `limit` events older than `hours`; answers how many.
pub async fn purge(conn: &mut PgConnection, hours: u64, limit: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("select purge_events(now() - make_interval(hours => $1), $2)")
        .bind(i32::try_from(hours).unwrap_or(i32::MAX))
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .fetch_one(conn)
        .await
}

/// Who a ticket was issued to.
#[derive(Debug, sqlx::FromRow)]
pub struct TicketRow {
    pub tenant_id: String,
    pub user_id: String,
    pub email: String,
    pub role: String,
    pub api_key_id: Option<i64>,
}

pub async fn insert_ticket(
    conn: &mut PgConnection,
    tenant: &TenantId,
    hash: &[u8],
    row: &TicketRow,
    seconds: u64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into event_ticket (hash, tenant_id, user_id, email, role, api_key_id, expires_at)
         values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
    )
    .bind(hash)
    .bind(tenant.as_str())
    .bind(&row.user_id)
    .bind(&row.email)
    .bind(&row.role)
    .bind(row.api_key_id)
    .bind(seconds as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Redeems a ticket (once): who it was issued to, or `None` when it is unknown, used or expired.
pub async fn redeem_ticket(
    conn: &mut PgConnection,
    hash: &[u8],
) -> sqlx::Result<Option<TicketRow>> {
    sqlx::query_as("select * from redeem_event_ticket($1)")
        .bind(hash)
        .fetch_optional(conn)
        .await
}

/// The panels of the tenant a reader may read (`reader`: its e-mail and lower-cased user id;
/// `None` for an admin, who reads every panel).
pub async fn readable_panels(
    conn: &mut PgConnection,
    tenant: &TenantId,
    reader: Option<(&str, &str)>,
) -> sqlx::Result<Vec<i64>> {
    let (email, user) = reader.unzip();
    sqlx::query_scalar(
        "select p.id from panel p
          where p.tenant_id = $1
            and ($2::text is null or exists (
                select 1 from access_control_lists a where a.tenant_id = $1 and a.resource_type = 'panel'
                   and a.resource_id = p.id and a.user_email in ($2, $3, '_all')))",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(user)
    .fetch_all(conn)
    .await
}
