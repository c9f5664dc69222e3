//! Data-source rules: configs validated per type, secrets encrypted before they are stored and
//! masked whenever they leave, the mask sent back on update keeping the stored secret, a change
//! record (with masked values) for every add, change and removal — each request one transaction.

use crate::ids::{DataSourceId, PanelId};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::connectors::api::check_url;
use super::connectors::database::PgTarget;
use super::crypto::{
    self, MASK, SecretScope, UrlSecret, encrypt_config, lookup, mask_config, open_config,
    path_name, visit_secrets,
};
use super::model::*;
use super::repo;
use crate::auth::{Principal, TenantId};
use crate::cache::Change;
use crate::changes::{Affect, ChangeType, NewChange};
use crate::db::Tx;
use crate::error::{ApiError, FieldError, Result};
use crate::etag::{IfMatch, etag};
use crate::idempotency::Outcome;
use crate::netguard::{self, Blocked};
use crate::page::{self, Page};
use crate::panels::{Access, authorize};
use crate::state::AppState;
use crate::write::{self, Idempotency, Writer};

pub fn not_found() -> ApiError {
    ApiError::not_found("DATA_SOURCE_NOT_FOUND", "Data source not found")
}

fn tag_of(row: &DataSourceRow) -> String {
    etag("data_source", row.id, row.version)
}

/// The plaintext config to store (in the open form: the URL masked, its credentials beside it):
/// secrets sent as the mask replaced by the stored ones (`stored`, opened; `None` on create,
/// where a mask has nothing to stand for), checked for the type with defaults filled in, its
/// destination checked against the address policy, and a kept secret refused when the
/// destination changed (it would follow the source to another host).
async fn prepare_config(
    allow_private: bool,
    kind: SourceType,
    mut config: Map<String, Value>,
    stored: Option<&Value>,
) -> Result<Value> {
    // The server's own bookkeeping keys are never taken from a client.
    config.retain(|k, _| !k.starts_with('$'));
    let mut errors = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    if let Some(Value::String(raw)) = config.get("url").cloned()
        && let Some((masked, parts)) = crypto::split_url(&raw)
    {
        let stored_secrets = stored.map(crypto::url_secrets_of).unwrap_or_default();
        let mut used = vec![false; stored_secrets.len()];
        let mut secrets = Vec::new();
        for (name, value) in parts {
            match value {
                Some(value) => secrets.push(UrlSecret { name, value }),
                None => {
                    let found = stored_secrets
                        .iter()
                        .enumerate()
                        .position(|(i, s)| !used[i] && s.name == name);
                    match found {
                        Some(i) => {
                            used[i] = true;
                            kept.push(format!("config.url ({name})"));
                            secrets.push(stored_secrets[i].clone());
                        }
                        None => errors.push(FieldError::new(
                            "config.url",
                            format!(
                                "{name} is the mask of a secret that is not stored; send the value"
                            ),
                        )),
                    }
                }
            }
        }
        crypto::store_url_secrets(&mut config, masked, secrets);
    }
    let mut config = Value::Object(config);
    visit_secrets(&mut config, &mut |path, secret| {
        if secret.as_str() == Some(MASK) {
            match stored
                .and_then(|s| lookup(s, path))
                .filter(|v| !v.is_null())
            {
                Some(value) => {
                    *secret = value.clone();
                    kept.push(path_name(path));
                }
                None => errors.push(FieldError::new(
                    path_name(path),
                    "is the mask of a secret that is not stored; send the value",
                )),
            }
        }
        Ok(())
    })?;
    let Value::Object(mut map) = config else {
        return Err(ApiError::invalid("config", "must be an object"));
    };
    errors.extend(validate_config(kind, &mut map));
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let config = Value::Object(map);
    let destination = check_destination(allow_private, kind, &config).await?;
    if !kept.is_empty()
        && let Some(stored) = stored
        && destination != destination_of(kind, stored)
    {
        return Err(ApiError::validation_coded(
            "SECRET_REQUIRED",
            kept.into_iter()
                .map(|field| {
                    FieldError::new(
                        field,
                        "must be sent again: the source now points to another destination, and a stored secret never follows it there",
                    )
                })
                .collect(),
        ));
    }
    Ok(config)
}

/// Where a source connects: scheme, host and port of an `api` URL; host, port and database of a
/// `database` connection string (`None` when it has no destination or it does not parse).
fn destination_of(kind: SourceType, config: &Value) -> Option<(String, String, u16)> {
    match kind {
        SourceType::Database => {
            let raw = config.get("connectionString")?.as_str()?;
            let (host, port, database) = PgTarget::parse(raw).ok()?.destination();
            Some((database, host, port))
        }
        SourceType::Api => {
            let url = reqwest::Url::parse(config.get("url")?.as_str()?).ok()?;
            Some((
                url.scheme().to_owned(),
                url.host_str()?.to_ascii_lowercase(),
                url.port_or_known_default()?,
            ))
        }
        SourceType::File | SourceType::Custom => None,
    }
}

/// The address policy at write time: a `database` host or an `api` URL that is (or resolves to)
/// a forbidden address is refused with `INVALID_SOURCE_CONFIG` naming the field. A name that does
/// not resolve now is accepted (it is checked again at every connect). Answers the destination.
async fn check_destination(
    allow_private: bool,
    kind: SourceType,
    config: &Value,
) -> Result<Option<(String, String, u16)>> {
    let refuse = |field: &str, message: &str| {
        ApiError::validation_coded(
            "INVALID_SOURCE_CONFIG",
            vec![FieldError::new(field, message)],
        )
    };
    match kind {
        SourceType::Database => {
            let raw = config
                .get("connectionString")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let target = PgTarget::parse(raw)
                .map_err(|reason| refuse("config.connectionString", &reason))?;
            if netguard::resolve(&target.host, target.port, allow_private).await
                == Err(Blocked::Refused)
            {
                return Err(refuse("config.connectionString", netguard::REFUSED));
            }
        }
        SourceType::Api => {
            let whole = crypto::join_url(
                config
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                &crypto::url_secrets_of(config),
            );
            let url =
                reqwest::Url::parse(&whole).map_err(|_| refuse("config.url", "is not a URL"))?;
            if check_url(&url, allow_private).await == Err(Blocked::Refused) {
                return Err(refuse("config.url", netguard::REFUSED));
            }
        }
        SourceType::File | SourceType::Custom => {}
    }
    Ok(destination_of(kind, config))
}

/// The secrets (by path) whose value differs between two plaintext configs: a change record
/// names them, since both sides of a secret read as the mask.
fn changed_secrets(old: &Value, new: &Value) -> Vec<String> {
    let mut changed = Vec::new();
    let mut seen = |config: &Value, other: &Value| {
        let mut copy = config.clone();
        let _ = visit_secrets(&mut copy, &mut |path, secret| {
            let name = path_name(path);
            if lookup(other, path) != Some(secret) && !changed.contains(&name) {
                changed.push(name);
            }
            Ok(())
        });
    };
    seen(new, old);
    seen(old, new);
    changed
}

/// What a change record shows of a source: its type and masked config, never a secret.
fn snapshot(row: &DataSourceRow) -> Value {
    json!({ "id": row.id, "type": row.kind, "config": mask_config(&row.config) })
}

async fn record(
    w: &mut Writer<'_>,
    panel_id: PanelId,
    description: &str,
    old: Option<Value>,
    new: Option<Value>,
) -> Result<()> {
    w.record(
        NewChange {
            panel_id,
            change_type: ChangeType::SourceChanged,
            affected_column: None,
            description: description.to_owned(),
            old_values: old,
            new_values: new,
        },
        Affect::Panel,
    )
    .await
}

async fn find(
    tx: &mut Tx,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    lock: bool,
) -> Result<DataSourceRow> {
    repo::find_data_source(tx, &principal.tenant, panel_id, id, lock)
        .await?
        .ok_or_else(not_found)
}

/// The Idempotency-Key digest covers the panel too, so one key reused on another panel is a
/// different request (422), not a replay of the first panel's source.
fn scoped_digest(panel_id: PanelId, body_digest: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(panel_id.0.to_be_bytes());
    hasher.update(body_digest);
    hasher.finalize().to_vec()
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    req: DataSourceRequest,
    idempotency_key: Option<&str>,
    digest: &[u8],
) -> Result<Outcome<DataSourceResponse>> {
    // Checked (and its host resolved) before the transaction: no connection waits on DNS.
    let plain = prepare_config(
        state.config.allow_private_source_hosts,
        req.kind,
        req.config,
        None,
    )
    .await?;
    let digest = scoped_digest(panel_id, digest);
    let key = Idempotency::of(idempotency_key, &digest);
    write::create(state, principal, key, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        // The id first: every secret's ciphertext is bound to its source.
        let id = repo::next_data_source_id(&mut w.tx).await?;
        let scope = SecretScope {
            tenant: principal.tenant.as_str(),
            data_source_id: id,
        };
        let sealed = encrypt_config(&state.crypto, scope, &plain)?;
        let row = repo::insert_data_source(
            &mut w.tx,
            &principal.tenant,
            id,
            panel_id,
            req.kind.as_str(),
            &sealed,
        )
        .await?;
        record(
            &mut w,
            panel_id,
            "Data source added",
            None,
            Some(snapshot(&row)),
        )
        .await?;
        w.changed(Change::panel("datasource.created", panel_id).with("dataSourceId", id));
        Ok((w, DataSourceResponse::from(&row)))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id))]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    page: Page,
) -> Result<(Vec<DataSourceResponse>, Option<String>)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    let rows = repo::list_data_sources(&mut tx, &principal.tenant, panel_id, page).await?;
    crate::db::end_read(tx);
    let (rows, next) = page::split(rows, page, |r| r.id);
    Ok((rows.iter().map(DataSourceResponse::from).collect(), next))
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id, data_source_id = %id))]
pub async fn get(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
) -> Result<(DataSourceResponse, String)> {
    let mut tx = state.db.begin(&principal.tenant).await?;
    authorize(&mut tx, principal, panel_id, Access::Read).await?;
    let row = find(&mut tx, principal, panel_id, id, false).await?;
    crate::db::end_read(tx);
    Ok((DataSourceResponse::from(&row), tag_of(&row)))
}

/// Replaces type and config. A request that changes nothing writes nothing (no new version, no
/// change record).
#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id, data_source_id = %id))]
pub async fn update(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    if_match: &IfMatch,
    req: DataSourceRequest,
) -> Result<(DataSourceResponse, String)> {
    write::write(state, principal, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        let current = find(&mut w.tx, principal, panel_id, id, true).await?;
        if_match.check(&tag_of(&current))?;
        let scope = SecretScope {
            tenant: principal.tenant.as_str(),
            data_source_id: id,
        };
        let old_plain = open_config(&state.crypto, scope, &current.config)?;
        // A kept secret may stay only at the same destination, which is the stored one's only if the
        // type is the same.
        let stored = (req.kind.as_str() == current.kind).then_some(&old_plain);
        let new_plain = prepare_config(
            state.config.allow_private_source_hosts,
            req.kind,
            req.config,
            stored,
        )
        .await?;
        if req.kind.as_str() == current.kind && new_plain == old_plain {
            let unchanged = (DataSourceResponse::from(&current), tag_of(&current));
            return Ok((w, unchanged));
        }
        let sealed = encrypt_config(&state.crypto, scope, &new_plain)?;
        let row =
            repo::update_data_source(&mut w.tx, &principal.tenant, id, req.kind.as_str(), &sealed)
                .await?;
        let mut new_values = snapshot(&row);
        let secrets = changed_secrets(&old_plain, &new_plain);
        if !secrets.is_empty()
            && let Value::Object(map) = &mut new_values
        {
            map.insert("changedSecrets".to_owned(), json!(secrets));
        }
        record(
            &mut w,
            panel_id,
            "Data source changed",
            Some(snapshot(&current)),
            Some(new_values),
        )
        .await?;
        w.changed(Change::panel("datasource.updated", panel_id).with("dataSourceId", id));
        w.audit_diff(
            &DataSourceResponse::from(&current),
            &DataSourceResponse::from(&row),
        );
        Ok((w, (DataSourceResponse::from(&row), tag_of(&row))))
    })
    .await
}

#[instrument(skip_all, fields(tenant = %principal.tenant, panel_id = %panel_id, data_source_id = %id))]
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    panel_id: PanelId,
    id: DataSourceId,
    if_match: &IfMatch,
) -> Result<()> {
    write::write(state, principal, |mut w| async move {
        authorize(&mut w.tx, principal, panel_id, Access::Build).await?;
        let current = find(&mut w.tx, principal, panel_id, id, true).await?;
        if_match.check(&tag_of(&current))?;
        if !repo::delete_data_source(&mut w.tx, &principal.tenant, id).await? {
            return Err(not_found());
        }
        let old = Some(snapshot(&current));
        record(&mut w, panel_id, "Data source removed", old, None).await?;
        w.changed(Change::panel("datasource.deleted", panel_id).with("dataSourceId", id));
        Ok((w, ()))
    })
    .await
}

/// Re-encrypts one source's secrets under the current key, in its own transaction; false when
/// they already were (`panels rotate-secrets`).
pub async fn reseal(state: &AppState, tenant: &TenantId, id: DataSourceId) -> anyhow::Result<bool> {
    let mut tx = state.db.begin(tenant).await?;
    let Some(row) = repo::find_data_source_by_id(&mut tx, tenant, id).await? else {
        return Ok(false);
    };
    let scope = SecretScope {
        tenant: tenant.as_str(),
        data_source_id: id,
    };
    let Some(sealed) = crypto::reseal_config(&state.crypto, scope, &row.config)
        .map_err(|e| anyhow::anyhow!("data source {id}: {e}"))?
    else {
        return Ok(false);
    };
    repo::replace_config(&mut tx, tenant, id, &sealed).await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_mask_keeps_a_stored_secret_and_is_refused_without_one() {
        let stored =
            json!({"connectionString": "postgres://kept@db.invalid/x", "query": "select 1"});
        let sent = json!({"connectionString": MASK, "query": "select 2"})
            .as_object()
            .cloned()
            .expect("object");
        let plain = prepare_config(false, SourceType::Database, sent.clone(), Some(&stored))
            .await
            .expect("valid");
        assert_eq!(plain["connectionString"], "postgres://kept@db.invalid/x");
        assert_eq!(plain["query"], "select 2");
        let err = prepare_config(false, SourceType::Database, sent, None)
            .await
            .expect_err("nothing to keep");
        assert!(err.to_string().contains("config.connectionString"), "{err}");
    }

    #[test]
    fn changed_secrets_are_named_not_shown() {
        let old = json!({"connectionString": "a", "headers": {"X-Token": "t"}});
        let new = json!({"connectionString": "b", "headers": {"X-Token": "t", "Y": "y"}});
        assert_eq!(
            changed_secrets(&old, &new),
            ["config.connectionString", "config.headers.Y"]
        );
    }
}
