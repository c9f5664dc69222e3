//! Reading the audit log: the admin's list, the export and the chain's verification.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tracing::instrument;

use super::model::*;
use super::repo::{self, EntryRow, Filter};
use crate::auth::Principal;
use crate::auth::service::require_admin;
use crate::error::{ApiError, Result};
use crate::page::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::state::AppState;

impl From<EntryRow> for AuditEntryResponse {
    fn from(row: EntryRow) -> Self {
        Self {
            id: row.id,
            seq: row.seq,
            at: row.at,
            actor: ActorResponse {
                kind: row.actor_type,
                id: row.actor_id,
                email: row.actor_email,
            },
            action: row.action,
            method: row.method,
            route: row.route,
            status: row.status,
            entity_type: row.entity_type,
            entity_id: row.entity_id,
            panel_id: row.panel_id,
            request_id: row.request_id,
            ip: row.ip,
            user_agent: row.user_agent,
            changes: row.changes,
            prev_hash: row.prev_hash.map(hex::encode),
            hash: row.hash.map(hex::encode),
        }
    }
}

/// The filters of a list or an export, checked.
#[allow(clippy::too_many_arguments)] // the query's fields, one by one
fn filter(
    actor: Option<String>,
    action: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    panel_id: Option<i64>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Filter> {
    let mut out = Filter {
        actor: nonempty("actor", actor)?,
        entity_type: nonempty("entityType", entity_type)?,
        entity_id: nonempty("entityId", entity_id)?,
        panel_id,
        from,
        to,
        ..Filter::default()
    };
    if let Some(action) = nonempty("action", action)? {
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
                })
        };
        match action.strip_suffix(".*") {
            Some(family) if valid(family) => out.action_family = Some(format!("{family}.")),
            None if valid(&action) => out.action = Some(action),
            _ => {
                return Err(ApiError::invalid(
                    "action",
                    "must be an action (`view.update`) or a family (`view.*`)",
                ));
            }
        }
    }
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::invalid("from", "must not be after `to`"));
    }
    Ok(out)
}

fn nonempty(field: &str, value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(v) if v.len() > 512 => Err(ApiError::invalid(field, "is too long")),
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn encode_cursor(at: DateTime<Utc>, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a:{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, i64)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let rest = text.strip_prefix("a:")?;
    let (micros, id) = rest.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    params: AuditParams,
) -> Result<AuditPage> {
    require_admin(principal)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let mut filter = filter(
        params.actor,
        params.action,
        params.entity_type,
        params.entity_id,
        params.panel_id,
        params.from,
        params.to,
    )?;
    if let Some(cursor) = &params.cursor {
        filter.before = Some(
            decode_cursor(cursor)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor of this list"))?,
        );
    }
    let mut tx = state
        .db
        .begin_read(&principal.tenant, state.config.query_timeout)
        .await?;
    let mut rows = repo::list(&mut tx, &principal.tenant, &filter, limit).await?;
    crate::db::end_read(tx);
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(r.at, r.id))
    } else {
        None
    };
    Ok(AuditPage {
        entries: rows.into_iter().map(AuditEntryResponse::from).collect(),
        next_cursor,
    })
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn verify(state: &AppState, principal: &Principal) -> Result<VerifyResponse> {
    require_admin(principal)?;
    // Entries committed since the workers' last sweep are sealed first, so the verdict covers
    // every entry there is.
    let mut tx = state.db.begin(&principal.tenant).await?;
    repo::seal(&mut tx, Some(&principal.tenant), i32::MAX).await?;
    tx.commit().await?;
    // The whole chain: an export's deadline, not a page's.
    let mut tx = state
        .db
        .begin_read(&principal.tenant, state.config.export_timeout)
        .await?;
    let verdict = repo::verify(&mut tx).await?;
    crate::db::end_read(tx);
    Ok(VerifyResponse {
        valid: verdict.broken_seq.is_none(),
        checked: verdict.checked,
        first_broken: verdict.broken_seq.map(|seq| BrokenEntry {
            seq,
            id: verdict.broken_id,
            at: verdict.broken_at,
            reason: verdict.reason.unwrap_or_default(),
        }),
    })
}

/// Every matching entry as NDJSON, newest first, streamed from one statement under
/// `EXPORT_TIMEOUT_MS` (an export slot of `EXPORT_CONCURRENCY`, as a view's export takes).
#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn export(
    state: &AppState,
    principal: &Principal,
    params: AuditExportParams,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
    require_admin(principal)?;
    match params.format.as_deref() {
        None | Some("ndjson") => {}
        Some(_) => return Err(ApiError::invalid("format", "must be ndjson")),
    }
    let filter = filter(
        params.actor,
        params.action,
        params.entity_type,
        params.entity_id,
        params.panel_id,
        params.from,
        params.to,
    )?;
    let permit = state
        .exports
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable {
            code: "EXPORTS_BUSY",
            message: format!(
                "{} exports are already running on this server; retry shortly",
                state.config.export_concurrency
            ),
        })?;
    let mut tx = state
        .db
        .begin_read(&principal.tenant, state.config.export_timeout)
        .await?;
    let tenant = principal.tenant.clone();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let _permit = permit;
        let mut query = repo::select(&tenant, &filter);
        let mut rows = query
            .build_query_as::<EntryRow>()
            .fetch(&mut *tx)
            .ready_chunks(256);
        while let Some(chunk) = rows.next().await {
            let mut out = Vec::with_capacity(chunk.len() * 512);
            let mut failed = false;
            for row in chunk {
                match row {
                    Ok(row) => {
                        if serde_json::to_writer(&mut out, &AuditEntryResponse::from(row)).is_err()
                        {
                            failed = true;
                            break;
                        }
                        out.push(b'\n');
                    }
                    Err(err) => {
                        tracing::error!(%err, "audit export failed midway");
                        failed = true;
                        break;
                    }
                }
            }
            let item = if failed {
                Err(std::io::Error::other("the export failed midway"))
            } else {
                Ok(Bytes::from(out))
            };
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(rows);
        crate::db::end_read(tx);
    });
    Ok(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        assert_eq!(decode_cursor(&encode_cursor(at, 42)), Some((at, 42)));
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor(&crate::page::encode(3)), None);
    }

    #[test]
    fn actions_and_families() {
        let f = filter(None, Some("view.*".into()), None, None, None, None, None).unwrap();
        assert_eq!(f.action_family.as_deref(), Some("view."));
        assert!(filter(None, Some("view.%".into()), None, None, None, None, None).is_err());
        assert!(filter(None, Some("view".into()), None, None, None, None, None).is_ok());
    }
}
