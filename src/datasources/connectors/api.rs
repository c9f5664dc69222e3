//! `api`: an HTTP(S) GET returning JSON, with secret headers, a JSON pointer to the records, and
//! next-page following (a JSON pointer to the next URL, or a `Link: rel="next"` header).
//!
//! Outbound requests are a server-side request forgery risk: addresses that are loopback,
//! private, link-local, shared, multicast or cloud metadata are refused — after DNS resolution,
//! in the resolver itself, so a name that resolves (or re-resolves) to such an address is refused
//! too — unless `ALLOW_PRIVATE_SOURCE_HOSTS=true`. Redirects are not followed.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LINK};
use serde_json::Value;

use super::{Connector, Sink, SyncError, required_str};

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

    /// Refuses a URL whose host is, or resolves to, a forbidden address — before any request,
    /// so the answer is a clear configuration error. (IP literals never reach the resolver; the
    /// resolver checks again at connect time, against a name re-resolving elsewhere.)
    async fn check_host(&self, url: &reqwest::Url) -> Result<(), SyncError> {
        if self.allow_private {
            return Ok(());
        }
        let refuse = |ip: IpAddr| {
            SyncError::Config(format!(
                "refusing to fetch {ip}: private, loopback or metadata address"
            ))
        };
        match url.host() {
            Some(url::Host::Ipv4(ip)) if is_forbidden(IpAddr::V4(ip)) => {
                Err(refuse(IpAddr::V4(ip)))
            }
            Some(url::Host::Ipv6(ip)) if is_forbidden(IpAddr::V6(ip)) => {
                Err(refuse(IpAddr::V6(ip)))
            }
            Some(url::Host::Domain(name)) => {
                let port = url.port_or_known_default().unwrap_or(80);
                let addrs = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|_| SyncError::Source(format!("cannot resolve {name}")))?;
                for addr in addrs {
                    if is_forbidden(addr.ip()) {
                        return Err(refuse(addr.ip()));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
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

/// Error text without the URL (which may carry a token in its query).
fn describe(e: reqwest::Error) -> SyncError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let detail = std::error::Error::source(&e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if detail.contains("refusing") {
        SyncError::Config(detail)
    } else {
        SyncError::Source(format!("the source: {what}"))
    }
}

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
            let addrs: Vec<SocketAddr> = tokio::task::spawn_blocking(move || {
                (host.as_str(), 0).to_socket_addrs().map(Iterator::collect)
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)??;
            if !allow_private && let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
                let message = format!(
                    "refusing to fetch {}: private, loopback or metadata address",
                    bad.ip()
                );
                return Err(message.into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Addresses a source may never point at (unless explicitly allowed).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0xfd00 // metadata services on fd00:ec2::254
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn link_headers_name_the_next_page() {
        assert_eq!(
            next_link("<https://x/p?page=2>; rel=\"next\", <https://x/p?page=9>; rel=\"last\""),
            Some("https://x/p?page=2".to_owned())
        );
        assert_eq!(next_link("<https://x/p?page=9>; rel=\"last\""), None);
    }
}
