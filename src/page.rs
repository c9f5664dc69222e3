//! Keyset pagination for list endpoints: `limit` (default 100, at most 1000) and an opaque
//! `cursor`; the next page is announced in `Link: <…>; rel="next"` and `X-Next-Cursor`, so response
//! bodies keep the reference's shapes.

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A validated page request: rows with id greater than `after`, `limit` of them.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub after: i64,
}

impl PageParams {
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match &self.cursor {
            None => 0,
            Some(cursor) => decode(cursor)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor of this list"))?,
        };
        Ok(Page { limit, after })
    }
}

pub fn encode(last_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("id:{last_id}"))
}

fn decode(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("id:")?
        .parse()
        .ok()
        .filter(|id: &i64| *id >= 0)
}

/// Trims a page fetched with `limit + 1` rows; answers the next cursor when there is more.
pub fn split<T, K: Into<i64>>(
    mut rows: Vec<T>,
    page: Page,
    id_of: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|row| encode(id_of(row).into()));
        (rows, next)
    } else {
        (rows, None)
    }
}

/// `Link` and `X-Next-Cursor` headers for the next page, built on the request's own URI.
pub fn next_headers(uri: &Uri, next: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Some(next) = next else { return headers };
    let mut query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .filter(|(k, _)| k != "cursor")
                .collect()
        })
        .unwrap_or_default();
    query.push(("cursor".to_owned(), next.to_owned()));
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    if let Ok(link) = HeaderValue::from_str(&format!("<{}?{query}>; rel=\"next\"", uri.path())) {
        headers.insert(header::LINK, link);
    }
    if let Ok(value) = HeaderValue::from_str(next) {
        headers.insert("x-next-cursor", value);
    }
    headers
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let params = PageParams {
            limit: Some(5),
            cursor: Some(encode(42)),
        };
        let page = params.page().expect("valid");
        assert_eq!((page.limit, page.after), (5, 42));
        assert!(
            PageParams {
                limit: None,
                cursor: Some("nope".into())
            }
            .page()
            .is_err()
        );
        assert!(
            PageParams {
                limit: Some(0),
                cursor: None
            }
            .page()
            .is_err()
        );
        assert!(
            PageParams {
                limit: Some(1001),
                cursor: None
            }
            .page()
            .is_err()
        );
    }

    #[test]
    fn split_announces_a_next_page_only_when_there_is_one() {
        let page = Page { limit: 2, after: 0 };
        let (rows, next) = split(vec![1, 2, 3], page, |r| *r);
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(next, Some(encode(2)));
        let (_, next) = split(vec![1, 2], page, |r| *r);
        assert!(next.is_none());
    }
}
