//! The sink every connector writes to: batches of records upserted by key with UNNEST (one
//! statement per batch, never one per row), unchanged rows told apart by hash, per-row problems
//! recorded with their line.

use crate::ids::{DataSourceId, PanelId, RunId};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, AssertSqlSafe};

use super::SyncError;
use crate::auth::TenantId;
use crate::db::Db;
use crate::events::model::{NewEvent, system_actor};

use crate::formula::{SqlBuilder, SqlParam};

/// `sync.progress`: after a run's first full batch, then at most once a second, written with the
/// batch it counts.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Who writes a sync's rows and records its changes.
pub const SYNC_ACTOR: &str = "system:sync";

/// Records per batch: large enough to amortise round trips, small enough to bound memory.
pub const BATCH_SIZE: usize = 1000;
/// Row errors kept for the run's report (the count goes on past it).
pub const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct RowError {
    /// Line (file sources), record number (others), 1-based.
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SinkCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub errors: Vec<RowError>,
    pub error_count: u64,
}

pub struct Sink {
    db: Db,
    tenant: TenantId,
    panel_id: PanelId,
    data_source_id: DataSourceId,
    run_id: RunId,
    key_field: String,
    stop_on_error: bool,
    /// key → (data, hash) in source order (row ids follow it); a key seen twice in a batch keeps
    /// its first position and its last record.
    batch: IndexMap<String, (Value, Vec<u8>)>,
    counts: SinkCounts,
    /// Stamp unchanged rows with this run (only the `delete` policy needs to know them).
    track_seen: bool,
    /// When the last `sync.progress` event was written (at most one a second).
    progress_at: Option<std::time::Instant>,
}

impl Sink {
    pub fn new(
        db: Db,
        tenant: TenantId,
        panel_id: PanelId,
        data_source_id: DataSourceId,
        run_id: RunId,
        key_field: String,
        stop_on_error: bool,
    ) -> Self {
        Self {
            db,
            tenant,
            panel_id,
            data_source_id,
            run_id,
            key_field,
            stop_on_error,
            batch: IndexMap::with_capacity(BATCH_SIZE),
            counts: SinkCounts::default(),
            track_seen: true,
            progress_at: None,
        }
    }

    /// Without the `delete` policy nobody asks which rows a run saw: unchanged rows are then not
    /// written at all (no new row version for a record that did not change).
    pub fn track_seen(mut self, track: bool) -> Self {
        self.track_seen = track;
        self
    }

    /// Takes one record; flushes when the batch is full.
    pub async fn record(&mut self, line: u64, record: Value) -> Result<(), SyncError> {
        let Value::Object(map) = &record else {
            return self
                .row_error(line, "a record must be a JSON object".to_owned())
                .await;
        };
        let key = match map.get(&self.key_field) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => {
                let message = format!("missing or invalid key field {:?}", self.key_field);
                return self.row_error(line, message).await;
            }
        };
        // serde_json's map is ordered by key, so equal records hash equally.
        let hash = Sha256::digest(serde_json::to_vec(&record).unwrap_or_default()).to_vec();
        self.batch.insert(key, (record, hash));
        if self.batch.len() >= BATCH_SIZE {
            self.flush(true).await?;
        }
        Ok(())
    }

    /// Notes a bad row; stops the sync when the source asks to stop on errors.
    pub async fn row_error(&mut self, line: u64, message: String) -> Result<(), SyncError> {
        self.counts.error_count += 1;
        if self.counts.errors.len() < MAX_REPORTED_ERRORS {
            self.counts.errors.push(RowError {
                line,
                message: message.clone(),
            });
        }
        if self.stop_on_error {
            return Err(SyncError::Aborted { line, message });
        }
        Ok(())
    }

    /// Writes the current batch in its own transaction (a crash loses at most one batch, and a
    /// retried run re-applies it idempotently), with a `sync.progress` event when `progress` (a
    /// full batch, more to come) and it is time for one.
    async fn flush(&mut self, progress: bool) -> Result<(), SyncError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let mut keys = Vec::with_capacity(batch.len());
        let mut data = Vec::with_capacity(batch.len());
        let mut hashes = Vec::with_capacity(batch.len());
        for (key, (record, hash)) in batch {
            keys.push(key);
            data.push(record);
            hashes.push(hash);
        }
        let mut tx = self.db.begin(&self.tenant).await?;
        // The panel's typed slots are written with the record (rows::slots); the layout is held
        // still until this batch commits.
        let mut extra = SqlBuilder::new(8);
        let writes = crate::rows::slots::writes(
            &mut tx,
            &self.tenant,
            self.panel_id,
            self.data_source_id,
            "d",
            &mut extra,
        )
        .await?;
        let columns: String = writes.iter().map(|(slot, _)| format!(", {slot}")).collect();
        let values: String = writes.iter().map(|(_, sql)| format!(", {sql}")).collect();
        let sets: String = writes
            .iter()
            .map(|(slot, _)| format!(", {slot} = excluded.{slot}"))
            .collect();
        // One statement per batch. Every row is stamped with this run (the delete policy needs
        // it); `updated_at` moves only when the record changed, which is how the answer tells an
        // update (now) from an unchanged row (earlier), and `xmax = 0` tells an insert.
        let sql = if self.track_seen {
            format!(
                "insert into panel_row as p (tenant_id, panel_id, data_source_id, record_key, data, hash, seen_run{columns})
                 select $1, $2, $3, k, d, h, $4{values} from unnest($5::text[], $6::jsonb[], $7::bytea[]) as t(k, d, h)
                 on conflict on constraint panel_row_key do update
                 set data = case when p.hash = excluded.hash then p.data else excluded.data end,
                     hash = excluded.hash,
                     seen_run = excluded.seen_run,
                     updated_at = case when p.hash = excluded.hash then p.updated_at else now() end{sets}
                 returning (xmax = 0), (updated_at = now())"
            )
        } else {
            format!(
                "insert into panel_row as p (tenant_id, panel_id, data_source_id, record_key, data, hash, seen_run{columns})
                 select $1, $2, $3, k, d, h, $4{values} from unnest($5::text[], $6::jsonb[], $7::bytea[]) as t(k, d, h)
                 on conflict on constraint panel_row_key do update
                 set data = excluded.data, hash = excluded.hash, seen_run = excluded.seen_run, updated_at = now(){sets}
                 where p.hash <> excluded.hash
                 returning (xmax = 0), true"
            )
        };
        let written = keys.len() as u64;
        let (sql, extra_params) = extra.compact(&sql);
        let mut args = PgArguments::default();
        SqlParam::Text(self.tenant.as_str().to_owned()).bind(&mut args);
        SqlParam::Int(self.panel_id.0).bind(&mut args);
        SqlParam::Int(self.data_source_id.0).bind(&mut args);
        SqlParam::Int(self.run_id.0).bind(&mut args);
        // Encoding these arrays cannot fail.
        let _ = args.add(&keys);
        let _ = args.add(&data);
        let _ = args.add(&hashes);
        for p in extra_params {
            p.bind(&mut args);
        }
        let outcome: Vec<(bool, bool)> = sqlx::query_as_with(AssertSqlSafe(sql), args)
            .fetch_all(&mut *tx)
            .await?;
        // Rows the `where` skipped (unchanged) are not returned.
        self.counts.unchanged += written - outcome.len() as u64;
        for (inserted, changed) in outcome {
            if inserted {
                self.counts.inserted += 1;
            } else if changed {
                self.counts.updated += 1;
            } else {
                self.counts.unchanged += 1;
            }
        }
        if progress
            && self
                .progress_at
                .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY)
        {
            self.progress_at = Some(std::time::Instant::now());
            let progress = NewEvent {
                kind: "sync.progress".to_owned(),
                panel_id: Some(self.panel_id.0),
                view_id: None,
                entity_id: Some(self.run_id.0.to_string()),
                audience: None,
                actor: system_actor(SYNC_ACTOR),
                data: serde_json::json!({
                    "dataSourceId": self.data_source_id, "runId": self.run_id,
                    "inserted": self.counts.inserted, "updated": self.counts.updated,
                    "unchanged": self.counts.unchanged,
                }),
            };
            crate::events::repo::append(&mut tx, &self.tenant, &[progress]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Flushes the last batch and, for a full sync with the `delete` policy, removes the rows
    /// this run did not see.
    pub async fn finish(mut self, delete_missing: bool) -> Result<SinkCounts, SyncError> {
        // The last batch: the run's end reports the counts (`sync.succeeded`), not a progress.
        self.flush(false).await?;
        if delete_missing {
            let mut tx = self.db.begin(&self.tenant).await?;
            let deleted = sqlx::query(
                "delete from panel_row where tenant_id = $1 and data_source_id = $2 and seen_run is distinct from $3",
            )
            .bind(self.tenant.as_str())
            .bind(self.data_source_id)
            .bind(self.run_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.counts.deleted = deleted.rows_affected();
        }
        Ok(self.counts)
    }

    pub fn counts(&self) -> &SinkCounts {
        &self.counts
    }
}
