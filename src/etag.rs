//! Optimistic concurrency: a resource's `ETag` is its row version; `If-Match` with a stale tag
//! answers 412, so two editors cannot silently overwrite each other.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::error::ApiError;

pub fn etag(kind: &str, id: impl Into<i64>, version: i32) -> String {
    let id = id.into();
    format!("\"{kind}-{id}-v{version}\"")
}

pub fn header_map(tag: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, value);
    }
    headers
}

/// The `If-Match` precondition, if the client sent one.
#[derive(Debug, Clone, Default)]
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let tags = headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(|t| t.trim().trim_start_matches("W/").to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            });
        Self(tags)
    }

    /// Checks the precondition against the resource's current tag.
    pub fn check(&self, current: &str) -> Result<(), ApiError> {
        match &self.0 {
            None => Ok(()),
            Some(tags) if tags.iter().any(|t| t == "*" || t == current) => Ok(()),
            Some(_) => Err(ApiError::PreconditionFailed {
                message: "The resource changed since you read it (ETag mismatch)".to_owned(),
            }),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}
