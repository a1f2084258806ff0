//! Indicators: validation and normalisation before anything is sent.
//!
//! An indicator that fails here is never sent to the API. The rules are those
//! of the "Indicators" section of the field contract:
//!
//! - IPv4: a dotted quad, each part 0–255 (IPv6 is refused).
//! - domain: two or more labels of ASCII letters, digits, `-` and `_`, no
//!   label starting or ending with `-`, labels of at most 63 and a name of at
//!   most 253 characters; one trailing dot is dropped; lower-cased.
//! - URL: not empty, no control characters, at most 2000 characters once
//!   percent-encoded; sent exactly as given.
//! - hash: 32, 40 or 64 hexadecimal digits; upper-cased.

use std::fmt;
use std::net::Ipv4Addr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

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

/// A validated, normalised indicator, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Indicator {
    kind: ObjectKind,
    value: String,
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
        let value = match kind {
            ObjectKind::Ipv4 => parse_ipv4(trimmed)
                .map(|ip| ip.to_string())
                .ok_or_else(|| IndicatorError::new(kind, trimmed, ipv4_reason(trimmed)))?,
            ObjectKind::Domain => {
                normalise_domain(trimmed).map_err(|reason| IndicatorError::new(kind, trimmed, Some(reason)))?
            }
            ObjectKind::Url => {
                check_url(trimmed).map_err(|reason| IndicatorError::new(kind, trimmed, Some(reason)))?;
                trimmed.to_owned()
            }
            ObjectKind::Hash => {
                hash_kind(trimmed).ok_or_else(|| {
                    IndicatorError::new(kind, trimmed, Some("expected 32, 40 or 64 hexadecimal digits"))
                })?;
                trimmed.to_ascii_uppercase()
            }
        };
        Ok(Indicator { kind, value })
    }

    /// Guesses the kind of a raw value, for `auto`: IPv4, then URL (a scheme
    /// or a path), then hash, then domain. `None` when it is none of them.
    pub fn detect(raw: &str) -> Option<ObjectKind> {
        let s = raw.trim();
        if parse_ipv4(s).is_some() {
            Some(ObjectKind::Ipv4)
        } else if s.contains("://") || s.contains('/') {
            check_url(s).ok().map(|()| ObjectKind::Url)
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
    /// range, which is not sent unless the configuration asks for it.
    pub fn is_private_or_reserved(&self) -> bool {
        match self.kind {
            ObjectKind::Ipv4 => self.value.parse::<Ipv4Addr>().is_ok_and(is_private_or_reserved),
            _ => false,
        }
    }

    /// Why `policy` keeps this indicator from being sent, if it does.
    pub fn withheld(&self, policy: &Policy) -> Option<&'static str> {
        (self.is_private_or_reserved() && !policy.lookup_private_ips).then_some("private or reserved address")
    }
}

/// What may be sent to a third party.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Send private and reserved IPv4 addresses too.
    pub lookup_private_ips: bool,
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

/// RFC 1918, loopback, link-local, `0.0.0.0/8`, CGNAT, multicast,
/// `240.0.0.0/4` and broadcast.
pub fn is_private_or_reserved(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || ip.is_multicast()
        || a >= 240
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

fn normalise_domain(s: &str) -> Result<String, &'static str> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err("a domain needs at least two labels");
    }
    for label in &labels {
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
    Ok(s.to_ascii_lowercase())
}

fn check_url(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    // A path segment of "." or ".." is resolved away by every URL parser
    // (encoded or not), which would ask about another object.
    if s == "." || s == ".." {
        return Err("a dot segment is not a URL");
    }
    if encode_segment(s).len() > MAX_URL_LEN {
        return Err("longer than 2000 characters once percent-encoded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: ObjectKind, raw: &str) -> String {
        Indicator::parse(kind, raw).unwrap().as_str().to_owned()
    }

    fn err(kind: ObjectKind, raw: &str) -> String {
        Indicator::parse(kind, raw).unwrap_err().to_string()
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
    fn private_and_reserved() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(Indicator::parse(ObjectKind::Ipv4, ip).unwrap().is_private_or_reserved(), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "100.63.255.255", "192.0.2.1", "223.255.255.255"] {
            assert!(!Indicator::parse(ObjectKind::Ipv4, ip).unwrap().is_private_or_reserved(), "{ip}");
        }
    }

    #[test]
    fn domain() {
        assert_eq!(ok(ObjectKind::Domain, " Example.COM. "), "example.com");
        assert_eq!(ok(ObjectKind::Domain, "_dmarc.my-site.example"), "_dmarc.my-site.example");
        for bad in [
            "localhost",
            "-bad.com",
            "bad-.com",
            "a..b",
            ".com",
            "exa mple.com",
            "bücher.de",
            "http://example.com",
            "example.com/path",
            "",
            ".",
        ] {
            assert!(Indicator::parse(ObjectKind::Domain, bad).is_err(), "{bad}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(Indicator::parse(ObjectKind::Domain, &long_label).is_err());
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        assert!(long_name.len() > 253);
        assert!(Indicator::parse(ObjectKind::Domain, &long_name).is_err());
    }

    #[test]
    fn url_is_sent_as_given() {
        let raw = "HTTP://Example.com/a b?q=1&r=2#frag";
        assert_eq!(ok(ObjectKind::Url, raw), raw);
        assert!(Indicator::parse(ObjectKind::Url, "  ").is_err());
        assert!(Indicator::parse(ObjectKind::Url, ".").is_err());
        assert!(Indicator::parse(ObjectKind::Url, " .. ").is_err());
        assert!(Indicator::parse(ObjectKind::Url, "...").is_ok());
        assert!(Indicator::parse(ObjectKind::Url, "http://a/\u{7}").is_err());
        assert!(Indicator::parse(ObjectKind::Url, &format!("http://a/{}", "x".repeat(1990))).is_err());
        // 700 characters that encode to three each are over the limit too.
        assert!(Indicator::parse(ObjectKind::Url, &format!("http://a/{}", "?".repeat(700))).is_err());
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
        let url = Indicator::parse(ObjectKind::Url, "http://evil.example/../a?b=c&d#e f%2F@x:1").unwrap();
        let seg = url.path_segment();
        assert!(!seg.contains(['/', '?', '#', ' ', ':', '@', '&', '=']), "{seg}");
        assert_eq!(seg, "http%3A%2F%2Fevil.example%2F..%2Fa%3Fb%3Dc%26d%23e%20f%252F%40x%3A1");
    }

    #[test]
    fn detect() {
        assert_eq!(Indicator::detect("8.8.8.8"), Some(ObjectKind::Ipv4));
        assert_eq!(Indicator::detect("http://8.8.8.8/"), Some(ObjectKind::Url));
        assert_eq!(Indicator::detect("example.com/login"), Some(ObjectKind::Url));
        assert_eq!(Indicator::detect("example.com"), Some(ObjectKind::Domain));
        assert_eq!(Indicator::detect("D41D8CD98F00B204E9800998ECF8427E"), Some(ObjectKind::Hash));
        assert_eq!(Indicator::detect("not an indicator"), None);
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let msg = err(ObjectKind::Domain, &"x".repeat(5000));
        assert!(msg.len() < 200, "{msg}");
    }
}
