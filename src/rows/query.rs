//! The worklist engine's SQL, built from the panel's columns and one request: which rows (the
//! cohort rule AND the view's or the query's filter tree AND the search), in which order (the
//! sort keys, then the row id) and from where (a keyset cursor). Pure: it writes SQL text and
//! binds parameters; `repo.rs` runs it.
//!
//! Every column reads inline from the row, so the planner can match the expressions to indexes:
//! a base column is its JSONB field read as its type, a calculated column its formula compiled
//! with the base columns it reads substituted (and the calculated columns it reads, recursively),
//! failures included ([`crate::formula::compile_parts`]). Filtering and sorting on a calculated
//! column therefore see the values the client sees. A formula whose inline SQL would exceed
//! [`MAX_INLINE_SQL`] (columns built on columns built on columns, each read twice) can be shown
//! but not filtered, sorted or searched on (`COLUMN_TOO_COMPLEX`).
//!
//! Sort keys are never NULL: an empty value is replaced by a bound that sorts after (or before)
//! every value, so the keyset condition needs no NULL cases and an index on the key serves both
//! the order and the cursor. Text sorts case-insensitively by code point.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgArguments;

use super::model::{ColumnDef, Direction, Nulls, RowWarning};
use crate::auth::TenantId;
use crate::filter::sql::FieldSql;
use crate::filter::{self, FieldKind, Resolved};
use crate::formula::{self, Checked, ColumnSql, CompiledParts, SqlBuilder, SqlParam, ValueType};
use crate::ids::PanelId;

/// The largest inline SQL of one calculated column that may be filtered, sorted or searched on.
pub const MAX_INLINE_SQL: usize = 256 * 1024;

/// Why a request cannot be compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanError {
    UnknownColumn(String),
    /// The column's formula is too large inline (or no longer checks).
    TooComplex(String),
}

/// A sort key's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Text,
    Number,
    Date,
    Instant,
}

/// A sort key's value as the cursor carries it (`Null`: an empty value of a slot key).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Text(String),
    Number(f64),
    Date(NaiveDate),
    Instant(DateTime<Utc>),
    Null,
}

impl KeyValue {
    fn param(&self) -> Option<SqlParam> {
        Some(match self {
            KeyValue::Text(s) => SqlParam::Text(s.clone()),
            KeyValue::Number(n) => SqlParam::Number(*n),
            KeyValue::Date(d) => SqlParam::Date(*d),
            KeyValue::Instant(t) => SqlParam::Instant(*t),
            KeyValue::Null => return None,
        })
    }
}

/// A sort key as the query writes it.
#[derive(Debug, Clone)]
pub enum KeySql {
    /// A typed slot, read plainly: ordered by `flag` (whether it is empty, or not, whichever puts
    /// empty values where the sort wants them) and then by its value. Comparisons of plain
    /// columns may be index conditions under row-level security.
    Plain { value: String, flag: String },
    /// An expression made never empty by a bound past every value (`coalesce(…, bound)`).
    Bounded(String),
}

impl KeySql {
    fn value(&self) -> &str {
        match self {
            KeySql::Plain { value, .. } => value,
            KeySql::Bounded(sql) => sql,
        }
    }
}

/// One sort of a request, by column name.
#[derive(Debug, Clone)]
pub struct SortSpec {
    pub column: String,
    pub direction: Direction,
    pub nulls: Nulls,
}

/// Where a page starts: after this row of the same query.
#[derive(Debug, Clone, PartialEq)]
pub struct After {
    pub keys: Vec<KeyValue>,
    pub id: i64,
}

/// The panel's columns as the rows query reads them. Parameters of the column expressions are
/// bound in `out` once; the expressions are text that can be written into the query wherever
/// needed.
pub struct Columns<'a> {
    defs: HashMap<&'a str, &'a ColumnDef>,
    /// Base column → its raw JSONB (NULL for rows of another data source).
    raw: HashMap<&'a str, String>,
    /// Base column → its ready typed slot (`r.n3`) and the slot's kind.
    slots: HashMap<&'a str, (String, char)>,
    /// Calculated column → its compiled cell, `None` when it cannot be inlined.
    calc: HashMap<&'a str, Option<CompiledParts>>,
    /// The result type each inlined calculated column was compiled for.
    calc_types: HashMap<&'a str, ValueType>,
    now: String,
}

/// Reads columns inside a formula: base columns as typed reads of the raw JSONB (texts past
/// the formula limit fail), calculated columns as their compiled cells.
struct FormulaColumns<'c, 'a> {
    columns: &'c Columns<'a>,
}

impl ColumnSql for FormulaColumns<'_, '_> {
    fn column_sql(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        let c = self.columns;
        // A typed slot holds what the reader answers (texts in lower case: read those from the
        // record, where their case is).
        if let Some((slot, prefix)) = c.slots.get(name)
            && *prefix != 't'
            && c.raw.contains_key(name)
            && slot_value_type(*prefix) == ty
        {
            out.push_sql(slot);
            return;
        }
        if let Some(raw) = c.raw.get(name) {
            let read = formula::safe_cast_sql(ty, raw);
            if ty == ValueType::Text {
                out.push_sql(&format!("panels_text_cap({read})"));
            } else {
                out.push_sql(&read);
            }
            return;
        }
        match (c.calc.get(name), c.calc_types.get(name)) {
            (Some(Some(parts)), Some(own)) if *own == ty => out.push_sql(&parts.cell()),
            _ => out.push_sql(&format!("null::{}", ty.sql_type())),
        }
    }

    fn column_can_fail(&self, name: &str, ty: ValueType) -> bool {
        let c = self.columns;
        if c.raw.contains_key(name) {
            return ty == ValueType::Text;
        }
        match (c.calc.get(name), c.calc_types.get(name)) {
            (Some(Some(parts)), Some(own)) if *own == ty => parts.failed.is_some(),
            _ => true,
        }
    }

    fn column_failed(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        let c = self.columns;
        if let Some(raw) = c.raw.get(name) {
            out.push_sql(&format!(
                "coalesce(octet_length({}) > {}, false)",
                formula::safe_cast_sql(ty, raw),
                formula::MAX_TEXT_BYTES
            ));
            return;
        }
        match (c.calc.get(name), c.calc_types.get(name)) {
            (Some(Some(parts)), Some(own)) if *own == ty => {
                out.push_sql(parts.failed.as_deref().unwrap_or("false"))
            }
            // Retyped since the formula was checked, or not computable: fails the reader.
            _ => out.push_sql("true"),
        }
    }

    fn column_strict(&self, name: &str, ty: ValueType) -> bool {
        match (
            self.columns.calc.get(name),
            self.columns.calc_types.get(name),
        ) {
            (Some(Some(parts)), Some(own)) if *own == ty => parts.strict,
            _ => false,
        }
    }

    fn now(&self, out: &mut SqlBuilder) {
        out.push_sql(&self.columns.now);
    }
}

/// The calculated columns that can be computed, dependencies first: a column whose formula no
/// longer checks, or that sits on a cycle (refused when written, so only through a stale
/// database), is left out and reads as failed.
pub fn dependency_order<'a>(
    columns: &'a [ColumnDef],
    checked: &'a HashMap<String, Checked>,
) -> Vec<&'a ColumnDef> {
    let by_name: HashMap<&str, &ColumnDef> = columns
        .iter()
        .filter(|c| c.kind == "calculated" && checked.contains_key(&c.name))
        .map(|c| (c.name.as_str(), c))
        .collect();
    // 0: not seen, 1: on the current path, 2: placed (or left out).
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut order = Vec::new();
    fn visit<'a>(
        name: &'a str,
        by_name: &HashMap<&'a str, &'a ColumnDef>,
        checked: &'a HashMap<String, Checked>,
        state: &mut HashMap<&'a str, u8>,
        order: &mut Vec<&'a ColumnDef>,
    ) -> bool {
        match state.get(name) {
            Some(1) => return false,
            Some(_) => return order.iter().any(|c| c.name == name),
            None => {}
        }
        state.insert(name, 1);
        let mut ok = true;
        if let Some(c) = checked.get(name) {
            for dep in &c.dependencies {
                if by_name.contains_key(dep.as_str()) {
                    ok &= visit(dep, by_name, checked, state, order);
                }
            }
        }
        state.insert(name, 2);
        if ok && let Some(column) = by_name.get(name) {
            order.push(column);
        }
        ok
    }
    for column in columns
        .iter()
        .filter(|c| by_name.contains_key(c.name.as_str()))
    {
        visit(&column.name, &by_name, checked, &mut state, &mut order);
    }
    order
}

/// The raw JSONB of a base column (`r.data -> 'field'` or `r.data #> path`), NULL for rows of
/// another data source when the column names one.
/// How SQL reads a record: its JSONB and the id of its data source (trusted SQL).
#[derive(Debug, Clone, Copy)]
pub struct Record<'s> {
    pub data: &'s str,
    pub source: &'s str,
}

/// A row of `panel_row` as the rows query names it.
pub const ROW: Record<'static> = Record {
    data: "r.data",
    source: "r.data_source_id",
};

fn raw_sql(column: &ColumnDef, record: Record<'_>, out: &mut SqlBuilder) -> String {
    out.capture(|out| {
        if let Some(ds) = column.data_source_id {
            // An id from our own table, not user text.
            out.push_sql(&format!("(case when {} = {ds} then ", record.source));
        } else {
            out.push_sql("(");
        }
        let path = column.path();
        if path.len() == 1 {
            out.push_sql(&format!("{} -> ", record.data));
            out.push_param(SqlParam::Text(path[0].clone()));
        } else {
            // Path segments joined by the unit separator, split again in SQL: one text parameter.
            out.push_sql(&format!("{} #> string_to_array(", record.data));
            out.push_param(SqlParam::Text(path.join("\u{1f}")));
            out.push_sql(", chr(31))");
        }
        out.push_sql(if column.data_source_id.is_some() {
            " end)"
        } else {
            ")"
        });
    })
}

impl<'a> Columns<'a> {
    /// Compiles every column; `now` is the SQL of the request's clock (a bound parameter), what
    /// NOW() and TODAY() read.
    pub fn new(
        columns: &'a [ColumnDef],
        checked: &'a HashMap<String, Checked>,
        now: String,
        out: &mut SqlBuilder,
    ) -> Self {
        Self::reading(columns, checked, now, ROW, true, out)
    }

    /// Compiles every column as read from `record`; `use_slots` reads ready typed slots where
    /// columns have them (a writer of slots computes them from the record instead).
    pub fn reading(
        columns: &'a [ColumnDef],
        checked: &'a HashMap<String, Checked>,
        now: String,
        record: Record<'_>,
        use_slots: bool,
        out: &mut SqlBuilder,
    ) -> Self {
        let mut this = Columns {
            defs: columns.iter().map(|c| (c.name.as_str(), c)).collect(),
            raw: HashMap::new(),
            slots: columns
                .iter()
                .filter(|_| use_slots)
                .filter_map(|c| {
                    let slot = checked_slot(c.slot.as_deref()?)?;
                    let prefix = slot.chars().next()?;
                    (slot_prefix(c) == Some(prefix))
                        .then(|| (c.name.as_str(), (format!("r.{slot}"), prefix)))
                })
                .collect(),
            calc: HashMap::new(),
            calc_types: HashMap::new(),
            now,
        };
        for column in columns.iter().filter(|c| c.kind == "base") {
            let raw = raw_sql(column, record, out);
            this.raw.insert(column.name.as_str(), raw);
        }
        for column in dependency_order(columns, checked) {
            let formula = &checked[&column.name];
            this.calc_types
                .insert(column.name.as_str(), formula.result_type);
            // Built on a column that cannot be inlined: cannot be either.
            if formula
                .dependencies
                .iter()
                .any(|d| matches!(this.calc.get(d.as_str()), Some(None)))
            {
                this.calc.insert(column.name.as_str(), None);
                continue;
            }
            let parts = {
                let reader = FormulaColumns { columns: &this };
                formula::compile_parts(formula, &reader, out)
            };
            let fits =
                parts.value.len() + parts.failed.as_ref().map_or(0, String::len) <= MAX_INLINE_SQL;
            this.calc
                .insert(column.name.as_str(), fits.then_some(parts));
        }
        this
    }

    fn def(&self, name: &str) -> Result<&'a ColumnDef, PlanError> {
        self.defs
            .get(name)
            .copied()
            .ok_or_else(|| PlanError::UnknownColumn(name.to_owned()))
    }

    /// The filter kind of a column: its type's, a calculated column's by its result type.
    pub fn kind(&self, name: &str) -> Option<FieldKind> {
        let def = self.defs.get(name)?;
        Some(if def.kind == "calculated" {
            FieldKind::of_column_type(def.value_type().name())
        } else {
            FieldKind::of_column_type(&def.column_type)
        })
    }

    /// The typed value of a column (a calculated column's cell).
    fn value(&self, name: &str) -> Result<(String, ValueType), PlanError> {
        let def = self.def(name)?;
        let ty = def.value_type();
        if let Some(raw) = self.raw.get(name) {
            return Ok((formula::safe_cast_sql(ty, raw), ty));
        }
        match self.calc.get(name) {
            Some(Some(parts)) => Ok((parts.cell(), self.calc_types[name])),
            _ => Err(PlanError::TooComplex(name.to_owned())),
        }
    }

    /// How a filter reads the column: its slot when it has a ready one; an empty text as NULL.
    pub fn field(&self, name: &str) -> Result<FieldSql, PlanError> {
        let kind = self
            .kind(name)
            .ok_or_else(|| PlanError::UnknownColumn(name.to_owned()))?;
        if let Some((slot, prefix)) = self.slots.get(name) {
            return Ok(FieldSql {
                kind,
                sql: slot.clone(),
                lowered: *prefix == 't',
            });
        }
        if kind == FieldKind::List
            && let Some(raw) = self.raw.get(name)
        {
            return Ok(FieldSql {
                kind,
                sql: format!("panels_jsonb_list({raw})"),
                lowered: true,
            });
        }
        let (value, ty) = self.value(name)?;
        Ok(FieldSql {
            kind,
            sql: if ty == ValueType::Text {
                format!("nullif({value}, '')")
            } else {
                value
            },
            lowered: false,
        })
    }

    /// The sort key of a column and its SQL type: never NULL, an empty value replaced by a bound
    /// past every value on the side `nulls` asks for.
    pub fn sort_key(
        &self,
        name: &str,
        direction: Direction,
        nulls: Nulls,
    ) -> Result<(KeySql, KeyType), PlanError> {
        // Whether an empty value goes to the high end of the key's natural order.
        let high = matches!(
            (direction, nulls),
            (Direction::Asc, Nulls::Last) | (Direction::Desc, Nulls::First)
        );
        if let Some((slot, prefix)) = self.slots.get(name) {
            // Ascending puts `false` first: "is null" when empty values go last; descending puts
            // `true` first: "is null" when they go first.
            let flag = if high {
                format!("({slot} is null)")
            } else {
                format!("({slot} is not null)")
            };
            let (value, ty) = match prefix {
                't' => (format!("{slot} collate \"C\""), KeyType::Text),
                'd' => (slot.clone(), KeyType::Date),
                's' => (slot.clone(), KeyType::Instant),
                'b' => (format!("{slot}::int::float8"), KeyType::Number),
                _ => (slot.clone(), KeyType::Number),
            };
            return Ok((KeySql::Plain { value, flag }, ty));
        }
        let (value, ty) = self.value(name)?;
        let (sql, ty) = match ty {
            ValueType::Text => (
                format!(
                    "coalesce(nullif(panels_lower({value}), ''), {}) collate \"C\"",
                    if high { "chr(1114111)" } else { "''" }
                ),
                KeyType::Text,
            ),
            ValueType::Number => (
                format!(
                    "coalesce({value}, '{}Infinity'::float8)",
                    if high { "" } else { "-" }
                ),
                KeyType::Number,
            ),
            ValueType::Boolean => (
                format!(
                    "coalesce({value}::int::float8, {}::float8)",
                    if high { "2" } else { "-1" }
                ),
                KeyType::Number,
            ),
            ValueType::Date => (
                format!(
                    "coalesce({value}, '{}'::date)",
                    if high { "10000-01-01" } else { "0001-12-31 BC" }
                ),
                KeyType::Date,
            ),
            ValueType::DateTime => (
                format!(
                    "coalesce({value}, '{}'::timestamptz)",
                    if high {
                        "10000-01-01 00:00:00+00"
                    } else {
                        "0001-12-31 00:00:00+00 BC"
                    }
                ),
                KeyType::Instant,
            ),
        };
        Ok((KeySql::Bounded(sql), ty))
    }

    /// The text a search reads of a column in lower case (a multiple-choice column's choices
    /// joined), or `None` for a column that is not text.
    fn search_text(&self, name: &str) -> Result<Option<String>, PlanError> {
        match self.kind(name) {
            Some(FieldKind::Text) if let Some((slot, _)) = self.slots.get(name) => {
                Ok(Some(slot.clone()))
            }
            Some(FieldKind::Text | FieldKind::List) => {
                Ok(Some(format!("panels_lower({})", self.value(name)?.0)))
            }
            Some(_) => Ok(None),
            None => Err(PlanError::UnknownColumn(name.to_owned())),
        }
    }
}

/// The kinds of typed slots, by prefix, with how many `panel_row` has (`rows::slots`).
pub const SLOT_KINDS: &[(char, usize)] = &[('n', 16), ('t', 16), ('d', 8), ('s', 8), ('b', 8)];

/// The slot prefix of a column: a base column's by its type, a calculated column's by its
/// formula's result type; `None` for a multiple-choice column.
pub fn slot_prefix(column: &ColumnDef) -> Option<char> {
    let ty = if column.kind == "calculated" {
        column.value_type().name()
    } else {
        column.column_type.as_str()
    };
    Some(match ty {
        "number" => 'n',
        "date" => 'd',
        "datetime" => 's',
        "boolean" => 'b',
        "multi_select" => return None,
        _ => 't',
    })
}

/// A slot name read from the database, checked to be one of the table's columns before it is
/// written into SQL.
pub fn checked_slot(slot: &str) -> Option<&str> {
    let mut chars = slot.chars();
    let prefix = chars.next()?;
    let count = SLOT_KINDS.iter().find(|(p, _)| *p == prefix)?.1;
    let digits = chars.as_str();
    let n: usize = digits.parse().ok()?;
    (digits.len() <= 2 && !digits.starts_with('0') && (1..=count).contains(&n)).then_some(slot)
}

/// The formula type a slot holds.
pub fn slot_value_type(prefix: char) -> ValueType {
    match prefix {
        'n' => ValueType::Number,
        'd' => ValueType::Date,
        's' => ValueType::DateTime,
        'b' => ValueType::Boolean,
        _ => ValueType::Text,
    }
}

/// What fills a column's typed slot: its value's SQL over a record.
#[derive(Debug, Clone)]
pub struct Fill {
    pub column: String,
    pub prefix: char,
    pub sql: String,
}

/// The SQL that fills each column's slot from `record`, with its parameters bound in `out`: a
/// base column's value as its reader answers it, a calculated column's cell (when its formula
/// does not read the clock, which changes it without any write). A text is in lower case, "" as
/// NULL. A column that cannot be computed inside a query has none.
pub fn fills(
    columns: &[ColumnDef],
    checked: &HashMap<String, Checked>,
    record: Record<'_>,
    out: &mut SqlBuilder,
) -> Vec<Fill> {
    let cols = Columns::reading(columns, checked, "now()".to_owned(), record, false, out);
    let mut fills = Vec::new();
    for column in columns {
        let Some(prefix) = slot_prefix(column) else {
            continue;
        };
        let value = if let Some(raw) = cols.raw.get(column.name.as_str()) {
            formula::safe_cast_sql(slot_value_type(prefix), raw)
        } else {
            match cols.calc.get(column.name.as_str()) {
                Some(Some(parts))
                    if cols.calc_types.get(column.name.as_str())
                        == Some(&slot_value_type(prefix)) =>
                {
                    let cell = parts.cell();
                    if cell.contains("now()") {
                        continue;
                    }
                    cell
                }
                _ => continue,
            }
        };
        let sql = if prefix == 't' {
            format!("nullif(panels_lower({value}), '')")
        } else {
            value
        };
        fills.push(Fill {
            column: column.name.clone(),
            prefix,
            sql,
        });
    }
    fills
}

/// Checks every calculated column's formula against the panel as it is now; a formula that no
/// longer checks (a dependency was retyped) yields blank cells and a warning, never a failed page.
pub fn check_all(columns: &[ColumnDef]) -> (HashMap<String, Checked>, Vec<RowWarning>) {
    let schema: formula::Schema = columns
        .iter()
        .map(|c| (c.name.clone(), c.value_type()))
        .collect();
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

/// The filter kind of a column (a calculated column's by its formula's result type).
pub fn field_kind(column: &ColumnDef) -> FieldKind {
    if column.kind == "calculated" {
        FieldKind::of_column_type(column.value_type().name())
    } else {
        FieldKind::of_column_type(&column.column_type)
    }
}

/// What the query asks for, resolved against the panel.
pub struct Request<'r> {
    pub tenant: &'r TenantId,
    pub panel_id: PanelId,
    /// The cohort rule AND the filter tree.
    pub filter: &'r Resolved,
    pub sorts: &'r [SortSpec],
    /// Case-insensitive search over these (text) columns.
    pub search: Option<(&'r str, &'r [String])>,
    pub now: DateTime<Utc>,
}

/// A compiled request: the conditions and order, ready to be turned into the page, count,
/// estimate and export statements.
pub struct Plan {
    out: SqlBuilder,
    /// `r.tenant_id = $1 and r.panel_id = $2 and …` (no cursor).
    conditions: String,
    keys: Vec<(KeySql, KeyType, Direction)>,
    /// The direction of the row id, the last tie-breaker: the last key's.
    id_direction: Direction,
    /// Identifies what the query means (not the moment it runs): a cursor of another query, or
    /// of the same request before the view or a column changed, is stale.
    pub fingerprint: String,
    /// What an index could serve (`indexes.rs`): the expressions the conditions every row must
    /// pass test, as the conditions write them.
    pub index_fields: Vec<String>,
}

/// The expressions tested by the conditions every matching row passes (those not under an OR),
/// in the form their test writes them, where an index on the expression could serve the test.
fn indexable_fields(tree: &Resolved, fields: &HashMap<&str, FieldSql>, out: &mut Vec<String>) {
    use crate::filter::Test;
    match tree {
        Resolved::All(nodes) => {
            for node in nodes {
                indexable_fields(node, fields, out);
            }
        }
        Resolved::Any(_) => {}
        Resolved::Condition(c) => {
            let Some(f) = fields.get(c.field.as_str()) else {
                return;
            };
            let positive = matches!(
                c.test,
                Test::Equals(_) | Test::In(_) | Test::Compare(..) | Test::Between(..)
            );
            let expr = match f.kind {
                _ if !positive => return,
                FieldKind::List => return,
                FieldKind::Text => f.lower(),
                _ => f.sql.clone(),
            };
            if !out.contains(&expr) {
                out.push(expr);
            }
        }
    }
}

impl Plan {
    pub fn build(
        columns: &[ColumnDef],
        checked: &HashMap<String, Checked>,
        req: &Request<'_>,
    ) -> Result<Plan, PlanError> {
        let mut out = SqlBuilder::new(1);
        out.push_param(SqlParam::Text(req.tenant.as_str().to_owned()));
        out.push_param(SqlParam::Int(req.panel_id.0));
        let now = out.capture(|out| out.push_param(SqlParam::Instant(req.now)));
        let cols = Columns::new(columns, checked, now, &mut out);

        let mut conditions = "r.tenant_id = $1 and r.panel_id = $2".to_owned();
        let mut index_fields = Vec::new();
        if !matches!(req.filter, Resolved::All(nodes) if nodes.is_empty()) {
            let mut fields = HashMap::new();
            for name in req.filter.fields() {
                fields.insert(name, cols.field(name)?);
            }
            let field = |name: &str| fields.get(name).cloned();
            let mut compiled = Ok(());
            let tree = out.capture(|out| compiled = filter::sql::compile(req.filter, &field, out));
            compiled.map_err(PlanError::UnknownColumn)?;
            conditions.push_str(" and ");
            conditions.push_str(&tree);
            indexable_fields(req.filter, &fields, &mut index_fields);
        }
        if let Some((q, over)) = req.search {
            let mut texts = Vec::new();
            for name in over {
                if let Some(text) = cols.search_text(name)? {
                    texts.push(text);
                }
            }
            let needle = out.capture(|out| {
                out.push_sql("panels_lower(");
                out.push_param(SqlParam::Text(q.to_owned()));
                out.push_sql(")");
            });
            let tests: Vec<String> = texts
                .iter()
                .map(|t| format!("coalesce(strpos({t}, {needle}) > 0, false)"))
                .collect();
            conditions.push_str(" and ");
            if tests.is_empty() {
                conditions.push_str("false");
            } else {
                conditions.push_str(&format!("({})", tests.join(" or ")));
            }
        }
        let mut keys = Vec::with_capacity(req.sorts.len());
        for sort in req.sorts {
            let (sql, ty) = cols.sort_key(&sort.column, sort.direction, sort.nulls)?;
            keys.push((sql, ty, sort.direction));
        }
        let id_direction = req.sorts.last().map_or(Direction::Asc, |s| s.direction);

        let mut hasher = Sha256::new();
        hasher.update(b"rows v1\0");
        hasher.update(conditions.as_bytes());
        for (key, _, direction) in &keys {
            hasher.update(b"\0key\0");
            if let KeySql::Plain { flag, .. } = key {
                hasher.update(flag.as_bytes());
            }
            hasher.update(key.value().as_bytes());
            hasher.update(direction.as_str().as_bytes());
        }
        for (i, p) in out.params.iter().enumerate() {
            // The clock ($3) moves with every request; what it means does not.
            if i != 2 {
                hasher.update(format!("\0{p:?}").as_bytes());
            }
        }
        let fingerprint = hex::encode(&hasher.finalize()[..12]);
        Ok(Plan {
            out,
            conditions,
            keys,
            id_direction,
            fingerprint,
            index_fields,
        })
    }

    pub fn key_types(&self) -> Vec<KeyType> {
        self.keys.iter().map(|(_, ty, _)| *ty).collect()
    }

    /// The sort keys' SQL, each as the columns an index on it needs (a slot key: its flag and
    /// its value), `true` for descending.
    pub fn index_keys(&self) -> Vec<(Vec<String>, bool)> {
        self.keys
            .iter()
            .map(|(key, _, d)| {
                let columns = match key {
                    KeySql::Plain { value, flag } => vec![flag.clone(), value.clone()],
                    KeySql::Bounded(sql) => vec![sql.clone()],
                };
                (columns, *d == Direction::Desc)
            })
            .collect()
    }

    /// The values the plan's SQL binds, in placeholder order.
    pub fn params(&self) -> &[SqlParam] {
        &self.out.params
    }

    fn order_by(&self) -> String {
        if self.keys.is_empty() {
            // The order of the (tenant, panel, id) index, spelled out: with `r.id` alone the
            // planner may walk the primary key through other panels' rows instead.
            return "r.tenant_id, r.panel_id, r.id".to_owned();
        }
        let mut parts: Vec<String> = Vec::new();
        for (i, (key, _, d)) in self.keys.iter().enumerate() {
            if let KeySql::Plain { flag, .. } = key {
                parts.push(format!("{flag} {}", d.as_str()));
            }
            parts.push(format!("k{i} {}", d.as_str()));
        }
        parts.push(format!("r.id {}", self.id_direction.as_str()));
        parts.join(", ")
    }

    /// Whether the page is ordered by sort keys (then an index on them, when one exists, is the
    /// plan to prefer: see `Db::begin_read`'s callers).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    fn select_keys(&self) -> String {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, (key, _, _))| format!(", {} as k{i}", key.value()))
            .collect()
    }

    /// The keyset condition: rows after `after` in the query's order. One row comparison when
    /// every key runs one way (an index on the keys seeks straight to it); otherwise the
    /// expanded form, with a bound on the first key an index can seek by. A slot key compares
    /// its flag, then its value; where the cursor's value is empty only the flag (every row with
    /// the same flag is empty too).
    fn after_sql(&self, after: &After, out: &mut SqlBuilder) -> String {
        out.capture(|out| {
            struct Part {
                /// The key's columns and the cursor's values for them.
                left: Vec<String>,
                right: Vec<String>,
                /// The key equal to the cursor's.
                equal: String,
            }
            let mut parts = Vec::with_capacity(self.keys.len());
            for ((key, _, _), value) in self.keys.iter().zip(&after.keys) {
                let param = value.param().map(|p| out.capture(|out| out.push_param(p)));
                parts.push(match (key, param) {
                    (KeySql::Plain { value: v, flag }, Some(p)) => {
                        // The cursor's value is there: its flag is the one of a present value.
                        let lit = if flag.ends_with("is null)") {
                            "false"
                        } else {
                            "true"
                        };
                        Part {
                            left: vec![flag.clone(), v.clone()],
                            right: vec![lit.to_owned(), p.clone()],
                            equal: format!("{v} = {p}"),
                        }
                    }
                    (KeySql::Plain { value: v, flag }, None) => {
                        let lit = if flag.ends_with("is null)") {
                            "true"
                        } else {
                            "false"
                        };
                        let bare = v.trim_end_matches(" collate \"C\"");
                        Part {
                            left: vec![flag.clone()],
                            right: vec![lit.to_owned()],
                            equal: format!("{bare} is null"),
                        }
                    }
                    (KeySql::Bounded(sql), Some(p)) => Part {
                        left: vec![sql.clone()],
                        right: vec![p.clone()],
                        equal: format!("{sql} = {p}"),
                    },
                    // A bounded key is never empty; a cursor saying so is not ours.
                    (KeySql::Bounded(sql), None) => Part {
                        left: vec![sql.clone()],
                        right: vec!["null".to_owned()],
                        equal: "false".to_owned(),
                    },
                });
            }
            let id = out.capture(|out| out.push_param(SqlParam::Int(after.id)));
            let op = |d: Direction| if d == Direction::Asc { ">" } else { "<" };
            let tuple = |cols: &[String]| {
                if cols.len() == 1 {
                    cols[0].clone()
                } else {
                    format!("({})", cols.join(", "))
                }
            };
            let uniform = self.keys.iter().all(|(_, _, d)| *d == self.id_direction);
            if uniform {
                let mut left: Vec<String> = parts.iter().flat_map(|p| p.left.clone()).collect();
                let mut right: Vec<String> = parts.iter().flat_map(|p| p.right.clone()).collect();
                left.push("r.id".to_owned());
                right.push(id.clone());
                out.push_sql(&format!(
                    "({}) {} ({})",
                    left.join(", "),
                    op(self.id_direction),
                    right.join(", ")
                ));
                return;
            }
            let first_dir = self.keys[0].2;
            out.push_sql(&format!(
                "{} {}= {} and (",
                tuple(&parts[0].left),
                op(first_dir),
                tuple(&parts[0].right)
            ));
            let mut branches = Vec::new();
            for i in 0..=self.keys.len() {
                let mut terms: Vec<String> = (0..i).map(|j| parts[j].equal.clone()).collect();
                if i < self.keys.len() {
                    let d = self.keys[i].2;
                    terms.push(format!(
                        "{} {} {}",
                        tuple(&parts[i].left),
                        op(d),
                        tuple(&parts[i].right)
                    ));
                } else {
                    terms.push(format!("r.id {} {id}", op(self.id_direction)));
                }
                branches.push(format!("({})", terms.join(" and ")));
            }
            out.push_sql(&branches.join(" or "));
            out.push_sql(")");
        })
    }

    /// The statement with the parameters it reads (see [`SqlBuilder::compact`]).
    fn statement(out: &SqlBuilder, sql: &str) -> (String, PgArguments) {
        let (sql, params) = out.compact(sql);
        let mut args = PgArguments::default();
        for p in params {
            p.bind(&mut args);
        }
        (sql, args)
    }

    /// One page: `(id, record_key, data_source_id, data, k0, k1, …)`, `limit` rows after `after`.
    pub fn page(&self, after: Option<&After>, limit: i64) -> (String, PgArguments) {
        let mut out = self.out.clone();
        let mut conditions = self.conditions.clone();
        if let Some(after) = after {
            let keyset = self.after_sql(after, &mut out);
            conditions.push_str(" and ");
            conditions.push_str(&keyset);
        }
        let limit_param = out.capture(|out| out.push_param(SqlParam::Int(limit)));
        let sql = format!(
            "select r.id, r.record_key, r.data_source_id, r.data{} from panel_row r where {conditions} order by {} limit {limit_param}",
            self.select_keys(),
            self.order_by()
        );
        Self::statement(&out, &sql)
    }

    /// Every matching row in order (an export).
    pub fn all(&self) -> (String, PgArguments) {
        let sql = format!(
            "select r.id, r.record_key, r.data_source_id, r.data{} from panel_row r where {} order by {}",
            self.select_keys(),
            self.conditions,
            self.order_by()
        );
        Self::statement(&self.out, &sql)
    }

    /// The number of matching rows.
    pub fn count(&self) -> (String, PgArguments) {
        let sql = format!("select count(*) from panel_row r where {}", self.conditions);
        Self::statement(&self.out, &sql)
    }

    /// Moves the stored members of `scope` (`row_membership`: 0 the cohort, else a published
    /// view) to the rows that match now, in one statement. Answers `(entered, left, entered ids,
    /// left ids)`: the counts, and the first `cap` ids of each in ascending order.
    ///
    /// `changed`: only the rows changed since that moment (a sync's or a push's rows) are looked
    /// at, and with `deletions` also the members whose row is gone; otherwise every row (a rule
    /// changed, or time moved a relative date). A row deleted from the panel is among those that
    /// left.
    pub fn membership(
        &self,
        scope: i64,
        cap: i64,
        changed: Option<(DateTime<Utc>, bool)>,
    ) -> (String, PgArguments) {
        let member = format!("m.tenant_id = $1 and m.panel_id = $2 and m.scope = {scope}");
        let conditions = &self.conditions;
        let mut out = self.out.clone();
        let diff = match changed {
            // Every row: a full join, which the planner can only run as a hash or merge join
            // (anti-joins against a CTE, whose size it guesses as one row, made it choose nested
            // loops: 3 to 5 s for 10,000 rows entering at once).
            None => format!(
                "select coalesce(n.id, m.row_id) as id, n.id is not null as inside
                   from (select r.id from panel_row r where {conditions}) n
                   full join (select m.row_id from row_membership m where {member}) m
                     on m.row_id = n.id
                  where n.id is null or m.row_id is null"
            ),
            // The changed rows, each tested and looked up by key.
            Some((since, deletions)) => {
                let since = out.capture(|out| out.push_param(SqlParam::Instant(since)));
                let gone = if deletions {
                    format!(
                        " union all
                         select m.row_id, false from row_membership m
                          where {member}
                            and not exists (select 1 from panel_row r
                                             where r.tenant_id = $1 and r.id = m.row_id)"
                    )
                } else {
                    String::new()
                };
                format!(
                    "select c.id, c.inside from (
                        select r.id, coalesce(({conditions}), false) as inside from panel_row r
                         where r.tenant_id = $1 and r.panel_id = $2 and r.updated_at >= {since}) c
                      where c.inside <> exists (select 1 from row_membership m
                                                 where {member} and m.row_id = c.id){gone}"
                )
            }
        };
        let sql = format!(
            "with diff as materialized ({diff}),
             entered as (
                insert into row_membership (tenant_id, panel_id, scope, row_id)
                select $1, $2, {scope}, d.id from diff d where d.inside
                on conflict do nothing
                returning row_id),
             gone as (
                delete from row_membership m
                 where {member}
                   and m.row_id = any(array(select d.id from diff d where not d.inside))
                returning m.row_id)
             select (select count(*) from entered), (select count(*) from gone),
                    array(select row_id from entered order by row_id limit {cap}),
                    array(select row_id from gone order by row_id limit {cap})"
        );
        Self::statement(&out, &sql)
    }

    /// The planner's estimate of the number of matching rows.
    pub fn estimate(&self) -> (String, PgArguments) {
        let sql = format!(
            "explain (format json) select 1 from panel_row r where {}",
            self.conditions
        );
        Self::statement(&self.out, &sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{FilterGroup, Resolver};
    use crate::ids::{ColumnId, DataSourceId};
    use serde_json::json;

    fn column(id: i64, name: &str, kind: &str, ty: &str, formula: Option<&str>) -> ColumnDef {
        ColumnDef {
            id: ColumnId(id),
            name: name.into(),
            kind: kind.into(),
            column_type: ty.into(),
            source_field: (kind == "base").then(|| name.to_owned()),
            data_source_id: (kind == "base").then_some(DataSourceId(7)),
            formula: formula.map(str::to_owned),
            result_type: formula.map(|_| ty.to_owned()),
            slot: None,
        }
    }

    fn panel() -> (Vec<ColumnDef>, HashMap<String, Checked>) {
        let columns = vec![
            column(1, "name", "base", "text", None),
            column(2, "age", "base", "number", None),
            column(3, "tags", "base", "multi_select", None),
            column(4, "double", "calculated", "number", Some("age * 2")),
            column(5, "ratio", "calculated", "number", Some("100 / double")),
        ];
        let schema = columns
            .iter()
            .map(|c| (c.name.clone(), c.value_type()))
            .collect();
        let checked = columns
            .iter()
            .filter_map(|c| {
                let f = c.formula.as_deref()?;
                Some((c.name.clone(), formula::analyze(f, &schema).expect("valid")))
            })
            .collect();
        (columns, checked)
    }

    fn plan(filter: serde_json::Value, sorts: &[(&str, Direction)]) -> Plan {
        let (columns, checked) = panel();
        let tree: FilterGroup = serde_json::from_value(filter).expect("tree");
        let cols_kind = |name: &str| {
            let mut out = SqlBuilder::new(1);
            Columns::new(&columns, &checked, "now()".into(), &mut out).kind(name)
        };
        let resolved = Resolver {
            now: Utc::now(),
            tz: chrono_tz::Tz::UTC,
            current_user: None,
        }
        .resolve(&tree, "filter", &cols_kind)
        .expect("valid");
        let sorts: Vec<SortSpec> = sorts
            .iter()
            .map(|(c, d)| SortSpec {
                column: (*c).into(),
                direction: *d,
                nulls: Nulls::Last,
            })
            .collect();
        let tenant = TenantId::parse("acme").expect("slug");
        Plan::build(
            &columns,
            &checked,
            &Request {
                tenant: &tenant,
                panel_id: PanelId(9),
                filter: &resolved,
                sorts: &sorts,
                search: None,
                now: Utc::now(),
            },
        )
        .expect("plans")
    }

    #[test]
    fn a_calculated_column_is_filtered_and_sorted_on_its_cell() {
        let p = plan(
            json!({"conditions": [{"field": "ratio", "operator": "gt", "value": 1}]}),
            &[("ratio", Direction::Desc)],
        );
        let (sql, _) = p.page(None, 51);
        // The failure of 100 / double (double = 0) is the cell's NULL: the key sorts it last.
        assert!(sql.contains("panels_div("), "{sql}");
        assert!(sql.contains("'-Infinity'::float8"), "{sql}");
        assert!(sql.contains("order by k0 desc, r.id desc limit $"), "{sql}");
    }

    #[test]
    fn the_keyset_is_one_row_comparison_when_keys_run_one_way() {
        let p = plan(
            json!({"conditions": []}),
            &[("age", Direction::Desc), ("name", Direction::Desc)],
        );
        let after = After {
            keys: vec![KeyValue::Number(30.0), KeyValue::Text("ada".into())],
            id: 17,
        };
        let (sql, _) = p.page(Some(&after), 11);
        assert!(sql.contains(", r.id) < ($"), "{sql}");
        let mixed = plan(
            json!({"conditions": []}),
            &[("age", Direction::Desc), ("name", Direction::Asc)],
        );
        let (sql, _) = mixed.page(Some(&after), 11);
        assert!(sql.contains(" <= $") && sql.contains(" or "), "{sql}");
    }

    #[test]
    fn the_fingerprint_follows_the_meaning_not_the_clock() {
        let a = plan(
            json!({"conditions": [{"field": "age", "operator": "gt", "value": 1}]}),
            &[],
        );
        let b = plan(
            json!({"conditions": [{"field": "age", "operator": "gt", "value": 1}]}),
            &[],
        );
        let c = plan(
            json!({"conditions": [{"field": "age", "operator": "gt", "value": 2}]}),
            &[],
        );
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }
}
