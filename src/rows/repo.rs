//! SQL of panel rows: one query per page that projects every base column (read from the
//! record's JSONB and coerced to the column's type without ever raising) and every calculated
//! column (its formula compiled to SQL), keyset-paginated on the row id.

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
    panel_id: i64,
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
    panel_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String, i64, Value)>> {
    sqlx::query_as(
        "select id, record_key, data_source_id, data from panel_row where tenant_id = $1 and panel_id = $2 order by id limit $3",
    )
    .bind(tenant.as_str())
    .bind(panel_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Reads base columns from `r.data`, and calculated columns by inlining their compiled formulas.
struct Projection<'a> {
    by_name: HashMap<&'a str, &'a ColumnDef>,
    checked: &'a HashMap<String, Checked>,
}

impl Projection<'_> {
    /// The raw JSONB of a base column (`r.data -> 'field'` or `r.data #> path`), limited to rows of
    /// the column's own data source when it names one.
    fn raw(&self, column: &ColumnDef, out: &mut SqlBuilder) {
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
        match self.by_name.get(name) {
            Some(column) if column.kind == "base" => {
                out.push_sql(formula::jsonb_reader(ty));
                out.push_sql("(");
                self.raw(column, out);
                out.push_sql(")");
            }
            Some(column) => match self.checked.get(&column.name) {
                // Acyclic by construction (cycles are refused at write time).
                Some(checked) if checked.result_type == ty => {
                    out.push_sql("(");
                    formula::compile_sql(checked, self, out);
                    out.push_sql(")");
                }
                _ => out.push_sql(&format!("null::{}", ty.sql_type())),
            },
            None => out.push_sql(&format!("null::{}", ty.sql_type())),
        }
    }
}

/// The page query and its arguments: `(id, record_key, data_source_id, values jsonb, bad int[])`,
/// where `bad[i]` is 1 when base column `i` had a value that did not fit its type.
pub fn page_query(
    tenant: &TenantId,
    panel_id: i64,
    page: Page,
    columns: &[ColumnDef],
    checked: &HashMap<String, Checked>,
) -> (String, PgArguments) {
    let projection = Projection {
        by_name: columns.iter().map(|c| (c.name.as_str(), c)).collect(),
        checked,
    };
    let mut out = SqlBuilder::new(5);
    // jsonb_build_object takes at most 100 arguments: 40 columns per call, joined with ||.
    let mut values = Vec::new();
    for chunk in columns.chunks(40) {
        let mut part = String::from("jsonb_build_object(");
        let mut first = true;
        for column in chunk {
            if !first {
                part.push_str(", ");
            }
            first = false;
            let mut piece = SqlBuilder::new(out.next_placeholder());
            piece.push_param(SqlParam::Text(column.name.clone()));
            piece.push_sql(", ");
            let ty = column.value_type();
            if column.kind == "calculated" && !checked.contains_key(&column.name) {
                piece.push_sql(&format!("null::{}", ty.sql_type()));
            } else {
                projection.column_sql(&column.name, ty, &mut piece);
            }
            part.push_str(&piece.sql);
            out.params.extend(piece.params);
        }
        part.push(')');
        values.push(part);
    }
    let values = if values.is_empty() {
        "'{}'::jsonb".to_owned()
    } else {
        values.join(" || ")
    };

    let mut bad = Vec::new();
    for column in columns.iter().filter(|c| c.kind == "base") {
        let mut piece = SqlBuilder::new(out.next_placeholder());
        let ty = column.value_type();
        piece.push_sql("(case when jsonb_typeof(");
        projection.raw(column, &mut piece);
        piece.push_sql(") <> 'null' and ");
        piece.push_sql(formula::jsonb_reader(ty));
        piece.push_sql("(");
        projection.raw(column, &mut piece);
        piece.push_sql(") is null then 1 else 0 end)");
        bad.push(piece.sql);
        out.params.extend(piece.params);
    }
    let bad = if bad.is_empty() {
        "array[]::int[]".to_owned()
    } else {
        format!("array[{}]", bad.join(", "))
    };

    let sql = format!(
        "select r.id, r.record_key, r.data_source_id, {values} as values, {bad} as bad
         from panel_row r where r.tenant_id = $1 and r.panel_id = $2 and r.id > $3 order by r.id limit $4"
    );
    let mut args = PgArguments::default();
    // Encoding these plain values into arguments cannot fail.
    let _ = args.add(tenant.as_str().to_owned());
    let _ = args.add(panel_id);
    let _ = args.add(page.after);
    let _ = args.add(page.limit + 1);
    for param in out.params {
        let _ = match param {
            SqlParam::Text(t) => args.add(t),
            SqlParam::Number(n) => args.add(n),
            SqlParam::Bool(b) => args.add(b),
        };
    }
    (sql, args)
}

#[derive(Debug, sqlx::FromRow)]
pub struct PageRow {
    pub id: i64,
    pub record_key: String,
    pub data_source_id: i64,
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
