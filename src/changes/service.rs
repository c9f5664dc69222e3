//! Recording changes (called by every module that changes a panel's structure, inside its own
//! transaction) and the change and notification endpoints.

use std::collections::BTreeSet;

use tracing::instrument;

use super::model::*;
use super::repo;
use crate::auth::Principal;
use crate::db::Tx;
use crate::error::{ApiError, Result};
use crate::events::model::{Audience, NewEvent, actor};
use crate::events::repo as event_log;
use crate::filter::FilterGroup;
use crate::ids::ColumnId;
use crate::state::AppState;

/// How a change touches the panel's columns, which decides each published view's impact.
#[derive(Debug, Clone, Copy)]
pub enum Affect<'a> {
    /// Record only; nobody is notified (e.g. a view published).
    Nobody,
    /// The whole panel (cohort rule, data source): every published view, as info.
    Panel,
    /// A column removed or retyped: breaking for views that show, sort or filter on it or on a
    /// formula depending on it; info for the other published views.
    ColumnBroken {
        id: ColumnId,
        name: &'a str,
        dependents: &'a [(ColumnId, String)],
    },
    /// A formula's result type changed: warning for views that use it.
    ResultTypeChanged {
        id: ColumnId,
        name: &'a str,
        dependents: &'a [(ColumnId, String)],
    },
    /// Any other column change: info.
    Column { id: ColumnId, name: &'a str },
}

/// Writes the change and notifies the users of affected published views, in the caller's
/// transaction (so a failure leaves neither). Answers the change's id.
pub async fn record(
    tx: &mut Tx,
    principal: &Principal,
    change: NewChange,
    affect: Affect<'_>,
) -> Result<i64> {
    let change_id = repo::insert_change(tx, &principal.tenant, &principal.user_id, &change).await?;
    if matches!(affect, Affect::Nobody) {
        return Ok(change_id);
    }
    let views = repo::published_views(tx, &principal.tenant, change.panel_id).await?;
    let (mut view_ids, mut emails, mut impacts, mut messages) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for view in views {
        let impact = impact_on(&view, affect);
        let message = format!("{} (view \"{}\")", change.description, view.name);
        let message: String = message.chars().take(1000).collect();
        let users: BTreeSet<String> = std::iter::once(view.owner_email.clone())
            .chain(view.acl_emails.iter().cloned())
            .filter(|e| !e.is_empty())
            .collect();
        for email in users {
            view_ids.push(view.id);
            emails.push(email);
            impacts.push(impact.as_str().to_owned());
            messages.push(message.clone());
        }
    }
    if !view_ids.is_empty() {
        // Each user's `notification.created`, for that user's streams only.
        let events: Vec<NewEvent> = view_ids
            .iter()
            .zip(&emails)
            .zip(impacts.iter().zip(&messages))
            .map(|((view, email), (impact, message))| NewEvent {
                kind: "notification.created".to_owned(),
                panel_id: Some(change.panel_id.0),
                view_id: Some(*view),
                entity_id: Some(change_id.to_string()),
                audience: Some(Audience::Recipient(email.to_lowercase())),
                actor: actor(principal),
                data: serde_json::json!({"viewId": view, "changeId": change_id, "impact": impact, "message": message}),
            })
            .collect();
        event_log::append(tx, &principal.tenant, &events).await?;
        repo::insert_notifications(
            tx,
            &principal.tenant,
            change_id,
            &view_ids,
            &emails,
            &impacts,
            &messages,
        )
        .await?;
    }
    Ok(change_id)
}

fn uses(view: &repo::PublishedView, id: ColumnId, name: &str) -> bool {
    let id_text = id.to_string();
    let visible = view.visible_columns.as_array().is_some_and(|cols| {
        cols.iter().any(|c| {
            c.as_str() == Some(&id_text) || c.as_str() == Some(name) || c.as_i64() == Some(id.0)
        })
    });
    let sorted = view.sort_columns.iter().any(|c| c == name);
    let filtered = serde_json::from_value::<FilterGroup>(view.filters.clone())
        .map(|f| f.fields().contains(&name))
        .unwrap_or(false);
    visible || sorted || filtered
}

fn impact_on(view: &repo::PublishedView, affect: Affect<'_>) -> Impact {
    let touches = |id: ColumnId, name: &str, dependents: &[(ColumnId, String)]| {
        uses(view, id, name) || dependents.iter().any(|(d, n)| uses(view, *d, n))
    };
    match affect {
        Affect::ColumnBroken {
            id,
            name,
            dependents,
        } if touches(id, name, dependents) => Impact::Breaking,
        Affect::ResultTypeChanged {
            id,
            name,
            dependents,
        } if touches(id, name, dependents) => Impact::Warning,
        _ => Impact::Info,
    }
}

#[instrument(skip_all)]
pub async fn list_changes(
    state: &AppState,
    principal: &Principal,
    query: ChangeQuery,
) -> Result<ChangeListResponse> {
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since > until
    {
        return Err(ApiError::invalid("since", "must not be after until"));
    }
    let limit = query.limit.unwrap_or(50);
    let offset = query.offset.unwrap_or(0);
    let filter = repo::ChangeFilter {
        panel_id: query.panel_id,
        change_type: query.change_type.map(ChangeType::as_str),
        since: query.since,
        until: query.until,
        reader: (!principal.is_admin())
            .then(|| (principal.email.clone(), principal.user_id.to_lowercase())),
        limit,
        offset,
    };
    let mut tx = state.db.begin(&principal.tenant).await?;
    let (rows, total) = repo::list_changes(&mut tx, &principal.tenant, &filter).await?;
    crate::db::end_read(tx);
    Ok(ChangeListResponse {
        changes: rows.into_iter().map(PanelChange::from).collect(),
        total,
        // Any offset up to i64::MAX is valid (an empty page): the sum must not overflow.
        has_more: total > offset.saturating_add(limit),
    })
}

#[instrument(skip_all)]
pub async fn list_notifications(
    state: &AppState,
    principal: &Principal,
    query: NotificationQuery,
) -> Result<NotificationListResponse> {
    let limit = query.limit.unwrap_or(50);
    let offset = query.offset.unwrap_or(0);
    let filter = repo::NotificationFilter {
        is_read: query.is_read,
        impact: query.notification_type.map(Impact::as_str),
        since: query.since,
        limit,
        offset,
    };
    let mut tx = state.db.begin(&principal.tenant).await?;
    let (rows, total, unread_count) =
        repo::list_notifications(&mut tx, &principal.tenant, &principal.email, &filter).await?;
    crate::db::end_read(tx);
    Ok(NotificationListResponse {
        notifications: rows.into_iter().map(ViewNotification::from).collect(),
        total,
        unread_count,
        // Any offset up to i64::MAX is valid (an empty page): the sum must not overflow.
        has_more: total > offset.saturating_add(limit),
    })
}

#[instrument(skip_all)]
pub async fn mark_read(
    state: &AppState,
    principal: &Principal,
    req: MarkReadRequest,
) -> Result<MarkReadResponse> {
    crate::write::write(state, principal, |mut w| async move {
        let updated = repo::mark_read(
            &mut w.tx,
            &principal.tenant,
            &principal.email,
            &req.notification_ids,
        )
        .await?;
        let updated = i64::try_from(updated).unwrap_or(i64::MAX);
        Ok((w, MarkReadResponse { updated }))
    })
    .await
}
