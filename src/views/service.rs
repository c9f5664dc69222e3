//! View rules: who may see, change, publish and delete a view; validation of its columns, sorts
//! and filters against its panel; each request one transaction.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use tracing::instrument;

use super::model::*;
use super::repo::{self, PanelColumn, ViewFilter};
use crate::acls;
use crate::acls::model::{Permission, ResourceType};
use crate::acls::service as acl;
use crate::auth::Principal;
use crate::cache::{self, Cached, Change, Depends};
use crate::changes::{Affect, ChangeType, NewChange};
use crate::db::Tx;
use crate::error::{ApiError, FieldError, Result, to_json};
use crate::etag::{IfMatch, etag};
use crate::filter::{FieldKind, FilterGroup, legacy};
use crate::idempotency::Outcome;
use crate::ids::{PanelId, ViewId};
use crate::page::{self, Page};
use crate::panels::{self, Access};
use crate::rows::membership::{self, Sets};
use crate::state::AppState;
use crate::write::{self, Idempotency};

pub fn not_found() -> ApiError {
    ApiError::not_found("VIEW_NOT_FOUND", "View not found")
}

/// A change of a view: a private view's event goes to its owner, those it is shared with and the
/// tenant's admins only (`events::service`); a published view's to every reader of the panel.
fn view_change(event: &'static str, row: &ViewRow) -> Change {
    let change = Change::panel(event, row.panel_id).with("viewId", row.id);
    if row.is_published {
        change
    } else if row.owner_email.is_empty() {
        change.private_view(row.owner_user_id.to_lowercase())
    } else {
        change.private_view(row.owner_email.to_lowercase())
    }
}

fn view_etag(row: &ViewRow) -> String {
    etag("view", row.id, row.version)
}

/// Loads a view of the caller's tenant the caller holds `needed` on. A published view is
/// readable by everyone in the tenant; a view the caller cannot see at all answers exactly as
/// one that does not exist. Writes lock the row (for `If-Match` and concurrent replaces).
async fn authorize(
    tx: &mut Tx,
    principal: &Principal,
    id: ViewId,
    needed: Permission,
) -> Result<ViewRow> {
    let view = repo::find_view(tx, &principal.tenant, id, needed > Permission::Viewer).await?;
    let view = view.ok_or_else(not_found)?;
    let mut held = acl::permission(tx, principal, ResourceType::View, id.0).await?;
    if held.is_none() && view.is_published {
        held = Some(Permission::Viewer);
    }
    acl::require(held, needed, not_found())?;
    Ok(view)
}

/// A view the caller may read: a published one everyone in the tenant, a private one its owner
/// and those it is shared with; any other answers `VIEW_NOT_FOUND`.
pub async fn readable(tx: &mut Tx, principal: &Principal, id: ViewId) -> Result<ViewRow> {
    authorize(tx, principal, id, Permission::Viewer).await
}

/// A view the caller may read, and its sorts in order: what its rows are listed by. A private
/// view answers its owner and those it is shared with; a published one everyone in the tenant
/// (the rows also ask for the panel).
pub async fn for_rows(
    tx: &mut Tx,
    principal: &Principal,
    id: ViewId,
) -> Result<(ViewRow, Vec<SortRow>)> {
    let view = readable(tx, principal, id).await?;
    let sorts = repo::sorts_of(tx, &principal.tenant, &[id]).await?;
    Ok((view, sorts))
}

/// Checks `visibleColumns` against the panel's columns; answers the ids as strings, first
/// occurrence kept when an id repeats.
fn check_visible_columns(requested: &[Value], columns: &[PanelColumn]) -> Result<Vec<String>> {
    let known: BTreeSet<i64> = columns.iter().map(|c| c.id.0).collect();
    let mut ids = Vec::with_capacity(requested.len());
    let mut unknown = Vec::new();
    let mut malformed = Vec::new();
    for (i, item) in requested.iter().enumerate() {
        let id = match item {
            Value::String(s) => s.trim().parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        match id {
            None => malformed.push(FieldError::new(
                format!("visibleColumns[{i}]"),
                "must be a column id",
            )),
            Some(id) if !known.contains(&id) => unknown.push(id.to_string()),
            Some(id) => {
                let id = id.to_string();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    if !malformed.is_empty() {
        return Err(ApiError::validation(malformed));
    }
    if !unknown.is_empty() {
        return Err(ApiError::invalid(
            "visibleColumns",
            format!("not columns of this panel: {}", unknown.join(", ")),
        ));
    }
    Ok(ids)
}

fn check_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    if name.chars().count() > 255 {
        return Err(ApiError::invalid("name", "length must be at most 255"));
    }
    Ok(name.to_owned())
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %req.panel_id))]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    req: CreateViewRequest,
    idempotency_key: Option<&str>,
    digest: &[u8],
) -> Result<Outcome<ViewResponse>> {
    let name = check_name(&req.name)?;
    let key = Idempotency::of(idempotency_key, digest);
    write::create(state, principal, key, |mut w| async move {
        let panel = panels::authorize(&mut w.tx, principal, req.panel_id, Access::Read).await?;
        let columns = repo::panel_columns(&mut w.tx, &principal.tenant, panel.id).await?;
        let visible = check_visible_columns(&req.visible_columns, &columns)?;
        let metadata = req.metadata.map(Value::Object);
        let row = repo::insert_view(
            &mut w.tx,
            &principal.tenant,
            panel.id,
            &name,
            &principal.user_id,
            &principal.email,
            &to_json(&visible)?,
            metadata.as_ref(),
        )
        .await?;
        let owner = panels::service::owner_key(principal).to_lowercase();
        acls::repo::insert(
            &mut w.tx,
            &principal.tenant,
            ResourceType::View,
            row.id.0,
            &owner,
            Permission::Owner.as_str(),
        )
        .await?;
        w.changed(view_change("view.created", &row));
        let response = ViewResponse::new(row, Vec::new());
        Ok((w, response))
    })
    .await
}

/// A page of the views the caller can see, newest first (by id, so that the keyset cursor stays
/// stable while views are edited), with their sorts (one extra query for the whole page).
#[instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    query: &ViewListQuery,
    page: Page,
) -> Result<(ViewListResponse, Option<String>)> {
    let user = principal.user_id.to_lowercase();
    let filter = ViewFilter {
        panel_id: query.panel_id,
        published: query.published,
        reader: (!principal.is_admin()).then_some((principal.email.as_str(), user.as_str())),
    };
    let mut tx = state.db.begin(&principal.tenant).await?;
    let rows = repo::list_views(&mut tx, &principal.tenant, filter, page).await?;
    let total = match rows.first() {
        Some(row) => row.total,
        None if page.after == 0 => 0,
        None => repo::count_views(&mut tx, &principal.tenant, filter).await?,
    };
    let (rows, next) = page::split(rows, page, |r| r.view.id);
    let ids: Vec<ViewId> = rows.iter().map(|r| r.view.id).collect();
    let sorts = if ids.is_empty() {
        Vec::new()
    } else {
        repo::sorts_of(&mut tx, &principal.tenant, &ids).await?
    };
    crate::db::end_read(tx);

    let mut by_view: HashMap<ViewId, Vec<SortRow>> = HashMap::new();
    for sort in sorts {
        by_view.entry(sort.view_id).or_default().push(sort);
    }
    let views = rows
        .into_iter()
        .map(|r| {
            let sorts = by_view.remove(&r.view.id).unwrap_or_default();
            ViewResponse::new(r.view, sorts)
        })
        .collect();
    Ok((ViewListResponse { views, total }, next))
}

/// A view's read through the cache: per reader, at its panel's version (every change of the view,
/// its ACLs, or the panel's columns bumps it). The panel of a view is learnt on its first read on
/// this instance, which loads without the cache.
async fn read_view_cached<F, Fut>(
    state: &AppState,
    principal: &Principal,
    cache_name: &'static str,
    id: ViewId,
    load: F,
) -> Result<Cached>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(Cached, PanelId)>>,
{
    let Some(panel_id) = state.cache.view_panel(&principal.tenant, id) else {
        let (value, panel_id) = load().await?;
        state
            .cache
            .remember_view_panel(&principal.tenant, id, panel_id);
        return Ok(value);
    };
    let rest = format!("{id}:{}", cache::reader(principal));
    let depends = Depends::Panel(panel_id);
    state
        .cache
        .read_through(cache_name, &principal.tenant, depends, &rest, || async {
            Ok(load().await?.0)
        })
        .await
}

/// [`get`] through the cache; the meta is the `ETag`.
pub async fn get_cached(state: &AppState, principal: &Principal, id: ViewId) -> Result<Cached> {
    read_view_cached(state, principal, "view", id, || async {
        let (view, tag) = get(state, principal, id).await?;
        Ok((Cached::new(&view, tag)?, view.panel_id))
    })
    .await
}

/// [`filters`] through the cache.
pub async fn filters_cached(state: &AppState, principal: &Principal, id: ViewId) -> Result<Cached> {
    read_view_cached(state, principal, "view_filters", id, || async {
        let (filters, panel_id) = filters_of(state, principal, id).await?;
        Ok((Cached::new(&filters, "")?, panel_id))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn get(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
) -> Result<(ViewResponse, String)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    let row = authorize(&mut tx, principal, id, Permission::Viewer).await?;
    let sorts = repo::sorts_of(&mut tx, &principal.tenant, &[id]).await?;
    crate::db::end_read(tx);
    let tag = view_etag(&row);
    Ok((ViewResponse::new(row, sorts), tag))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn update(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
    if_match: &IfMatch,
    req: UpdateViewRequest,
) -> Result<(ViewResponse, String)> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Permission::Editor).await?;
        if_match.check(&view_etag(&current))?;

        let name = match req.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => check_name(name)?,
            _ => current.name.clone(),
        };
        let visible = match &req.visible_columns {
            Some(requested) => {
                let columns =
                    repo::panel_columns(&mut w.tx, &principal.tenant, current.panel_id).await?;
                to_json(&check_visible_columns(requested, &columns)?)?
            }
            None => current.visible_columns.clone(),
        };
        // A view stored without metadata keeps none until a client sends some.
        let metadata = match (current.metadata_map(), req.metadata) {
            (Some(mut stored), Some(patch)) => {
                stored.extend(patch);
                Some(Value::Object(stored))
            }
            (None, Some(patch)) => Some(Value::Object(patch)),
            (stored, None) => stored.map(Value::Object),
        };
        let row = repo::update_view(
            &mut w.tx,
            &principal.tenant,
            id,
            &name,
            &visible,
            metadata.as_ref(),
        )
        .await?;
        let sorts = repo::sorts_of(&mut w.tx, &principal.tenant, &[id]).await?;
        w.changed(view_change("view.updated", &row));
        w.audit_diff(
            &serde_json::json!({"name": current.name, "visibleColumns": current.visible_columns, "metadata": current.metadata}),
            &serde_json::json!({"name": row.name, "visibleColumns": row.visible_columns, "metadata": row.metadata}),
        );

        let tag = view_etag(&row);
        Ok((w, (ViewResponse::new(row, sorts), tag)))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
    if_match: &IfMatch,
) -> Result<()> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Permission::Owner).await?;
        if_match.check(&view_etag(&current))?;
        if !repo::delete_view(&mut w.tx, &principal.tenant, id).await? {
            return Err(not_found());
        }
        w.changed(view_change("view.deleted", &current));
        Ok((w, ()))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn sorts(state: &AppState, principal: &Principal, id: ViewId) -> Result<SortsResponse> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, id, Permission::Viewer).await?;
    let rows = repo::sorts_of(&mut tx, &principal.tenant, &[id]).await?;
    crate::db::end_read(tx);
    Ok(SortsResponse {
        sorts: rows.into_iter().map(ViewSort::from).collect(),
    })
}

/// Replaces the view's sorts: all validated first, then one delete and one insert, in the
/// transaction that also bumps the view's version — a rejected list leaves the old sorts.
#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn replace_sorts(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
    if_match: &IfMatch,
    req: ReplaceSortsRequest,
) -> Result<(SortsResponse, String)> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Permission::Editor).await?;
        if_match.check(&view_etag(&current))?;
        let columns = repo::panel_columns(&mut w.tx, &principal.tenant, current.panel_id).await?;
        let names: BTreeSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();

        let mut errors = Vec::new();
        let mut orders_seen = BTreeSet::new();
        for (i, sort) in req.sorts.iter().enumerate() {
            if !names.contains(sort.column_name.as_str()) {
                errors.push(FieldError::new(
                    format!("sorts[{i}].columnName"),
                    format!("{:?} is not a column of this panel", sort.column_name),
                ));
            }
            if !orders_seen.insert(sort.order) {
                errors.push(FieldError::new(
                    format!("sorts[{i}].order"),
                    format!("order {} is used twice", sort.order),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }

        let column_names: Vec<String> = req.sorts.iter().map(|s| s.column_name.clone()).collect();
        let directions: Vec<String> = req
            .sorts
            .iter()
            .map(|s| s.direction.as_str().to_owned())
            .collect();
        let orders: Vec<i32> = req.sorts.iter().map(|s| s.order).collect();
        repo::delete_sorts(&mut w.tx, &principal.tenant, id).await?;
        let rows = repo::insert_sorts(
            &mut w.tx,
            &principal.tenant,
            id,
            &column_names,
            &directions,
            &orders,
        )
        .await?;
        let view = repo::touch_view(&mut w.tx, &principal.tenant, id).await?;
        w.changed(view_change("view.updated", &view));
        Ok((
            w,
            (
                SortsResponse {
                    sorts: rows.into_iter().map(ViewSort::from).collect(),
                },
                view_etag(&view),
            ),
        ))
    })
    .await
}

fn filters_response(tree: FilterGroup) -> FiltersResponse {
    FiltersResponse {
        filters: legacy::flatten(&tree),
        filter_tree: tree,
    }
}

#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn filters(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
) -> Result<FiltersResponse> {
    Ok(filters_of(state, principal, id).await?.0)
}

/// The view's filters and its panel.
async fn filters_of(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
) -> Result<(FiltersResponse, PanelId)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    let row = authorize(&mut tx, principal, id, Permission::Viewer).await?;
    crate::db::end_read(tx);
    let panel_id = row.panel_id;
    Ok((filters_response(row.filter_tree()), panel_id))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id))]
pub async fn replace_filters(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
    if_match: &IfMatch,
    req: ReplaceFiltersRequest,
) -> Result<(FiltersResponse, String)> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Permission::Editor).await?;
        if_match.check(&view_etag(&current))?;
        let columns = repo::panel_columns(&mut w.tx, &principal.tenant, current.panel_id).await?;
        let kind_of = |name: &str| {
            columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| FieldKind::of_column_type(&c.column_type))
        };
        let tree = match req {
            ReplaceFiltersRequest::Tree(tree) => tree,
            ReplaceFiltersRequest::Legacy(list) => {
                legacy::to_tree(list, &kind_of).map_err(ApiError::validation)?
            }
        };
        let errors = tree.validate("filters", &kind_of);
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let row = repo::update_filters(&mut w.tx, &principal.tenant, id, &to_json(&tree)?).await?;
        w.changed(view_change("view.updated", &row));
        if row.is_published {
            membership::refresh(&mut w, row.panel_id, state.clock.now(), Sets::View(id)).await?;
        }
        Ok((w, (filters_response(tree), view_etag(&row))))
    })
    .await
}

/// Publishes or unpublishes a view (editor on the view and the builder role, or admin) and
/// records it as a change of the panel. Setting the state it already has changes nothing.
#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %id, publish))]
pub async fn set_published(
    state: &AppState,
    principal: &Principal,
    id: ViewId,
    publish: bool,
) -> Result<(ViewResponse, String)> {
    write::write(state, principal, |mut w| async move {
        let current = authorize(&mut w.tx, principal, id, Permission::Editor).await?;
        if !principal.is_builder() {
            return Err(ApiError::forbidden(
                "Publishing a view needs the builder or admin role",
            ));
        }
        let unchanged = current.is_published == publish;
        let row = if unchanged {
            current
        } else {
            let row = repo::set_published(
                &mut w.tx,
                &principal.tenant,
                id,
                publish,
                &principal.user_id,
            )
            .await?;
            let (change_type, verb) = if publish {
                (ChangeType::ViewPublished, "published")
            } else {
                (ChangeType::ViewUnpublished, "unpublished")
            };
            w.record(
                NewChange {
                    panel_id: row.panel_id,
                    change_type,
                    affected_column: None,
                    description: format!("View \"{}\" {verb}", row.name),
                    old_values: Some(serde_json::json!({ "viewId": id, "isPublished": !publish })),
                    new_values: Some(serde_json::json!({ "viewId": id, "isPublished": publish })),
                },
                Affect::Nobody,
            )
            .await?;
            row
        };
        let sorts = repo::sorts_of(&mut w.tx, &principal.tenant, &[id]).await?;
        if !unchanged {
            let event = if publish {
                "view.published"
            } else {
                "view.unpublished"
            };
            w.changed(
                Change::panel(event, row.panel_id)
                    .with("viewId", id)
                    .lists(),
            );
            // Published, the view's rows are known from now on (its first evaluation tells
            // nobody); unpublished, they are forgotten.
            if publish {
                membership::refresh(&mut w, row.panel_id, state.clock.now(), Sets::View(id))
                    .await?;
            } else {
                membership::forget(&mut w, row.panel_id, id).await?;
            }
        }
        let tag = view_etag(&row);
        Ok((w, (ViewResponse::new(row, sorts), tag)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Logic;
    use crate::ids::ColumnId;
    use serde_json::json;

    fn columns() -> Vec<PanelColumn> {
        vec![
            PanelColumn {
                id: ColumnId(3),
                name: "age".into(),
                column_type: "number".into(),
            },
            PanelColumn {
                id: ColumnId(7),
                name: "name".into(),
                column_type: "text".into(),
            },
        ]
    }

    #[test]
    fn visible_columns_are_ids_as_strings() {
        let ids =
            check_visible_columns(&[json!("7"), json!(3), json!(" 7")], &columns()).expect("valid");
        assert_eq!(ids, vec!["7", "3"]);
    }

    #[test]
    fn unknown_visible_columns_are_named() {
        let err = check_visible_columns(&[json!("7"), json!("99"), json!(42)], &columns())
            .expect_err("unknown");
        assert!(
            err.to_string()
                .contains("not columns of this panel: 99, 42"),
            "{err}"
        );
        assert!(check_visible_columns(&[json!({"id": 3})], &columns()).is_err());
    }

    #[test]
    fn the_body_shape_is_chosen_by_its_filters_key() {
        let tree: ReplaceFiltersRequest =
            serde_json::from_value(json!({"conditions": [], "logic": "OR"})).expect("tree");
        assert!(matches!(
            tree,
            ReplaceFiltersRequest::Tree(FilterGroup {
                logic: Logic::OR,
                ..
            })
        ));
        assert!(
            serde_json::from_value::<ReplaceFiltersRequest>(
                json!({"filters": [{"operator": "eq"}]})
            )
            .is_err()
        );
        assert!(serde_json::from_value::<ReplaceFiltersRequest>(json!([1])).is_err());
    }
}
