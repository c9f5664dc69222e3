//! `api`: an HTTP(S) GET returning JSON, with secret headers, a JSON pointer to the records, and
//! next-page following (a JSON pointer to the next URL, or a `Link: rel="next"` header).
//!
//! Outbound requests are a server-side request forgery risk: the address policy of
//! [`crate::netguard`] applies to the URL of every page, after DNS resolution and in the resolver
//! itself (so a name that re-resolves elsewhere between the check and the connect is refused
//! too), unless `ALLOW_PRIVATE_SOURCE_HOSTS=true`. Redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LINK};
use serde_json::Value;

use super::{Connector, Sink, SyncError, database, required_str};
use crate::netguard::{self, Blocked};

/// The largest response page read (bytes).
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Pages followed at most in one sync (a loop guard).
pub const MAX_PAGES: usize = 10_000;

pub struct ApiConnector {
    url: reqwest::Url,
    headers: HeaderMap,
    records_pointer: String,
    next_pointer: Option<String>,
    timeout: Duration,
    allow_private: bool,
}

impl ApiConnector {
    pub fn from_config(config: &Value, allow_private: bool) -> Result<Self, SyncError> {
        let raw = required_str(config, "url")?;
        let url = reqwest::Url::parse(raw)
            .map_err(|_| SyncError::Config("config.url is not a URL".to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SyncError::Config(
                "config.url must be http or https".to_owned(),
            ));
        }
        let mut headers = HeaderMap::new();
        if let Some(map) = config.get("headers").and_then(Value::as_object) {
            for (name, value) in map {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    SyncError::Config(format!("config.headers: {name:?} is not a header name"))
                })?;
                let value = value
                    .as_str()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                    .ok_or_else(|| {
                        SyncError::Config(format!("config.headers.{name}: must be text"))
                    })?;
                headers.insert(name, value);
            }
        }
        let pointer = |name: &str| -> Result<Option<String>, SyncError> {
            match config.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => Ok(Some(p.clone())),
                Some(_) => Err(SyncError::Config(format!(
                    "config.{name} must be a JSON pointer (\"\" or \"/...\")"
                ))),
            }
        };
        let timeout_ms = config
            .get("timeoutMs")
            .and_then(Value::as_u64)
            .unwrap_or(30_000)
            .clamp(100, 120_000);
        Ok(Self {
            url,
            headers,
            records_pointer: pointer("recordsPointer")?.unwrap_or_default(),
            next_pointer: pointer("nextPointer")?.filter(|p| !p.is_empty()),
            timeout: Duration::from_millis(timeout_ms),
            allow_private,
        })
    }

    fn client(&self) -> Result<reqwest::Client, SyncError> {
        crate::tls::install_crypto_provider();
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: self.allow_private,
            }))
            .build()
            .map_err(|e| SyncError::Source(format!("cannot build the HTTP client: {e}")))
    }

    /// Refuses a URL whose host is, or resolves to, a forbidden address before any request, so
    /// the answer is a clear configuration error. (IP literals never reach the resolver; the
    /// resolver checks again at connect time, against a name re-resolving elsewhere.)
    async fn check_host(&self, url: &reqwest::Url) -> Result<(), SyncError> {
        check_url(url, self.allow_private)
            .await
            .map_err(database::blocked)
    }
}

/// The address policy for an `api` URL: its host (an IP literal, or every address its name
/// resolves to) must not be forbidden.
pub async fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), Blocked> {
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => netguard::resolve(&ip.to_string(), port, allow_private).await,
        Some(url::Host::Ipv6(ip)) => netguard::resolve(&ip.to_string(), port, allow_private).await,
        Some(url::Host::Domain(name)) => netguard::resolve(name, port, allow_private).await,
        None => Err(Blocked::Unresolvable),
    }
    .map(|_| ())
}

impl Connector for ApiConnector {
    async fn pull(&self, sink: &mut Sink) -> Result<(), SyncError> {
        let client = self.client()?;
        let mut next = Some(self.url.clone());
        let mut record_number = 0u64;
        let mut pages = 0usize;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(SyncError::Source(format!("more than {MAX_PAGES} pages")));
            }
            self.check_host(&url).await?;
            let response = client
                .get(url.clone())
                .headers(self.headers.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(describe)?;
            let status = response.status();
            if !status.is_success() {
                return Err(SyncError::Source(format!(
                    "the source answered HTTP {status}"
                )));
            }
            let link_next = response
                .headers()
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(describe)?;
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(SyncError::Source(format!(
                        "a response is larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let document: Value = serde_json::from_slice(&body)
                .map_err(|e| SyncError::Source(format!("the response is not JSON: {e}")))?;
            drop(body);
            let records = if self.records_pointer.is_empty() {
                Some(&document)
            } else {
                document.pointer(&self.records_pointer)
            };
            let Some(Value::Array(records)) = records else {
                return Err(SyncError::Source(format!(
                    "no array at recordsPointer {:?}",
                    self.records_pointer
                )));
            };
            for record in records {
                record_number += 1;
                sink.record(record_number, record.clone()).await?;
            }
            let next_url = match &self.next_pointer {
                Some(pointer) => document
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                None => link_next,
            };
            next = match next_url.filter(|u| !u.is_empty()) {
                Some(u) => Some(
                    url.join(&u)
                        .map_err(|_| SyncError::Source(format!("next page {u:?} is not a URL")))?,
                ),
                None => None,
            };
        }
        Ok(())
    }
}

/// A request that got no HTTP answer is "refused" (the policy, in the resolver) or
/// "unreachable" (anything else: refused, reset, timed out before an answer): nothing that would
/// tell a tenant what listens where, and never the URL (which may carry a token).
fn describe(e: reqwest::Error) -> SyncError {
    let mut cause: Option<&dyn std::error::Error> = Some(&e);
    while let Some(err) = cause {
        if err.to_string().contains(REFUSED_BY_POLICY) {
            return SyncError::Config(netguard::REFUSED.to_owned());
        }
        cause = err.source();
    }
    // A timeout is not told apart either: "accepted, then silent" against "refused" is exactly
    // how a port scan tells an open port from a closed one.
    SyncError::Source(netguard::UNREACHABLE.to_owned())
}

/// The resolver's error text for a forbidden address, recognised again in [`describe`].
const REFUSED_BY_POLICY: &str = "panels: address refused by policy";

/// The `rel="next"` target of one `Link` header value.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            match netguard::resolve(&host, 0, allow_private).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(Blocked::Refused) => Err(REFUSED_BY_POLICY.into()),
                Err(Blocked::Unresolvable) => Err("cannot resolve the host".into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_the_next_page() {
        assert_eq!(
            next_link("<https://x/p?page=2>; rel=\"next\", <https://x/p?page=9>; rel=\"last\""),
            Some("https://x/p?page=2".to_owned())
        );
        assert_eq!(next_link("<https://x/p?page=9>; rel=\"last\""), None);
    }
}
