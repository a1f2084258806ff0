//! The configuration keys: one table, the only place a key is named.
//!
//! Each [`Key`] carries its name, the kind of value it takes (which decides
//! how it is parsed and checked), its default and its meaning. kl-core's
//! config loader reads values through these rows, the README's key table is
//! generated from them (`cargo xtask docs`, checked by a test), and the test
//! kit clears every one of them from a child's environment.

use std::fmt::Write as _;

/// What a key holds, and so how its value is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// A password, token or key: never printed, never logged.
    Secret,
    /// A file; relative paths resolve against the config file's folder.
    File,
    /// A folder; relative paths resolve against the config file's folder.
    Folder,
    /// An absolute URL.
    Url,
    /// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    Bool { default: bool },
    /// A whole number within bounds.
    Number { default: u64, min: u64, max: u64 },
    /// One of a fixed set of words.
    Choice { default: &'static str, options: &'static [&'static str] },
}

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as the docs show it, where the kind's own default does
    /// not say it (or there is none).
    pub default_doc: Option<&'static str>,
    pub meaning: &'static str,
}

impl Key {
    /// The default, as the docs show it.
    pub fn default_text(&self) -> String {
        if let Some(d) = self.default_doc {
            return d.to_owned();
        }
        match self.kind {
            Kind::Bool { default } => default.to_string(),
            Kind::Number { default, .. } => default.to_string(),
            Kind::Choice { default, .. } => format!("`{default}`"),
            _ => String::new(),
        }
    }

    /// Parses a boolean value of this key.
    pub fn parse_bool(&self, raw: &str) -> Result<bool, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!("expected true or false, found {raw:?}")),
        }
    }

    /// Parses a whole number of this key and checks its bounds.
    pub fn parse_number(&self, raw: &str) -> Result<u64, String> {
        let Kind::Number { min, max, .. } = self.kind else {
            return Err("not a number key".to_owned());
        };
        let raw = raw.trim();
        let n: u64 = raw.parse().map_err(|_| format!("expected a whole number, found {raw:?}"))?;
        if n < min || n > max {
            return Err(format!("must be between {min} and {max}, found {n}"));
        }
        Ok(n)
    }

    /// Parses a choice of this key (case-insensitive).
    pub fn parse_choice(&self, raw: &str) -> Result<&'static str, String> {
        let Kind::Choice { options, .. } = self.kind else {
            return Err("not a choice key".to_owned());
        };
        let raw = raw.trim();
        options
            .iter()
            .copied()
            .find(|o| o.eq_ignore_ascii_case(raw))
            .ok_or_else(|| format!("expected one of {}, found {raw:?}", options.join(", ")))
    }
}

macro_rules! key {
    ($ident:ident, $name:literal, $kind:expr, $default:expr, $meaning:literal) => {
        pub const $ident: Key = Key { name: $name, kind: $kind, default_doc: $default, meaning: $meaning };
    };
}

const DAY: u64 = 86_400;

key!(
    BACKEND,
    "KL_BACKEND",
    Kind::Choice { default: "tip", options: &["tip", "opentip"] },
    None,
    "`tip` (the commercial Threat Intelligence Portal) or `opentip` (the free OpenTIP API)"
);
key!(
    OPENTIP_API_KEY,
    "KASPERSKY_OPENTIP_API_KEY",
    Kind::Secret,
    None,
    "OpenTIP API key, sent as `x-api-key` (with `KL_BACKEND: opentip`)"
);
key!(
    USERNAME,
    "KASPERSKY_API_USERNAME",
    Kind::Text,
    None,
    "TIP user name for Basic authentication, with the password and the certificate"
);
key!(PASSWORD, "KASPERSKY_API_PASSWORD", Kind::Secret, None, "TIP password for Basic authentication");
key!(
    CERT_PATH,
    "KASPERSKY_API_CERT_PATH",
    Kind::File,
    None,
    "PEM file with the TIP client certificate and its unencrypted private key"
);
key!(
    TOKEN,
    "KASPERSKY_API_TOKEN",
    Kind::Secret,
    None,
    "TIP API token, sent as `Authorization: Bearer`, instead of certificate and password"
);
key!(
    API_URL,
    "KASPERSKY_API_URL",
    Kind::Url,
    Some("`https://tip.kaspersky.com/api`, or `https://opentip.kaspersky.com/api/v1` for OpenTIP"),
    "the API's base URL: https only; plain http is accepted for loopback hosts (local mocks)"
);
key!(
    CA_CERT_PATH,
    "KASPERSKY_CA_CERT_PATH",
    Kind::File,
    None,
    "PEM file with an extra trusted CA (a TLS-inspecting proxy)"
);
key!(TIMEOUT, "KL_TIMEOUT_SECS", Kind::Number { default: 30, min: 1, max: 3600 }, None, "seconds one request may take");
key!(CONCURRENCY, "KL_CONCURRENCY", Kind::Number { default: 8, min: 1, max: 256 }, None, "requests in flight, at most");
key!(
    RETRIES,
    "KL_RETRIES",
    Kind::Number { default: 3, min: 1, max: 20 },
    None,
    "tries in all for connection errors, timeouts, 429 and 5xx"
);
key!(
    DEADLINE,
    "KL_DEADLINE_SECS",
    Kind::Number { default: 300, min: 1, max: DAY },
    None,
    "the longest one kl-dnif batch may take; lookups still open then get an error"
);
key!(
    DRAIN,
    "KL_DRAIN_SECS",
    Kind::Number { default: 5, min: 0, max: 3600 },
    None,
    "after SIGTERM or SIGINT, how long lookups already started may still take; then they get an error and every event read is written"
);
key!(
    LOOKUP_PRIVATE_IPS,
    "KL_LOOKUP_PRIVATE_IPS",
    Kind::Bool { default: false },
    None,
    "send private and reserved addresses too (IPv4 lookups, and IP literals as URL hosts)"
);
key!(
    LOOKUP_INTERNAL_NAMES,
    "KL_LOOKUP_INTERNAL_NAMES",
    Kind::Bool { default: false },
    None,
    "send internal host names too (`localhost`, single labels, `.local`, `.internal`, `.lan`, `.home.arpa` and the other special-use names in docs/fields.md), as domains or URL hosts"
);
key!(
    RECORDS_COUNT,
    "KL_RECORDS_COUNT",
    Kind::Number { default: 0, min: 1, max: 1_000_000 },
    Some("(API default)"),
    "the API's `count=`: records per list section"
);
key!(
    MAX_RESPONSE_BYTES,
    "KL_MAX_RESPONSE_BYTES",
    Kind::Number { default: 16 << 20, min: 1024, max: 1 << 30 },
    None,
    "larger answers are refused"
);
key!(
    ECS_THREAT_ZONES,
    "KL_ECS_THREAT_ZONES",
    Kind::Text,
    Some("`Red,Orange,Yellow`"),
    "the zones an ECS `threat.enrichments[]` entry is written for (comma-separated); every answer keeps its zone under the target key"
);
key!(
    LOG_FILE,
    "KL_LOG_FILE",
    Kind::File,
    None,
    "append warnings and errors to this file instead of stderr (which `--quiet` keeps clean either way)"
);
key!(
    MEMO_BYTES,
    "KL_MEMO_BYTES",
    Kind::Number { default: 32 << 20, min: 0, max: 1 << 34 },
    Some("33554432 (32 MiB)"),
    "in-memory answer budget of one process, in bytes (least recently used answers leave first; 0 turns it off)"
);
key!(
    CACHE_PATH,
    "KL_CACHE_PATH",
    Kind::Folder,
    Some("`cache/` beside the config file (kl-dnif), `$XDG_CACHE_HOME/kl` or `~/.cache/kl` (kl-generic-json)"),
    "the persistent lookup cache, a folder (SQLite); `off` disables it; excludes `KL_CACHE_URL`"
);
key!(
    CACHE_URL,
    "KL_CACHE_URL",
    Kind::Secret,
    None,
    "`redis://[:password@]host:port/db` or `rediss://…`: a Redis cache shared by processes and hosts, instead of `KL_CACHE_PATH`"
);
key!(
    CACHE_PASSWORD,
    "KL_CACHE_PASSWORD",
    Kind::Secret,
    None,
    "the Redis password, if not in `KL_CACHE_URL` (best set in the environment)"
);
key!(CACHE_KEY_PREFIX, "KL_CACHE_KEY_PREFIX", Kind::Text, Some("`kl:`"), "what every Redis key kl writes starts with");
key!(
    CACHE_TTL,
    "KL_CACHE_TTL_SECS",
    Kind::Number { default: 7 * DAY, min: 0, max: 365 * DAY },
    Some("604800 (7 days)"),
    "how long an answer with data is reused"
);
key!(
    CACHE_GREY_TTL,
    "KL_CACHE_GREY_TTL_SECS",
    Kind::Number { default: DAY, min: 0, max: 365 * DAY },
    Some("86400 (1 day)"),
    "how long a \"no data\" (Grey) answer is reused; failures are never kept"
);

key!(
    HTTP_LISTEN,
    "KL_HTTP_LISTEN",
    Kind::Text,
    Some("`127.0.0.1:8080`"),
    "kl-http: the address and port to listen on (`--listen` wins)"
);
key!(
    HTTP_TOKENS,
    "KL_HTTP_TOKENS",
    Kind::Secret,
    None,
    "kl-http: comma-separated bearer tokens clients must send; required to listen beyond loopback"
);
key!(HTTP_TLS_CERT, "KL_HTTP_TLS_CERT", Kind::File, None, "kl-http: PEM certificate chain to serve HTTPS with");
key!(HTTP_TLS_KEY, "KL_HTTP_TLS_KEY", Kind::File, None, "kl-http: PEM private key of that certificate");
key!(
    HTTP_MAX_BATCH,
    "KL_HTTP_MAX_BATCH",
    Kind::Number { default: 1000, min: 1, max: 1_000_000 },
    None,
    "kl-http: indicators in one `POST /v1/lookup`, at most (more: 413)"
);
key!(
    HTTP_MAX_BODY_BYTES,
    "KL_HTTP_MAX_BODY_BYTES",
    Kind::Number { default: 64 << 20, min: 1024, max: 1 << 34 },
    None,
    "kl-http: request body size, at most (more: 413)"
);
key!(
    HTTP_TIMEOUT,
    "KL_HTTP_TIMEOUT_SECS",
    Kind::Number { default: 120, min: 1, max: 86_400 },
    None,
    "kl-http: the longest a request may take (then 408)"
);
key!(
    HTTP_MAX_PENDING,
    "KL_HTTP_MAX_PENDING",
    Kind::Number { default: 10_000, min: 1, max: 10_000_000 },
    None,
    "kl-http: lookups waiting for an answer across all clients, at most (more: 503)"
);

/// Every key, in the order the docs list them.
pub const ALL: &[Key] = &[
    BACKEND,
    OPENTIP_API_KEY,
    USERNAME,
    PASSWORD,
    CERT_PATH,
    TOKEN,
    API_URL,
    CA_CERT_PATH,
    TIMEOUT,
    CONCURRENCY,
    RETRIES,
    DEADLINE,
    DRAIN,
    LOOKUP_PRIVATE_IPS,
    LOOKUP_INTERNAL_NAMES,
    RECORDS_COUNT,
    MAX_RESPONSE_BYTES,
    ECS_THREAT_ZONES,
    LOG_FILE,
    MEMO_BYTES,
    CACHE_PATH,
    CACHE_URL,
    CACHE_PASSWORD,
    CACHE_KEY_PREFIX,
    CACHE_TTL,
    CACHE_GREY_TTL,
    HTTP_LISTEN,
    HTTP_TOKENS,
    HTTP_TLS_CERT,
    HTTP_TLS_KEY,
    HTTP_MAX_BATCH,
    HTTP_MAX_BODY_BYTES,
    HTTP_TIMEOUT,
    HTTP_MAX_PENDING,
];

/// The key of this name, if there is one.
pub fn find(name: &str) -> Option<&'static Key> {
    ALL.iter().find(|k| k.name == name)
}

/// Environment variables kl reads besides the keys (tests clear them too).
pub const OTHER_ENV: &[&str] = &["KL_CONFIG", "RUST_LOG"];

/// The markers around the generated table in the README.
pub const README_BEGIN: &str = "<!-- BEGIN generated by `cargo xtask docs` from kl_model::keys -->";
pub const README_END: &str = "<!-- END generated -->";

/// The README's key table, generated from [`ALL`].
fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in ALL {
        let _ = writeln!(out, "| `{}` | {} | {} |", k.name, k.default_text(), k.meaning);
    }
    out
}

/// `readme` with the text between the markers replaced by the table;
/// `None` when the markers are missing.
pub fn with_table(readme: &str) -> Option<String> {
    let start = readme.find(README_BEGIN)? + README_BEGIN.len();
    let end = readme[start..].find(README_END)? + start;
    Some(format!("{}\n{}{}", &readme[..start], markdown_table(), &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = ALL.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|k| k.name.starts_with("KL_") || k.name.starts_with("KASPERSKY_")));
    }

    #[test]
    fn parsers_check_what_the_row_says() {
        assert_eq!(TIMEOUT.parse_number(" 12 "), Ok(12));
        assert!(TIMEOUT.parse_number("0").unwrap_err().contains("between 1 and 3600"));
        assert!(TIMEOUT.parse_number("soon").unwrap_err().contains("whole number"));
        assert_eq!(LOOKUP_PRIVATE_IPS.parse_bool("Yes"), Ok(true));
        assert!(LOOKUP_PRIVATE_IPS.parse_bool("maybe").is_err());
    }

    #[test]
    fn the_table_replaces_only_its_section() {
        let readme = format!("a\n{README_BEGIN}\nold\n{README_END}\nb\n");
        let new = with_table(&readme).unwrap();
        assert!(new.starts_with("a\n") && new.ends_with(&format!("{README_END}\nb\n")));
        assert!(new.contains("| `KL_TIMEOUT_SECS` | 30 | seconds one request may take |"));
        assert_eq!(with_table(&new).unwrap(), new);
        assert!(with_table("no markers").is_none());
    }
}
