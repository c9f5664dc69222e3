//! `Idempotency-Key` on POST creates: the same key with the same body replays the first response;
//! the same key with another body is 422. The key is claimed inside the create's own
//! transaction, so a concurrent retry waits for the first to commit and then replays it.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use validator::Validate;

use crate::auth::{Principal, TenantId};
use crate::error::ApiError;

/// The client's `Idempotency-Key` header, if any (1–255 printable characters).
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get("idempotency-key") {
            None => Ok(Self(None)),
            Some(value) => {
                let key = value
                    .to_str()
                    .map_err(|_| ApiError::invalid("Idempotency-Key", "must be printable text"))?;
                if key.is_empty() || key.len() > 255 {
                    return Err(ApiError::invalid(
                        "Idempotency-Key",
                        "length must be between 1 and 255",
                    ));
                }
                Ok(Self(Some(key.to_owned())))
            }
        }
    }
}

/// A validated JSON body with the digest of its canonical form (for idempotency checks).
pub struct HashedJson<T> {
    pub value: T,
    pub digest: Vec<u8>,
}

impl<S, T> FromRequest<S> for HashedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let crate::extract::Json(raw) =
            crate::extract::Json::<Value>::from_request(req, state).await?;
        // serde_json's map is ordered by key, so equal bodies serialise to equal bytes.
        let digest = Sha256::digest(serde_json::to_vec(&raw).unwrap_or_default()).to_vec();
        let value: T =
            serde_json::from_value(raw).map_err(|e| ApiError::invalid("body", e.to_string()))?;
        value.validate()?;
        Ok(Self { value, digest })
    }
}

/// What a create does: run (first time), or answer what the first run answered.
pub enum Outcome<T> {
    Created(T),
    Replayed(Value),
}

/// Claims `key` for this principal in the create's transaction; answers the stored response when
/// the key was used before with the same body.
pub async fn claim(
    conn: &mut PgConnection,
    tenant: &TenantId,
    principal: &Principal,
    key: &str,
    digest: &[u8],
) -> Result<Option<Value>, ApiError> {
    let inserted = sqlx::query(
        "insert into idempotency_key (tenant_id, principal, key, request_hash) values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(tenant.as_str())
    .bind(&principal.user_id)
    .bind(key)
    .bind(digest)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    let (hash, response): (Vec<u8>, Option<Value>) = sqlx::query_as(
        "select request_hash, response from idempotency_key where tenant_id = $1 and principal = $2 and key = $3",
    )
    .bind(tenant.as_str())
    .bind(&principal.user_id)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    if hash != digest {
        return Err(ApiError::Unprocessable {
            code: "IDEMPOTENCY_KEY_REUSED".into(),
            message: "This Idempotency-Key was used with a different request body".to_owned(),
        });
    }
    response.map(Some).ok_or_else(|| {
        ApiError::conflict(
            "IDEMPOTENCY_IN_PROGRESS",
            "A request with this Idempotency-Key is in progress",
        )
    })
}

/// Stores the response of a create under its key, in the same transaction.
pub async fn store(
    conn: &mut PgConnection,
    tenant: &TenantId,
    principal: &Principal,
    key: &str,
    response: &Value,
) -> Result<(), ApiError> {
    sqlx::query("update idempotency_key set status = 201, response = $4 where tenant_id = $1 and principal = $2 and key = $3")
        .bind(tenant.as_str())
        .bind(&principal.user_id)
        .bind(key)
        .bind(response)
        .execute(conn)
        .await?;
    Ok(())
}

/// The 201 response of a create, fresh or replayed (a replay says so in `Idempotent-Replayed`).
pub fn created<T: serde::Serialize>(outcome: Outcome<T>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match outcome {
        Outcome::Created(value) => (StatusCode::CREATED, axum::Json(value)).into_response(),
        Outcome::Replayed(value) => {
            let mut response = (StatusCode::CREATED, axum::Json(value)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response.headers_mut().remove(header::ETAG);
            response
        }
    }
}
