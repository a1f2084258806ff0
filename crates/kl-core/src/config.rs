//! Configuration: the DNIF `dnifconfig.yml` format, with environment overrides.
//!
//! ```yaml
//! lookup_plugin:
//!   KASPERSKY_API_USERNAME: user
//!   KASPERSKY_API_PASSWORD: secret
//!   KASPERSKY_API_CERT_PATH: client.pem
//! ```
//!
//! Every key may also come from an environment variable of the same name, and
//! the environment wins. Relative paths resolve against the folder of the
//! config file. Unknown keys are refused. Every error names its key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::secret::Secret;

/// The TIP API used when `KASPERSKY_API_URL` is not set.
pub const DEFAULT_API_URL: &str = "https://tip.kaspersky.com/api";

/// Every key the config file may hold, in the order the docs list them.
pub const KEYS: &[&str] = &[
    "KASPERSKY_API_USERNAME",
    "KASPERSKY_API_PASSWORD",
    "KASPERSKY_API_CERT_PATH",
    "KASPERSKY_API_TOKEN",
    "KASPERSKY_API_URL",
    "KASPERSKY_CA_CERT_PATH",
    "KL_TIMEOUT_SECS",
    "KL_CONCURRENCY",
    "KL_CACHE_PATH",
    "KL_CACHE_TTL_SECS",
    "KL_CACHE_GREY_TTL_SECS",
    "KL_LOOKUP_PRIVATE_IPS",
    "KL_RECORDS_COUNT",
    "KL_RETRIES",
    "KL_DEADLINE_SECS",
    "KL_MAX_RESPONSE_BYTES",
];

/// A configuration problem, reported once before any lookup (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", key.map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The key at fault, when one is.
    pub key: Option<&'static str>,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError { key: Some(key), message: message.into() }
    }

    pub fn general(message: impl Into<String>) -> ConfigError {
        ConfigError { key: None, message: message.into() }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Basic`, with the client certificate presented.
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer` (newer accounts).
    Token(Secret),
}

/// Where the persistent lookup cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSetting {
    /// Not configured: the adapter picks its default place.
    Default,
    /// `KL_CACHE_PATH: off`.
    Off,
    /// An explicit folder.
    Path(PathBuf),
}

/// A loaded, checked configuration. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: Credentials,
    /// PEM with the client certificate and its private key.
    pub cert_path: Option<PathBuf>,
    /// PEM with extra trust roots.
    pub ca_cert_path: Option<PathBuf>,
    pub api_url: Url,
    pub timeout: Duration,
    pub concurrency: usize,
    pub cache: CacheSetting,
    pub cache_ttl: Duration,
    pub cache_grey_ttl: Duration,
    pub lookup_private_ips: bool,
    pub records_count: Option<u32>,
    pub retries: u32,
    pub deadline: Duration,
    pub max_response_bytes: u64,
    /// The folder of the config file (relative paths resolve against it).
    pub base_dir: Option<PathBuf>,
}

/// Raw key/value pairs, before checking: file values, then env overrides.
struct Raw {
    values: BTreeMap<&'static str, String>,
    base_dir: Option<PathBuf>,
}

impl Config {
    /// Loads `path` (if given) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`], with the environment given as a function (tests).
    pub fn load_with_env(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (text, base_dir) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::general(format!("cannot read config file {}: {e}", p.display())))?;
                let dir = p.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
                let dir = dir.map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()));
                (Some(text), dir)
            }
            None => (None, None),
        };
        Config::from_parts(text.as_deref(), base_dir, env)
    }

    /// Builds a config from YAML text (if any), a base folder and an environment.
    pub fn from_parts(
        yaml: Option<&str>,
        base_dir: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut values = match yaml {
            Some(text) => parse_yaml(text)?,
            None => BTreeMap::new(),
        };
        for key in KEYS {
            if let Some(v) = env(key) {
                values.insert(key, v);
            }
        }
        values.retain(|_, v| !v.trim().is_empty());
        for (key, v) in &values {
            let t = v.trim();
            if t.starts_with('<') && t.ends_with('>') {
                return Err(ConfigError::new(key, "still holds the template placeholder; put the real value in"));
            }
        }
        Raw { values, base_dir }.check(&env)
    }

    /// A config for tests and the offline mode: token auth against `url`.
    pub fn for_url(url: &str) -> Result<Config, ConfigError> {
        let url = url.to_owned();
        Config::from_parts(None, None, move |k| match k {
            "KASPERSKY_API_URL" => Some(url.clone()),
            "KASPERSKY_API_TOKEN" => Some("test-token".to_owned()),
            _ => None,
        })
    }
}

fn parse_yaml(text: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::general(format!("config file is not valid YAML: {e}")))?;
    let top = match doc {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(BTreeMap::new()),
        _ => {
            return Err(ConfigError::general("config file must be a mapping with a `lookup_plugin:` section"));
        }
    };
    let mut out = BTreeMap::new();
    for (k, v) in top {
        let name = yaml_key(&k)?;
        if name != "lookup_plugin" {
            return Err(ConfigError::general(format!(
                "unknown top-level key `{name}` in config file; expected `lookup_plugin`"
            )));
        }
        let section = match v {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => continue,
            _ => {
                return Err(ConfigError::general("`lookup_plugin` must be a mapping of keys to values"));
            }
        };
        for (k, v) in section {
            let name = yaml_key(&k)?;
            let Some(key) = KEYS.iter().copied().find(|known| *known == name) else {
                return Err(ConfigError::general(format!(
                    "unknown key `{name}` in lookup_plugin; known keys: {}",
                    KEYS.join(", ")
                )));
            };
            let text = match v {
                serde_yaml::Value::Null => continue,
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::String(s) => s,
                _ => {
                    return Err(ConfigError::new(key, "must be a single value, not a list or mapping"));
                }
            };
            out.insert(key, text);
        }
    }
    Ok(out)
}

fn yaml_key(k: &serde_yaml::Value) -> Result<String, ConfigError> {
    match k {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        other => Err(ConfigError::general(format!("config keys must be strings, found {other:?}"))),
    }
}

impl Raw {
    fn get(&self, key: &'static str) -> Option<&str> {
        self.values.get(key).map(|s| s.trim())
    }

    fn path(&self, key: &'static str, env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
        let raw = self.get(key)?;
        let given = PathBuf::from(raw);
        let resolved = match (&self.base_dir, given.is_relative()) {
            (Some(base), true) => base.join(&given),
            _ => given.clone(),
        };
        if key == "KASPERSKY_API_CERT_PATH" && !resolved.exists() {
            // The 2018 plugin glued this path onto $WORKDIR. Keep old
            // deployments working, and say that the form is deprecated.
            if let Some(workdir) = env("WORKDIR") {
                let legacy = PathBuf::from(format!("{workdir}{raw}"));
                if legacy.exists() {
                    tracing::warn!(
                        "{key} is resolved against $WORKDIR ({}), as the 2018 plugin did; this form is deprecated, write the full path instead",
                        legacy.display()
                    );
                    return Some(legacy);
                }
            }
        }
        Some(resolved)
    }

    fn number<T>(&self, key: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let n: T = raw.parse().map_err(|_| ConfigError::new(key, format!("expected a whole number, found {raw:?}")))?;
        if n < min || n > max {
            return Err(ConfigError::new(key, format!("must be between {min} and {max}, found {n}")));
        }
        Ok(n)
    }

    fn boolean(&self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(ConfigError::new(key, format!("expected true or false, found {raw:?}"))),
        }
    }

    fn check(self, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let credentials = match (self.get("KASPERSKY_API_TOKEN"), self.get("KASPERSKY_API_USERNAME")) {
            (Some(token), _) => Credentials::Token(Secret::new(token)),
            (None, Some(user)) => {
                let password = self.get("KASPERSKY_API_PASSWORD").ok_or_else(|| {
                    ConfigError::new("KASPERSKY_API_PASSWORD", "missing; it goes with KASPERSKY_API_USERNAME")
                })?;
                if self.get("KASPERSKY_API_CERT_PATH").is_none() {
                    return Err(ConfigError::new(
                        "KASPERSKY_API_CERT_PATH",
                        "missing; Basic authentication needs the client certificate PEM",
                    ));
                }
                Credentials::Basic { username: user.to_owned(), password: Secret::new(password) }
            }
            (None, None) => {
                return Err(ConfigError::general(
                    "no credentials: set KASPERSKY_API_USERNAME, KASPERSKY_API_PASSWORD and KASPERSKY_API_CERT_PATH, or KASPERSKY_API_TOKEN",
                ));
            }
        };
        let url_text = self.get("KASPERSKY_API_URL").unwrap_or(DEFAULT_API_URL);
        let api_url = check_url(url_text)?;
        let cert_path = self.path("KASPERSKY_API_CERT_PATH", env);
        if let Some(p) = &cert_path {
            if !p.is_file() {
                return Err(ConfigError::new("KASPERSKY_API_CERT_PATH", format!("no such file: {}", p.display())));
            }
        }
        let ca_cert_path = self.path("KASPERSKY_CA_CERT_PATH", env);
        if let Some(p) = &ca_cert_path {
            if !p.is_file() {
                return Err(ConfigError::new("KASPERSKY_CA_CERT_PATH", format!("no such file: {}", p.display())));
            }
        }
        let cache = match self.get("KL_CACHE_PATH") {
            None => CacheSetting::Default,
            Some(v) if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false") => CacheSetting::Off,
            Some(_) => CacheSetting::Path(self.path("KL_CACHE_PATH", env).unwrap_or_default()),
        };
        const DAY: u64 = 86_400;
        Ok(Config {
            credentials,
            cert_path,
            ca_cert_path,
            api_url,
            timeout: Duration::from_secs(self.number("KL_TIMEOUT_SECS", 30, 1, 3600)?),
            concurrency: self.number("KL_CONCURRENCY", 8, 1, 256)?,
            cache,
            cache_ttl: Duration::from_secs(self.number("KL_CACHE_TTL_SECS", 7 * DAY, 0, 365 * DAY)?),
            cache_grey_ttl: Duration::from_secs(self.number("KL_CACHE_GREY_TTL_SECS", DAY, 0, 365 * DAY)?),
            lookup_private_ips: self.boolean("KL_LOOKUP_PRIVATE_IPS", false)?,
            records_count: match self.get("KL_RECORDS_COUNT") {
                None => None,
                Some(_) => Some(self.number("KL_RECORDS_COUNT", 0, 1, 1_000_000)?),
            },
            retries: self.number("KL_RETRIES", 3, 1, 20)?,
            deadline: Duration::from_secs(self.number("KL_DEADLINE_SECS", 300, 1, 86_400)?),
            max_response_bytes: self.number("KL_MAX_RESPONSE_BYTES", 16 << 20, 1024, 1 << 30)?,
            base_dir: self.base_dir,
        })
    }
}

/// `https://` anywhere; `http://` only to a loopback host.
fn check_url(text: &str) -> Result<Url, ConfigError> {
    const KEY: &str = "KASPERSKY_API_URL";
    let url = Url::parse(text).map_err(|e| ConfigError::new(KEY, format!("not a valid URL ({e}): {text:?}")))?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(ConfigError::new(KEY, format!("not a usable base URL: {text:?}")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            KEY,
            "must not carry credentials; use KASPERSKY_API_USERNAME and KASPERSKY_API_PASSWORD",
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError::new(
            KEY,
            format!(
                "plain http is refused for {:?}: use https (http is accepted only for loopback hosts such as 127.0.0.1, ::1 and localhost)",
                url.host_str().unwrap_or_default()
            ),
        )),
        other => Err(ConfigError::new(KEY, format!("unsupported scheme {other:?}; use https"))),
    }
}

/// Whether the URL names a loopback host (`localhost`, `127.0.0.0/8`, `::1`).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_parts(Some(yaml), None, no_env)
    }

    #[test]
    fn token_config_with_defaults() {
        let c = load("lookup_plugin:\n  KASPERSKY_API_TOKEN: abc\n").unwrap();
        assert_eq!(c.api_url.as_str(), "https://tip.kaspersky.com/api");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.retries, 3);
        assert_eq!(c.cache_ttl, Duration::from_secs(604_800));
        assert_eq!(c.cache_grey_ttl, Duration::from_secs(86_400));
        assert!(!c.lookup_private_ips);
        assert_eq!(c.records_count, None);
        assert_eq!(c.cache, CacheSetting::Default);
        assert_eq!(c.max_response_bytes, 16 << 20);
    }

    #[test]
    fn env_wins_over_file() {
        let c =
            Config::from_parts(Some("lookup_plugin:\n  KASPERSKY_API_TOKEN: abc\n  KL_CONCURRENCY: 4\n"), None, |k| {
                (k == "KL_CONCURRENCY").then(|| "2".to_owned())
            })
            .unwrap();
        assert_eq!(c.concurrency, 2);
    }

    #[test]
    fn errors_name_their_key() {
        let cases = [
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KL_BOGUS: 1\n", "KL_BOGUS"),
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KL_TIMEOUT_SECS: soon\n", "KL_TIMEOUT_SECS"),
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KL_CONCURRENCY: 0\n", "KL_CONCURRENCY"),
            (
                "lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KASPERSKY_API_URL: http://tip.example.com/api\n",
                "KASPERSKY_API_URL",
            ),
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KASPERSKY_API_URL: ftp://127.0.0.1/\n", "KASPERSKY_API_URL"),
            (
                "lookup_plugin:\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_CERT_PATH: /x.pem\n",
                "KASPERSKY_API_PASSWORD",
            ),
            ("lookup_plugin:\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_PASSWORD: p\n", "KASPERSKY_API_CERT_PATH"),
            (
                "lookup_plugin:\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_PASSWORD: p\n  KASPERSKY_API_CERT_PATH: /nonexistent/x.pem\n",
                "KASPERSKY_API_CERT_PATH",
            ),
            ("lookup_plugin:\n  KASPERSKY_API_USERNAME: <Add_your_api_username_here>\n", "KASPERSKY_API_USERNAME"),
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KL_LOOKUP_PRIVATE_IPS: maybe\n", "KL_LOOKUP_PRIVATE_IPS"),
        ];
        for (yaml, key) in cases {
            let e = load(yaml).unwrap_err();
            assert!(e.to_string().contains(key), "{yaml}: {e}");
        }
        assert!(load("lookup_plugin: {}\n").unwrap_err().to_string().contains("no credentials"));
        assert!(load("other: 1\n").unwrap_err().to_string().contains("other"));
        assert!(load(": : :\n  - [").is_err());
    }

    #[test]
    fn loopback_http_is_accepted() {
        for url in ["http://127.0.0.1:8080/api", "http://localhost/api", "http://[::1]:9/api", "http://127.5.6.7/"] {
            let c = Config::from_parts(None, None, |k| match k {
                "KASPERSKY_API_URL" => Some(url.to_owned()),
                "KASPERSKY_API_TOKEN" => Some("t".to_owned()),
                _ => None,
            });
            assert!(c.is_ok(), "{url}: {c:?}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.pem"), "x").unwrap();
        let cfg = dir.path().join("dnifconfig.yml");
        std::fs::write(
            &cfg,
            "lookup_plugin:\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_PASSWORD: p\n  KASPERSKY_API_CERT_PATH: client.pem\n  KL_CACHE_PATH: cache\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&cfg), no_env).unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(c.cert_path.unwrap(), base.join("client.pem"));
        assert_eq!(c.cache, CacheSetting::Path(base.join("cache")));
    }

    #[test]
    fn legacy_workdir_cert_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.pem"), "x").unwrap();
        let workdir = dir.path().display().to_string();
        let c = Config::from_parts(
            Some("lookup_plugin:\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_PASSWORD: p\n  KASPERSKY_API_CERT_PATH: /client.pem\n"),
            None,
            |k| (k == "WORKDIR").then(|| workdir.clone()),
        )
        .unwrap();
        assert_eq!(c.cert_path.unwrap(), dir.path().join("client.pem"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = load("lookup_plugin:\n  KASPERSKY_API_TOKEN: tok-SECRET-123\n").unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("tok-SECRET-123"), "{shown}");
        let e = load("lookup_plugin:\n  KASPERSKY_API_PASSWORD: pw-SECRET\n  KASPERSKY_API_USERNAME: u\n").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("pw-SECRET"));
    }
}
