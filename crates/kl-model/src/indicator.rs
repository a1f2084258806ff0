//! Indicators: validation and normalisation before anything is sent.
//!
//! An indicator that fails here is never sent to the API. The rules are those
//! of the "Indicators" section of the field contract, made stricter where a
//! value could not be what it claims:
//!
//! - IPv4: a dotted quad, each part 0–255 (IPv6 is refused).
//! - domain: two or more labels of ASCII letters, digits, `-` and `_`, no
//!   label starting or ending with `-`, labels of at most 63 and a name of at
//!   most 253 characters, a last label that is not all digits; one trailing
//!   dot is dropped; lower-cased. An internationalised name is converted to
//!   its ASCII (punycode) form.
//! - URL: `http://`, `https://` or no scheme, then a valid host (a name as
//!   above, but a single label is allowed; an IPv4 or bracketed IPv6
//!   literal) and an optional port; no control characters; at most 2000
//!   characters once percent-encoded. Any `user:password@` part is removed,
//!   an internationalised host converted to ASCII; the rest is sent as given.
//! - hash: 32, 40 or 64 hexadecimal digits; upper-cased.
//!
//! Whether a valid indicator may be sent at all is the privacy policy's
//! call (see [`crate::privacy`]): each indicator records whether it is an
//! internal address or name.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::privacy::{Internal, Policy, internal_name, is_internal_ipv4, is_internal_ipv6};

/// Everything but the RFC 3986 unreserved characters is encoded, so the
/// indicator is always exactly one path segment (`/`, `?`, `#`, `%`, `:`,
/// `@`, `=`, `&` and space included).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The longest URL indicator, counted once percent-encoded.
pub const MAX_URL_LEN: usize = 2000;

/// The kind of object a function looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Ipv4,
    Domain,
    Url,
    Hash,
}

impl ObjectKind {
    /// The path element of the TIP API (`/api/<type>/…`).
    pub fn api_type(self) -> &'static str {
        match self {
            ObjectKind::Ipv4 => "ip",
            ObjectKind::Domain => "domain",
            ObjectKind::Url => "url",
            ObjectKind::Hash => "hash",
        }
    }

    /// How error messages name the kind (`invalid IPv4 address "…"`).
    pub fn describe(self) -> &'static str {
        match self {
            ObjectKind::Ipv4 => "IPv4 address",
            ObjectKind::Domain => "domain",
            ObjectKind::Url => "URL",
            ObjectKind::Hash => "hash",
        }
    }
}

/// The flavour of a file hash, told by its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    Md5,
    Sha1,
    Sha256,
}

/// A validated, normalised indicator, ready to be sent (policy allowing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Indicator {
    kind: ObjectKind,
    value: String,
    /// Whether it is, or names, something internal.
    internal: Option<Internal>,
}

/// Why a raw value is not an indicator of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IndicatorError {
    message: String,
}

impl IndicatorError {
    fn new(kind: ObjectKind, raw: &str, reason: Option<&str>) -> IndicatorError {
        let mut message = format!("invalid {} {}", kind.describe(), quote(raw));
        if let Some(reason) = reason {
            message.push_str(": ");
            message.push_str(reason);
        }
        IndicatorError { message }
    }

    /// For a JSON value that is not a string at all; `kind` is `None` when
    /// the type was to be detected from the value.
    pub fn not_a_string(kind: Option<ObjectKind>, json_type: &str) -> IndicatorError {
        let what = kind.map_or("indicator", ObjectKind::describe);
        IndicatorError { message: format!("invalid {what}: expected a string, found {json_type}") }
    }
}

/// Quotes a value for a message: escaped, and cut to 80 characters.
fn quote(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.chars().count() <= MAX {
        format!("{raw:?}")
    } else {
        let cut: String = raw.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

impl Indicator {
    /// Trims, validates and normalises `raw` as an indicator of `kind`.
    pub fn parse(kind: ObjectKind, raw: &str) -> Result<Indicator, IndicatorError> {
        let trimmed = raw.trim();
        let invalid = |reason: Option<&str>| IndicatorError::new(kind, trimmed, reason);
        let (value, internal) = match kind {
            ObjectKind::Ipv4 => {
                let ip = parse_ipv4(trimmed).ok_or_else(|| invalid(ipv4_reason(trimmed)))?;
                // What std accepts is already the canonical form: no need to
                // write the address out again.
                debug_assert_eq!(ip.to_string(), trimmed);
                (trimmed.to_owned(), is_internal_ipv4(ip).then_some(Internal::Address))
            }
            ObjectKind::Domain => {
                let name = normalise_domain(trimmed).map_err(|r| invalid(Some(r)))?;
                let internal = internal_name(&name).map(Internal::Name);
                (name, internal)
            }
            ObjectKind::Url => {
                let url = parse_url(trimmed).map_err(|r| invalid(Some(r)))?;
                (url.normalised, url.internal)
            }
            ObjectKind::Hash => {
                hash_kind(trimmed).ok_or_else(|| invalid(Some("expected 32, 40 or 64 hexadecimal digits")))?;
                (trimmed.to_ascii_uppercase(), None)
            }
        };
        Ok(Indicator { kind, value, internal })
    }

    /// Guesses the kind of a raw value, for `auto`: IPv4, then URL (a scheme
    /// or a path), then hash, then domain. `None` when it is none of them.
    pub fn detect(raw: &str) -> Option<ObjectKind> {
        let s = raw.trim();
        if parse_ipv4(s).is_some() {
            Some(ObjectKind::Ipv4)
        } else if s.contains("://") || s.contains('/') {
            parse_url(s).ok().map(|_| ObjectKind::Url)
        } else if hash_kind(s).is_some() {
            Some(ObjectKind::Hash)
        } else if normalise_domain(s).is_ok() {
            Some(ObjectKind::Domain)
        } else {
            None
        }
    }

    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The normalised value (lower-case domain, upper-case hash, URL as given).
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The value percent-encoded as exactly one URL path segment.
    pub fn path_segment(&self) -> String {
        encode_segment(&self.value)
    }

    /// For a hash, which one it is.
    pub fn hash_kind(&self) -> Option<HashKind> {
        match self.kind {
            ObjectKind::Hash => hash_kind(&self.value),
            _ => None,
        }
    }

    /// Whether the indicator is an IPv4 address in a private or reserved
    /// range (see [`crate::privacy::INTERNAL_IPV4`]).
    pub fn is_private_or_reserved(&self) -> bool {
        self.kind == ObjectKind::Ipv4 && self.internal == Some(Internal::Address)
    }

    /// Why `policy` keeps this indicator from being sent, if it does.
    pub fn withheld(&self, policy: &Policy) -> Option<String> {
        self.internal.as_ref().and_then(|i| i.reason(policy))
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Percent-encodes a string as one path segment (everything but unreserved).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    // std accepts exactly a dotted quad of decimal parts 0-255 and refuses
    // leading zeros, which some resolvers would read as octal.
    s.parse::<Ipv4Addr>().ok()
}

fn ipv4_reason(s: &str) -> Option<&'static str> {
    s.parse::<std::net::Ipv6Addr>().is_ok().then_some("IPv6 is not supported, the IP lookup takes IPv4 only")
}

/// Whether an IPv4 address is private or reserved (not globally reachable).
pub fn is_private_or_reserved(ip: Ipv4Addr) -> bool {
    is_internal_ipv4(ip)
}

fn hash_kind(s: &str) -> Option<HashKind> {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match s.len() {
        32 => Some(HashKind::Md5),
        40 => Some(HashKind::Sha1),
        64 => Some(HashKind::Sha256),
        _ => None,
    }
}

/// A domain, lower-cased (an internationalised one in its ASCII form), or
/// why it is not one. `localhost` is a domain here (an internal one); other
/// single labels are not.
fn normalise_domain(s: &str) -> Result<String, &'static str> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let name = ascii_host(s)?;
    if name != "localhost" && !name.contains('.') {
        return Err("a domain needs at least two labels");
    }
    check_host_name(&name)?;
    Ok(name)
}

/// A host name in its lower-case ASCII form: an internationalised name
/// converted to punycode, the same way for domains and URL hosts.
fn ascii_host(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.is_ascii() {
        return Ok(s.to_ascii_lowercase());
    }
    idna::domain_to_ascii(s).map_err(|_| "not a valid internationalised domain name")
}

/// The rules every host name keeps (single labels allowed); a trailing dot
/// is the caller's to drop.
fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("only letters, digits, '-' and '_' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'");
        }
    }
    // `1.2.3`, `999.1.1.1`, `010.1.1.1`: an address, mistyped or in a form
    // resolvers read differently, not a name.
    if name.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the last label is all digits: an address, not a name");
    }
    Ok(())
}

/// A URL indicator: what is sent, and whether its host is internal.
struct Url {
    normalised: String,
    internal: Option<Internal>,
}

/// Whether `s` starts with a URI scheme and a colon (`javascript:`), and
/// what follows the colon.
fn scheme(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let (name, rest) = (&s[..colon], &s[colon + 1..]);
    let mut bytes = name.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic() && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
        .then_some((name, rest))
}

/// Validates a URL and normalises it: the `user:password@` part removed, an
/// internationalised host in its ASCII form, the rest as given.
fn parse_url(s: &str) -> Result<Url, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    let (prefix, rest) = match scheme(s) {
        Some((name, rest)) if rest.starts_with("//") => {
            if !name.eq_ignore_ascii_case("http") && !name.eq_ignore_ascii_case("https") {
                return Err("only http and https URLs are looked up");
            }
            s.split_at(name.len() + 3)
        }
        // `host:8080/path` has no scheme, just a port; `javascript:…`,
        // `mailto:…` and `http:/x` have one, and are not looked up.
        Some((_, rest)) => {
            let port = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err("only http and https URLs are looked up");
            }
            ("", s)
        }
        None => ("", s),
    };
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Credentials in a URL are the user's secret, never the portal's business.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = split_port(host_port)?;
    if host.is_empty() {
        return Err("no host");
    }
    let (shown_host, internal) = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = v6.parse().map_err(|_| "the host is not a valid IPv6 address")?;
        (host.to_owned(), is_internal_ipv6(ip).then_some(Internal::Address))
    } else if let Some(ip) = parse_ipv4(host) {
        (host.to_owned(), is_internal_ipv4(ip).then_some(Internal::Address))
    } else {
        let ascii = ascii_host(host)?;
        check_host_name(ascii.strip_suffix('.').unwrap_or(&ascii))?;
        let shown = if host.is_ascii() { host.to_owned() } else { ascii.clone() };
        (shown, internal_name(&ascii).map(Internal::Name))
    };
    let normalised = format!("{prefix}{shown_host}{port}{tail}");
    if encode_segment(&normalised).len() > MAX_URL_LEN {
        return Err("longer than 2000 characters once percent-encoded");
    }
    Ok(Url { normalised, internal })
}

/// `host[:port]` or `[v6][:port]` into the host and the `:port` part (which
/// keeps its colon, or is empty).
fn split_port(host_port: &str) -> Result<(&str, &str), &'static str> {
    let colon = if host_port.starts_with('[') {
        let close = host_port.find(']').ok_or("unclosed '[' in the host")?;
        match &host_port[close + 1..] {
            "" => None,
            rest if rest.starts_with(':') => Some(close + 1),
            _ => return Err("unexpected characters after the IPv6 host"),
        }
    } else {
        host_port.rfind(':')
    };
    let Some(colon) = colon else { return Ok((host_port, "")) };
    let digits = &host_port[colon + 1..];
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.parse::<u32>().is_ok_and(|p| p > 65535)
    {
        return Err("the port is not a number from 0 to 65535");
    }
    Ok((&host_port[..colon], &host_port[colon..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: ObjectKind, raw: &str) -> String {
        Indicator::parse(kind, raw).unwrap_or_else(|e| panic!("{raw}: {e}")).as_str().to_owned()
    }

    fn err(kind: ObjectKind, raw: &str) -> String {
        Indicator::parse(kind, raw).unwrap_err().to_string()
    }

    fn withheld(kind: ObjectKind, raw: &str) -> Option<String> {
        Indicator::parse(kind, raw).unwrap_or_else(|e| panic!("{raw}: {e}")).withheld(&Policy::default())
    }

    #[test]
    fn ipv4() {
        assert_eq!(ok(ObjectKind::Ipv4, " 8.8.8.8\t"), "8.8.8.8");
        assert_eq!(err(ObjectKind::Ipv4, "1.2.3"), r#"invalid IPv4 address "1.2.3""#);
        for bad in ["256.1.1.1", "1.2.3.4.5", "01.2.3.4", "http://1.2.3.4", "", "1.2.3.4/24", "a.b.c.d"] {
            assert!(Indicator::parse(ObjectKind::Ipv4, bad).is_err(), "{bad}");
        }
        assert!(err(ObjectKind::Ipv4, "::1").contains("IPv6"));
    }

    #[test]
    fn private_and_reserved_addresses_are_withheld() {
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.3.4",
            "192.88.99.1",
        ] {
            assert!(Indicator::parse(ObjectKind::Ipv4, ip).unwrap().is_private_or_reserved(), "{ip}");
            assert_eq!(withheld(ObjectKind::Ipv4, ip).as_deref(), Some("private or reserved address"), "{ip}");
        }
        assert_eq!(withheld(ObjectKind::Ipv4, "8.8.8.8"), None);
        let open = Policy { lookup_private_ips: true, lookup_internal_names: false };
        assert_eq!(Indicator::parse(ObjectKind::Ipv4, "10.0.0.1").unwrap().withheld(&open), None);
    }

    #[test]
    fn domain() {
        assert_eq!(ok(ObjectKind::Domain, " Example.COM. "), "example.com");
        assert_eq!(ok(ObjectKind::Domain, "_dmarc.my-site.example"), "_dmarc.my-site.example");
        assert_eq!(ok(ObjectKind::Domain, "bücher.de"), "xn--bcher-kva.de");
        assert_eq!(ok(ObjectKind::Domain, "BÜCHER.de"), "xn--bcher-kva.de");
        for bad in [
            "intranet",
            "-bad.com",
            "bad-.com",
            "a..b",
            "b-40d-v..",
            "example.com..",
            ".com",
            "exa mple.com",
            "http://example.com",
            "example.com/path",
            "",
            ".",
            "1.2.3",
            "999.1.1.1",
            "010.1.1.1",
            "8.8.8.8",
            "host.123",
        ] {
            assert!(Indicator::parse(ObjectKind::Domain, bad).is_err(), "{bad}");
        }
        assert!(err(ObjectKind::Domain, "8.8.8.8").contains("all digits"));
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(Indicator::parse(ObjectKind::Domain, &long_label).is_err());
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        assert!(long_name.len() > 253);
        assert!(Indicator::parse(ObjectKind::Domain, &long_name).is_err());
    }

    #[test]
    fn internal_domains_are_withheld() {
        for (name, why) in [
            ("host.local", ".local"),
            ("printer.LAN", ".lan"),
            ("db.internal", ".internal"),
            ("nas.home.arpa", ".home.arpa"),
            ("a.localhost", ".localhost"),
            ("x.test", ".test"),
            ("x.invalid", ".invalid"),
            ("bücher.example", ".example"),
            ("abc.onion", ".onion"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(withheld(ObjectKind::Domain, name), Some(format!("internal host name ({why})")), "{name}");
        }
        for name in ["example.com", "local.com", "kaspersky.com"] {
            assert_eq!(withheld(ObjectKind::Domain, name), None, "{name}");
        }
        let open = Policy { lookup_private_ips: false, lookup_internal_names: true };
        assert_eq!(Indicator::parse(ObjectKind::Domain, "host.local").unwrap().withheld(&open), None);
    }

    #[test]
    fn url_is_sent_as_given_but_for_credentials_and_internationalised_hosts() {
        let raw = "HTTP://Example.com/a b?q=1&r=2#frag";
        assert_eq!(ok(ObjectKind::Url, raw), raw);
        assert_eq!(
            ok(ObjectKind::Url, "https://admin:S3cretPw@intranet.example.com/x"),
            "https://intranet.example.com/x"
        );
        assert_eq!(ok(ObjectKind::Url, "http://u@evil.com:8080/?a=b@c"), "http://evil.com:8080/?a=b@c");
        // Without a scheme, `user:` reads as one: refused, and nothing is sent.
        assert!(Indicator::parse(ObjectKind::Url, "user:pw@evil.com/login").is_err());
        assert_eq!(ok(ObjectKind::Url, "http://bücher.de/straße"), "http://xn--bcher-kva.de/straße");
        assert_eq!(ok(ObjectKind::Url, "example.com:8443/path"), "example.com:8443/path");
        assert_eq!(ok(ObjectKind::Url, "http://[2a00:1450:4001::1]:443/"), "http://[2a00:1450:4001::1]:443/");
        assert_eq!(ok(ObjectKind::Url, "evil.com"), "evil.com");
        assert!(Indicator::parse(ObjectKind::Url, "http://a/\u{7}").is_err());
        assert!(Indicator::parse(ObjectKind::Url, &format!("http://a.com/{}", "x".repeat(1990))).is_err());
        // 700 characters that encode to three each are over the limit too.
        assert!(Indicator::parse(ObjectKind::Url, &format!("http://a.com/{}", "?".repeat(700))).is_err());
    }

    #[test]
    fn urls_that_are_not_web_addresses_are_invalid() {
        for bad in [
            "",
            " ",
            ".",
            "..",
            "...",
            "/",
            "?",
            "#x",
            "../",
            "%2e%2e",
            "/etc/passwd",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "mailto:a@b.com",
            "ftp://example.com/x",
            "data:text/html,x",
            "http://",
            "http://:80/",
            "http://user@/x",
            "http://1.2.3/",
            "http://999.1.1.1/",
            "http://010.1.1.1/",
            "http://exa mple.com/",
            "http://example.com:99999/",
            "http://example.com:x/",
            "http://[::1/",
            "http://[zz::1]/",
            "//example.com/x",
            "http:/example.com",
        ] {
            assert!(Indicator::parse(ObjectKind::Url, bad).is_err(), "{bad:?} must be invalid");
        }
    }

    #[test]
    fn urls_with_internal_hosts_are_withheld() {
        for (url, why) in [
            ("http://10.0.0.5/admin", "private or reserved address"),
            ("http://[::1]/", "private or reserved address"),
            ("https://[fd00::2]:8443/x", "private or reserved address"),
            ("http://192.0.2.14/", "private or reserved address"),
            ("http://intranet/x", "internal host name (single label)"),
            ("http://localhost:8080/", "internal host name (localhost)"),
            ("https://nas.home.arpa/share", "internal host name (.home.arpa)"),
            ("https://jira.corp.internal/browse/X-1", "internal host name (.internal)"),
            ("http://user:pw@printer.local/", "internal host name (.local)"),
            ("wiki.lan/page", "internal host name (.lan)"),
        ] {
            assert_eq!(withheld(ObjectKind::Url, url).as_deref(), Some(why), "{url}");
        }
        for url in ["http://8.8.8.8/", "https://www.kaspersky.com/downloads", "http://[2a00:1450:4001::1]/"] {
            assert_eq!(withheld(ObjectKind::Url, url), None, "{url}");
        }
    }

    #[test]
    fn hash() {
        assert_eq!(ok(ObjectKind::Hash, "d41d8cd98f00b204e9800998ecf8427e"), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(Indicator::parse(ObjectKind::Hash, &"a".repeat(40)).unwrap().hash_kind(), Some(HashKind::Sha1));
        assert_eq!(Indicator::parse(ObjectKind::Hash, &"F".repeat(64)).unwrap().hash_kind(), Some(HashKind::Sha256));
        for bad in ["d41d8cd98f00b204e9800998ecf8427", "g41d8cd98f00b204e9800998ecf8427e", ""] {
            assert!(Indicator::parse(ObjectKind::Hash, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segment_has_no_separator() {
        let url = Indicator::parse(ObjectKind::Url, "http://evil.com/../a?b=c&d#e f%2F@x:1").unwrap();
        let seg = url.path_segment();
        assert!(!seg.contains(['/', '?', '#', ' ', ':', '@', '&', '=']), "{seg}");
        assert_eq!(seg, "http%3A%2F%2Fevil.com%2F..%2Fa%3Fb%3Dc%26d%23e%20f%252F%40x%3A1");
    }

    #[test]
    fn detect() {
        assert_eq!(Indicator::detect("8.8.8.8"), Some(ObjectKind::Ipv4));
        assert_eq!(Indicator::detect("http://8.8.8.8/"), Some(ObjectKind::Url));
        assert_eq!(Indicator::detect("example.com/login"), Some(ObjectKind::Url));
        assert_eq!(Indicator::detect("example.com"), Some(ObjectKind::Domain));
        assert_eq!(Indicator::detect("host.local"), Some(ObjectKind::Domain));
        assert_eq!(Indicator::detect("D41D8CD98F00B204E9800998ECF8427E"), Some(ObjectKind::Hash));
        for none in
            ["not an indicator", "1.2.3", "999.1.1.1", "010.1.1.1", "javascript:alert(1)", "/", "../", "intranet"]
        {
            assert_eq!(Indicator::detect(none), None, "{none}");
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let msg = err(ObjectKind::Domain, &"x".repeat(5000));
        assert!(msg.len() < 200, "{msg}");
    }
}
