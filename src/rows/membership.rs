//! Who entered a worklist and who left it. A panel's cohort (the rows its cohort rule admits) and
//! each of its published views (the cohort AND the view's filters) are evaluated again:
//! - after a sync, an upload or a push that changed rows (`datasources::sync`);
//! - when the rule changes: the cohort rule, a view's filters, a column the rules may read;
//! - when a view is published (its first evaluation only records who is in it);
//! - on a schedule (`MEMBERSHIP_REFRESH_MS`) for rules that read relative dates, since rows enter
//!   and leave as the days pass ([`spawn`]).
//!
//! Each evaluation compares the rows that match now with the members stored in `row_membership`
//! (one statement, [`Plan::membership`]) and writes `cohort.entered` / `cohort.left`
//! (`view.rows.entered` / `view.rows.left`) with the difference, in the writing transaction that
//! moves the stored set: an entry or an exit is told exactly once. The first evaluation of a set
//! only records its members (nobody "entered" a set never told before).
//!
//! Rules are evaluated in UTC and without a current user: a view whose filters read
//! `$CURRENT_USER` has different rows for each reader and no entered/left of its own.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};
use tokio_util::sync::CancellationToken;

use super::model::ColumnDef;
use super::query::{Plan, Request, check_all, field_kind};
use super::repo;
use crate::auth::{Principal, TenantId};
use crate::cache::Change;
use crate::error::Result;
use crate::filter::{CURRENT_USER, FilterGroup, Resolved, Resolver};
use crate::formula::Checked;
use crate::ids::{PanelId, ViewId};
use crate::state::AppState;
use crate::write::{self, Writer};

/// Row ids an event lists at most; its `count` is the whole number (and `truncated` says so).
pub const MAX_IDS: i64 = 1_000;

/// The cohort's set; a published view's set is its id.
const COHORT: i64 = 0;

/// Which sets an evaluation covers, and which rows it looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sets {
    /// The cohort and every published view, every row (a rule they all read changed, or time
    /// moved a relative date).
    All,
    /// The cohort and every published view, only the rows changed `since` (a sync's or a push's
    /// start) and, with `deletions`, the members whose row is gone. Rows nobody touched cannot
    /// have moved: the rules did not change (and what time moves, the schedule evaluates).
    Changed {
        since: DateTime<Utc>,
        deletions: bool,
    },
    /// One view, every row (its filters changed, or it was published).
    View(ViewId),
}

/// One set to evaluate: its id, the rows it admits, and whether that reads a relative date.
struct Set {
    scope: i64,
    tree: Resolved,
    relative: bool,
}

/// Evaluates `sets` of `panel` again inside the writer's transaction, and records the entered
/// and left events on it. A rule that no longer fits the columns (a column it reads was deleted)
/// is skipped, as reads of it answer 400 until it is fixed.
pub async fn refresh(
    w: &mut Writer<'_>,
    panel: PanelId,
    now: DateTime<Utc>,
    sets: Sets,
) -> Result<()> {
    let tenant = w.tenant().clone();
    let Some(rule) = cohort_rule(&mut w.tx, &tenant, panel).await? else {
        return Ok(()); // deleted meanwhile
    };
    let columns = repo::columns(&mut w.tx, &tenant, panel).await?;
    let (checked, _) = check_all(&columns);
    let by_name: HashMap<&str, &ColumnDef> = columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let kind_of = |name: &str| by_name.get(name).map(|c| field_kind(c));
    let resolver = Resolver {
        now,
        tz: chrono_tz::Tz::UTC,
        current_user: None,
    };
    let group: FilterGroup = serde_json::from_value(rule.clone()).unwrap_or_default();
    let Ok(cohort) = resolver.resolve(&group, "cohortRule", &kind_of) else {
        tracing::debug!(%panel, "the cohort rule no longer fits the columns: not evaluated");
        return Ok(());
    };
    let rule_relative = reads_relative(&rule);
    let mut todo = Vec::new();
    let every_set = !matches!(sets, Sets::View(_));
    if every_set {
        todo.push(Set {
            scope: COHORT,
            tree: cohort.clone(),
            relative: rule_relative,
        });
    }
    let only = match sets {
        Sets::View(view) => Some(view),
        _ => None,
    };
    let views = published_views(&mut w.tx, &tenant, panel, only).await?;
    if every_set {
        forget_unpublished(&mut w.tx, &tenant, panel, &views).await?;
    }
    for (id, filters) in views {
        if mentions_current_user(&filters) {
            continue;
        }
        let group: FilterGroup = serde_json::from_value(filters.clone()).unwrap_or_default();
        let Ok(tree) = resolver.resolve(&group, "filters", &kind_of) else {
            continue;
        };
        todo.push(Set {
            scope: id,
            tree: cohort.clone().and(tree),
            relative: rule_relative || reads_relative(&filters),
        });
    }
    let changed = match sets {
        Sets::Changed { since, deletions } => Some((since, deletions)),
        _ => None,
    };
    for set in todo {
        evaluate(w, &tenant, panel, &columns, &checked, now, set, changed).await?;
    }
    Ok(())
}

/// Forgets a view's set (it was unpublished or deleted): published again, it starts afresh.
pub async fn forget(w: &mut Writer<'_>, panel: PanelId, view: ViewId) -> Result<()> {
    let tenant = w.tenant().as_str().to_owned();
    for table in ["row_membership", "membership_scope"] {
        sqlx::query(AssertSqlSafe(format!(
            "delete from {table} where tenant_id = $1 and panel_id = $2 and scope = $3"
        )))
        .bind(&tenant)
        .bind(panel)
        .bind(view.0)
        .execute(&mut *w.tx)
        .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one set of one panel, and what to look at
async fn evaluate(
    w: &mut Writer<'_>,
    tenant: &TenantId,
    panel: PanelId,
    columns: &[ColumnDef],
    checked: &HashMap<String, Checked>,
    now: DateTime<Utc>,
    set: Set,
    changed: Option<(DateTime<Utc>, bool)>,
) -> Result<()> {
    let plan = match Plan::build(
        columns,
        checked,
        &Request {
            tenant,
            panel_id: panel,
            filter: &set.tree,
            sorts: &[],
            search: None,
            now,
        },
    ) {
        Ok(plan) => plan,
        Err(error) => {
            tracing::debug!(?error, %panel, scope = set.scope, "a set cannot be evaluated");
            return Ok(());
        }
    };
    // The upsert locks the set's row until this transaction ends: evaluations of one set take
    // turns, and each one's statement below sees the members the one before it stored.
    let first: bool = sqlx::query_scalar(
        "insert into membership_scope (tenant_id, panel_id, scope, relative) values ($1, $2, $3, $4)
         on conflict (tenant_id, panel_id, scope)
         do update set evaluated_at = now(), relative = excluded.relative
         returning xmax = 0",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .bind(set.scope)
    .bind(set.relative)
    .fetch_one(&mut *w.tx)
    .await?;
    // A set evaluated for the first time is recorded whole, whatever changed.
    let changed = if first { None } else { changed };
    let (sql, args) = plan.membership(set.scope, MAX_IDS, changed);
    let (entered, left, entered_ids, left_ids): (i64, i64, Vec<i64>, Vec<i64>) =
        sqlx::query_as_with(AssertSqlSafe(sql), args)
            .persistent(false)
            .fetch_one(&mut *w.tx)
            .await?;
    if first {
        return Ok(());
    }
    let (enter, leave) = if set.scope == COHORT {
        ("cohort.entered", "cohort.left")
    } else {
        ("view.rows.entered", "view.rows.left")
    };
    for (kind, count, ids) in [(enter, entered, entered_ids), (leave, left, left_ids)] {
        if count == 0 {
            continue;
        }
        let truncated = count > ids.len() as i64;
        let mut change = Change::panel(kind, panel);
        if set.scope != COHORT {
            change = change.with("viewId", set.scope);
        }
        w.changed(
            change
                .with("rowIds", ids)
                .with("count", count)
                .with("truncated", truncated)
                .quiet(),
        );
    }
    Ok(())
}

async fn cohort_rule(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
) -> sqlx::Result<Option<Value>> {
    sqlx::query_scalar("select cohort_rule from panel where tenant_id = $1 and id = $2")
        .bind(tenant.as_str())
        .bind(panel)
        .fetch_optional(conn)
        .await
}

/// The published views of the panel (or that one, when it is published), with their filters.
async fn published_views(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
    only: Option<ViewId>,
) -> sqlx::Result<Vec<(i64, Value)>> {
    sqlx::query_as(
        "select id, filters from view
          where tenant_id = $1 and panel_id = $2 and is_published and ($3::bigint is null or id = $3)
          order by id",
    )
    .bind(tenant.as_str())
    .bind(panel)
    .bind(only.map(|v| v.0))
    .fetch_all(conn)
    .await
}

/// Drops the sets of views no longer published (or deleted).
async fn forget_unpublished(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel: PanelId,
    views: &[(i64, Value)],
) -> sqlx::Result<()> {
    let keep: Vec<i64> = views.iter().map(|(id, _)| *id).collect();
    for table in ["row_membership", "membership_scope"] {
        sqlx::query(AssertSqlSafe(format!(
            "delete from {table} where tenant_id = $1 and panel_id = $2 and scope <> 0 and scope <> all($3)"
        )))
        .bind(tenant.as_str())
        .bind(panel)
        .bind(&keep)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Whether a stored rule reads a relative date (`{"relative": "-30d"}`) anywhere.
fn reads_relative(rule: &Value) -> bool {
    match rule {
        Value::Object(map) => map.contains_key("relative") || map.values().any(reads_relative),
        Value::Array(items) => items.iter().any(reads_relative),
        _ => false,
    }
}

fn mentions_current_user(rule: &Value) -> bool {
    match rule {
        Value::String(s) => s == CURRENT_USER,
        Value::Object(map) => map.values().any(mentions_current_user),
        Value::Array(items) => items.iter().any(mentions_current_user),
        _ => false,
    }
}

/// Panels evaluated again per round of the schedule, at most.
const DUE_BATCH: i32 = 100;

/// Evaluates again, every `every`, the panels whose rules read relative dates and were last
/// evaluated longer ago than that, as the system.
pub fn spawn(
    state: AppState,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            if let Err(error) = refresh_due(&state, every).await {
                tracing::warn!(%error, "evaluating relative-date cohorts failed; retrying later");
            }
        }
    })
}

/// Evaluates every panel due (last evaluated more than `every` ago); answers how many.
pub async fn refresh_due(state: &AppState, every: Duration) -> Result<usize> {
    let before = state.clock.now() - chrono::Duration::from_std(every).unwrap_or_default();
    let due: Vec<(String, i64)> = {
        let mut conn = state.db.acquire().await?;
        sqlx::query_as("select tenant_id, panel_id from due_memberships($1, $2)")
            .bind(before)
            .bind(DUE_BATCH)
            .fetch_all(&mut *conn)
            .await?
    };
    let mut done = 0;
    for (tenant, panel) in due {
        let Some(tenant) = TenantId::parse(&tenant) else {
            continue;
        };
        let actor = Principal::system(tenant, SCHEDULE_ACTOR);
        let now = state.clock.now();
        write::write(state, &actor, |mut w| async move {
            refresh(&mut w, PanelId(panel), now, Sets::All).await?;
            Ok((w, ()))
        })
        .await?;
        done += 1;
    }
    Ok(done)
}

/// The actor of scheduled evaluations.
pub const SCHEDULE_ACTOR: &str = "system:schedule";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_dates_and_the_current_user_are_found_anywhere_in_a_rule() {
        let rule = json!({"logic": "AND", "conditions": [
            {"field": "a", "operator": "eq", "value": 1},
            {"logic": "OR", "conditions": [{"field": "d", "operator": "lt", "value": {"relative": "-30d"}}]}]});
        assert!(reads_relative(&rule));
        assert!(!mentions_current_user(&rule));
        let rule = json!({"logic": "AND", "conditions": [
            {"field": "owner", "operator": "eq", "value": "$CURRENT_USER"}]});
        assert!(!reads_relative(&rule));
        assert!(mentions_current_user(&rule));
    }
}
