//! Extractors whose rejections answer with the API's error envelope, never axum's plain text.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use validator::Validate;

use crate::error::ApiError;
use crate::state::AppState;

/// `axum::Json` with the envelope on rejection (bad JSON, wrong content type, too large).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON body that is also checked with its `validator` rules before the handler sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        value.validate()?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path` with the envelope on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with the envelope on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The client's address: the socket's peer, or, when the peer is one of `TRUSTED_PROXIES`, the
/// address that proxy names (`Forwarded: for=…`, else `X-Forwarded-For`), read from the right
/// and skipping the trusted proxies in between. A header from anyone else is ignored: it would
/// let a client choose its own rate-limit bucket.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_address(parts, &state.config.trusted_proxies)))
    }
}

/// See [`ClientAddr`].
pub fn client_address(parts: &Parts, trusted: &[IpNet]) -> String {
    let Some(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
    else {
        return "unknown".to_owned();
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer.to_string();
    }
    let chain = forwarded_chain(&parts.headers);
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return ip.to_string(),
            // `unknown` or an obfuscated name: the trusted proxy could not say; use the proxy.
            None => return peer.to_string(),
        }
    }
    chain.first().copied().flatten().unwrap_or(peer).to_string()
}

/// The addresses a request passed through, oldest first: from `Forwarded` when present (RFC 7239),
/// else from `X-Forwarded-For`. A hop that is not an address is `None`.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(value.trim()))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// An address as a forwarding header writes it: `192.0.2.7`, `"[2001:db8::1]:4711"`,
/// `192.0.2.7:80`; anything else (`unknown`, `_hidden`) is `None`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim_matches('"');
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    raw.rsplit_once(':')?
        .0
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let (mut parts, _) = builder.body(()).expect("request").into_parts();
        parts.extensions.insert(ConnectInfo(SocketAddr::new(
            peer.parse().expect("ip"),
            4000,
        )));
        parts
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxies = nets(&["10.0.0.0/8"]);
        let xff = [("x-forwarded-for", "203.0.113.9, 10.1.1.1")];
        assert_eq!(
            client_address(&parts("10.0.0.2", &xff), &proxies),
            "203.0.113.9"
        );
        // A client that is not a proxy cannot choose its address.
        assert_eq!(
            client_address(&parts("198.51.100.4", &xff), &proxies),
            "198.51.100.4"
        );
        // The spoofed left part of a chain is ignored: the first untrusted hop from the right.
        let spoofed = [("x-forwarded-for", "1.2.3.4, 198.51.100.4")];
        assert_eq!(
            client_address(&parts("10.0.0.2", &spoofed), &proxies),
            "198.51.100.4"
        );
        let forwarded = [(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.2.2.2",
        )];
        assert_eq!(
            client_address(&parts("10.0.0.2", &forwarded), &proxies),
            "2001:db8::7"
        );
        assert_eq!(
            client_address(&parts("10.0.0.2", &[]), &proxies),
            "10.0.0.2"
        );
        let unknown = [("forwarded", "for=unknown")];
        assert_eq!(
            client_address(&parts("10.0.0.2", &unknown), &proxies),
            "10.0.0.2"
        );
        assert_eq!(client_address(&parts("10.0.0.2", &xff), &[]), "10.0.0.2");
    }
}
