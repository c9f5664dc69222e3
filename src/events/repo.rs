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
    let audiences: Vec<Option<String>> = events
        .iter()
        .map(|e| e.audience.as_ref().map(|a| a.to_column()))
        .collect();
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
        "select txid::text::int8 as txid, seq, type, panel_id, view_id, entity_id, audience, actor, at, data
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

/// Where the tenant's log stands, for a stream opening now.
pub struct Position {
    /// A stream that resumes nothing starts here (before the oldest transaction still running)…
    pub start: Cursor,
    /// …skipping the events of the later transactions this snapshot saw finished (the past).
    pub snapshot: Snapshot,
    /// The last cursor retention deleted, if it deleted any: resuming at or before it missed
    /// events.
    pub horizon: Option<Cursor>,
}

/// The log's present and the tenant's retention horizon, in one statement.
pub async fn position(conn: &mut PgConnection, tenant: &TenantId) -> sqlx::Result<Position> {
    let (raw, horizon_txid, horizon_seq): (String, Option<String>, Option<i64>) = sqlx::query_as(
        "select pg_current_snapshot()::text, h.txid::text, h.seq
           from (select 1) as one left join event_horizon h on h.tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_one(conn)
    .await?;
    let snapshot = Snapshot::parse(&raw).unwrap_or_default();
    let horizon = match (horizon_txid.and_then(|t| t.parse().ok()), horizon_seq) {
        (Some(txid), Some(seq)) => Some(Cursor { txid, seq }),
        _ => None,
    };
    Ok(Position {
        start: Cursor::before_transaction(snapshot.xmin),
        snapshot,
        horizon,
    })
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

/// The panels of the tenant a non-admin may read: those it holds an entry on (`reader`: its
/// e-mail and lower-cased user id), as the panels list decides.
pub async fn readable_panels(
    conn: &mut PgConnection,
    tenant: &TenantId,
    (email, user): (&str, &str),
) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "select a.resource_id from access_control_lists a
          where a.tenant_id = $1 and a.resource_type = 'panel' and a.user_email in ($2, $3, '_all')
            and exists (select 1 from panel p where p.tenant_id = $1 and p.id = a.resource_id)",
    )
    .bind(tenant.as_str())
    .bind(email)
    .bind(user)
    .fetch_all(conn)
    .await
}
