//! Cache-aside reads: a response cached under the versions it depends on, in the process and in
//! Redis, loaded from PostgreSQL on a miss (after the versions were read).

use crate::ids::{PanelId, ViewId};
use std::future::Future;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use redis::AsyncCommands;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Cache, ENTRY_TTL, VIEW_PANELS_CAPACITY};
use crate::auth::{Principal, TenantId};
use crate::error::{ApiError, Result};

/// A cached JSON response: its body and the value of the one header that goes with it.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The `ETag` of a single resource, or the next page's cursor of a list; empty when none.
    pub header: String,
    pub body: Bytes,
}

impl Cached {
    /// Serializes a response exactly as `Json` would.
    pub fn new<T: Serialize>(value: &T, header: impl Into<String>) -> Result<Self> {
        let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Self {
            header: header.into(),
            body: Bytes::from(body),
        })
    }

    /// The body as a JSON response, without its header.
    pub fn json(&self) -> JsonBytes {
        JsonBytes(self.body.clone())
    }

    /// The body with `ETag: header`.
    pub fn with_etag(self) -> Response {
        let mut response = JsonBytes(self.body).into_response();
        if let Ok(value) = HeaderValue::from_str(&self.header) {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    }

    fn encode(&self) -> Vec<u8> {
        let header = self.header.as_bytes();
        let mut out = Vec::with_capacity(4 + header.len() + self.body.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(header);
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: Vec<u8>) -> Option<Self> {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let header = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?.to_owned();
        let body = Bytes::from(bytes).slice(4 + len..);
        Some(Self { header, body })
    }

    pub(super) fn weight(&self) -> usize {
        self.header.len() + self.body.len()
    }
}

/// Serialized JSON answered as is.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The part of a key that separates readers who may be shown different things: admins see the
/// whole tenant; anyone else what their e-mail, user id (and role, for safety) are granted.
pub fn reader(principal: &Principal) -> String {
    if principal.is_admin() {
        return "admin".to_owned();
    }
    let mut hash = Sha256::new();
    hash.update(principal.email.as_bytes());
    hash.update([0]);
    hash.update(principal.user_id.as_bytes());
    let digest = hash.finalize();
    format!("{}-{}", principal.role.as_str(), hex::encode(&digest[..16]))
}

impl Cache {
    /// Cache-aside: answers the entry of `{cache}:{rest}` at the current versions of `depends`,
    /// or loads it (after the versions were read, so a concurrent write can only make the fill
    /// land under versions nobody reads any more) and stores it. Errors are never cached. Without
    /// a trusted version source, loads and stores nothing.
    pub async fn read_through<F, Fut>(
        &self,
        cache: &'static str,
        tenant: &TenantId,
        depends: super::Depends,
        rest: &str,
        load: F,
    ) -> Result<Cached>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached>>,
    {
        if !self.inner.enabled {
            return Box::pin(load()).await;
        }
        let Some(versions) = self.versions(cache, tenant, depends).await else {
            self.inner
                .metrics
                .cache_bypassed
                .with_label_values(&[cache])
                .inc();
            return Box::pin(load()).await;
        };
        let key = format!("{}:{tenant}:{cache}:{rest}:{versions}", self.inner.prefix);
        if let Some(hit) = self.inner.local.get(&key).await {
            self.hit(cache, "local");
            return Ok(hit);
        }
        // Boxed: the Redis read and the load hold large futures (queries, connections), which
        // would otherwise make every hit's future that large, and be moved with it.
        Box::pin(self.fill(cache, key, load)).await
    }

    /// A miss in this process: the entry from Redis, or loaded and stored in both layers.
    async fn fill<F, Fut>(&self, cache: &'static str, key: String, load: F) -> Result<Cached>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached>>,
    {
        let remote: Option<Option<Vec<u8>>> = self
            .run(cache, "get", async |mut conn, _| conn.get(&key).await)
            .await;
        if let Some(hit) = remote.flatten().and_then(Cached::decode) {
            self.hit(cache, "redis");
            self.inner.local.insert(key, hit.clone()).await;
            return Ok(hit);
        }
        self.inner
            .metrics
            .cache_misses
            .with_label_values(&[cache])
            .inc();
        let value = load().await?;
        self.inner.local.insert(key.clone(), value.clone()).await;
        let bytes = value.encode();
        let _: Option<()> = self
            .run(cache, "set", async |mut conn, _| {
                conn.set_ex(&key, bytes, ENTRY_TTL.as_secs()).await
            })
            .await;
        Ok(value)
    }

    fn hit(&self, cache: &str, layer: &str) {
        self.inner
            .metrics
            .cache_hits
            .with_label_values(&[cache, layer])
            .inc();
    }

    /// The panel a view belongs to, when this instance has seen it (a view never moves).
    pub fn view_panel(&self, tenant: &TenantId, view_id: ViewId) -> Option<PanelId> {
        let map = self
            .inner
            .view_panels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant.as_str().to_owned(), view_id)).copied()
    }

    pub fn remember_view_panel(&self, tenant: &TenantId, view_id: ViewId, panel_id: PanelId) {
        let mut map = self
            .inner
            .view_panels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.len() >= VIEW_PANELS_CAPACITY {
            map.clear();
        }
        map.insert((tenant.as_str().to_owned(), view_id), panel_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let cached = Cached::new(&serde_json::json!({"a": 1}), "\"panel-1-v2\"").expect("json");
        let back = Cached::decode(cached.encode()).expect("decodes");
        assert_eq!(back.header, "\"panel-1-v2\"");
        assert_eq!(&back.body[..], br#"{"a":1}"#);
        assert!(Cached::decode(vec![0, 0]).is_none());
        assert!(Cached::decode(vec![0, 0, 0, 9, b'x']).is_none());
    }

    #[test]
    fn readers_differ_by_identity_and_role_but_admins_share() {
        let principal = |email: &str, role| Principal {
            user_id: format!("user-{email}"),
            email: email.to_owned(),
            tenant: TenantId::parse("acme").expect("tenant slug"),
            role,
            credential: crate::auth::Credential::Jwt,
        };
        use crate::auth::Role;
        let a = reader(&principal("a@x.io", Role::User));
        assert_eq!(a, reader(&principal("a@x.io", Role::User)));
        assert_ne!(a, reader(&principal("b@x.io", Role::User)));
        assert_ne!(a, reader(&principal("a@x.io", Role::Builder)));
        assert_eq!(
            reader(&principal("a@x.io", Role::Admin)),
            reader(&principal("b@x.io", Role::Admin))
        );
    }
}
