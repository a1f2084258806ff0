//! What is never sent to a third party unless asked: addresses that are not
//! globally reachable, and names that only mean something inside a network.
//!
//! Looking them up spends quota on nothing (the portal knows nothing of a
//! site's internal hosts) and tells Kaspersky how the site's network is
//! laid out. Both lists live here, in one place, and the docs are generated
//! from them.

use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv4 ranges that are not looked up unless `KL_LOOKUP_PRIVATE_IPS` is
/// set: those IANA's special-purpose address registry marks "not globally
/// reachable", the deprecated 6to4 relay anycast range, and multicast.
pub const INTERNAL_IPV4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private use"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space (carrier-grade NAT)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private use"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments (192.0.0.9 and 192.0.0.10 are looked up)"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (TEST-NET-1)"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "deprecated 6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private use"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation (TEST-NET-2)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation (TEST-NET-3)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "limited broadcast"),
];

/// Addresses inside [`INTERNAL_IPV4`] ranges that the registry marks
/// globally reachable (anycast services).
const GLOBAL_IPV4_EXCEPTIONS: &[Ipv4Addr] = &[Ipv4Addr::new(192, 0, 0, 9), Ipv4Addr::new(192, 0, 0, 10)];

/// IPv6 ranges (as URL hosts) that are not looked up unless
/// `KL_LOOKUP_PRIVATE_IPS` is set; an IPv4-mapped address follows the IPv4
/// rules.
pub const INTERNAL_IPV6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "local-use IPv4/IPv6 translation"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site local (deprecated)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// Name suffixes for internal use only (RFC 6761, RFC 6762, RFC 7686,
/// RFC 8375, and the `internal` and `lan` names sites use): a name that is
/// one of these or ends in `.` and one of these is not looked up unless
/// `KL_LOOKUP_INTERNAL_NAMES` is set. So are `localhost` and names of a
/// single label (`intranet`).
pub const INTERNAL_SUFFIXES: &[&str] =
    &["local", "internal", "lan", "home.arpa", "localhost", "test", "invalid", "example", "onion"];

/// Whether an IPv4 address is in an [`INTERNAL_IPV4`] range.
pub fn is_internal_ipv4(ip: Ipv4Addr) -> bool {
    if GLOBAL_IPV4_EXCEPTIONS.contains(&ip) {
        return false;
    }
    let bits = u32::from(ip);
    INTERNAL_IPV4.iter().any(|(net, len, _)| {
        let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
        bits & mask == u32::from(*net) & mask
    })
}

/// Whether an IPv6 address is in an [`INTERNAL_IPV6`] range, or is an
/// IPv4-mapped internal IPv4 address.
pub fn is_internal_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_ipv4(v4);
    }
    let bits = u128::from(ip);
    INTERNAL_IPV6.iter().any(|(net, len, _)| {
        let mask = if *len == 0 { 0 } else { u128::MAX << (128 - u32::from(*len)) };
        bits & mask == u128::from(*net) & mask
    })
}

/// Why a host name (ASCII, any case, a trailing dot allowed) is internal:
/// `single label`, `localhost`, or the suffix (`.local`).
pub fn internal_name(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host == "localhost" {
        return Some("localhost".to_owned());
    }
    if !host.contains('.') {
        return Some("single label".to_owned());
    }
    INTERNAL_SUFFIXES.iter().find(|suffix| host.ends_with(&format!(".{suffix}"))).map(|suffix| format!(".{suffix}"))
}

/// What may be sent to a third party.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Send private and reserved addresses too (IPv4 lookups, and IP
    /// literals as URL hosts).
    pub lookup_private_ips: bool,
    /// Send internal names too (`localhost`, single labels, the
    /// [`INTERNAL_SUFFIXES`]), as domains or URL hosts.
    pub lookup_internal_names: bool,
}

/// Why an indicator is withheld under the default policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Internal {
    /// A private or reserved address (or a URL whose host is one).
    Address,
    /// An internal host name; why (`single label`, `localhost`, `.local`).
    Name(String),
}

impl Internal {
    /// Why it is withheld under `policy`; `None` when the policy allows it.
    pub fn reason(&self, policy: &Policy) -> Option<String> {
        match self {
            Internal::Address if !policy.lookup_private_ips => Some("private or reserved address".to_owned()),
            Internal::Name(why) if !policy.lookup_internal_names => Some(format!("internal host name ({why})")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_follows_the_special_purpose_registry() {
        for ip in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.23",
            "203.0.113.7",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_internal_ipv4(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.1",
            "198.51.101.1",
            "203.0.114.1",
            "223.255.255.255",
        ] {
            assert!(!is_internal_ipv4(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ipv6_internal_ranges() {
        for ip in ["::", "::1", "fe80::1", "fd00::1", "fc12::3", "ff02::1", "2001:db8::1", "::ffff:10.0.0.1", "3fff::1"]
        {
            assert!(is_internal_ipv6(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["2a00:1450:4001::1", "::ffff:8.8.8.8", "2001:4860::8888"] {
            assert!(!is_internal_ipv6(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn internal_names() {
        assert_eq!(internal_name("intranet").as_deref(), Some("single label"));
        assert_eq!(internal_name("LocalHost.").as_deref(), Some("localhost"));
        assert_eq!(internal_name("printer.LOCAL").as_deref(), Some(".local"));
        assert_eq!(internal_name("nas.home.arpa").as_deref(), Some(".home.arpa"));
        assert_eq!(internal_name("x.y.onion").as_deref(), Some(".onion"));
        for name in ["example.com", "local.example.org", "internal.com", "mytest.net", "arpa.home.example.com"] {
            assert_eq!(internal_name(name), None, "{name}");
        }
    }

    #[test]
    fn the_policy_decides() {
        let strict = Policy::default();
        let open = Policy { lookup_private_ips: true, lookup_internal_names: true };
        assert_eq!(Internal::Address.reason(&strict).as_deref(), Some("private or reserved address"));
        assert_eq!(Internal::Name(".local".into()).reason(&strict).as_deref(), Some("internal host name (.local)"));
        assert_eq!(Internal::Address.reason(&open), None);
        assert_eq!(Internal::Name(".local".into()).reason(&open), None);
    }
}
