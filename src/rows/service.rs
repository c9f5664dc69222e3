//! Rows of a panel, and the formula check (a dry run on sample rows).

use crate::ids::{DataSourceId, PanelId};
use std::collections::HashMap;

use chrono::Utc;
use serde_json::Value;
use tracing::instrument;

use super::model::*;
use super::repo;
use crate::auth::Principal;
use crate::error::{ApiError, Result};
use crate::formula::{self, Checked, Schema};
use crate::page::{self, Page};
use crate::panels::{Access, authorize};
use crate::state::AppState;

fn schema_of(columns: &[ColumnDef], except: Option<&str>) -> Schema {
    columns
        .iter()
        .filter(|c| Some(c.name.as_str()) != except)
        .map(|c| (c.name.clone(), c.value_type()))
        .collect()
}

/// Checks every calculated column's formula against the panel as it is now; a formula that no
/// longer checks (a dependency was retyped) yields nulls and a warning, never a failed page.
fn check_all(columns: &[ColumnDef]) -> (HashMap<String, Checked>, Vec<RowWarning>) {
    let schema = schema_of(columns, None);
    let mut checked = HashMap::new();
    let mut warnings = Vec::new();
    for column in columns.iter().filter(|c| c.kind == "calculated") {
        match column
            .formula
            .as_deref()
            .map(|f| formula::analyze(f, &schema))
        {
            Some(Ok(c)) => {
                checked.insert(column.name.clone(), c);
            }
            Some(Err(e)) => warnings.push(RowWarning {
                column: column.name.clone(),
                count: 0,
                message: format!("formula no longer valid: {e}"),
            }),
            None => {}
        }
    }
    (checked, warnings)
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    page: Page,
) -> Result<RowPage> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    let columns = repo::columns(&mut tx, &principal.tenant, panel_id).await?;
    let (checked, mut warnings) = check_all(&columns);
    let (sql, args) = repo::page_query(&principal.tenant, panel_id, page, &columns, &checked);
    let rows = repo::fetch_page(&mut tx, sql, args).await?;
    crate::db::end_read(tx);

    let (rows, next_cursor) = page::split(rows, page, |r| r.id);
    let base: Vec<&ColumnDef> = columns.iter().filter(|c| c.kind == "base").collect();
    let mut bad_counts = vec![0u64; base.len()];
    for row in &rows {
        for (i, flag) in row.bad.iter().enumerate() {
            if *flag == 1
                && let Some(count) = bad_counts.get_mut(i)
            {
                *count += 1;
            }
        }
    }
    for (column, count) in base.iter().zip(bad_counts) {
        if count > 0 {
            warnings.push(RowWarning {
                column: column.name.clone(),
                count,
                message: format!(
                    "{count} value(s) could not be read as {}",
                    column.column_type
                ),
            });
        }
    }
    Ok(RowPage {
        rows: rows
            .into_iter()
            .map(|r| RowResponse {
                id: r.id,
                key: r.record_key,
                data_source_id: r.data_source_id,
                values: r.values,
            })
            .collect(),
        next_cursor,
        warnings,
    })
}

/// One stored record, read as the panel's columns see it (for in-process evaluation). Each
/// calculated column is evaluated once per row and remembered, so a chain of columns that refer
/// to each other costs their sum, not a product (`c2 = CONCAT(c1, c1)` evaluates `c1` once).
struct RecordRow<'a> {
    data: &'a Value,
    data_source_id: DataSourceId,
    columns: &'a HashMap<&'a str, &'a ColumnDef>,
    checked: &'a HashMap<String, Checked>,
    now: chrono::DateTime<Utc>,
    /// Each calculated column's cell, and whether its formula failed for this row.
    memo: std::cell::RefCell<HashMap<String, (formula::Value, bool)>>,
}

impl formula::Row for RecordRow<'_> {
    fn get(&self, name: &str) -> formula::Value {
        let Some(column) = self.columns.get(name) else {
            return formula::Value::Blank;
        };
        if column.kind == "calculated" {
            if let Some((value, _)) = self.memo.borrow().get(name) {
                return value.clone();
            }
            let (value, failed) = match self.checked.get(name) {
                Some(checked) => {
                    let (value, warnings) =
                        formula::evaluate_with_warnings(checked, self, self.now);
                    (value, !warnings.is_empty())
                }
                None => (formula::Value::Blank, false),
            };
            self.memo
                .borrow_mut()
                .insert(name.to_owned(), (value.clone(), failed));
            return value;
        }
        if column
            .data_source_id
            .is_some_and(|ds| ds != self.data_source_id)
        {
            return formula::Value::Blank;
        }
        let mut value = self.data;
        for segment in column.path() {
            match value.get(&segment) {
                Some(inner) => value = inner,
                None => return formula::Value::Blank,
            }
        }
        formula::Value::from_json(value, column.value_type())
    }

    fn failed(&self, name: &str) -> bool {
        self.memo
            .borrow()
            .get(name)
            .is_some_and(|(_, failed)| *failed)
    }
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
    // The evaluation is CPU work bounded by the formulas' size: off the async workers, and under
    // the request's deadline like everything else.
    let evaluation = tokio::task::spawn_blocking(move || {
        let (all_checked, _) = check_all(&columns);
        let by_name: HashMap<&str, &ColumnDef> =
            columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let now = Utc::now();
        samples
            .iter()
            .map(|(id, key, ds, data)| {
                let row = RecordRow {
                    data,
                    data_source_id: *ds,
                    columns: &by_name,
                    checked: &all_checked,
                    now,
                    memo: Default::default(),
                };
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
