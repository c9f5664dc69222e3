//! Panel rules: who may see and change a panel, creation with its owner entry, updates with
//! optimistic concurrency and change records, and the cascade on delete — each one transaction.

use crate::audit;
use crate::ids::PanelId;
use serde_json::{Map, Value};
use tracing::instrument;

use super::batch;
use super::model::*;
use super::repo;
use crate::acls::model::Permission;
use crate::acls::service as acl;
use crate::auth::Principal;
use crate::cache::{self, Cached, Change, Depends};
use crate::changes::{Affect, ChangeType, NewChange};
use crate::db::Tx;
use crate::error::{ApiError, FieldError, Result, to_json};
use crate::etag::{IfMatch, etag};
use crate::filter::{FieldKind, FilterGroup};
use crate::idempotency::Outcome;
use crate::page::{self, Page};
use crate::rows::membership::{self, Sets};
use crate::state::AppState;
use crate::write::{self, Idempotency};

pub const DEFAULT_NAME: &str = "New Panel";

pub fn not_found() -> ApiError {
    ApiError::not_found("PANEL_NOT_FOUND", "Panel not found")
}

/// What the caller wants to do with a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// See it and everything in it (viewer).
    Read,
    /// See every row, past the cohort rule (editor; a read, so read-only keys may).
    ReadAll,
    /// Change its structure: columns, data sources, cohort (editor, and the builder role).
    Build,
    /// Delete it or share it (owner).
    Own,
}

/// Loads a panel of the caller's tenant the caller may access as asked. A panel the caller cannot
/// see at all answers exactly as one that does not exist.
pub async fn authorize(
    tx: &mut Tx,
    principal: &Principal,
    panel_id: PanelId,
    access: Access,
) -> Result<PanelRow> {
    let user = principal.user_id.to_lowercase();
    let found =
        repo::find_panel_with_permission(tx, &principal.tenant, panel_id, reader(principal, &user))
            .await?;
    check_access(principal, found, access)
}

/// The (e-mail, lower-cased user id) whose ACL entries count, or `None` for an admin, who holds
/// every permission in the tenant and reads no entry.
pub fn reader<'a>(principal: &'a Principal, user: &'a str) -> Option<(&'a str, &'a str)> {
    (!principal.is_admin()).then_some((principal.email.as_str(), user))
}

/// Decides on a panel loaded with the caller's highest ACL entry: not found when the caller may
/// not see it, forbidden when it may see it but not do what it asks.
fn check_access(
    principal: &Principal,
    found: Option<(PanelRow, Option<String>)>,
    access: Access,
) -> Result<PanelRow> {
    let (panel, held) = found.ok_or_else(not_found)?;
    // Admins hold every permission in their tenant; others the highest of their entries.
    let held = if principal.is_admin() {
        Some(Permission::Owner)
    } else {
        held.as_deref().and_then(Permission::parse)
    };
    let needed = match access {
        Access::Read => Permission::Viewer,
        Access::ReadAll | Access::Build => Permission::Editor,
        Access::Own => Permission::Owner,
    };
    acl::require(held, needed, not_found())?;
    if matches!(access, Access::Read | Access::ReadAll) {
        return Ok(panel);
    }
    if !principal.can_write() {
        return Err(ApiError::forbidden("This API key is read-only"));
    }
    if access == Access::Build && !principal.is_builder() {
        return Err(ApiError::forbidden(
            "Changing a panel's structure needs the builder or admin role",
        ));
    }
    Ok(panel)
}

/// Validates a cohort rule against the panel's columns.
async fn check_cohort(
    tx: &mut Tx,
    principal: &Principal,
    panel_id: PanelId,
    rule: &FilterGroup,
) -> Result<()> {
    let columns = repo::column_types(tx, &principal.tenant, panel_id).await?;
    validate_rule(rule, &columns)
}

/// Validates a cohort rule against columns given as (name, type) pairs.
fn validate_rule(rule: &FilterGroup, columns: &[(String, String)]) -> Result<()> {
    let kind_of = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| FieldKind::of_column_type(t))
    };
    let errors: Vec<FieldError> = rule.validate("cohortRule", &kind_of);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    req: CreatePanelRequest,
    idempotency_key: Option<&str>,
    digest: &[u8],
) -> Result<Outcome<PanelResponse>> {
    if !principal.is_builder() || !principal.can_write() {
        return Err(ApiError::forbidden(
            "Creating a panel needs the builder or admin role",
        ));
    }
    let rule = req.cohort_rule.unwrap_or_default();
    // A new panel has no columns yet: the rule may only use what needs none.
    validate_rule(&rule, &[])?;
    let metadata = Value::Object(req.metadata.unwrap_or_default());
    let name = req.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let (name, description, rule) = (name.trim(), req.description.as_deref(), to_json(&rule)?);
    let panel = batch::NewPanel {
        user_id: principal.user_id.clone(),
        owner: owner_key(principal).to_owned(),
        name: name.to_owned(),
        description: description.map(str::to_owned),
        cohort_rule: rule,
        metadata,
        actor: crate::events::model::actor(principal),
        audit: None,
    };
    let Some(key) = idempotency_key else {
        // The common case: one statement, committed alone or with the concurrent creates of a
        // group; the group's commit is this write's commit, then the same after-commit step. The
        // statement writes the audit entry too.
        let mut panel = panel;
        let entry = audit::NewEntry::new(
            &principal.tenant,
            &audit::Actor::of(principal),
            "panel.create",
        )
        .status(201)
        .changes(audit::created_fields(&serde_json::json!({
            "name": panel.name,
            "description": panel.description,
            "cohortRule": panel.cohort_rule,
            "metadata": panel.metadata,
        })));
        panel.audit = Some(to_json(&entry)?);
        let response = PanelResponse::from(state.creates.create(&principal.tenant, panel).await?);
        audit::written();
        write::published(state, &principal.tenant, vec![created(&response)]).await;
        return Ok(Outcome::Created(response));
    };
    let key = Idempotency::of(Some(key), digest);
    write::create(state, principal, key, |mut w| async move {
        let row = batch::one(batch::insert(&mut w.tx, &principal.tenant, &[&panel]).await?)?;
        let response = PanelResponse::from(row);
        w.changed(created(&response));
        Ok((w, response))
    })
    .await
}

/// What a panel create changes for readers: its own reads and every list. `create_panels` wrote
/// its event in its statement (migration 20261205000100).
fn created(panel: &PanelResponse) -> Change {
    Change::panel("panel.created", panel.id).lists().logged()
}

/// Owner entries are keyed by e-mail; a token without one falls back to its subject.
pub fn owner_key(principal: &Principal) -> &str {
    if principal.email.is_empty() {
        &principal.user_id
    } else {
        &principal.email
    }
}

#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    page: Page,
) -> Result<(Vec<PanelResponse>, Option<String>)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    let user = principal.user_id.to_lowercase();
    let rows =
        repo::list_panels(&mut tx, &principal.tenant, reader(principal, &user), page).await?;
    crate::db::end_read(tx);
    let (rows, next) = page::split(rows, page, |r| r.id);
    Ok((rows.into_iter().map(PanelResponse::from).collect(), next))
}

/// [`list`] through the cache: per reader (lists depend on ACLs) and page, at the tenant's list
/// version. The meta is the next page's cursor.
pub async fn list_cached(state: &AppState, principal: &Principal, page: Page) -> Result<Cached> {
    let rest = format!("{}:{}:{}", cache::reader(principal), page.after, page.limit);
    state
        .cache
        .read_through(
            "panels",
            &principal.tenant,
            Depends::Lists,
            &rest,
            || async {
                let (panels, next) = list(state, principal, page).await?;
                Cached::new(&panels, next.unwrap_or_default())
            },
        )
        .await
}

/// [`get`] through the cache: per reader, at the panel's version. The meta is the `ETag`.
pub async fn get_cached(state: &AppState, principal: &Principal, id: PanelId) -> Result<Cached> {
    let rest = format!("{id}:{}", cache::reader(principal));
    state
        .cache
        .read_through(
            "panel",
            &principal.tenant,
            Depends::Panel(id),
            &rest,
            || async {
                let (panel, tag) = get(state, principal, id).await?;
                Cached::new(&panel, tag)
            },
        )
        .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %id))]
pub async fn get(
    state: &AppState,
    principal: &Principal,
    id: PanelId,
) -> Result<(PanelResponse, String)> {
    // One statement, one round trip: `read_panel` binds the tenant for its own transaction.
    let mut conn = state.db.acquire().await?;
    let user = principal.user_id.to_lowercase();
    let found =
        repo::read_panel(&mut conn, &principal.tenant, id, reader(principal, &user)).await?;
    drop(conn);
    let row = check_access(principal, found, Access::Read)?;
    let tag = etag("panel", row.id, row.version);
    Ok((row.into(), tag))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %id))]
pub async fn update(
    state: &AppState,
    principal: &Principal,
    id: PanelId,
    if_match: &IfMatch,
    req: UpdatePanelRequest,
) -> Result<(PanelResponse, String)> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Access::Build).await?;
        if_match.check(&etag("panel", current.id, current.version))?;

        let name = match req.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => current.name.clone(),
        };
        let description = match req.description {
            Some(description) => description,
            None => current.description.clone(),
        };
        let mut metadata = match &current.metadata {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        if let Some(patch) = req.metadata {
            metadata.extend(patch);
        }
        let old_rule = current.cohort_rule.clone();
        let rule = match &req.cohort_rule {
            Some(rule) => {
                check_cohort(&mut w.tx, principal, id, rule).await?;
                to_json(rule)?
            }
            None => old_rule.clone(),
        };
        let row = repo::update_panel(
            &mut w.tx,
            &principal.tenant,
            id,
            &name,
            description.as_deref(),
            &rule,
            &metadata,
        )
        .await?;
        if rule != old_rule {
            w.record(
                NewChange {
                    panel_id: id,
                    change_type: ChangeType::CohortChanged,
                    affected_column: None,
                    description: "Cohort rule changed".to_owned(),
                    old_values: Some(serde_json::json!({ "cohortRule": old_rule })),
                    new_values: Some(serde_json::json!({ "cohortRule": rule })),
                },
                Affect::Panel,
            )
            .await?;
        }
        w.audit_diff(
            &PanelResponse::from(current.clone()),
            &PanelResponse::from(row.clone()),
        );
        w.changed(Change::panel("panel.updated", id).lists());
        if rule != old_rule {
            membership::refresh(&mut w, id, state.clock.now(), Sets::All).await?;
        }
        let tag = etag("panel", row.id, row.version);
        Ok((w, (row.into(), tag)))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %id))]
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    id: PanelId,
    if_match: &IfMatch,
) -> Result<()> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Access::Own).await?;
        if_match.check(&etag("panel", current.id, current.version))?;
        // The delete cascades to the panel's rows and slots: a filler of them goes first.
        crate::rows::slots::lock_layout(&mut w.tx, id).await?;
        if !repo::delete_panel(&mut w.tx, &principal.tenant, id).await? {
            return Err(not_found());
        }
        w.changed(Change::panel("panel.deleted", id).lists());
        Ok((w, ()))
    })
    .await
}
