//! Sync: pulling a source's records into the panel's rows. `database` and `api` sources sync
//! through the durable queue (enqueue, then a worker runs it); a `file` source syncs when a file
//! is uploaded to it; a `custom` source receives batches of records pushed by its client.

use crate::ids::{DataSourceId, PanelId, RunId};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncRead;
use tracing::instrument;
use utoipa::ToSchema;

use super::connectors::api::ApiConnector;
use super::connectors::database::DatabaseConnector;
use super::connectors::file::FileConnector;
use super::connectors::sink::{RowError, SYNC_ACTOR};
use super::connectors::{Common, Connector, Sink, SinkCounts, SyncError};
use super::crypto::{SecretScope, decrypt_config, mask_config};
use super::model::DataSourceRow;
use super::repo;
use crate::auth::{Principal, TenantId};
use crate::cache::Change;
use crate::changes::{Affect, ChangeType, NewChange};
use crate::error::{ApiError, Result};
use crate::jobs::repo::{self as runs, RunRow};
use crate::jobs::{Claimed, backoff};
use crate::panels::{Access, authorize};
use crate::rows::membership::{self, Sets};
use crate::state::AppState;
use crate::write;

/// Records one push may carry.
pub const MAX_PUSH_RECORDS: usize = 10_000;

/// A sync run as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResponse {
    pub id: RunId,
    /// queued | running | succeeded | failed (will retry) | dead (gave up)
    #[schema(example = "succeeded")]
    pub status: String,
    /// manual | schedule | upload | push
    pub trigger: String,
    pub attempts: i32,
    pub started_at: Option<chrono::DateTime<Utc>>,
    pub finished_at: Option<chrono::DateTime<Utc>>,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    #[schema(value_type = Vec<RowError>)]
    pub errors: Value,
    pub last_error: Option<String>,
    /// When a failed run will be tried again.
    pub next_attempt_at: Option<chrono::DateTime<Utc>>,
}

impl From<RunRow> for RunResponse {
    fn from(r: RunRow) -> Self {
        Self {
            next_attempt_at: (r.status == "failed").then_some(r.run_at),
            id: r.id,
            status: r.status,
            trigger: r.trigger,
            attempts: r.attempts,
            started_at: r.started_at,
            finished_at: r.finished_at,
            inserted: r.inserted,
            updated: r.updated,
            unchanged: r.unchanged,
            deleted: r.deleted,
            errors: r.errors,
            last_error: r.last_error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunListResponse {
    pub runs: Vec<RunResponse>,
}

/// The answer of `POST .../sync` and of an upload: the reference's shape plus the run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    pub id: DataSourceId,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub config: Value,
    pub last_sync: chrono::DateTime<Utc>,
    /// `success` or `error` (the reference's field).
    pub sync_status: String,
    pub message: String,
    /// The run's status (see `run`).
    pub status: String,
    pub run_id: RunId,
    /// Records read from the source (inserted + updated + unchanged).
    pub records_processed: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub run: RunResponse,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"records": [{"mrn": "1001", "firstName": "Ada", "lastName": "Lovelace", "age": 36}]}))]
pub struct PushRequest {
    /// Up to 10,000 records; each must carry the source's `keyField`.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub run_id: RunId,
    pub received: usize,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Records refused, by 1-based position in `records`.
    pub errors: Vec<RowError>,
    pub error_count: u64,
}

/// Where a source's secrets belong (their ciphertexts are bound to it).
fn scope_of<'a>(tenant: &'a TenantId, source: &DataSourceRow) -> SecretScope<'a> {
    SecretScope {
        tenant: tenant.as_str(),
        data_source_id: source.id,
    }
}

/// A run's `sync.started` event.
fn started(panel_id: PanelId, source: DataSourceId, run: RunId, trigger: &str) -> Change {
    Change::panel("sync.started", panel_id)
        .with("dataSourceId", source)
        .with("runId", run)
        .with("trigger", trigger)
        .quiet()
}

/// The actor of changes a sync records.
fn system(tenant: &TenantId) -> Principal {
    Principal::system(tenant.clone(), SYNC_ACTOR)
}

async fn load(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
) -> Result<DataSourceRow> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Build).await?;
    let row = repo::find_data_source(&mut tx, &principal.tenant, panel_id, id, false)
        .await?
        .ok_or_else(super::service::not_found)?;
    tx.commit().await?;
    Ok(row)
}

/// `POST .../sync`: enqueues a run (joining a live one) and waits for it up to the configured
/// bound; `respond_async` answers at once. Answers the result and whether it finished.
#[instrument(skip_all, fields(tenant = %principal.tenant, data_source_id = %id))]
pub async fn sync(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    respond_async: bool,
) -> Result<(SyncResult, bool)> {
    let source = load(state, principal, panel_id, id).await?;
    let run = match source.kind.as_str() {
        "database" | "api" => {
            let mut tx = state.db.begin(&principal.tenant).await?;
            let run = runs::enqueue(&mut tx, &principal.tenant, panel_id, id, "manual").await?;
            tx.commit().await?;
            state.wakeup.wake();
            if respond_async {
                run
            } else {
                wait(state, &principal.tenant, run.id).await?
            }
        }
        "file" => {
            return Err(ApiError::conflict(
                "UPLOAD_REQUIRED",
                "A file source syncs when a file is uploaded to .../upload",
            ));
        }
        _ => {
            // A custom source's records arrive by push: a sync has nothing to pull.
            let common = Common::from_config(&Value::Null);
            let run = InRequest::start(state, principal, panel_id, id, "manual", &common).await?;
            let run_id = run.id();
            run.finish(state, Ok(())).await?;
            find_run(state, &principal.tenant, run_id).await?
        }
    };
    let source = load(state, principal, panel_id, id).await?;
    let finished = matches!(run.status.as_str(), "succeeded" | "dead" | "failed");
    Ok((result(&source, run), finished))
}

fn result(source: &DataSourceRow, run: RunRow) -> SyncResult {
    let (sync_status, message) = match run.status.as_str() {
        "succeeded" => ("success", "Data source synced successfully".to_owned()),
        "queued" | "running" => ("pending", "Sync is in progress".to_owned()),
        "failed" => (
            "error",
            format!(
                "Sync failed and will be retried: {}",
                run.last_error.clone().unwrap_or_default()
            ),
        ),
        _ => (
            "error",
            format!(
                "Sync failed: {}",
                run.last_error.clone().unwrap_or_default()
            ),
        ),
    };
    SyncResult {
        id: source.id,
        kind: source.kind.clone(),
        config: mask_config(&source.config),
        last_sync: source.last_sync,
        sync_status: sync_status.to_owned(),
        message,
        status: run.status.clone(),
        run_id: run.id,
        records_processed: run.inserted + run.updated + run.unchanged,
        inserted: run.inserted,
        updated: run.updated,
        unchanged: run.unchanged,
        deleted: run.deleted,
        run: run.into(),
    }
}

async fn find_run(state: &AppState, tenant: &TenantId, id: RunId) -> Result<RunRow> {
    let mut tx = state.db.begin(tenant).await?;
    let run = runs::find(&mut tx, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("RUN_NOT_FOUND", "Sync run not found"))?;
    tx.commit().await?;
    Ok(run)
}

/// Polls a run until it ends (or fails once) or the wait bound passes.
async fn wait(state: &AppState, tenant: &TenantId, id: RunId) -> Result<RunRow> {
    let deadline = Instant::now() + state.config.sync_wait;
    let mut pause = Duration::from_millis(20);
    loop {
        let run = find_run(state, tenant, id).await?;
        if matches!(run.status.as_str(), "succeeded" | "dead" | "failed")
            || Instant::now() >= deadline
        {
            return Ok(run);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[instrument(skip_all, fields(tenant = %principal.tenant, data_source_id = %id))]
pub async fn list_runs(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    limit: i64,
) -> Result<RunListResponse> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    repo::find_data_source(&mut tx, &principal.tenant, panel_id, id, false)
        .await?
        .ok_or_else(super::service::not_found)?;
    let rows = runs::list(&mut tx, &principal.tenant, id, limit).await?;
    tx.commit().await?;
    Ok(RunListResponse {
        runs: rows.into_iter().map(RunResponse::from).collect(),
    })
}

/// Starts `concurrency` sync workers and the scheduler on the job queue; they stop when `stop`
/// is cancelled.
pub fn spawn_workers(
    state: &AppState,
    concurrency: usize,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let queue = crate::jobs::Queue {
        db: state.db.clone(),
        wakeup: state.wakeup.clone(),
        lease: state.config.sync_lease,
    };
    let handler_state = state.clone();
    let handler: crate::jobs::Handler = std::sync::Arc::new(move |tenant, worker, claimed| {
        let state = handler_state.clone();
        Box::pin(async move { execute(&state, &tenant, &worker, &claimed).await })
    });
    crate::jobs::spawn(queue, concurrency, handler, stop)
}

/// Runs a claimed run to its end (called by a worker holding the run's lease).
pub async fn execute(state: &AppState, tenant: &TenantId, worker: &str, claimed: &Claimed) {
    let actor = system(tenant);
    let announced = write::write(state, &actor, |mut w| async move {
        w.changed(started(
            claimed.panel_id,
            claimed.data_source_id,
            claimed.id,
            "worker",
        ));
        Ok((w, ()))
    })
    .await;
    if let Err(error) = announced {
        tracing::warn!(%error, "recording the start of a sync run failed");
    }
    let outcome = async {
        let mut tx = state.db.begin(tenant).await?;
        let source = repo::find_data_source(
            &mut tx,
            tenant,
            claimed.panel_id,
            claimed.data_source_id,
            false,
        )
        .await?;
        tx.commit().await?;
        let Some(source) = source else {
            return Err(SyncError::Config(
                "the data source no longer exists".to_owned(),
            ));
        };
        let config = decrypt_config(&state.crypto, scope_of(tenant, &source), &source.config)
            .map_err(|e| SyncError::Config(e.to_string()))?;
        let common = Common::from_config(&config);
        let mut sink = Sink::new(
            state.db.clone(),
            tenant.clone(),
            claimed.panel_id,
            claimed.data_source_id,
            claimed.id,
            common.key_field.clone(),
            common.stop_on_error,
        )
        .track_seen(common.delete_missing);
        let pulled = match source.kind.as_str() {
            "database" => {
                DatabaseConnector::from_config(&config, state.config.allow_private_source_hosts)?
                    .pull(&mut sink)
                    .await
            }
            "api" => {
                ApiConnector::from_config(&config, state.config.allow_private_source_hosts)?
                    .pull(&mut sink)
                    .await
            }
            other => Err(SyncError::Config(format!(
                "a {other} source is not synced by a worker"
            ))),
        };
        Ok::<_, SyncError>((sink, pulled, common.delete_missing))
    }
    .await;
    let (sink, pulled, delete_missing) = match outcome {
        Ok(parts) => parts,
        Err(err) => {
            let sink = Sink::new(
                state.db.clone(),
                tenant.clone(),
                claimed.panel_id,
                claimed.data_source_id,
                claimed.id,
                String::new(),
                false,
            );
            (sink, Err(err), false)
        }
    };
    let attempts = Some((claimed.attempts, claimed.max_attempts));
    if let Err(err) = finish_run(
        state,
        tenant,
        claimed.id,
        worker,
        claimed.panel_id,
        claimed.data_source_id,
        sink,
        pulled,
        delete_missing,
        attempts,
    )
    .await
    {
        tracing::error!(error = %err, "recording the end of a sync run failed");
    }
}

/// Finishes the sink and records the run's end: success (with a change record when rows
/// changed), a retry later, or dead. `attempts` is (done, allowed); `None` means no retry.
#[allow(clippy::too_many_arguments)] // the identity of one run and its result
async fn finish_run(
    state: &AppState,
    tenant: &TenantId,
    run_id: RunId,
    worker: &str,
    panel_id: PanelId,
    data_source_id: DataSourceId,
    sink: Sink,
    pulled: Result<(), SyncError>,
    delete_missing: bool,
    attempts: Option<(i32, i32)>,
) -> Result<SinkCounts> {
    let finished = match pulled {
        Ok(()) => sink.finish(delete_missing).await,
        Err(err) => Err(err),
    };
    let actor = system(tenant);
    write::write(state, &actor, |mut w| async move {
    // A run's end is the system's write, audited as such; inside a request (an upload, a push)
    // it is that request's entry.
    if !crate::audit::in_request() {
        w.audit_action("sync.finish");
    }
    w.audit_entity("syncRun", run_id, Some(panel_id.0));
    let counts = match finished {
        Ok(counts) => {
            let outcome = runs::Outcome {
                status: "succeeded",
                inserted: counts.inserted,
                updated: counts.updated,
                unchanged: counts.unchanged,
                deleted: counts.deleted,
                errors: json!(counts.errors),
                last_error: None,
                retry_at: None,
            };
            runs::finish(&mut w.tx, tenant, run_id, worker, &outcome).await?;
            repo::touch_last_sync(&mut w.tx, tenant, data_source_id).await?;
            w.changed(
                Change::panel("sync.succeeded", panel_id)
                    .with("dataSourceId", data_source_id)
                    .with("runId", run_id)
                    .with("inserted", counts.inserted)
                    .with("updated", counts.updated)
                    .with("unchanged", counts.unchanged)
                    .with("deleted", counts.deleted)
                    .quiet(),
            );
            if counts.inserted + counts.updated + counts.deleted > 0 {
                w.changed(
                    Change::panel("rows.changed", panel_id)
                        .with("dataSourceId", data_source_id)
                        .with("runId", run_id)
                        .with("inserted", counts.inserted)
                        .with("updated", counts.updated)
                        .with("deleted", counts.deleted)
                        .quiet(),
                );
                w.record(
                    NewChange {
                        panel_id,
                        change_type: ChangeType::SourceChanged,
                        affected_column: None,
                        description: format!(
                            "Sync of data source {data_source_id}: {} added, {} updated, {} removed",
                            counts.inserted, counts.updated, counts.deleted
                        ),
                        old_values: None,
                        new_values: Some(json!({"dataSourceId": data_source_id, "runId": run_id, "inserted": counts.inserted, "updated": counts.updated, "deleted": counts.deleted})),
                    },
                    Affect::Nobody,
                )
                .await?;
                // Who entered the cohort and the published views, and who left them: among the
                // rows this run changed (since it started) and those it deleted.
                let since = runs::find(&mut w.tx, tenant, run_id)
                    .await?
                    .and_then(|run| run.started_at);
                let sets = match since {
                    Some(since) => Sets::Changed {
                        since,
                        deletions: counts.deleted > 0,
                    },
                    None => Sets::All,
                };
                membership::refresh(&mut w, panel_id, state.clock.now(), sets).await?;
            }
            counts
        }
        Err(err) => {
            let permanent = matches!(err, SyncError::Config(_) | SyncError::Aborted { .. });
            let (status, retry_at) = match attempts {
                Some((done, allowed)) if !permanent && done < allowed => {
                    let delay = chrono::Duration::from_std(backoff(done)).unwrap_or_default();
                    ("failed", Some(Utc::now() + delay))
                }
                _ => ("dead", None),
            };
            tracing::warn!(error = %err, status, "sync run did not succeed");
            let outcome = runs::Outcome {
                status,
                inserted: 0,
                updated: 0,
                unchanged: 0,
                deleted: 0,
                errors: json!([]),
                last_error: Some(err.to_string().chars().take(2000).collect()),
                retry_at,
            };
            runs::finish(&mut w.tx, tenant, run_id, worker, &outcome).await?;
            w.changed(
                Change::panel("sync.failed", panel_id)
                    .with("dataSourceId", data_source_id)
                    .with("runId", run_id)
                    .with("status", status)
                    .with("error", outcome.last_error.clone().unwrap_or_default())
                    .with("retryAt", retry_at.map(|at| at.to_rfc3339()))
                    .quiet(),
            );
            SinkCounts::default()
        }
    };
    Ok((w, counts))
    })
    .await
}

/// A run this request drives itself (an upload, a push, a custom source's sync): started as
/// running, its records written through its sink, ended by [`InRequest::finish`], or ended as
/// dead at once should the request end first ([`Unfinished`]).
struct InRequest {
    run_id: RunId,
    tenant: TenantId,
    panel_id: PanelId,
    data_source_id: DataSourceId,
    worker: &'static str,
    delete_missing: bool,
    sink: Sink,
    guard: Unfinished,
}

impl InRequest {
    /// Starts a run of source `id` (409 `SYNC_IN_PROGRESS` while another runs).
    async fn start(
        state: &AppState,
        principal: &Principal,
        panel_id: PanelId,
        id: DataSourceId,
        trigger: &'static str,
        common: &Common,
    ) -> Result<Self> {
        // A push never deletes (it is never the whole source); an upload or a sync may.
        let worker = if trigger == "manual" { "api" } else { trigger };
        let delete_missing = common.delete_missing && trigger != "push";
        let tenant = principal.tenant.clone();
        let run = crate::write::write(state, principal, |mut w| async move {
            let run =
                runs::insert_running(&mut w.tx, &principal.tenant, panel_id, id, trigger, worker)
                    .await?;
            w.changed(started(panel_id, id, run.id, trigger));
            Ok((w, run))
        })
        .await?;
        let sink = Sink::new(
            state.db.clone(),
            tenant.clone(),
            panel_id,
            id,
            run.id,
            common.key_field.clone(),
            common.stop_on_error && trigger == "upload",
        )
        .track_seen(delete_missing);
        Ok(Self {
            run_id: run.id,
            guard: Unfinished::new(state, &tenant, run.id, worker),
            tenant,
            panel_id,
            data_source_id: id,
            worker,
            delete_missing,
            sink,
        })
    }

    fn id(&self) -> RunId {
        self.run_id
    }

    /// Ends the run with what its records' pull returned.
    async fn finish(
        mut self,
        state: &AppState,
        pulled: Result<(), SyncError>,
    ) -> Result<SinkCounts> {
        let finished = finish_run(
            state,
            &self.tenant,
            self.run_id,
            self.worker,
            self.panel_id,
            self.data_source_id,
            self.sink,
            pulled,
            self.delete_missing,
            None,
        )
        .await;
        self.guard.disarm();
        finished
    }
}

/// A run this request started and has not ended yet. Dropped before [`Unfinished::disarm`] (the
/// request's future was dropped: the client disconnected or the deadline passed), it ends the
/// run as dead at once, so the source is free again instead of held for the run's lease.
struct Unfinished {
    state: AppState,
    tenant: TenantId,
    run_id: RunId,
    worker: &'static str,
    armed: bool,
}

impl Unfinished {
    fn new(state: &AppState, tenant: &TenantId, run_id: RunId, worker: &'static str) -> Self {
        Self {
            state: state.clone(),
            tenant: tenant.clone(),
            run_id,
            worker,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (state, tenant, run_id, worker) = (
            self.state.clone(),
            self.tenant.clone(),
            self.run_id,
            self.worker,
        );
        runtime.spawn(async move {
            let outcome = runs::Outcome {
                status: "dead",
                inserted: 0,
                updated: 0,
                unchanged: 0,
                deleted: 0,
                errors: json!([]),
                last_error: Some("the request ended before the run did (interrupted)".to_owned()),
                retry_at: None,
            };
            let ended = async {
                let mut tx = state.db.begin(&tenant).await?;
                runs::finish(&mut tx, &tenant, run_id, worker, &outcome).await?;
                tx.commit().await
            }
            .await;
            if let Err(err) = ended {
                tracing::warn!(%err, run_id = %run_id, "could not end an interrupted run");
            }
        });
    }
}

/// The decrypted config of a source the caller may build on, which must be of `kind` (409
/// otherwise: only file sources take uploads, only custom sources take pushes).
async fn load_config(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    kind: &str,
) -> Result<(Value, Common)> {
    let source = load(state, principal, panel_id, id).await?;
    if source.kind != kind {
        return Err(if kind == "file" {
            ApiError::conflict("NOT_A_FILE_SOURCE", "Only file sources take uploads")
        } else {
            ApiError::conflict(
                "NOT_A_CUSTOM_SOURCE",
                "Only custom sources take pushed records",
            )
        });
    }
    let config = decrypt_config(
        &state.crypto,
        scope_of(&principal.tenant, &source),
        &source.config,
    )?;
    let common = Common::from_config(&config);
    Ok((config, common))
}

/// `POST .../upload`: reads the file from the request as it arrives and syncs it, in this request.
#[instrument(skip_all, fields(tenant = %principal.tenant, data_source_id = %id))]
pub async fn upload<R: AsyncRead + Unpin + Send>(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    content_type: Option<&str>,
    body: R,
) -> Result<SyncResult> {
    let (config, common) = load_config(state, principal, panel_id, id, "file").await?;
    let connector = FileConnector::from_config(&config, content_type, body)
        .map_err(|e| ApiError::bad_request("INVALID_SOURCE_CONFIG", e.to_string()))?;
    let mut run = InRequest::start(state, principal, panel_id, id, "upload", &common).await?;
    let run_id = run.id();
    let pulled = connector.pull(&mut run.sink).await;
    run.finish(state, pulled).await?;
    let run = find_run(state, &principal.tenant, run_id).await?;
    let source = load(state, principal, panel_id, id).await?;
    Ok(result(&source, run))
}

/// `POST .../records`: upserts a pushed batch into a custom source (no deletions: a push is
/// never the whole source).
#[instrument(skip_all, fields(tenant = %principal.tenant, data_source_id = %id))]
pub async fn push(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    req: PushRequest,
) -> Result<PushResponse> {
    if req.records.len() > MAX_PUSH_RECORDS {
        return Err(ApiError::invalid(
            "records",
            format!("at most {MAX_PUSH_RECORDS} records per request"),
        ));
    }
    let (_, common) = load_config(state, principal, panel_id, id, "custom").await?;
    let mut run = InRequest::start(state, principal, panel_id, id, "push", &common).await?;
    let run_id = run.id();
    let received = req.records.len();
    let mut pushed = Ok(());
    for (i, record) in req.records.into_iter().enumerate() {
        if let Err(err) = run.sink.record(i as u64 + 1, record).await {
            pushed = Err(err);
            break;
        }
    }
    let counts = run.finish(state, pushed).await?;
    let run = find_run(state, &principal.tenant, run_id).await?;
    if run.status != "succeeded" {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "push failed: {}",
            run.last_error.unwrap_or_default()
        )));
    }
    Ok(PushResponse {
        run_id: run.id,
        received,
        inserted: counts.inserted,
        updated: counts.updated,
        unchanged: counts.unchanged,
        error_count: counts.error_count,
        errors: counts.errors,
    })
}
