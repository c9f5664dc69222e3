//! Differential test of the formula engine: random well-typed formulas over random rows are
//! computed both by the compiled SQL in PostgreSQL and by the in-process evaluator, and the
//! two values must agree (floats to 1e-12 relative, everything else exactly). One round
//! trip per case; `now()` is read in the same statement and handed to the evaluator.

use chrono::{DateTime, NaiveDate, Utc};
use panels::formula::{
    Checked, JsonbColumns, Row, Schema, SqlBuilder, SqlParam, Value, ValueType, analyze,
    compile_sql, evaluate,
};
use proptest::collection::vec;
use proptest::prelude::any;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_sql_and_evaluator_agree() {
    let pool = crate::helpers::migrated_pool().await;
    formula_differential(pool).await;
}

const COLUMNS: &[(&str, ValueType)] = &[
    ("n1", ValueType::Number),
    ("n2", ValueType::Number),
    ("t1", ValueType::Text),
    ("t2", ValueType::Text),
    ("b1", ValueType::Boolean),
    ("d1", ValueType::Date),
    ("Due date", ValueType::Date),
    ("dt1", ValueType::DateTime),
];

/// Fixed formulas covering every function once, checked before the random ones.
const FIXED: &[&str] = &[
    "IF(n1 > 1, 'big', 'small')",
    "SWITCH(t1, 'a', 1, 'Hello World', 2, 3)",
    "AND(b1, n1 > 0) & OR(b1, FALSE) & NOT(b1) & XOR(b1, TRUE, n2 < 0)",
    "ISBLANK(t1) & COALESCE(t2, t1, 'none') & TEXT(BLANK())",
    "CONCAT(t1, n1, b1, d1, dt1) & UPPER(t1) & LOWER(t2) & '|' & TRIM(t1) & '|'",
    "LEN(t1) + FIND('l', t1) + LEN(LEFT(t1, 2) & RIGHT(t1, 3) & MID(t1, 2, 3))",
    "SUBSTITUTE(t1, 'l', 'L') & REPLACE(t1, 2, 3, 'xy') & REPT(t2, 3)",
    "CONTAINS(t1, 'o') & STARTS_WITH(t1, 'He') & ENDS_WITH(t1, 'd') & REGEX_MATCH(t1, '^[A-Z]\\w+ \\S+$')",
    "ROUND(n1, 2) + ROUNDUP(n1, 1) + ROUNDDOWN(n2, -1) + FLOOR(n1) + CEILING(n2) + INT(n1)",
    "ABS(n1) + SIGN(n2) + MIN(n1, n2, 3) + MAX(n1, BLANK()) + SUM(n1, n2, 1) + AVERAGE(n1, n2, BLANK())",
    "POWER(n1, 2) + SQRT(n2) + MOD(n1, 3) + VALUE(t1) + LOG(n1) + LOG(n2, 2) + LN(n1) + EXP(n2 / 100)",
    "YEAR(d1) + MONTH(dt1) + DAY({Due date}) + WEEKDAY(d1) + HOUR(dt1) + MINUTE(dt1) + SECOND(dt1)",
    "DATEDIFF(TODAY(), d1) + DATEDIFF(NOW(), dt1, 'hours') + DATEDIFF(dt1, d1, 'months') + DATEDIFF(d1, {Due date}, 'years')",
    "DATEADD(d1, n1, 'months')",
    "DATEADD(dt1, n2, 'minutes')",
    "DATEADD(d1, 3, 'hours')",
    "DATE(2024, n1, 29)",
    "DATETIME_FORMAT(dt1, 'dddd D MMMM YYYY [at] h:mm A') & DATETIME_FORMAT(d1)",
    "DATETIME_PARSE(t1)",
    "IS_BEFORE(d1, dt1) & IS_AFTER({Due date}, TODAY()) & (d1 = dt1) & (t1 < t2) & (b1 >= FALSE)",
    "1 / n1 + n2 * 1e300 - -n1",
    // A failed sub-expression blanks the whole cell; a blank input or a branch not taken does not.
    "ROUND(n1 / 0, 2)",
    "SUM(n1 / 0, 1)",
    "IF(n1 / 0 > 1, 1, 2)",
    "CONCAT(n1 / 0, 'x')",
    "COALESCE(VALUE(t1), 0) & IF(n2 = 0, 'z', TEXT(1 / n2))",
    "AND(b1, n1 / n2 > 1) & OR(b1, LN(n1) > 0) & NOT(SQRT(n2) > 1)",
    "SWITCH(t1, 'Hello World', SQRT(n1), 'lol', LN(n2), 0)",
    "UPPER(t1) & DATEADD(d1, n1 * 1e300, 'days')",
    "ISBLANK(DATETIME_PARSE(t1)) & COALESCE(t2, DATETIME_FORMAT(DATETIME_PARSE(t1)))",
    "AVERAGE(n1 * 1e300, n2 * 1e300, n1) + MIN(n1 / n2, 3)",
    "IF(ISBLANK(n2), 0, n1 / n2) + SUM(n1, BLANK())",
    "REPT(t1, n1 * 1000) & SUBSTITUTE(t1, 'l', REPT('x', 5000))",
];

pub async fn formula_differential(pool: PgPool) {
    let schema: Schema = COLUMNS.iter().map(|(n, t)| (n.to_string(), *t)).collect();
    for (i, source) in FIXED.iter().enumerate() {
        for r in 0..ROW_VARIANTS {
            let tape: Vec<u32> = (0..COLUMNS.len() as u32)
                .map(|c| r + c * 7 + i as u32)
                .collect();
            if let Err(e) = check_case(&pool, &schema, source, &tape).await {
                panic!("{e}");
            }
        }
    }
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        // FORMULA_DIFF_CASES raises the count for a local soak run; CI keeps 256.
        let cases = std::env::var("FORMULA_DIFF_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (vec(any::<u32>(), 0..64), vec(any::<u32>(), COLUMNS.len()));
        runner
            .run(&strategy, |(formula_tape, row_tape)| {
                let source = Gen::new(&formula_tape).formula();
                handle
                    .block_on(check_case(&pool, &schema, &source, &row_tape))
                    .map_err(TestCaseError::fail)
            })
            .map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("test task failed: {e}"),
    }
}

struct JsonRow<'a> {
    json: &'a serde_json::Value,
}

impl Row for JsonRow<'_> {
    fn get(&self, name: &str) -> Value {
        let ty = COLUMNS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(ValueType::Text, |(_, t)| *t);
        Value::from_json(&self.json[name], ty)
    }
}

const ROW_VARIANTS: u32 = 4;

fn row_json(tape: &[u32]) -> serde_json::Value {
    let numbers = [
        json!(null),
        json!(0),
        json!(1),
        json!(-1),
        json!(2.5),
        json!(-2.5),
        json!(0.1),
        json!(123.456),
        json!(1e15),
        json!(1e-5),
        json!(9e299),
        json!(2.71),
        json!("12.5"),
        json!("abc"),
        json!(-7),
        json!(1e10),
        json!(true),
        json!(" -3e2 "),
    ];
    let texts = [
        json!(null),
        json!(""),
        json!("Hello World"),
        json!(" padded  "),
        json!("12.5"),
        json!("2024-02-29"),
        json!("straße"),
        json!("ÉΣΑΣ ǅ"),
        json!("a-b-c"),
        json!("2024-01-02T03:04:05.5+01:00"),
        json!("lol"),
        json!(42),
        json!(["x", "y"]),
        json!("1e400"),
        json!("line\nbreak"),
    ];
    let booleans = [
        json!(null),
        json!(true),
        json!(false),
        json!("TRUE"),
        json!("yes"),
        json!(1),
    ];
    let dates = [
        json!(null),
        json!("2024-02-29"),
        json!("1999-12-31"),
        json!("2023-02-30"),
        json!("0001-01-01"),
        json!("9999-12-31"),
        json!("2024-01-01T23:30:00-05:00"),
        json!("2024-03-31"),
        json!(20240101),
        json!("2020-01-31"),
    ];
    let datetimes = [
        json!(null),
        json!("2024-01-02T03:04:05.123456Z"),
        json!("2024-06-30T23:59:59+02:00"),
        json!("2024-03-10 12:00"),
        json!("2024-01-01"),
        json!("bad"),
        json!("9999-12-31T23:59:59Z"),
        json!("0001-01-01T00:00:00Z"),
        json!("2024-02-29T12:30:45.5Z"),
    ];
    let mut obj = serde_json::Map::new();
    for (i, (name, ty)) in COLUMNS.iter().enumerate() {
        let choice = tape.get(i).copied().unwrap_or(0) as usize;
        let options: &[serde_json::Value] = match ty {
            ValueType::Number => &numbers,
            ValueType::Text => &texts,
            ValueType::Boolean => &booleans,
            ValueType::Date => &dates,
            ValueType::DateTime => &datetimes,
        };
        obj.insert(name.to_string(), options[choice % options.len()].clone());
    }
    serde_json::Value::Object(obj)
}

async fn check_case(
    pool: &PgPool,
    schema: &Schema,
    source: &str,
    row_tape: &[u32],
) -> Result<(), String> {
    let checked = analyze(source, schema).map_err(|e| format!("{source}: {e}"))?;
    let row = row_json(row_tape);
    let mut builder = SqlBuilder::new(2);
    builder.push_sql("select now(), ");
    compile_sql(&checked, &JsonbColumns { row: "$1::jsonb" }, &mut builder);
    let sql = builder.sql.clone();
    let mut query = sqlx::query(AssertSqlSafe(sql.clone())).bind(sqlx::types::Json(&row));
    for p in &builder.params {
        query = match p {
            SqlParam::Text(s) => query.bind(s.clone()),
            SqlParam::Number(n) => query.bind(*n),
            SqlParam::Bool(b) => query.bind(*b),
            SqlParam::Date(d) => query.bind(*d),
            SqlParam::Instant(t) => query.bind(*t),
            SqlParam::Int(n) => query.bind(*n),
        };
    }
    let context = || format!("formula: {source}\nrow: {row}\nsql: {sql}");
    let pg_row = query
        .fetch_one(pool)
        .await
        .map_err(|e| format!("database error: {e}\n{}", context()))?;
    let from_db = db_value(&pg_row, &checked).map_err(|e| format!("{e}\n{}", context()))?;
    let now: DateTime<Utc> = sqlx::Row::try_get(&pg_row, 0).map_err(|e| e.to_string())?;
    let in_process = evaluate(&checked, &JsonRow { json: &row }, now);
    if !same(&from_db, &in_process) {
        return Err(format!(
            "values differ\n{}\npostgres:   {from_db:?}\nin process: {in_process:?}",
            context()
        ));
    }
    Ok(())
}

fn db_value(row: &sqlx::postgres::PgRow, checked: &Checked) -> Result<Value, String> {
    use sqlx::Row as _;
    let err = |e: sqlx::Error| e.to_string();
    Ok(match checked.result_type {
        ValueType::Text => row
            .try_get::<Option<String>, _>(1)
            .map_err(err)?
            .map(Value::Text),
        ValueType::Number => row
            .try_get::<Option<f64>, _>(1)
            .map_err(err)?
            .map(Value::Number),
        ValueType::Boolean => row
            .try_get::<Option<bool>, _>(1)
            .map_err(err)?
            .map(Value::Boolean),
        ValueType::Date => row
            .try_get::<Option<NaiveDate>, _>(1)
            .map_err(err)?
            .map(Value::Date),
        ValueType::DateTime => row
            .try_get::<Option<DateTime<Utc>>, _>(1)
            .map_err(err)?
            .map(Value::DateTime),
    }
    .unwrap_or(Value::Blank))
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// Generates a well-typed formula from a tape of choices; an exhausted tape yields zeros,
/// which pick the simplest option, so proptest's shrinking of the tape simplifies formulas.
struct Gen<'a> {
    tape: &'a [u32],
    pos: usize,
}

const NUMBER_LITERALS: &[&str] = &[
    "0",
    "1",
    "2.5",
    "-1",
    "0.1",
    "3",
    "100",
    "1e10",
    "-7.25",
    "1e300",
    "0.5",
    "123456.789",
];
const TEXT_LITERALS: &[&str] = &[
    "''",
    "'a'",
    "'Hello World'",
    "' x '",
    "'12.5'",
    "'2024-02-29'",
    "'ß'",
    "\"ÉΣ\"",
    "'a-b-c'",
    "'2024-01-02T03:04:05Z'",
    "'l'",
    "'\\n'",
];
const PATTERNS: &[&str] = &[
    "'^H'",
    "'o.l'",
    "'[0-9]+'",
    "'^\\w+$'",
    "'(?:ab|l)+'",
    "'\\s'",
    "'^$'",
];
const FORMATS: &[&str] = &[
    "'YYYY-MM-DD'",
    "'D MMM YY, H:mm:ss'",
    "'dddd hh a'",
    "'[Week] M/D'",
];
const UNITS: &[&str] = &[
    "'days'",
    "'weeks'",
    "'months'",
    "'years'",
    "'hours'",
    "'minutes'",
    "'seconds'",
];

impl<'a> Gen<'a> {
    fn new(tape: &'a [u32]) -> Self {
        Gen { tape, pos: 0 }
    }

    fn pick(&mut self, n: usize) -> usize {
        let v = self.tape.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v as usize % n
    }

    fn one<'s>(&mut self, options: &[&'s str]) -> &'s str {
        options[self.pick(options.len())]
    }

    fn formula(&mut self) -> String {
        let ty = [
            ValueType::Number,
            ValueType::Text,
            ValueType::Boolean,
            ValueType::Date,
            ValueType::DateTime,
        ][self.pick(5)];
        self.expr(ty, 4)
    }

    fn expr(&mut self, ty: ValueType, depth: u32) -> String {
        if depth == 0 || self.pick(4) == 0 {
            return self.leaf(ty);
        }
        let d = depth - 1;
        match ty {
            ValueType::Number => self.number(d),
            ValueType::Text => self.text(d),
            ValueType::Boolean => self.boolean(d),
            ValueType::Date => match self.pick(3) {
                0 => format!(
                    "DATEADD({}, {}, {})",
                    self.expr(ValueType::Date, d),
                    self.expr(ValueType::Number, d),
                    self.one(&UNITS[..4])
                ),
                1 => format!(
                    "IF({}, {}, {})",
                    self.expr(ValueType::Boolean, d),
                    self.expr(ValueType::Date, d),
                    self.expr(ValueType::Date, d)
                ),
                _ => format!(
                    "COALESCE({}, {})",
                    self.expr(ValueType::Date, d),
                    self.expr(ValueType::Date, d)
                ),
            },
            ValueType::DateTime => match self.pick(3) {
                0 => format!(
                    "DATEADD({}, {}, {})",
                    self.expr(ValueType::DateTime, d),
                    self.expr(ValueType::Number, d),
                    self.one(UNITS)
                ),
                1 => format!(
                    "DATEADD({}, {}, {})",
                    self.expr(ValueType::Date, d),
                    self.expr(ValueType::Number, d),
                    self.one(&UNITS[4..])
                ),
                _ => format!(
                    "IF({}, {}, {})",
                    self.expr(ValueType::Boolean, d),
                    self.expr(ValueType::DateTime, d),
                    self.expr(ValueType::Date, d)
                ),
            },
        }
    }

    fn leaf(&mut self, ty: ValueType) -> String {
        match ty {
            ValueType::Number => match self.pick(4) {
                0 => self.one(NUMBER_LITERALS).to_string(),
                1 => "n1".into(),
                2 => "n2".into(),
                _ => "BLANK()".into(),
            },
            ValueType::Text => match self.pick(3) {
                0 => self.one(TEXT_LITERALS).to_string(),
                1 => "t1".into(),
                _ => "t2".into(),
            },
            ValueType::Boolean => self.one(&["TRUE", "b1", "FALSE"]).to_string(),
            ValueType::Date => match self.pick(4) {
                0 => "d1".into(),
                1 => "{Due date}".into(),
                2 => format!(
                    "DATE({}, {}, {})",
                    self.one(&["2024", "1999", "1"]),
                    self.one(&["2", "12", "13"]),
                    self.one(&["29", "1", "31"])
                ),
                _ => "TODAY()".into(),
            },
            ValueType::DateTime => match self.pick(3) {
                0 => "dt1".into(),
                1 => "NOW()".into(),
                _ => format!(
                    "DATETIME_PARSE({})",
                    self.one(&[
                        "'2024-05-01T09:30:00Z'",
                        "t1",
                        "'2024-05-01 09:30:15.25-03:00'"
                    ])
                ),
            },
        }
    }

    fn date_like(&mut self, d: u32) -> String {
        let ty = if self.pick(2) == 0 {
            ValueType::Date
        } else {
            ValueType::DateTime
        };
        self.expr(ty, d)
    }

    fn number(&mut self, d: u32) -> String {
        use ValueType::{Boolean as B, Number as N, Text as T};
        match self.pick(34) {
            0 => format!("({} + {})", self.expr(N, d), self.expr(N, d)),
            1 => format!("({} - {})", self.expr(N, d), self.expr(N, d)),
            2 => format!("({} * {})", self.expr(N, d), self.expr(N, d)),
            3 => format!("({} / {})", self.expr(N, d), self.expr(N, d)),
            4 => format!("-{}", self.expr(N, d)),
            5 => format!(
                "ROUND({}, {})",
                self.expr(N, d),
                self.one(&["0", "1", "2", "-1", "n2"])
            ),
            6 => format!(
                "ROUNDUP({}, {})",
                self.expr(N, d),
                self.one(&["0", "1", "-2"])
            ),
            7 => format!("ROUNDDOWN({})", self.expr(N, d)),
            8 => format!("FLOOR({})", self.expr(N, d)),
            9 => format!("CEILING({})", self.expr(N, d)),
            10 => format!("INT({})", self.expr(N, d)),
            11 => format!("ABS({})", self.expr(N, d)),
            12 => format!("SIGN({})", self.expr(N, d)),
            13 => format!("MIN({}, {})", self.expr(N, d), self.expr(N, d)),
            14 => format!(
                "MAX({}, {}, {})",
                self.expr(N, d),
                self.expr(N, d),
                self.expr(N, d)
            ),
            15 => format!(
                "SUM({}, {}, {})",
                self.expr(N, d),
                self.expr(N, d),
                self.expr(N, d)
            ),
            16 => format!("AVERAGE({}, {})", self.expr(N, d), self.expr(N, d)),
            17 => format!("POWER({}, {})", self.expr(N, d), self.expr(N, d)),
            18 => format!("SQRT({})", self.expr(N, d)),
            19 => format!("MOD({}, {})", self.expr(N, d), self.expr(N, d)),
            20 => format!("VALUE({})", self.expr(T, d)),
            21 => format!("LOG({})", self.expr(N, d)),
            22 => format!("LOG({}, {})", self.expr(N, d), self.expr(N, d)),
            23 => format!("LN({})", self.expr(N, d)),
            24 => format!("EXP({})", self.expr(N, d)),
            25 => format!("LEN({})", self.expr(T, d)),
            26 => format!("FIND({}, {})", self.expr(T, d), self.expr(T, d)),
            27 => {
                let f = self.one(&[
                    "YEAR", "MONTH", "DAY", "WEEKDAY", "HOUR", "MINUTE", "SECOND",
                ]);
                format!("{f}({})", self.date_like(d))
            }
            28 => format!(
                "DATEDIFF({}, {}, {})",
                self.date_like(d),
                self.date_like(d),
                self.one(UNITS)
            ),
            29 => format!("DATEDIFF({}, {})", self.date_like(d), self.date_like(d)),
            30 => format!(
                "IF({}, {}, {})",
                self.expr(B, d),
                self.expr(N, d),
                self.expr(N, d)
            ),
            31 => format!(
                "SWITCH({}, {}, {}, {})",
                self.expr(N, d),
                self.expr(N, d),
                self.expr(N, d),
                self.expr(N, d)
            ),
            32 => format!("COALESCE({}, {})", self.expr(N, d), self.expr(N, d)),
            _ => format!("IF({}, {})", self.expr(B, d), self.expr(N, d)),
        }
    }

    fn any(&mut self, d: u32) -> String {
        let ty = [
            ValueType::Number,
            ValueType::Text,
            ValueType::Boolean,
            ValueType::Date,
            ValueType::DateTime,
        ][self.pick(5)];
        self.expr(ty, d)
    }

    fn text(&mut self, d: u32) -> String {
        use ValueType::{Boolean as B, Number as N, Text as T};
        match self.pick(17) {
            0 => format!("CONCAT({}, {})", self.any(d), self.any(d)),
            1 => format!("({} & {})", self.any(d), self.any(d)),
            2 => format!("UPPER({})", self.expr(T, d)),
            3 => format!("LOWER({})", self.expr(T, d)),
            4 => format!("TRIM({})", self.expr(T, d)),
            5 => format!("LEFT({}, {})", self.expr(T, d), self.expr(N, d)),
            6 => format!("RIGHT({})", self.expr(T, d)),
            7 => format!(
                "MID({}, {}, {})",
                self.expr(T, d),
                self.expr(N, d),
                self.expr(N, d)
            ),
            8 => format!(
                "SUBSTITUTE({}, {}, {})",
                self.expr(T, d),
                self.expr(T, d),
                self.expr(T, d)
            ),
            9 => format!(
                "REPLACE({}, {}, {}, {})",
                self.expr(T, d),
                self.expr(N, d),
                self.expr(N, d),
                self.expr(T, d)
            ),
            10 => format!("TEXT({})", self.any(d)),
            11 => format!("REPT({}, {})", self.expr(T, d), self.expr(N, d)),
            12 => format!(
                "DATETIME_FORMAT({}, {})",
                self.date_like(d),
                self.one(FORMATS)
            ),
            13 => format!(
                "IF({}, {}, {})",
                self.expr(B, d),
                self.expr(T, d),
                self.expr(T, d)
            ),
            14 => format!(
                "SWITCH({}, {}, {}, {})",
                self.expr(T, d),
                self.expr(T, d),
                self.expr(T, d),
                self.expr(T, d)
            ),
            15 => format!("COALESCE({}, {})", self.expr(T, d), self.expr(T, d)),
            _ => format!("TEXT({})", self.expr(N, d)),
        }
    }

    fn boolean(&mut self, d: u32) -> String {
        use ValueType::{Boolean as B, Text as T};
        match self.pick(14) {
            0 => {
                let ty = [ValueType::Number, ValueType::Text, ValueType::Boolean][self.pick(3)];
                let op = self.one(&["=", "!=", "<>", "<", "<=", ">", ">="]);
                format!("({} {op} {})", self.expr(ty, d), self.expr(ty, d))
            }
            1 => {
                let op = self.one(&["=", "<", ">="]);
                format!("({} {op} {})", self.date_like(d), self.date_like(d))
            }
            2 => format!("AND({}, {})", self.expr(B, d), self.expr(B, d)),
            3 => format!(
                "OR({}, {}, {})",
                self.expr(B, d),
                self.expr(B, d),
                self.expr(B, d)
            ),
            4 => format!("NOT({})", self.expr(B, d)),
            5 => format!(
                "XOR({}, {}, {})",
                self.expr(B, d),
                self.expr(B, d),
                self.expr(B, d)
            ),
            6 => format!("ISBLANK({})", self.any(d)),
            7 => format!("CONTAINS({}, {})", self.expr(T, d), self.expr(T, d)),
            8 => format!("STARTS_WITH({}, {})", self.expr(T, d), self.expr(T, d)),
            9 => format!("ENDS_WITH({}, {})", self.expr(T, d), self.expr(T, d)),
            10 => format!("REGEX_MATCH({}, {})", self.expr(T, d), self.one(PATTERNS)),
            11 => format!("IS_BEFORE({}, {})", self.date_like(d), self.date_like(d)),
            12 => format!("IS_AFTER({}, {})", self.date_like(d), self.date_like(d)),
            _ => format!(
                "IF({}, {}, {})",
                self.expr(B, d),
                self.expr(B, d),
                self.expr(B, d)
            ),
        }
    }
}
