//! A row as the client reads it: each shown column's value computed in process from the stored
//! record, base columns read as their type and calculated columns evaluated (each once per row,
//! whatever refers to it), with the tally of the cells that came out blank for a reason. The
//! database decides which rows and in which order; the evaluator computes the same values the
//! database filtered and sorted on (the formula differential test holds the two together), at
//! a fraction of the database's cost.

use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::model::{ColumnDef, RowWarning};
use crate::formula::{self, Checked};
use crate::ids::DataSourceId;

/// One stored record, read as the panel's columns see it. Each calculated column is evaluated
/// once per row and remembered, so a chain of columns that refer to each other costs their sum,
/// not a product (`c2 = CONCAT(c1, c1)` evaluates `c1` once).
pub struct RecordRow<'a> {
    pub data: &'a Value,
    pub data_source_id: DataSourceId,
    pub columns: &'a HashMap<&'a str, &'a ColumnDef>,
    pub checked: &'a HashMap<String, Checked>,
    pub now: DateTime<Utc>,
    /// Each calculated column's cell and, when it failed, why.
    memo: RefCell<HashMap<&'a str, (formula::Value, Option<String>)>>,
}

impl<'a> RecordRow<'a> {
    pub fn new(
        data: &'a Value,
        data_source_id: DataSourceId,
        columns: &'a HashMap<&'a str, &'a ColumnDef>,
        checked: &'a HashMap<String, Checked>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            data,
            data_source_id,
            columns,
            checked,
            now,
            memo: RefCell::default(),
        }
    }

    /// The stored JSON of a base column (`None` when absent or of another data source).
    pub fn raw(&self, column: &ColumnDef) -> Option<&'a Value> {
        if column
            .data_source_id
            .is_some_and(|ds| ds != self.data_source_id)
        {
            return None;
        }
        let mut value = self.data;
        for segment in column.path() {
            value = value.get(&segment)?;
        }
        Some(value)
    }

    /// Why a calculated column failed for this row (after [`formula::Row::get`]).
    pub fn failure(&self, name: &str) -> Option<String> {
        self.memo
            .borrow()
            .get(name)
            .and_then(|(_, why)| why.clone())
    }
}

impl formula::Row for RecordRow<'_> {
    fn get(&self, name: &str) -> formula::Value {
        let Some((&name, column)) = self.columns.get_key_value(name) else {
            return formula::Value::Blank;
        };
        if column.kind == "calculated" {
            if let Some((value, _)) = self.memo.borrow().get(name) {
                return value.clone();
            }
            let (value, why) = match self.checked.get(name) {
                Some(checked) => {
                    let (value, warnings) =
                        formula::evaluate_with_warnings(checked, self, self.now);
                    (value, warnings.into_iter().next())
                }
                // A formula that no longer checks computes nothing.
                None => (
                    formula::Value::Blank,
                    Some("the formula no longer checks".to_owned()),
                ),
            };
            self.memo.borrow_mut().insert(name, (value.clone(), why));
            return value;
        }
        match self.raw(column) {
            Some(json) => formula::Value::from_json(json, column.value_type()),
            None => formula::Value::Blank,
        }
    }

    fn failed(&self, name: &str) -> bool {
        self.memo
            .borrow()
            .get(name)
            .is_some_and(|(_, why)| why.is_some())
    }
}

/// Computes the shown columns of rows and counts the cells that came out blank for a reason.
pub struct Projector<'a> {
    by_name: HashMap<&'a str, &'a ColumnDef>,
    checked: &'a HashMap<String, Checked>,
    shown: Vec<&'a ColumnDef>,
    now: DateTime<Utc>,
    /// Per shown column: how many cells were blank for a reason, and the first reason.
    tally: RefCell<Vec<(u64, Option<String>)>>,
}

impl<'a> Projector<'a> {
    pub fn new(
        columns: &'a [ColumnDef],
        checked: &'a HashMap<String, Checked>,
        shown: Vec<&'a ColumnDef>,
        now: DateTime<Utc>,
    ) -> Self {
        let tally = RefCell::new(vec![(0, None); shown.len()]);
        Self {
            by_name: columns.iter().map(|c| (c.name.as_str(), c)).collect(),
            checked,
            shown,
            now,
            tally,
        }
    }

    pub fn shown(&self) -> &[&'a ColumnDef] {
        &self.shown
    }

    /// The shown columns' values of one record, in their order.
    pub fn values(&self, data: &Value, data_source_id: DataSourceId) -> Vec<formula::Value> {
        use formula::Row as _;
        let row = RecordRow::new(data, data_source_id, &self.by_name, self.checked, self.now);
        let mut tally = self.tally.borrow_mut();
        self.shown
            .iter()
            .zip(tally.iter_mut())
            .map(|(column, (count, why))| {
                let value = row.get(&column.name);
                let problem = if column.kind == "calculated" {
                    row.failure(&column.name)
                } else if value.is_blank() && row.raw(column).is_some_and(|json| !json.is_null()) {
                    Some(format!("could not be read as {}", column.column_type))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    *count += 1;
                    why.get_or_insert(problem);
                }
                value
            })
            .collect()
    }

    /// The shown columns' values of one record as a JSON object by column name.
    pub fn object(&self, data: &Value, data_source_id: DataSourceId) -> Map<String, Value> {
        self.shown
            .iter()
            .zip(self.values(data, data_source_id))
            .map(|(column, value)| (column.name.clone(), value.to_json()))
            .collect()
    }

    /// The warnings of everything projected so far: per column, the cells blank for a reason.
    pub fn warnings(&self) -> Vec<RowWarning> {
        self.shown
            .iter()
            .zip(self.tally.borrow().iter())
            .filter(|(_, (count, _))| *count > 0)
            .map(|(column, (count, why))| RowWarning {
                column: column.name.clone(),
                count: *count,
                message: if column.kind == "calculated" {
                    format!(
                        "{count} cell(s) failed: {}",
                        why.as_deref().unwrap_or("the formula failed")
                    )
                } else {
                    format!(
                        "{count} value(s) could not be read as {}",
                        column.column_type
                    )
                },
            })
            .collect()
    }
}
