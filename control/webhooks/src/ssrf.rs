//! Where webhooks may go. An app's webhook URL is a tenant's input: left
//! alone it would let a tenant make Arc POST to the cloud's metadata
//! service, to loopback or to the operator's private network (server-side
//! request forgery). Addresses that are not public — loopback, private
//! (RFC 1918, unique-local), link-local, shared (CGNAT), multicast,
//! unspecified, broadcast, documentation and benchmarking ranges, and IPv6
//! forms embedding such an IPv4 address — are refused unless the operator's
//! allow-list ([`AddressPolicy::allow`]) names them.
//!
//! Checked twice: when the URL is configured ([`check_url`]: a name that
//! resolves to a refused address is refused), and at every delivery, after
//! name resolution: the HTTP client resolves names through
//! [`CheckedResolver`], which hands it only the addresses it checked, so the
//! connection goes to a checked address and a DNS answer that changed since
//! (rebinding) cannot reach a refused one; an IP-literal host is checked by
//! [`check_literal`] (the client does not resolve those). No proxy is used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How long a configuration-time name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// An address range (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: prefix 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Net {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped (`::ffff:a.b.c.d`) address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => non_public_v4(a),
        IpAddr::V6(a) => non_public_v6(a),
    }
}

fn non_public_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("shared (carrier-grade NAT)")
    } else if a.is_multicast() {
        Some("multicast")
    } else if a.is_broadcast()
        || o[0] >= 240
        || a.is_documentation()
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
    {
        // Broadcast, future use, documentation, benchmarking, protocol assignments.
        Some("reserved")
    } else {
        None
    }
}

fn non_public_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_multicast() {
        Some("multicast")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        Some("private")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("reserved")
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: the IPv4 address in its last 32 bits decides.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        non_public_v4(v4)
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): as its IPv4 address.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        non_public_v4(v4).or(Some("reserved"))
    } else {
        None
    }
}

/// Which addresses webhooks may reach besides public ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Ranges allowed although not public (`dev` allows loopback).
    pub allow: Vec<Net>,
}

impl AddressPolicy {
    /// Loopback allowed (what `arc-control dev` uses: its tenants are the developer).
    pub fn loopback() -> Self {
        Self {
            allow: vec![
                Net { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), prefix: 8 },
                Net { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
            ],
        }
    }

    /// Why `ip` may not be reached (`None`: it may).
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let kind = non_public(ip)?;
        if self.allow.iter().any(|n| n.contains(ip)) {
            return None;
        }
        Some(format!(
            "{ip} is a {kind} address (not allowed for webhooks; an operator may allow it with --webhook-allow-nets)"
        ))
    }
}

/// The host and port of an `http://` or `https://` URL (brackets off an IPv6 literal).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(r) => (r, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// Delivery time, for a URL whose host is an IP address (the HTTP client
/// does not resolve those): refused when the address is.
pub fn check_literal(policy: &AddressPolicy, url: &str) -> Result<(), String> {
    let Some((host, _)) = host_port(url) else { return Err(format!("{url:?} is not an http(s) URL")) };
    match host.parse::<IpAddr>() {
        Ok(ip) => policy.refusal(ip).map_or(Ok(()), Err),
        Err(_) => Ok(()),
    }
}

/// Configuration time: a URL whose host is a refused address, or a name
/// that resolves to one, is refused. A name that does not resolve (yet) is
/// accepted: deliveries check again.
pub async fn check_url(policy: &AddressPolicy, url: &str) -> Result<(), String> {
    check_literal(policy, url)?;
    let Some((host, port)) = host_port(url) else { return Err(format!("{url:?} is not an http(s) URL")) };
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let Ok(Ok(addrs)) = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await
    else {
        return Ok(());
    };
    for a in addrs {
        if let Some(why) = policy.refusal(a.ip()) {
            return Err(format!("{host} resolves to {why}"));
        }
    }
    Ok(())
}

/// The webhook client's name resolver: the system's, keeping only the
/// addresses the policy allows (the client connects to nothing else).
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.refusal(a.ip()) {
                    Some(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why =
                    refused.map_or_else(|| format!("{host} has no address"), |w| format!("{host} resolves to {w}"));
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn non_public_addresses_are_named_and_public_ones_pass() {
        for (a, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("fd00::1", "private"),
            ("100.100.100.200", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("::7f00:1", "loopback"),
        ] {
            assert_eq!(non_public(ip(a)), Some(kind), "{a}");
        }
        for a in ["93.184.215.14", "1.1.1.1", "2606:4700::1111", "64:ff9b::5db8:d70e", "::ffff:8.8.8.8"] {
            assert_eq!(non_public(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn the_allow_list_opens_named_ranges_only() {
        let policy =
            AddressPolicy { allow: vec!["10.0.0.0/8".parse().expect("net"), "fd00::/8".parse().expect("net")] };
        assert_eq!(policy.refusal(ip("10.200.0.1")), None);
        assert_eq!(policy.refusal(ip("fd12::1")), None);
        assert_eq!(policy.refusal(ip("1.1.1.1")), None, "public addresses need no allowing");
        assert!(policy.refusal(ip("192.168.0.1")).is_some_and(|w| w.contains("private")));
        assert!(policy.refusal(ip("127.0.0.1")).is_some_and(|w| w.contains("loopback")));
        let dev = AddressPolicy::loopback();
        assert_eq!(dev.refusal(ip("127.0.0.1")), None);
        assert_eq!(dev.refusal(ip("::ffff:127.0.0.1")), None);
        assert!(dev.refusal(ip("169.254.169.254")).is_some());
        for bad in ["10.0.0.0/33", "nope", "::1/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Net>().is_err(), "{bad}");
        }
        assert_eq!("0.0.0.0/0".parse::<Net>().map(|n| n.contains(ip("8.8.8.8"))), Ok(true));
    }

    #[test]
    fn hosts_come_out_of_urls() {
        assert_eq!(host_port("http://169.254.169.254/latest/meta-data"), Some(("169.254.169.254".into(), 80)));
        assert_eq!(host_port("https://u:p@[::1]:8443/x?y"), Some(("::1".into(), 8443)));
        assert_eq!(host_port("https://example.com"), Some(("example.com".into(), 443)));
        assert_eq!(host_port("ftp://x"), None);
        let policy = AddressPolicy::default();
        assert!(check_literal(&policy, "http://[::ffff:127.0.0.1]:9/").is_err());
        assert!(check_literal(&policy, "http://10.0.0.1:8080/hook").is_err());
        assert!(check_literal(&policy, "https://example.com/hook").is_ok(), "names are checked when resolved");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_and_the_resolver_hands_out_nothing() {
        let policy = AddressPolicy::default();
        let refused = check_url(&policy, "http://localhost:9/hook").await;
        assert!(refused.as_ref().is_err_and(|w| w.contains("loopback")), "{refused:?}");
        let resolver = CheckedResolver { policy: Arc::new(policy) };
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        let got = reqwest::dns::Resolve::resolve(&resolver, name).await;
        assert!(got.is_err(), "no address handed to the client");
        let dev = CheckedResolver { policy: Arc::new(AddressPolicy::loopback()) };
        let got = reqwest::dns::Resolve::resolve(&dev, reqwest::dns::Name::from_str("localhost").expect("name")).await;
        assert!(got.is_ok_and(|mut a| a.all(|a| a.ip().is_loopback())));
    }
}
