//! SQL of panel rows: one query per page that projects every base column (read from the
//! record's JSONB and coerced to the column's type without ever raising) and every calculated
//! column (its formula compiled to SQL, computed once per row), keyset-paginated on the row id.

use crate::ids::{DataSourceId, PanelId};
use std::collections::HashMap;

use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection};

use super::model::ColumnDef;
use crate::auth::TenantId;
use crate::formula::{self, Checked, ColumnSql, SqlBuilder, SqlParam, ValueType};
use crate::page::Page;

pub async fn columns(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
) -> sqlx::Result<Vec<ColumnDef>> {
    sqlx::query_as(
        "select id, name, kind, type, source_field, data_source_id, formula, result_type from panel_column
         where tenant_id = $1 and panel_id = $2 order by display_order, id",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .fetch_all(conn)
    .await
}

/// A page of raw records (for in-process evaluation of sample rows).
pub async fn sample(
    conn: &mut PgConnection,
    tenant: &TenantId,
    panel_id: PanelId,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String, DataSourceId, Value)>> {
    sqlx::query_as(
        "select id, record_key, data_source_id, data from panel_row where tenant_id = $1 and panel_id = $2 order by id limit $3",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How the page query reads columns. Every value is computed once per row and then referred to by
/// name: the base columns in two laterals (`j`: each field's raw JSONB, `b`: each read as its
/// type), and each calculated column in a lateral of its own (`c0`, `c1`, …, in dependency order),
/// whose formula refers to the base and calculated columns it uses by their lateral's name. So the
/// SQL grows with the sum of the formulas, however they refer to each other (a chain of
/// `c2 = c1 & c1` stays linear), and PostgreSQL computes each cell once. `offset 0` keeps the
/// planner from folding a lateral into its users, which would copy the expression into each.
struct Projection<'a> {
    base: HashMap<&'a str, usize>,
    calculated: HashMap<&'a str, (usize, ValueType)>,
}

impl Projection<'_> {
    /// The raw JSONB of a base column (`r.data -> 'field'` or `r.data #> path`), limited to rows of
    /// the column's own data source when it names one.
    fn raw(column: &ColumnDef, out: &mut SqlBuilder) {
        if let Some(ds) = column.data_source_id {
            // An id from our own table, not user text.
            out.push_sql(&format!("(case when r.data_source_id = {ds} then "));
        } else {
            out.push_sql("(");
        }
        let path = column.path();
        if path.len() == 1 {
            out.push_sql("r.data -> ");
            out.push_param(SqlParam::Text(path[0].clone()));
        } else {
            // Path segments joined by the unit separator, split again in SQL: one text parameter.
            out.push_sql("r.data #> string_to_array(");
            out.push_param(SqlParam::Text(path.join("\u{1f}")));
            out.push_sql(", chr(31))");
        }
        if column.data_source_id.is_some() {
            out.push_sql(" end)");
        } else {
            out.push_sql(")");
        }
    }
}

impl ColumnSql for Projection<'_> {
    fn column_sql(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        if let Some(&i) = self.base.get(name) {
            if ty == ValueType::Text {
                // A text too long for a formula reads as blank (the evaluator fails the cell).
                out.push_sql(&format!(
                    "(case when octet_length(b.b{i}) <= {} then b.b{i} end)",
                    formula::MAX_TEXT_BYTES
                ));
            } else {
                out.push_sql(&format!("b.b{i}"));
            }
            return;
        }
        match self.calculated.get(name) {
            Some(&(i, own)) if own == ty => out.push_sql(&format!("c{i}.v")),
            _ => out.push_sql(&format!("null::{}", ty.sql_type())),
        }
    }

    fn column_can_fail(&self, name: &str, ty: ValueType) -> bool {
        ty == ValueType::Text || self.calculated.contains_key(name)
    }

    fn column_failed(&self, name: &str, ty: ValueType, out: &mut SqlBuilder) {
        if let Some(&i) = self.base.get(name) {
            out.push_sql(&format!(
                "coalesce(octet_length(b.b{i}) > {}, false)",
                formula::MAX_TEXT_BYTES
            ));
            return;
        }
        match self.calculated.get(name) {
            Some(&(i, own)) if own == ty => out.push_sql(&format!("c{i}.f")),
            // A column retyped since the formula was checked cannot be read as this type.
            _ => out.push_sql("true"),
        }
    }
}

/// The calculated columns that can be computed, dependencies first: a column whose formula no
/// longer checks, or that sits on a cycle (refused when written, so only through a stale
/// database), is left out and reads as null.
fn dependency_order<'a>(
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

/// The page query and its arguments: `(id, record_key, data_source_id, values jsonb, bad int[])`,
/// where `bad[i]` is 1 when base column `i` had a value that did not fit its type.
pub fn page_query(
    tenant: &TenantId,
    panel_id: PanelId,
    page: Page,
    columns: &[ColumnDef],
    checked: &HashMap<String, Checked>,
) -> (String, PgArguments) {
    let base: Vec<&ColumnDef> = columns.iter().filter(|c| c.kind == "base").collect();
    let order = dependency_order(columns, checked);
    let projection = Projection {
        base: base
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect(),
        calculated: order
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), (i, checked[&c.name].result_type)))
            .collect(),
    };
    let mut out = SqlBuilder::new(5);
    let mut from = String::from("panel_row r");
    if !base.is_empty() {
        let mut raw = Vec::new();
        let mut typed = Vec::new();
        for (i, column) in base.iter().enumerate() {
            let mut piece = SqlBuilder::new(out.next_placeholder());
            Projection::raw(column, &mut piece);
            raw.push(format!("{} as j{i}", piece.sql));
            out.params.extend(piece.params);
            typed.push(format!(
                "{}(j.j{i}) as b{i}",
                formula::jsonb_reader(column.value_type())
            ));
        }
        from.push_str(&format!(
            " cross join lateral (select {} offset 0) j cross join lateral (select {} offset 0) b",
            raw.join(", "),
            typed.join(", ")
        ));
    }
    for (i, column) in order.iter().enumerate() {
        let mut piece = SqlBuilder::new(out.next_placeholder());
        let parts = formula::compile_parts(&checked[&column.name], &projection, &mut piece);
        let failed = parts.failed.as_deref().unwrap_or("false");
        from.push_str(&format!(
            " cross join lateral (select {} as v, {failed} as f offset 0) c{i}",
            parts.cell()
        ));
        out.params.extend(piece.params);
    }

    // jsonb_build_object takes at most 100 arguments: 40 columns per call, joined with ||.
    let mut values = Vec::new();
    for chunk in columns.chunks(40) {
        let mut parts = Vec::new();
        for column in chunk {
            let mut piece = SqlBuilder::new(out.next_placeholder());
            piece.push_param(SqlParam::Text(column.name.clone()));
            piece.push_sql(", ");
            let ty = column.value_type();
            match (
                column.kind.as_str(),
                projection.base.get(column.name.as_str()),
            ) {
                ("base", Some(i)) => piece.push_sql(&format!("b.b{i}")),
                _ => projection.column_sql(&column.name, ty, &mut piece),
            }
            parts.push(piece.sql);
            out.params.extend(piece.params);
        }
        values.push(format!("jsonb_build_object({})", parts.join(", ")));
    }
    let values = if values.is_empty() {
        "'{}'::jsonb".to_owned()
    } else {
        values.join(" || ")
    };
    let bad = if base.is_empty() {
        "array[]::int[]".to_owned()
    } else {
        let flags: Vec<String> = (0..base.len())
            .map(|i| format!("(case when jsonb_typeof(j.j{i}) <> 'null' and b.b{i} is null then 1 else 0 end)"))
            .collect();
        format!("array[{}]", flags.join(", "))
    };

    let sql = format!(
        "select r.id, r.record_key, r.data_source_id, {values} as values, {bad} as bad
         from {from} where r.tenant_id = $1 and r.panel_id = $2 and r.id > $3 order by r.id limit $4"
    );
    let mut args = PgArguments::default();
    // Encoding these plain values into arguments cannot fail.
    let _ = args.add(tenant.as_str().to_owned());
    let _ = args.add(panel_id);
    let _ = args.add(page.after);
    let _ = args.add(page.limit + 1);
    for param in out.params {
        param.bind(&mut args);
    }
    (sql, args)
}

#[derive(Debug, sqlx::FromRow)]
pub struct PageRow {
    pub id: i64,
    pub record_key: String,
    pub data_source_id: DataSourceId,
    pub values: Value,
    pub bad: Vec<i32>,
}

pub async fn fetch_page(
    conn: &mut PgConnection,
    sql: String,
    args: PgArguments,
) -> sqlx::Result<Vec<PageRow>> {
    sqlx::query_as_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(conn)
        .await
}
