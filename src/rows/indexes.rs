//! The indexes the worklist engine wants, and the worker that builds them.
//!
//! A panel's rows live in one table; what makes a view of a large panel fast is an index on
//! exactly the expressions its query sorts and filters by, partial to the panel. Those
//! expressions are the engine's own (`query.rs`), so the engine names them: each rows request
//! records the indexes its query could use ([`wanted`]), a few at a time and at most once an hour
//! per index and process ([`Wants`]); a worker ([`spawn_builder`]) builds them with
//! `create index concurrently … where panel_id = <panel>` as the table's owner, skips panels too
//! small to need one, and drops what nobody wanted for [`KEEP`]. Indexes are on typed slots
//! (`slots.rs`), calculated columns' included, so filtering and sorting on a formula read an
//! index too. A column without a ready slot is indexed on its inline expression when that is
//! immutable: such an index serves the order, and under row-level security not the conditions
//! (their functions are not leakproof).
//!
//! The definitions are SQL the owner runs. They are built here with every value a quoted literal,
//! and signed with a key derived from `JWT_SECRET` that the database never holds: the builder
//! runs only what a server wrote, whatever else could write to the table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::TenantId;
use crate::db::Db;
use crate::formula::SqlParam;
use crate::ids::PanelId;

type HmacSha256 = Hmac<Sha256>;

/// Indexes nobody wanted for this long are dropped.
pub const KEEP: Duration = Duration::from_secs(14 * 24 * 3600);
/// A process records the same wanted index at most this often.
const REFRESH: Duration = Duration::from_secs(3600);
/// How often an idle builder looks for work.
const POLL: Duration = Duration::from_secs(2);
/// How often the builder drops what is no longer wanted.
const SWEEP: Duration = Duration::from_secs(600);
/// The longest a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

/// An index of a panel's rows: its name and the SQL of its columns in their parentheses (and
/// what it includes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub name: String,
    pub definition: String,
}

impl IndexDef {
    fn new(panel: PanelId, definition: String) -> Self {
        let hash = Sha256::digest(definition.as_bytes());
        Self {
            name: format!("panel_row_p{}_{}", panel.0, hex::encode(&hash[..8])),
            definition,
        }
    }
}

/// Signs definitions for the builder (see the module's documentation).
#[derive(Clone)]
pub struct IndexKey([u8; 32]);

impl IndexKey {
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"panels index definition v1");
        Self(mac.finalize().into_bytes().into())
    }

    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    fn mac(&self, panel: i64, name: &str, definition: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(format!("{panel}\0{name}\0{definition}").as_bytes());
        mac
    }

    pub fn sign(&self, panel: i64, name: &str, definition: &str) -> String {
        hex::encode(self.mac(panel, name, definition).finalize().into_bytes())
    }

    pub fn verify(&self, panel: i64, name: &str, definition: &str, signature: &str) -> bool {
        hex::decode(signature)
            .is_ok_and(|tag| self.mac(panel, name, definition).verify_slice(&tag).is_ok())
    }
}

/// A value as an SQL literal: quoted, with quotes doubled (the builder's session has
/// `standard_conforming_strings` on, so a backslash is an ordinary character); the cast written
/// after the placeholder stays.
fn literal(p: &SqlParam) -> Option<String> {
    let text = match p {
        SqlParam::Text(s) => {
            if s.contains('\0') {
                return None;
            }
            s.clone()
        }
        SqlParam::Number(n) if n.is_finite() => n.to_string(),
        SqlParam::Number(_) => return None,
        SqlParam::Bool(b) => b.to_string(),
        SqlParam::Date(d) => d.format("%Y-%m-%d").to_string(),
        SqlParam::Instant(_) => return None,
        SqlParam::Int(n) => n.to_string(),
    };
    Some(format!("'{}'", text.replace('\'', "''")))
}

/// An expression of the rows query as an index column: each `$n` replaced by its value as a
/// literal, the `r.` alias dropped. `None` when it reads the request's clock (`$3`, NOW() in a
/// formula: not indexable) or a value that has no literal here.
pub fn index_expression(sql: &str, params: &[SqlParam]) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let n: usize = sql[start..end].parse().ok()?;
                if n == 3 {
                    return None;
                }
                out.push_str(&literal(params.get(n.checked_sub(1)?)?)?);
                i = end;
            }
            b'r' if sql[i..].starts_with("r.")
                && (i == 0
                    || !(bytes[i - 1].is_ascii_alphanumeric()
                        || matches!(bytes[i - 1], b'_' | b'.' | b'"'))) =>
            {
                i += 2;
            }
            _ => {
                let ch = sql[i..].chars().next()?;
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Some(out)
}

/// The indexes a query of `panel` could use: one on its sort keys (then the row id), and one on
/// each field its top-level conditions test. `keys` are the sort keys' SQL with their direction
/// (`true`: descending); `fields` the tested expressions as the conditions write them.
pub fn wanted(
    panel: PanelId,
    keys: &[(Vec<String>, bool)],
    fields: &[String],
    params: &[SqlParam],
) -> Vec<IndexDef> {
    let mut out = Vec::new();
    if !keys.is_empty() {
        // Keys all one way need no direction: the index is read backwards for descending.
        let uniform = keys.iter().all(|(_, desc)| *desc == keys[0].1);
        let mut columns = Vec::with_capacity(keys.len() * 2 + 1);
        let mut ok = true;
        for (sqls, desc) in keys {
            for sql in sqls {
                match index_expression(sql, params) {
                    Some(expr) if uniform || !desc => columns.push(format!("({expr})")),
                    Some(expr) => columns.push(format!("({expr}) desc")),
                    None => ok = false,
                }
            }
        }
        if ok {
            let id_desc = !uniform && keys.last().is_some_and(|(_, desc)| *desc);
            columns.push(if id_desc { "id desc" } else { "id" }.to_owned());
            out.push(IndexDef::new(panel, format!("({})", columns.join(", "))));
        }
    }
    for field in fields {
        if let Some(expr) = index_expression(field, params) {
            // With the tenant in the index, a count can be answered from the index alone (the
            // row-level security condition reads it).
            let def = IndexDef::new(panel, format!("(({expr})) include (tenant_id)"));
            if !out.contains(&def) {
                out.push(def);
            }
        }
    }
    out
}

struct Want {
    tenant: TenantId,
    panel: PanelId,
    defs: Vec<IndexDef>,
}

/// Records wanted indexes from the request path: never waits (a full queue drops the want, the
/// next request wants it again), and asks the database at most once an hour per index.
pub struct Wants {
    sender: mpsc::Sender<Want>,
    recent: Mutex<HashMap<String, Instant>>,
}

impl Wants {
    /// The recorder and the task that writes what it records.
    pub fn start(db: Db, key: IndexKey) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(256);
        let task = tokio::spawn(record(db, key, receiver));
        (
            Self {
                sender,
                recent: Mutex::new(HashMap::new()),
            },
            task,
        )
    }

    pub fn want(&self, tenant: &TenantId, panel: PanelId, defs: Vec<IndexDef>) {
        let now = Instant::now();
        let fresh: Vec<IndexDef> = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() > 100_000 {
                recent.retain(|_, at| now.duration_since(*at) < REFRESH);
            }
            defs.into_iter()
                .filter(|d| {
                    let key = format!("{tenant}/{}", d.name);
                    match recent.get(&key) {
                        Some(at) if now.duration_since(*at) < REFRESH => false,
                        _ => {
                            recent.insert(key, now);
                            true
                        }
                    }
                })
                .collect()
        };
        if !fresh.is_empty() {
            let _ = self.sender.try_send(Want {
                tenant: tenant.clone(),
                panel,
                defs: fresh,
            });
        }
    }
}

async fn record(db: Db, key: IndexKey, mut receiver: mpsc::Receiver<Want>) {
    while let Some(want) = receiver.recv().await {
        if let Err(e) = record_one(&db, &key, &want).await {
            tracing::warn!(error = %e, panel_id = %want.panel, "could not record a wanted index");
        }
    }
}

/// At most this many indexes per panel: a panel's views cannot make the server build and
/// maintain indexes without bound (the oldest wanted go first when they are no longer wanted).
pub const MAX_PER_PANEL: i64 = 16;

async fn record_one(db: &Db, key: &IndexKey, want: &Want) -> Result<(), sqlx::Error> {
    let mut tx = db.begin(&want.tenant).await?;
    let held: i64 = sqlx::query_scalar(
        "select count(*) from panel_index where tenant_id = $1 and panel_id = $2",
    )
    .bind(want.tenant.as_str())
    .bind(want.panel)
    .fetch_one(&mut *tx)
    .await?;
    let mut room = MAX_PER_PANEL - held;
    for def in &want.defs {
        let known: bool = sqlx::query_scalar(
            "select exists (select 1 from panel_index where tenant_id = $1 and panel_id = $2 and name = $3)",
        )
        .bind(want.tenant.as_str())
        .bind(want.panel)
        .bind(&def.name)
        .fetch_one(&mut *tx)
        .await?;
        if !known {
            if room <= 0 {
                tracing::info!(panel_id = %want.panel, "a panel holds its most indexes: one more is not built");
                continue;
            }
            room -= 1;
        }
        let signature = key.sign(want.panel.0, &def.name, &def.definition);
        sqlx::query(
            "insert into panel_index (tenant_id, panel_id, name, definition, signature)
             values ($1, $2, $3, $4, $5)
             on conflict (tenant_id, panel_id, name) do update set wanted_at = now()",
        )
        .bind(want.tenant.as_str())
        .bind(want.panel)
        .bind(&def.name)
        .bind(&def.definition)
        .bind(&signature)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[derive(sqlx::FromRow)]
struct Claimed {
    tenant_id: String,
    panel_id: i64,
    name: String,
    definition: String,
    signature: String,
}

/// The builder: builds claimed indexes one at a time, on a connection of the table's owner
/// (`DATABASE_URL`), until `stop`.
pub fn spawn_builder(
    db: Db,
    owner_url: String,
    key: IndexKey,
    min_rows: i64,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let worker = format!("index-{}", uuid::Uuid::new_v4().simple());
        let mut swept = Instant::now() - SWEEP;
        loop {
            if stop.is_cancelled() {
                return;
            }
            if swept.elapsed() >= SWEEP {
                swept = Instant::now();
                if let Err(e) = sweep(&db, &owner_url).await {
                    tracing::warn!(error = %e, "could not drop unwanted panel indexes");
                }
            }
            let built = match build_next(&db, &owner_url, &key, &worker, min_rows).await {
                Ok(built) => built,
                Err(e) => {
                    tracing::warn!(error = %e, "panel index builder");
                    false
                }
            };
            if !built {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    })
}

async fn owner(owner_url: &str) -> Result<PgConnection, sqlx::Error> {
    use sqlx::Executor;
    let mut conn = PgConnection::connect(owner_url).await?;
    conn.execute(AssertSqlSafe(format!(
        "set standard_conforming_strings = on; set maintenance_work_mem = '256MB'; set lock_timeout = '10s'; set statement_timeout = '{}'",
        BUILD_TIMEOUT.as_millis()
    )))
    .await?;
    Ok(conn)
}

/// Builds the next wanted index, if any; `true` when there was one.
async fn build_next(
    db: &Db,
    owner_url: &str,
    key: &IndexKey,
    worker: &str,
    min_rows: i64,
) -> Result<bool, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let claimed: Option<Claimed> = sqlx::query_as("select * from claim_panel_index($1, $2)")
        .bind(worker)
        .bind(BUILD_TIMEOUT.as_secs() as i32)
        .fetch_optional(&mut *conn)
        .await?;
    drop(conn);
    let Some(c) = claimed else {
        return Ok(false);
    };
    let (tenant_id, panel_id, name) = (c.tenant_id.clone(), c.panel_id, c.name.clone());
    let finish = |state: &'static str, error: Option<String>| {
        let (tenant_id, name) = (tenant_id.clone(), name.clone());
        async move {
            let mut conn = db.acquire().await?;
            sqlx::query("select finish_panel_index($1, $2, $3, $4, $5)")
                .bind(tenant_id)
                .bind(panel_id)
                .bind(name)
                .bind(state)
                .bind(error)
                .execute(&mut *conn)
                .await
                .map(drop)
        }
    };
    if !key.verify(c.panel_id, &c.name, &c.definition, &c.signature)
        || c.name != IndexDef::new(PanelId(c.panel_id), c.definition.clone()).name
    {
        tracing::error!(name = %c.name, "a wanted index is not signed by this server: not built");
        finish("failed", Some("not signed by this server".into())).await?;
        return Ok(true);
    }
    match build(db, owner_url, &c, min_rows).await {
        Ok(state) => finish(state, None).await?,
        Err(e) => {
            tracing::warn!(name = %c.name, error = %e, "could not build a panel index");
            finish("failed", Some(e.to_string())).await?;
        }
    }
    Ok(true)
}

/// Builds a claimed, verified index unless its panel is small: `ready` or `small`.
async fn build(
    db: &Db,
    owner_url: &str,
    c: &Claimed,
    min_rows: i64,
) -> Result<&'static str, sqlx::Error> {
    let Some(tenant) = TenantId::parse(&c.tenant_id) else {
        return Err(sqlx::Error::Protocol(
            "a tenant id that is not a slug".into(),
        ));
    };
    let mut tx = db.begin(&tenant).await?;
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from (select 1 from panel_row where tenant_id = $1 and panel_id = $2 limit $3) r",
    )
    .bind(tenant.as_str())
    .bind(c.panel_id)
    .bind(min_rows)
    .fetch_one(&mut *tx)
    .await?;
    drop(tx);
    if rows < min_rows {
        return Ok("small");
    }
    let started = Instant::now();
    let mut owner = owner(owner_url).await?;
    // The name and the panel id are ours (checked by the caller); the definition is signed.
    let ddl = format!(
        "create index concurrently if not exists {} on panel_row {} where panel_id = {}",
        c.name, c.definition, c.panel_id
    );
    let built = sqlx::query(AssertSqlSafe(ddl)).execute(&mut owner).await;
    if let Err(e) = built {
        // A failed concurrent build leaves an invalid index behind.
        let _ = sqlx::query(AssertSqlSafe(format!(
            "drop index concurrently if exists {}",
            c.name
        )))
        .execute(&mut owner)
        .await;
        let _ = owner.close().await;
        return Err(e);
    }
    // Statistics on the new expression, for the planner's estimates.
    let _ = sqlx::query("analyze panel_row").execute(&mut owner).await;
    let _ = owner.close().await;
    tracing::info!(name = %c.name, panel_id = c.panel_id, seconds = started.elapsed().as_secs_f64(), "built a panel index");
    Ok("ready")
}

/// Drops the indexes nobody wanted for [`KEEP`], and those of panels that are gone.
async fn sweep(db: &Db, owner_url: &str) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let before = chrono::Utc::now() - chrono::Duration::from_std(KEEP).unwrap_or_default();
    let stale: Vec<(String, i64, String)> = sqlx::query_as("select * from stale_panel_indexes($1)")
        .bind(before)
        .fetch_all(&mut *conn)
        .await?;
    let known: Vec<String> = sqlx::query_scalar("select name from known_panel_indexes()")
        .fetch_all(&mut *conn)
        .await?;
    drop(conn);
    let mut owner = owner(owner_url).await?;
    let existing: Vec<String> = sqlx::query_scalar(
        "select indexname::text from pg_indexes where schemaname = current_schema() and tablename = 'panel_row' and indexname ~ '^panel_row_p[0-9]+_[0-9a-f]{16}$'",
    )
    .fetch_all(&mut owner)
    .await?;
    let mut gone: Vec<&String> = existing.iter().filter(|n| !known.contains(n)).collect();
    gone.extend(stale.iter().map(|(_, _, name)| name));
    for name in gone {
        // Names match the pattern above (ours), so they can stand in the statement.
        if !name.starts_with("panel_row_p")
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            continue;
        }
        sqlx::query(AssertSqlSafe(format!(
            "drop index concurrently if exists {name}"
        )))
        .execute(&mut owner)
        .await?;
    }
    for (tenant, panel, name) in stale {
        let mut conn = db.acquire().await?;
        sqlx::query("select forget_panel_index($1, $2, $3)")
            .bind(tenant)
            .bind(panel)
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    let _ = owner.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_become_literal_index_columns() {
        let params = vec![
            SqlParam::Text("acme".into()),
            SqlParam::Int(9),
            SqlParam::Instant(chrono::Utc::now()),
            SqlParam::Text("it's".into()),
            SqlParam::Number(2.5),
        ];
        assert_eq!(
            index_expression(
                "panels_mul(coalesce(panels_jsonb_float8((case when r.data_source_id = 7 then r.data -> $4::text end)), 0::float8), ($5::float8))",
                &params
            )
            .as_deref(),
            Some(
                "panels_mul(coalesce(panels_jsonb_float8((case when data_source_id = 7 then data -> 'it''s'::text end)), 0::float8), ('2.5'::float8))"
            )
        );
        // The request's clock is not a constant.
        assert_eq!(index_expression("r.n1 > $3::timestamptz", &params), None);
        assert_eq!(index_expression("x = $6", &params), None);
        // `power.` is not the alias.
        assert_eq!(
            index_expression("power.r.x", &params).as_deref(),
            Some("power.r.x")
        );
    }

    #[test]
    fn a_sort_index_reads_backwards_when_its_keys_run_one_way() {
        let keys = vec![
            (vec!["r.a".to_owned()], true),
            (vec!["r.b".to_owned()], true),
        ];
        let defs = wanted(PanelId(5), &keys, &["panels_lower(r.c)".into()], &[]);
        assert_eq!(defs[0].definition, "((a), (b), id)");
        assert_eq!(
            defs[1].definition,
            "((panels_lower(c))) include (tenant_id)"
        );
        assert!(defs[0].name.starts_with("panel_row_p5_"));
        let mixed = wanted(
            PanelId(5),
            &[
                (vec!["(r.a is null)".to_owned(), "r.a".to_owned()], true),
                (vec!["r.b".to_owned()], false),
            ],
            &[],
            &[],
        );
        assert_eq!(
            mixed[0].definition,
            "(((a is null)) desc, (a) desc, (b), id)"
        );
    }

    #[test]
    fn only_signed_definitions_are_built() {
        let key = IndexKey::derive(b"secret");
        let sig = key.sign(5, "panel_row_p5_0123456789abcdef", "(a), id");
        assert!(key.verify(5, "panel_row_p5_0123456789abcdef", "(a), id", &sig));
        assert!(!key.verify(
            5,
            "panel_row_p5_0123456789abcdef",
            "(a), id; drop table x",
            &sig
        ));
        assert!(!IndexKey::derive(b"other").verify(
            5,
            "panel_row_p5_0123456789abcdef",
            "(a), id",
            &sig
        ));
    }
}
