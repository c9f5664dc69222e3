//! The outbound address policy: where something a tenant configures (an `api` source's URL, a
//! `database` source's host, later a webhook) may make this server connect.
//!
//! A tenant must never reach the server's own infrastructure: its database, its Redis, a cloud
//! metadata service, anything on a private network. So every outgoing connection a tenant can
//! point is checked against [`is_forbidden`] after DNS resolution (all the addresses a name
//! resolves to, so a round-robin name cannot slip one through), both when the configuration is
//! stored (a clear 400) and again each time it connects (a name may re-resolve elsewhere), and the
//! connection then goes to an address that was checked. `ALLOW_PRIVATE_SOURCE_HOSTS=true` lifts
//! the policy (tests, or a deployment inside a trusted network).
//!
//! What a refused or failed connection tells the tenant is only "refused" or "unreachable"
//! ([`REFUSED`], [`UNREACHABLE`]): never the resolved address, the error of the socket, or how long
//! it took, so the server cannot be used to map a network or scan ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// What a tenant is told when the policy refuses a destination.
pub const REFUSED: &str =
    "refused: the destination is a private, loopback, link-local or reserved address";
/// What a tenant is told when a destination cannot be reached, whatever the reason.
pub const UNREACHABLE: &str = "unreachable: could not connect to the destination";

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a destination cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The policy forbids it (one of its addresses is forbidden).
    Refused,
    /// The name does not resolve (or not in time).
    Unresolvable,
}

impl Blocked {
    /// The text a tenant sees.
    pub fn message(self) -> &'static str {
        match self {
            Self::Refused => REFUSED,
            Self::Unresolvable => UNREACHABLE,
        }
    }
}

/// Resolves `host` (a name or an IP literal) and answers its addresses with `port`, refusing the
/// whole destination when any address is forbidden (unless `allow_private`).
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Blocked> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            if !is_host_name(host) {
                return Err(Blocked::Unresolvable);
            }
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await
            {
                Ok(Ok(found)) => found.collect(),
                _ => return Err(Blocked::Unresolvable),
            }
        }
    };
    if addrs.is_empty() {
        return Err(Blocked::Unresolvable);
    }
    if !allow_private && addrs.iter().any(|a| is_forbidden(a.ip())) {
        return Err(Blocked::Refused);
    }
    Ok(addrs)
}

/// Checks what can be checked without the network: an IP literal against the policy, a name for
/// its form. `Ok(true)` when the host is a name that still has to be resolved.
pub fn check_literal(host: &str, allow_private: bool) -> Result<bool, Blocked> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if !allow_private && is_forbidden(ip) => Err(Blocked::Refused),
        Ok(_) => Ok(false),
        Err(_) if is_host_name(bare) => Ok(true),
        Err(_) => Err(Blocked::Refused),
    }
}

/// A DNS name as resolvers take it: letters, digits, `-`, `_` and dots, at most 253 characters.
/// Anything else (a path, a comma-separated host list, a percent-encoded socket) is refused
/// before any resolver or driver could interpret it.
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('.')
        && !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Addresses a tenant's configuration may never make the server connect to (unless explicitly
/// allowed): loopback, private (RFC 1918), shared (CGNAT), link-local (which holds the cloud
/// metadata services), unique-local, unspecified, broadcast, multicast, documentation,
/// benchmarking and reserved ranges, the IETF protocol block (Oracle's metadata service), Azure's
/// platform address, and every IPv6 form that embeds an IPv4 address (mapped, compatible, NAT64,
/// 6to4, Teredo) when the embedded address is forbidden.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), Alibaba metadata
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, Oracle Cloud metadata
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || v4 == Ipv4Addr::new(168, 63, 129, 16) // Azure platform (wire server)
        || a >= 240 // reserved
}

fn forbidden_v6(v6: Ipv6Addr) -> bool {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks).
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        return forbidden_v4(embedded(s[6], s[7]));
    }
    // NAT64: the well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2] == 1 || forbidden_v4(embedded(s[6], s[7]));
    }
    // 6to4 (2002::/16) carries the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2]));
    }
    // Teredo (2001:0::/32) tunnels to an obfuscated IPv4 address: never a source.
    if s[0] == 0x2001 && s[1] == 0 {
        return true;
    }
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 is AWS metadata)
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)) // discard-only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_reserved_and_embedded_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.8.9.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "100.100.100.200",
            "192.0.0.192",
            "168.63.129.16",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fec0::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn only_plain_names_and_literals_pass_the_form_check() {
        assert_eq!(check_literal("db.example.com", false), Ok(true));
        assert_eq!(check_literal("8.8.8.8", false), Ok(false));
        assert_eq!(check_literal("[::1]", false), Err(Blocked::Refused));
        assert_eq!(check_literal("127.0.0.1", true), Ok(false));
        for bad in ["/var/run/postgresql", "a,b", "%2Ftmp", "", "-x", "a b"] {
            assert_eq!(check_literal(bad, false), Err(Blocked::Refused), "{bad}");
        }
    }

    #[tokio::test]
    async fn names_are_refused_when_they_resolve_to_a_forbidden_address() {
        assert_eq!(
            resolve("localhost", 5432, false).await,
            Err(Blocked::Refused)
        );
        assert!(resolve("localhost", 5432, true).await.is_ok());
        // A number that resolvers read as an IPv4 address (2130706433 = 127.0.0.1).
        assert_eq!(
            resolve("2130706433", 80, false).await,
            Err(Blocked::Refused)
        );
        assert_eq!(
            resolve("no-such-host.invalid", 80, false).await,
            Err(Blocked::Unresolvable)
        );
    }
}
