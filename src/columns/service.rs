//! Column rules: creation at the end of the panel's order, formula analysis, the reference's
//! update rules, renames that carry views and formulas along, deletes that refuse to break
//! views or formulas unless forced, and reordering — each request one transaction, each
//! structural change recorded with its impact.

use crate::ids::{ColumnId, PanelId};
use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use tracing::instrument;

use super::model::string_list;
use super::model::*;
use super::repo::{self, ColumnUpdate, NewColumn};
use crate::auth::Principal;
use crate::cache::Change;
use crate::changes::{Affect, ChangeType, NewChange};
use crate::db::Tx;
use crate::error::{ApiError, FieldError, Result, to_json};
use crate::etag::{IfMatch, etag};
use crate::filter::{FilterGroup, FilterNode};
use crate::idempotency::Outcome;
use crate::panels::{Access, authorize};
use crate::rows::membership::{self, Sets};
use crate::state::AppState;
use crate::write::{self, Idempotency, Writer};

/// Most ids or tags a list query may name.
const MAX_QUERY_VALUES: usize = 1000;

pub fn not_found() -> ApiError {
    ApiError::not_found("COLUMN_NOT_FOUND", "Column not found")
}

fn data_source_not_found() -> ApiError {
    ApiError::not_found("DATA_SOURCE_NOT_FOUND", "Data source not found")
}

fn column_tag(row: &ColumnRow) -> String {
    etag("column", row.id, row.version)
}

/// Names may not hold braces or control characters: formulas refer to columns as `{name}`.
fn check_name(name: &str) -> Result<()> {
    if name.chars().any(|c| c == '{' || c == '}' || c.is_control()) {
        return Err(ApiError::invalid(
            "name",
            "must not contain braces or control characters",
        ));
    }
    Ok(())
}

/// What the ids and tags of a list query select.
#[derive(Debug, Default, PartialEq)]
pub struct ListFilter {
    pub ids: Option<Vec<ColumnId>>,
    pub tags: Option<Vec<String>>,
}

impl ListFilter {
    /// Reads `ids` (repeated and/or comma-separated) and `tags` (repeated) from the raw query
    /// pairs; other keys (older clients send `tenantId`, `userId`) are ignored.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self> {
        let mut filter = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "ids" | "ids[]" => {
                    let ids = filter.ids.get_or_insert_with(Vec::new);
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let id = part.parse().map_err(|_| {
                            ApiError::invalid("ids", "must be column ids (integers)")
                        })?;
                        ids.push(ColumnId(id));
                    }
                }
                "tags" | "tags[]" => filter.tags.get_or_insert_with(Vec::new).push(value),
                _ => {}
            }
        }
        if filter
            .ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_QUERY_VALUES)
            || filter
                .tags
                .as_ref()
                .is_some_and(|tags| tags.len() > MAX_QUERY_VALUES)
        {
            return Err(ApiError::invalid(
                "query",
                format!("at most {MAX_QUERY_VALUES} ids and {MAX_QUERY_VALUES} tags"),
            ));
        }
        Ok(filter)
    }
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    filter: ListFilter,
) -> Result<ColumnListResponse> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    let rows = repo::list_columns(
        &mut tx,
        &principal.tenant,
        panel_id,
        filter.ids.as_deref(),
        filter.tags.as_deref(),
    )
    .await?;
    crate::db::end_read(tx);
    Ok(ColumnListResponse::from_rows(rows))
}

/// [`list`] through the cache: per reader and query, at the panel's version (column writes bump
/// it in `routes.rs`, after their commit).
pub async fn list_cached(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    filter: ListFilter,
) -> Result<crate::cache::Cached> {
    use crate::cache::{self, Cached, Depends};
    let query = match (&filter.ids, &filter.tags) {
        (None, None) => "all".to_owned(),
        // Tags are the client's text: hashed, so a key stays short and plain.
        (ids, tags) => {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(format!("{ids:?}{tags:?}"))[..16])
        }
    };
    let rest = format!("{panel_id}:{}:{query}", cache::reader(principal));
    let depends = Depends::Panel(panel_id);
    state
        .cache
        .read_through("columns", &principal.tenant, depends, &rest, || async {
            Cached::new(&list(state, principal, panel_id, filter).await?, "")
        })
        .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id, column_id))]
pub async fn get(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    column_id: ColumnId,
) -> Result<(ColumnResponse, String)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    let row = repo::find_column(&mut tx, &principal.tenant, panel_id, column_id)
        .await?
        .ok_or_else(not_found)?;
    crate::db::end_read(tx);
    let tag = column_tag(&row);
    Ok((row.into(), tag))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn create_base(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    req: CreateBaseColumnRequest,
    idempotency_key: Option<&str>,
    digest: &[u8],
) -> Result<Outcome<ColumnResponse>> {
    // Validation guarantees these; answering 400 rather than panicking keeps a wrong caller safe.
    let (Some(name), Some(column_type), Some(source_field), Some(data_source_id), Some(properties)) = (
        req.name,
        req.column_type,
        req.source_field,
        req.data_source_id,
        req.properties,
    ) else {
        return Err(ApiError::invalid(
            "body",
            "name, type, sourceField, dataSourceId and properties are required",
        ));
    };
    let name = name.trim();
    check_name(name)?;
    let key = Idempotency::of(idempotency_key, digest);
    write::create(state, principal, key, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        if !repo::data_source_exists(&mut w.tx, &principal.tenant, panel_id, data_source_id).await?
        {
            return Err(data_source_not_found());
        }
        repo::lock_panel(&mut w.tx, &principal.tenant, panel_id).await?;
        let row = repo::insert_column(
            &mut w.tx,
            &principal.tenant,
            &NewColumn {
                panel_id,
                kind: "base",
                name,
                column_type: column_type.as_str(),
                source_field: Some(&source_field),
                data_source_id: Some(data_source_id),
                formula: None,
                dependencies: &json!([]),
                result_type: None,
                properties: &to_json(&properties.with_order(0))?,
                metadata: req.metadata.map(Value::Object).as_ref(),
                tags: &json!(req.tags.unwrap_or_default()),
            },
        )
        .await?;
        crate::rows::slots::refresh(&mut w.tx, &principal.tenant, panel_id).await?;
        let response = finish_create(&mut w, row).await?;
        Ok((w, response))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn create_calculated(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    req: CreateCalculatedColumnRequest,
    idempotency_key: Option<&str>,
    digest: &[u8],
) -> Result<Outcome<ColumnResponse>> {
    let (Some(name), Some(column_type), Some(formula), Some(properties)) =
        (req.name, req.column_type, req.formula, req.properties)
    else {
        return Err(ApiError::invalid(
            "body",
            "name, type, formula and properties are required",
        ));
    };
    let name = name.trim();
    check_name(name)?;
    let key = Idempotency::of(idempotency_key, digest);
    write::create(state, principal, key, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        repo::lock_panel(&mut w.tx, &principal.tenant, panel_id).await?;
        let info = analyze_formula(&mut w.tx, principal, panel_id, None, name, &formula).await?;
        let row = repo::insert_column(
            &mut w.tx,
            &principal.tenant,
            &NewColumn {
                panel_id,
                kind: "calculated",
                name,
                column_type: column_type.as_str(),
                source_field: None,
                data_source_id: None,
                formula: Some(&formula),
                dependencies: &json!(info.dependencies),
                result_type: info.result_type.as_deref(),
                properties: &to_json(&properties.with_order(0))?,
                metadata: req.metadata.map(Value::Object).as_ref(),
                tags: &json!(req.tags.unwrap_or_default()),
            },
        )
        .await?;
        crate::rows::slots::refresh(&mut w.tx, &principal.tenant, panel_id).await?;
        let response = finish_create(&mut w, row).await?;
        Ok((w, response))
    })
    .await
}

/// Records the addition in the create's transaction, and names it for readers.
async fn finish_create(w: &mut Writer<'_>, row: ColumnRow) -> Result<ColumnResponse> {
    w.changed(Change::panel("column.created", row.panel_id));
    let (id, panel_id, name) = (row.id, row.panel_id, row.name.clone());
    let response = ColumnResponse::from(row);
    let body = to_json(&response)?;
    w.record(
        NewChange {
            panel_id,
            change_type: ChangeType::ColumnAdded,
            affected_column: Some(name.clone()),
            description: format!("Column \"{name}\" added"),
            old_values: None,
            new_values: Some(body),
        },
        Affect::Column { id, name: &name },
    )
    .await?;
    Ok(response)
}

/// Analyses a calculated column's formula with the formula engine against the panel's columns:
/// parse, type-check (unknown columns, arity, types — each a 400 with its position), derive the
/// dependencies from the formula itself (whatever the client sent is replaced), and refuse a
/// cycle through other formulas (`FORMULA_CYCLE`, with its path). Answers the inferred type.
pub async fn analyze_formula(
    tx: &mut Tx,
    principal: &Principal,
    panel_id: PanelId,
    column_id: Option<ColumnId>,
    name: &str,
    formula: &str,
) -> Result<FormulaInfo> {
    if formula.trim().is_empty() {
        return Err(ApiError::invalid("formula", "must not be empty"));
    }
    let columns = repo::column_refs(tx, &principal.tenant, panel_id).await?;
    let checked = check_formula(&columns, column_id, formula)?;
    if checked.dependencies.iter().any(|d| d == name) {
        return Err(formula_error(&crate::formula::FormulaError::cycle(&[
            name.to_owned(),
            name.to_owned(),
        ])));
    }
    let mut graph: HashMap<String, Vec<String>> = columns
        .iter()
        .filter(|c| c.kind == "calculated" && Some(c.id) != column_id && c.name != name)
        .map(|c| (c.name.clone(), string_list(&c.dependencies)))
        .collect();
    graph.insert(name.to_owned(), checked.dependencies.clone());
    if let Some(path) = crate::formula::find_cycle(&graph) {
        return Err(formula_error(&crate::formula::FormulaError::cycle(&path)));
    }
    check_panel_size(&columns, column_id, name, &checked)?;
    Ok(FormulaInfo {
        result_type: Some(checked.result_type.name().to_owned()),
        dependencies: checked.dependencies,
    })
}

/// Refuses a formula that would take the panel's calculated columns past
/// [`crate::formula::MAX_PANEL_FORMULA_SQL`] of compiled SQL (`FORMULA_TOO_COMPLEX`, naming the
/// column): what one page of rows costs to plan and compute grows with it.
fn check_panel_size(
    columns: &[repo::ColumnRef],
    column_id: Option<ColumnId>,
    name: &str,
    checked: &crate::formula::Checked,
) -> Result<()> {
    let others: usize = columns
        .iter()
        .filter(|c| c.kind == "calculated" && Some(c.id) != column_id && c.name != name)
        .filter_map(|c| {
            let formula = c.formula.as_deref()?;
            check_formula(columns, Some(c.id), formula).ok()
        })
        .map(|c| crate::formula::compiled_len(&c))
        .sum();
    let total = others + crate::formula::compiled_len(checked);
    if total > crate::formula::MAX_PANEL_FORMULA_SQL {
        return Err(ApiError::BadRequest {
            code: "FORMULA_TOO_COMPLEX".into(),
            message: format!(
                "column \"{name}\": the panel's formulas would compile to {total} bytes of SQL, more than the limit of {}",
                crate::formula::MAX_PANEL_FORMULA_SQL
            ),
        });
    }
    Ok(())
}

/// Parses and type-checks `formula` against the other columns of a panel (a calculated column
/// counts as its inferred result type); `column_id` is the column being changed, if it exists.
pub fn check_formula(
    columns: &[repo::ColumnRef],
    column_id: Option<ColumnId>,
    formula: &str,
) -> Result<crate::formula::Checked> {
    let schema: crate::formula::Schema = columns
        .iter()
        .filter(|c| Some(c.id) != column_id)
        .map(|c| {
            let ty = c
                .result_type
                .as_deref()
                .filter(|_| c.kind == "calculated")
                .and_then(parse_value_type)
                .unwrap_or_else(|| crate::formula::value_type_for_column_type(&c.column_type));
            (c.name.clone(), ty)
        })
        .collect();
    crate::formula::analyze(formula, &schema).map_err(|e| formula_error(&e))
}

fn parse_value_type(raw: &str) -> Option<crate::formula::ValueType> {
    serde_json::from_value(Value::String(raw.to_owned())).ok()
}

/// A formula error as the API answers it: 400 with its stable code and position.
fn formula_error(e: &crate::formula::FormulaError) -> ApiError {
    ApiError::BadRequest {
        code: e.code_str().into(),
        message: e.to_string(),
    }
}

/// A dependent's formula after its column `old` was renamed `new` (a stored formula always
/// parses; one that no longer did is kept as it is).
fn rename_formula(formula: &str, old: &str, new: &str) -> String {
    crate::formula::rename_column(formula, old, new).unwrap_or_else(|| formula.to_owned())
}

fn rename_in_filter(group: &FilterGroup, old: &str, new: &str) -> FilterGroup {
    let conditions = group
        .conditions
        .iter()
        .map(|node| match node {
            FilterNode::Condition(c) if c.field == old => {
                let mut c = c.clone();
                c.field = new.to_owned();
                FilterNode::Condition(c)
            }
            FilterNode::Condition(c) => FilterNode::Condition(c.clone()),
            FilterNode::Group(g) => FilterNode::Group(rename_in_filter(g, old, new)),
        })
        .collect();
    FilterGroup {
        conditions,
        logic: group.logic,
    }
}

fn view_filters(value: &Value) -> Option<FilterGroup> {
    serde_json::from_value(value.clone()).ok()
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id, column_id))]
pub async fn update(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    column_id: ColumnId,
    if_match: &IfMatch,
    req: UpdateColumnRequest,
) -> Result<(ColumnResponse, String)> {
    write::write(state, principal, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        let current = repo::find_column(&mut w.tx, &principal.tenant, panel_id, column_id)
            .await?
            .ok_or_else(not_found)?;
        if_match.check(&column_tag(&current))?;
        let before = to_json(&ColumnResponse::from(current.clone()))?;

        let name = match req.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => current.name.clone(),
        };
        check_name(&name)?;
        let renamed = name != current.name;
        let column_type = req
            .column_type
            .map_or_else(|| current.column_type.clone(), |t| t.as_str().to_owned());
        let retyped = column_type != current.column_type;
        let properties = ColumnProperties::from_stored(current.properties.clone())
            .merged(req.properties.unwrap_or_default());
        let metadata = match req.metadata {
            Some(map) => Some(Value::Object(map)),
            None => current.metadata.clone(),
        };
        let tags = match req.tags {
            Some(tags) => json!(tags),
            None => current.tags.clone(),
        };

        let (mut source_field, mut formula) =
            (current.source_field.clone(), current.formula.clone());
        let (mut dependencies, mut result_type) =
            (current.dependencies.clone(), current.result_type.clone());
        if current.is_calculated() {
            let new_formula = req
                .formula
                .unwrap_or_else(|| current.formula.clone().unwrap_or_default());
            if renamed || Some(&new_formula) != current.formula.as_ref() {
                let info = analyze_formula(
                    &mut w.tx,
                    principal,
                    panel_id,
                    Some(current.id),
                    &name,
                    &new_formula,
                )
                .await?;
                if renamed && info.dependencies.contains(&current.name) {
                    return Err(ApiError::invalid(
                        "formula",
                        "a formula cannot refer to its own column",
                    ));
                }
                dependencies = json!(info.dependencies);
                result_type = info.result_type;
            }
            formula = Some(new_formula);
        } else if let Some(field) = req.source_field {
            source_field = Some(field);
        }

        let dependents = repo::dependents(
            &mut w.tx,
            &principal.tenant,
            panel_id,
            &current.name,
            column_id,
        )
        .await?;
        if renamed {
            carry_rename(
                &mut w.tx,
                principal,
                panel_id,
                &current.name,
                &name,
                &dependents,
            )
            .await?;
        }
        let row = repo::update_column(
            &mut w.tx,
            &principal.tenant,
            column_id,
            &ColumnUpdate {
                name: &name,
                column_type: &column_type,
                source_field: source_field.as_deref(),
                formula: formula.as_deref(),
                dependencies: &dependencies,
                result_type: result_type.as_deref(),
                properties: &to_json(&properties)?,
                display_order: properties.order().and_then(|o| i32::try_from(o).ok()),
                metadata: metadata.as_ref(),
                tags: &tags,
            },
        )
        .await?;
        // A column read or computed another way (and those built on it) fill their typed slots
        // anew (rows::slots).
        crate::rows::slots::refresh(&mut w.tx, &principal.tenant, panel_id).await?;
        let tag = column_tag(&row);
        let response = ColumnResponse::from(row);
        let after = to_json(&response)?;
        w.audit_diff(&before, &after);
        if after != before {
            let affect = if retyped {
                Affect::ColumnBroken {
                    id: column_id,
                    name: &name,
                    dependents: &dependents,
                }
            } else {
                Affect::Column {
                    id: column_id,
                    name: &name,
                }
            };
            let description = if retyped {
                format!(
                    "Column \"{name}\" changed type from {} to {column_type}",
                    current.column_type
                )
            } else if renamed {
                format!("Column \"{}\" renamed to \"{name}\"", current.name)
            } else {
                format!("Column \"{name}\" modified")
            };
            w.record(
                NewChange {
                    panel_id,
                    change_type: ChangeType::ColumnModified,
                    affected_column: Some(name.clone()),
                    description,
                    old_values: Some(before),
                    new_values: Some(after),
                },
                affect,
            )
            .await?;
        }
        w.changed(Change::panel("column.updated", panel_id).with("columnId", column_id));
        // What the column holds changed: the rules that read it may admit other rows.
        let recomputed = retyped
            || source_field != current.source_field
            || formula != current.formula
            || result_type != current.result_type;
        if recomputed {
            membership::refresh(&mut w, panel_id, state.clock.now(), Sets::All).await?;
        }
        Ok((w, (response, tag)))
    })
    .await
}

/// A rename follows the column everywhere it is named: dependents' formulas and dependency
/// lists, views' sorts and filters (visible columns hold ids and need nothing).
async fn carry_rename(
    tx: &mut Tx,
    principal: &Principal,
    panel_id: PanelId,
    old: &str,
    new: &str,
    dependents: &[(ColumnId, String)],
) -> Result<()> {
    if !dependents.is_empty() {
        let ids: HashSet<ColumnId> = dependents.iter().map(|(id, _)| *id).collect();
        let columns = repo::column_refs(tx, &principal.tenant, panel_id).await?;
        let rewritten: Vec<Value> = columns
            .iter()
            .filter(|c| ids.contains(&c.id))
            .map(|c| {
                let deps: Vec<String> = string_list(&c.dependencies)
                    .into_iter()
                    .map(|d| if d == old { new.to_owned() } else { d })
                    .collect();
                json!({
                    "id": c.id,
                    "formula": rename_formula(c.formula.as_deref().unwrap_or_default(), old, new),
                    "dependencies": deps,
                })
            })
            .collect();
        repo::set_formulas(tx, &principal.tenant, &Value::Array(rewritten)).await?;
    }
    repo::rename_sorts(tx, &principal.tenant, panel_id, old, new).await?;
    // The id never matches a view column here (-1): only the filters are of interest.
    // No column has the id -1: only the views naming `old` are found.
    let views = repo::view_uses(tx, &principal.tenant, panel_id, ColumnId(-1), old).await?;
    let filters: Vec<Value> = views
        .iter()
        .filter_map(|v| {
            let tree = view_filters(&v.filters)?;
            tree.fields()
                .contains(&old)
                .then(|| json!({"id": v.id, "filters": rename_in_filter(&tree, old, new)}))
        })
        .collect();
    if !filters.is_empty() {
        repo::set_view_filters(tx, &principal.tenant, panel_id, &Value::Array(filters)).await?;
    }
    Ok(())
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id, column_id))]
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    column_id: ColumnId,
    if_match: &IfMatch,
    force: bool,
) -> Result<()> {
    write::write(state, principal, |mut w| async move {
    authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
    // Before any row of the slots is locked (rows::slots::lock_layout).
    crate::rows::slots::lock_layout(&mut w.tx, panel_id).await?;
    let current = repo::find_column(&mut w.tx, &principal.tenant, panel_id, column_id)
        .await?
        .ok_or_else(not_found)?;
    if_match.check(&column_tag(&current))?;
    let name = current.name.clone();

    let views = repo::view_uses(&mut w.tx, &principal.tenant, panel_id, column_id, &name).await?;
    let dependents =
        repo::dependents(&mut w.tx, &principal.tenant, panel_id, &name, column_id).await?;
    let mut uses = Vec::new();
    let mut filtered = Vec::new();
    for view in &views {
        if view.visible {
            uses.push(format!("view \"{}\" (visible columns)", view.name));
        }
        if view.sorted {
            uses.push(format!("view \"{}\" (sort)", view.name));
        }
        if let Some(tree) =
            view_filters(&view.filters).filter(|t| t.fields().contains(&name.as_str()))
        {
            uses.push(format!("view \"{}\" (filter)", view.name));
            filtered.push(json!({"id": view.id, "filters": tree.without_field(&name)}));
        }
    }
    uses.extend(
        dependents
            .iter()
            .map(|(_, n)| format!("column \"{n}\" (formula)")),
    );
    if !uses.is_empty() && !force {
        return Err(ApiError::conflict(
            "COLUMN_IN_USE",
            format!(
                "Column \"{name}\" is used by {}; delete with ?force=true to remove these references",
                uses.join(", ")
            ),
        ));
    }

    // Recorded before the references go, so the views that used the column count as broken.
    let before = to_json(&ColumnResponse::from(current))?;
    w.record(
        NewChange {
            panel_id,
            change_type: ChangeType::ColumnRemoved,
            affected_column: Some(name.clone()),
            description: format!("Column \"{name}\" removed"),
            old_values: Some(json!({
                "column": before,
                "brokenDependents": dependents.iter().map(|(_, n)| n).collect::<Vec<_>>(),
                "removedReferences": uses,
            })),
            new_values: None,
        },
        Affect::ColumnBroken {
            id: column_id,
            name: &name,
            dependents: &dependents,
        },
    )
    .await?;
    if views.iter().any(|v| v.visible) {
        repo::hide_column(&mut w.tx, &principal.tenant, panel_id, column_id).await?;
    }
    if views.iter().any(|v| v.sorted) {
        repo::delete_sorts(&mut w.tx, &principal.tenant, panel_id, &name).await?;
    }
    let filtered_views = filtered.len();
    if !filtered.is_empty() {
        repo::set_view_filters(
            &mut w.tx,
            &principal.tenant,
            panel_id,
            &Value::Array(filtered),
        )
        .await?;
    }
    if !repo::delete_column(&mut w.tx, &principal.tenant, column_id).await? {
        return Err(not_found());
    }
    // Columns computed from it fill (or lose) their typed slots (rows::slots).
    crate::rows::slots::refresh(&mut w.tx, &principal.tenant, panel_id).await?;
    w.changed(Change::panel("column.deleted", panel_id).with("columnId", column_id));
    // The views' filters lost the conditions on it: their rows may change.
    if filtered_views > 0 {
        membership::refresh(&mut w, panel_id, state.clock.now(), Sets::All).await?;
    }
    Ok((w, ()))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn reorder(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    req: ReorderColumnsRequest,
) -> Result<ColumnListResponse> {
    write::write(state, principal, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        repo::lock_panel(&mut w.tx, &principal.tenant, panel_id).await?;
        let existing: HashSet<ColumnId> = repo::column_ids(&mut w.tx, &principal.tenant, panel_id)
            .await?
            .into_iter()
            .collect();
        let listed: HashSet<ColumnId> = req.column_ids.iter().copied().collect();
        if listed.len() != req.column_ids.len() {
            return Err(ApiError::invalid(
                "columnIds",
                "lists a column more than once",
            ));
        }
        if listed != existing {
            let mut missing: Vec<ColumnId> = existing.difference(&listed).copied().collect();
            let mut unknown: Vec<ColumnId> = listed.difference(&existing).copied().collect();
            missing.sort_unstable();
            unknown.sort_unstable();
            let mut details = Vec::new();
            if !missing.is_empty() {
                details.push(FieldError::new(
                    "columnIds",
                    format!("misses the panel's columns {missing:?}"),
                ));
            }
            if !unknown.is_empty() {
                details.push(FieldError::new(
                    "columnIds",
                    format!("names columns that are not in this panel: {unknown:?}"),
                ));
            }
            return Err(ApiError::validation(details));
        }
        let rows =
            repo::reorder_columns(&mut w.tx, &principal.tenant, panel_id, &req.column_ids).await?;
        w.changed(Change::panel("columns.reordered", panel_id));
        Ok((w, ColumnListResponse::from_rows(rows)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filter_reads_repeated_and_comma_separated_values() {
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let f = ListFilter::from_pairs(pairs(&[
            ("ids", "1,2"),
            ("ids", "3"),
            ("tags", "a"),
            ("tenantId", "x"),
        ]))
        .unwrap();
        assert_eq!(
            f,
            ListFilter {
                ids: Some(vec![ColumnId(1), ColumnId(2), ColumnId(3)]),
                tags: Some(vec!["a".into()])
            }
        );
        assert!(ListFilter::from_pairs(pairs(&[("ids", "x")])).is_err());
        assert_eq!(
            ListFilter::from_pairs(vec![]).unwrap(),
            ListFilter::default()
        );
    }

    #[test]
    fn properties_merge_like_the_reference() {
        let stored: ColumnProperties = serde_json::from_value(json!({
            "required": true, "validation": {"min": 1, "max": 5}, "display": {"width": 100, "order": 2}
        }))
        .unwrap();
        let patch: ColumnProperties =
            serde_json::from_value(json!({"required": false, "validation": {"pattern": "x"}, "display": {"visible": true}, "junk": 1}))
                .unwrap();
        assert_eq!(
            to_json(&stored.merged(patch)).unwrap(),
            json!({"required": false, "validation": {"pattern": "x"}, "display": {"width": 100, "visible": true, "order": 2}})
        );
        assert_eq!(
            to_json(&ColumnProperties::default().merged(ColumnProperties::default())).unwrap(),
            json!({"display": {}})
        );
    }
}
