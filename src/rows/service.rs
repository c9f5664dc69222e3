//! The worklist engine's rules: who may read which rows, what a view's rows are (the panel's
//! cohort rule AND the view's filters, in the view's order, its visible columns), what an ad-hoc
//! query may ask, how pages and counts are answered; and the formula check (a dry run on sample
//! rows).

use std::collections::HashMap;

use chrono::Utc;
use chrono_tz::Tz;
use tracing::instrument;

use super::cursor::{self, CursorError};
use super::indexes;
use super::model::*;
use super::project::{Projector, RecordRow};
use super::query::{After, Plan, PlanError, Request, SortSpec, check_all, field_kind};
use super::repo;
use crate::auth::Principal;
use crate::db::Tx;
use crate::error::{ApiError, Result};
use crate::filter::{FilterGroup, Resolved, Resolver};
use crate::formula::{self, Checked, Schema};
use crate::ids::{PanelId, ViewId};
use crate::page::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::panels::model::PanelRow;
use crate::panels::{Access, authorize};
use crate::state::AppState;

/// Counts below this estimate are counted exactly instead (cheap, and no surprise).
const EXACT_BELOW: u64 = 1000;

fn schema_of(columns: &[ColumnDef], except: Option<&str>) -> Schema {
    columns
        .iter()
        .filter(|c| Some(c.name.as_str()) != except)
        .map(|c| (c.name.clone(), c.value_type()))
        .collect()
}

fn time_zone(tz: Option<&str>) -> Result<Tz> {
    match tz {
        None => Ok(Tz::UTC),
        Some(name) => name.trim().parse().map_err(|_| {
            ApiError::invalid(
                "tz",
                format!("{name:?} is not an IANA time zone (e.g. Europe/Amsterdam)"),
            )
        }),
    }
}

fn page_size(limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

fn search(q: Option<String>) -> Result<Option<String>> {
    match q {
        Some(q) if q.is_empty() || q.chars().count() > MAX_SEARCH => Err(ApiError::invalid(
            "q",
            format!("must be 1 to {MAX_SEARCH} characters"),
        )),
        other => Ok(other),
    }
}

fn plan_error(e: PlanError) -> ApiError {
    match e {
        PlanError::UnknownColumn(name) => {
            ApiError::invalid("sort", format!("{name:?} is not a column of this panel"))
        }
        PlanError::TooComplex(name) => ApiError::BadRequest {
            code: "COLUMN_TOO_COMPLEX".into(),
            message: format!(
                "Column {name:?} cannot be filtered, sorted or searched on: its formula (with the formulas it reads) is too large to compute inside a query"
            ),
        },
    }
}

fn cursor_error(e: CursorError) -> ApiError {
    match e {
        CursorError::Invalid => ApiError::BadRequest {
            code: "INVALID_CURSOR".into(),
            message: "The cursor is not one this list gave out".into(),
        },
        CursorError::Stale => ApiError::Conflict {
            code: "CURSOR_STALE".into(),
            message: "The query changed since this cursor was given out (its filters, sorts or columns); start again from the first page".into(),
        },
    }
}

/// A statement cancelled by `QUERY_TIMEOUT_MS` (or `EXPORT_TIMEOUT_MS`) answers 503.
fn query_error(state: &AppState, e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some("57014")
    {
        return ApiError::Unavailable {
            code: "QUERY_TIMEOUT",
            message: format!(
                "The query ran longer than {} ms and was cancelled; narrow it with a filter",
                state.config.query_timeout.as_millis()
            ),
        };
    }
    ApiError::from(e)
}

/// One request of rows, before it meets the panel.
struct Query<'a> {
    /// Whether the panel's cohort rule applies.
    cohort: bool,
    /// Whether the query is one the panel keeps (a view's, the cohort's): the indexes it could
    /// use are built for it. An ad-hoc query uses the indexes there are (wanting its own would let
    /// anyone make the server build indexes at will).
    prepared: bool,
    /// The filter tree and the name its errors are reported under.
    filter: Option<(FilterGroup, &'static str)>,
    sorts: Vec<SortSpec>,
    /// The columns each row shows, `None` for all.
    shown: Option<Shown<'a>>,
    q: Option<String>,
    limit: i64,
    cursor: Option<&'a str>,
    count: Option<CountMode>,
    tz: Tz,
}

/// Which columns a row shows.
enum Shown<'a> {
    /// By name, every one must exist (an ad-hoc query).
    Names(&'a [String]),
    /// By id as a view stores them; ids of deleted columns are skipped.
    Ids(Vec<String>),
}

/// A request resolved against the panel: the plan and what to show.
struct Prepared<'c> {
    plan: Plan,
    columns: &'c [ColumnDef],
    checked: &'c HashMap<String, Checked>,
    shown: Vec<&'c ColumnDef>,
    now: chrono::DateTime<Utc>,
}

fn prepare<'c>(
    state: &AppState,
    principal: &Principal,
    panel: &PanelRow,
    columns: &'c [ColumnDef],
    checked: &'c HashMap<String, Checked>,
    query: &Query<'_>,
) -> Result<Prepared<'c>> {
    let now = state.clock.now();
    let resolver = Resolver {
        now,
        tz: query.tz,
        current_user: (!principal.email.is_empty()).then_some(principal.email.as_str()),
    };
    let by_name: HashMap<&str, &ColumnDef> = columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let kind_of = |name: &str| by_name.get(name).map(|c| field_kind(c));
    let mut tree = Resolved::All(Vec::new());
    if query.cohort {
        tree = resolver
            .resolve(&panel.cohort(), "cohortRule", &kind_of)
            .map_err(ApiError::validation)?;
    }
    if let Some((filter, prefix)) = &query.filter {
        let resolved = resolver
            .resolve(filter, prefix, &kind_of)
            .map_err(ApiError::validation)?;
        tree = tree.and(resolved);
    }
    let shown: Vec<&ColumnDef> = match &query.shown {
        None => columns.iter().collect(),
        Some(Shown::Names(names)) => {
            let mut shown = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let column = by_name.get(name.as_str()).ok_or_else(|| {
                    ApiError::invalid(
                        format!("columns[{i}]"),
                        format!("{name:?} is not a column of this panel"),
                    )
                })?;
                if !shown.iter().any(|c: &&ColumnDef| c.name == column.name) {
                    shown.push(*column);
                }
            }
            shown
        }
        Some(Shown::Ids(ids)) => {
            let shown: Vec<&ColumnDef> = ids
                .iter()
                .filter_map(|id| columns.iter().find(|c| c.id.0.to_string() == *id))
                .collect();
            if shown.is_empty() {
                columns.iter().collect()
            } else {
                shown
            }
        }
    };
    for (i, sort) in query.sorts.iter().enumerate() {
        if !by_name.contains_key(sort.column.as_str()) {
            return Err(ApiError::invalid(
                format!("sort[{i}].column"),
                format!("{:?} is not a column of this panel", sort.column),
            ));
        }
    }
    let searched: Vec<String> = shown.iter().map(|c| c.name.clone()).collect();
    let plan = Plan::build(
        columns,
        checked,
        &Request {
            tenant: &principal.tenant,
            panel_id: panel.id,
            filter: &tree,
            sorts: &query.sorts,
            search: query.q.as_deref().map(|q| (q, searched.as_slice())),
            now,
        },
    )
    .map_err(plan_error)?;
    Ok(Prepared {
        plan,
        columns,
        checked,
        shown,
        now,
    })
}

/// Answers one page of a query on a panel the caller may read, inside `tx`.
async fn page(
    state: &AppState,
    principal: &Principal,
    mut tx: Tx,
    panel: &PanelRow,
    query: Query<'_>,
) -> Result<RowPage> {
    let columns = repo::columns(&mut tx, &principal.tenant, panel.id).await?;
    let (checked, mut warnings) = check_all(&columns);
    let prepared = prepare(state, principal, panel, &columns, &checked, &query)?;
    let plan = &prepared.plan;
    if query.prepared {
        want_indexes(state, principal, panel.id, plan);
    }
    let types = plan.key_types();
    let after = query
        .cursor
        .map(|c| cursor::decode(&state.cursor_key, c, &plan.fingerprint, &types))
        .transpose()
        .map_err(cursor_error)?;
    let mut rows = repo::fetch_page(
        &mut tx,
        plan.page(after.as_ref(), query.limit + 1),
        &types,
        plan.has_keys(),
    )
    .await
    .map_err(|e| query_error(state, e))?;
    let mode = query.count.unwrap_or(if query.cursor.is_none() {
        CountMode::Estimated
    } else {
        CountMode::None
    });
    let (total, total_kind) = match mode {
        CountMode::None => (None, None),
        CountMode::Exact => (
            Some(count(state, &mut tx, plan).await?),
            Some(TotalKind::Exact),
        ),
        CountMode::Estimated => {
            let estimate = repo::estimate(&mut tx, plan.estimate())
                .await
                .map_err(|e| query_error(state, e))?;
            if estimate < EXACT_BELOW {
                (
                    Some(count(state, &mut tx, plan).await?),
                    Some(TotalKind::Exact),
                )
            } else {
                (Some(estimate), Some(TotalKind::Estimated))
            }
        }
    };
    crate::db::end_read(tx);

    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            cursor::encode(
                &state.cursor_key,
                &plan.fingerprint,
                &After {
                    keys: last.keys.clone(),
                    id: last.id,
                },
            )
        })
    } else {
        None
    };
    let projector = Projector::new(
        prepared.columns,
        prepared.checked,
        prepared.shown,
        prepared.now,
    );
    let rows = rows
        .into_iter()
        .map(|r| RowResponse {
            id: r.id,
            values: serde_json::Value::Object(projector.object(&r.data, r.data_source_id)),
            key: r.record_key,
            data_source_id: r.data_source_id,
        })
        .collect();
    warnings.extend(projector.warnings());
    Ok(RowPage {
        rows,
        next_cursor,
        total,
        total_kind,
        warnings,
    })
}

/// Notes the indexes this query could use (built by a worker for a large panel).
fn want_indexes(state: &AppState, principal: &Principal, panel: PanelId, plan: &Plan) {
    let defs = indexes::wanted(panel, &plan.index_keys(), &plan.index_fields, plan.params());
    if !defs.is_empty() {
        state.index_wants.want(&principal.tenant, panel, defs);
    }
}

async fn count(state: &AppState, tx: &mut Tx, plan: &Plan) -> Result<u64> {
    let n = repo::count(tx, plan.count())
        .await
        .map_err(|e| query_error(state, e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A panel's rows through its cohort rule (every row with `cohort=all`, for its editors), by id.
#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn panel_rows(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    params: PanelRowsParams,
) -> Result<RowPage> {
    let all = params.cohort == Some(CohortMode::All);
    let query = Query {
        cohort: !all,
        prepared: true,
        filter: None,
        sorts: Vec::new(),
        shown: None,
        q: search(params.q)?,
        limit: page_size(params.limit)?,
        cursor: params.cursor.as_deref(),
        count: params.count,
        tz: time_zone(params.tz.as_deref())?,
    };
    let mut tx = state
        .db
        .begin_read(&principal.tenant, state.config.query_timeout)
        .await?;
    let access = if all { Access::ReadAll } else { Access::Read };
    let panel = authorize(&mut tx, principal, panel_id, access).await?;
    page(state, principal, tx, &panel, query).await
}

/// An ad-hoc query of a panel's rows (the cohort rule always applies).
#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn query_rows(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    req: RowQueryRequest,
) -> Result<RowPage> {
    let sorts = req
        .sort
        .unwrap_or_default()
        .into_iter()
        .map(|s| SortSpec {
            column: s.column,
            direction: s.direction.unwrap_or(Direction::Asc),
            nulls: s.nulls.unwrap_or_default(),
        })
        .collect();
    let query = Query {
        cohort: true,
        prepared: false,
        filter: req.filter.map(|f| (f, "filter")),
        sorts,
        shown: req.columns.as_deref().map(Shown::Names),
        q: search(req.q)?,
        limit: page_size(req.limit)?,
        cursor: req.cursor.as_deref(),
        count: req.count,
        tz: time_zone(req.tz.as_deref())?,
    };
    let mut tx = state
        .db
        .begin_read(&principal.tenant, state.config.query_timeout)
        .await?;
    let panel = authorize(&mut tx, principal, panel_id, Access::Read).await?;
    page(state, principal, tx, &panel, query).await
}

/// What a view lists: its filters, its sorts (empty values last), its visible columns.
fn view_query<'a>(
    view: &crate::views::model::ViewRow,
    sorts: Vec<crate::views::model::SortRow>,
    q: Option<String>,
    tz: Tz,
) -> Query<'a> {
    Query {
        cohort: true,
        prepared: true,
        filter: Some((view.filter_tree(), "filters")),
        sorts: sorts
            .into_iter()
            .map(|s| SortSpec {
                column: s.column_name,
                direction: if s.direction == "desc" {
                    Direction::Desc
                } else {
                    Direction::Asc
                },
                nulls: Nulls::Last,
            })
            .collect(),
        shown: Some(Shown::Ids(
            view.visible_columns
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|v| match v {
                            serde_json::Value::String(s) => Some(s.trim().to_owned()),
                            serde_json::Value::Number(n) => Some(n.to_string()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )),
        q,
        limit: DEFAULT_LIMIT,
        cursor: None,
        count: None,
        tz,
    }
}

/// A view's rows: the panel's cohort rule AND the view's filters, in the view's order, with its
/// visible columns. A private view answers only those it is shared with, a published view
/// everyone who may read the panel.
#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %view_id))]
pub async fn view_rows(
    state: &AppState,
    principal: &Principal,
    view_id: ViewId,
    params: RowsParams,
) -> Result<RowPage> {
    let (q, limit, tz) = (
        search(params.q)?,
        page_size(params.limit)?,
        time_zone(params.tz.as_deref())?,
    );
    let mut tx = state
        .db
        .begin_read(&principal.tenant, state.config.query_timeout)
        .await?;
    let (view, sorts) = crate::views::service::for_rows(&mut tx, principal, view_id).await?;
    let panel = authorize(&mut tx, principal, view.panel_id, Access::Read)
        .await
        .map_err(|_| crate::views::service::not_found())?;
    let query = Query {
        limit,
        cursor: params.cursor.as_deref(),
        count: params.count,
        ..view_query(&view, sorts, q, tz)
    };
    page(state, principal, tx, &panel, query).await
}

/// Everything an export streams: the rows in order and how to write them.
pub struct Export {
    pub view_name: String,
    pub format: ExportFormat,
    pub header: Vec<String>,
    pub rows: futures::stream::BoxStream<'static, Result<ExportRow>>,
}

/// One exported row: its identity and its shown values, in the header's order.
pub struct ExportRow {
    pub id: i64,
    pub key: String,
    pub data_source_id: crate::ids::DataSourceId,
    pub values: Vec<formula::Value>,
}

/// Every row of a view, in its order, streamed from one database statement: memory stays that
/// of a few rows whatever the size. The statement runs under `EXPORT_TIMEOUT_MS` on a connection
/// of its own for as long as the client reads.
#[instrument(skip_all, fields(tenant = %principal.tenant, view_id = %view_id))]
pub async fn export(
    state: &AppState,
    principal: &Principal,
    view_id: ViewId,
    params: ExportParams,
) -> Result<Export> {
    use futures::StreamExt;
    let (q, tz) = (search(params.q)?, time_zone(params.tz.as_deref())?);
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
    let (view, sorts) = crate::views::service::for_rows(&mut tx, principal, view_id).await?;
    let panel = authorize(&mut tx, principal, view.panel_id, Access::Read)
        .await
        .map_err(|_| crate::views::service::not_found())?;
    let columns = repo::columns(&mut tx, &principal.tenant, panel.id).await?;
    let (checked, _) = check_all(&columns);
    let query = view_query(&view, sorts, q, tz);
    let prepared = prepare(state, principal, &panel, &columns, &checked, &query)?;
    want_indexes(state, principal, panel.id, &prepared.plan);
    let header: Vec<String> = prepared.shown.iter().map(|c| c.name.clone()).collect();
    let statement = prepared.plan.all();
    let types = prepared.plan.key_types();
    let now = prepared.now;
    let shown_ids: Vec<crate::ids::ColumnId> = prepared.shown.iter().map(|c| c.id).collect();
    let state = state.clone();
    // The stream owns what it reads from: the transaction, the columns and their formulas.
    let rows = export_rows(
        tx, statement, types, columns, checked, shown_ids, now, state, permit,
    );
    Ok(Export {
        view_name: view.name.clone(),
        format: params.format.unwrap_or_default(),
        header,
        rows: rows.boxed(),
    })
}

/// The rows of an export, computed as the statement yields them.
#[allow(clippy::too_many_arguments)] // the stream owns each of these for its whole life
fn export_rows(
    mut tx: Tx,
    statement: (String, sqlx::postgres::PgArguments),
    types: Vec<super::query::KeyType>,
    columns: Vec<ColumnDef>,
    checked: HashMap<String, Checked>,
    shown: Vec<crate::ids::ColumnId>,
    now: chrono::DateTime<Utc>,
    state: AppState,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures::Stream<Item = Result<ExportRow>> + Send + 'static {
    use futures::StreamExt;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<ExportRow>>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let shown_columns: Vec<&ColumnDef> = shown
            .iter()
            .filter_map(|id| columns.iter().find(|c| c.id == *id))
            .collect();
        let projector = Projector::new(&columns, &checked, shown_columns, now);
        let mut rows = repo::stream_rows(&mut tx, statement, types);
        while let Some(row) = rows.next().await {
            let item = match row {
                Ok(r) => {
                    let values = projector.values(&r.data, r.data_source_id);
                    Ok(ExportRow {
                        id: r.id,
                        key: r.record_key,
                        data_source_id: r.data_source_id,
                        values,
                    })
                }
                Err(e) => Err(query_error(&state, e)),
            };
            let failed = item.is_err();
            // The client went away: stop reading (dropping the statement ends it).
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(rows);
        crate::db::end_read(tx);
    });
    tokio_stream_of(receiver)
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn check(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    req: FormulaCheckRequest,
) -> Result<FormulaCheckResponse> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    let columns = repo::columns(&mut tx, &principal.tenant, panel_id).await?;
    let samples = repo::sample(
        &mut tx,
        &principal.tenant,
        panel_id,
        req.sample_size.unwrap_or(5),
    )
    .await?;
    tx.commit().await?;

    let schema = schema_of(&columns, req.name.as_deref());
    let checked = formula::analyze(&req.formula, &schema).map_err(|e| ApiError::BadRequest {
        code: e.code_str().into(),
        message: e.to_string(),
    })?;
    if let Some(name) = req.name.as_deref() {
        let mut graph: HashMap<String, Vec<String>> = HashMap::new();
        for column in columns
            .iter()
            .filter(|c| c.kind == "calculated" && c.name != name)
        {
            if let Some(Ok(c)) = column
                .formula
                .as_deref()
                .map(|f| formula::analyze(f, &schema_of(&columns, None)))
            {
                graph.insert(column.name.clone(), c.dependencies);
            }
        }
        graph.insert(name.to_owned(), checked.dependencies.clone());
        if let Some(path) = formula::find_cycle(&graph) {
            let e = formula::FormulaError::cycle(&path);
            return Err(ApiError::BadRequest {
                code: e.code_str().into(),
                message: e.to_string(),
            });
        }
    }
    let (result_type, dependencies) = (
        checked.result_type.name().to_owned(),
        checked.dependencies.clone(),
    );
    let now = state.clock.now();
    // The evaluation is CPU work bounded by the formulas' size: off the async workers, and under
    // the request's deadline like everything else.
    let evaluation = tokio::task::spawn_blocking(move || {
        let (all_checked, _) = check_all(&columns);
        let by_name: HashMap<&str, &ColumnDef> =
            columns.iter().map(|c| (c.name.as_str(), c)).collect();
        samples
            .iter()
            .map(|(id, key, ds, data)| {
                let row = RecordRow::new(data, *ds, &by_name, &all_checked, now);
                let (value, warnings) = formula::evaluate_with_warnings(&checked, &row, now);
                FormulaSample {
                    row_id: *id,
                    key: key.clone(),
                    value: value.to_json(),
                    warnings,
                }
            })
            .collect::<Vec<_>>()
    });
    let samples = evaluation
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("formula evaluation failed: {e}")))?;
    Ok(FormulaCheckResponse {
        valid: true,
        result_type,
        dependencies,
        samples,
    })
}
