//! Configuration: the DNIF `dnifconfig.yml` format, with environment overrides.
//!
//! ```yaml
//! lookup_plugin:
//!   KASPERSKY_API_USERNAME: user
//!   KASPERSKY_API_PASSWORD: secret
//!   KASPERSKY_API_CERT_PATH: client.pem
//! ```
//!
//! Every key is a row of [`kl_model::keys`], which says what it holds and
//! how it is parsed. A key may also come from an environment variable of
//! the same name, and a non-empty one wins; an empty value, in the file or
//! the environment, counts as unset. Relative paths resolve against the
//! folder of the config file. Unknown keys are refused. Every error names
//! its key and never shows a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kl_model::Zone;
use kl_model::keys::{self, Key, Kind};
use reqwest::Url;

use crate::secret::Secret;

/// The TIP API used when `KASPERSKY_API_URL` is not set.
pub const DEFAULT_API_URL: &str = "https://tip.kaspersky.com/api";
/// The OpenTIP API used when `KASPERSKY_API_URL` is not set.
pub const DEFAULT_OPENTIP_URL: &str = "https://opentip.kaspersky.com/api/v1";

/// Which API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The commercial Threat Intelligence Portal.
    Tip,
    /// The free OpenTIP API.
    OpenTip,
}

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
    /// `Authorization: Bearer` (newer accounts; no certificate needed).
    Token(Secret),
    /// OpenTIP's `x-api-key`.
    OpenTipKey(Secret),
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
    /// A Redis server shared by processes (`KL_CACHE_URL`).
    Redis(RedisSetting),
}

/// `KL_CACHE_URL` and its companions. `Debug` shows the URL redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSetting {
    /// The URL as given, password and all.
    pub(crate) url: Secret,
    /// `KL_CACHE_PASSWORD`, which wins over a password in the URL.
    pub(crate) password: Option<Secret>,
    /// The URL with any password replaced, for messages.
    pub shown: String,
    /// What every key starts with (`KL_CACHE_KEY_PREFIX`).
    pub key_prefix: String,
}

impl fmt::Debug for RedisSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSetting")
            .field("url", &self.shown)
            .field("password", &self.password)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// A loaded, checked configuration. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    pub backend: BackendKind,
    pub credentials: Credentials,
    /// PEM with the client certificate and its private key.
    pub cert_path: Option<PathBuf>,
    /// PEM with extra trust roots.
    pub ca_cert_path: Option<PathBuf>,
    pub api_url: Url,
    pub timeout: Duration,
    pub concurrency: usize,
    pub retries: u32,
    pub deadline: Duration,
    pub drain: Duration,
    pub lookup_private_ips: bool,
    pub lookup_internal_names: bool,
    pub records_count: Option<u32>,
    pub max_response_bytes: u64,
    pub memo_bytes: u64,
    pub cache: CacheSetting,
    pub cache_ttl: Duration,
    pub cache_grey_ttl: Duration,
    /// The zones worth an ECS `threat.enrichments[]` entry.
    pub ecs_threat_zones: Vec<Zone>,
    /// Where warnings go instead of stderr.
    pub log_file: Option<PathBuf>,
    /// The folder of the config file (relative paths resolve against it).
    pub base_dir: Option<PathBuf>,
    /// What loading found worth a warning, for the caller to log once its
    /// logging is set up (it may go to `log_file`).
    pub warnings: Vec<String>,
    /// kl-http's settings.
    pub http: HttpSettings,
}

/// kl-http's settings (the `KL_HTTP_*` keys).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `KL_HTTP_LISTEN`, when set.
    pub listen: Option<String>,
    /// The bearer tokens clients may send; none: no client auth.
    pub tokens: Vec<Secret>,
    /// Certificate chain and key to serve HTTPS with.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_batch: usize,
    pub max_body_bytes: u64,
    pub timeout: Duration,
    pub max_pending: usize,
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
                if p.is_dir() {
                    return Err(ConfigError::general(format!(
                        "config file {} is a directory; give the YAML file itself",
                        p.display()
                    )));
                }
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
    pub(crate) fn from_parts(
        yaml: Option<&str>,
        base_dir: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut values = match yaml {
            Some(text) => parse_yaml(text)?,
            None => BTreeMap::new(),
        };
        values.retain(|_, v| !v.trim().is_empty());
        for key in keys::ALL {
            // An empty variable counts as unset: the file's value stays.
            if let Some(v) = env(key.name).filter(|v| !v.trim().is_empty()) {
                values.insert(key.name, v);
            }
        }
        for (key, v) in &values {
            let t = v.trim();
            if t.starts_with('<') && t.ends_with('>') {
                return Err(ConfigError::new(key, "still holds the template placeholder; put the real value in"));
            }
        }
        Raw { values, base_dir, warnings: Default::default() }.check(&env)
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
            let Some(key) = keys::find(&name) else {
                let known: Vec<&str> = keys::ALL.iter().map(|k| k.name).collect();
                return Err(ConfigError::general(format!(
                    "unknown key `{name}` in lookup_plugin; known keys: {}",
                    known.join(", ")
                )));
            };
            let text = match v {
                serde_yaml::Value::Null => continue,
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::String(s) => s,
                _ => {
                    return Err(ConfigError::new(key.name, "must be a single value, not a list or mapping"));
                }
            };
            out.insert(key.name, text);
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

/// Raw key/value pairs, before checking: file values, then env overrides.
struct Raw {
    values: BTreeMap<&'static str, String>,
    base_dir: Option<PathBuf>,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Raw {
    fn get(&self, key: &Key) -> Option<&str> {
        self.values.get(key.name).map(|s| s.trim())
    }

    fn secret(&self, key: &Key) -> Result<Option<Secret>, ConfigError> {
        debug_assert_eq!(key.kind, Kind::Secret);
        let Some(v) = self.get(key) else { return Ok(None) };
        // A secret goes into a header: a control character would make the
        // header unusable, and the request would go out without it.
        if v.chars().any(char::is_control) || !v.is_ascii() {
            return Err(ConfigError::new(
                key.name,
                "contains control or non-ASCII characters and cannot be sent in a header; check for a stray line break",
            ));
        }
        Ok(Some(Secret::new(v)))
    }

    fn path(&self, key: &Key, env: &impl Fn(&str) -> Option<String>) -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = self.get(key) else { return Ok(None) };
        let given = PathBuf::from(raw);
        let mut resolved = match (&self.base_dir, given.is_relative()) {
            (Some(base), true) => base.join(&given),
            _ => given.clone(),
        };
        if key.name == keys::CERT_PATH.name && !resolved.exists() {
            // The 2018 plugin glued this path onto $WORKDIR. Keep old
            // deployments working, and say that the form is deprecated.
            if let Some(workdir) = env("WORKDIR") {
                let legacy = PathBuf::from(format!("{workdir}{raw}"));
                if legacy.exists() {
                    self.warnings.borrow_mut().push(format!(
                        "{} is resolved against $WORKDIR ({}), as the 2018 plugin did; this form is deprecated, write the full path instead",
                        key.name,
                        legacy.display()
                    ));
                    resolved = legacy;
                }
            }
        }
        if key.kind == Kind::File && key.name != keys::LOG_FILE.name {
            if resolved.is_dir() {
                return Err(ConfigError::new(
                    key.name,
                    format!("{} is a directory; a file is expected", resolved.display()),
                ));
            }
            if !resolved.is_file() {
                return Err(ConfigError::new(key.name, format!("no such file: {}", resolved.display())));
            }
        }
        Ok(Some(resolved))
    }

    fn number(&self, key: &Key) -> Result<u64, ConfigError> {
        let Kind::Number { default, .. } = key.kind else { unreachable!("{} is not a number key", key.name) };
        match self.get(key) {
            None => Ok(default),
            Some(raw) => key.parse_number(raw).map_err(|m| ConfigError::new(key.name, m)),
        }
    }

    fn seconds(&self, key: &Key) -> Result<Duration, ConfigError> {
        self.number(key).map(Duration::from_secs)
    }

    fn optional_number(&self, key: &Key) -> Result<Option<u64>, ConfigError> {
        self.get(key).map(|_| self.number(key)).transpose()
    }

    fn boolean(&self, key: &Key) -> Result<bool, ConfigError> {
        let Kind::Bool { default } = key.kind else { unreachable!("{} is not a boolean key", key.name) };
        match self.get(key) {
            None => Ok(default),
            Some(raw) => key.parse_bool(raw).map_err(|m| ConfigError::new(key.name, m)),
        }
    }

    fn backend(&self) -> Result<BackendKind, ConfigError> {
        match self.get(&keys::BACKEND) {
            None => Ok(BackendKind::Tip),
            Some(raw) => match keys::BACKEND.parse_choice(raw).map_err(|m| ConfigError::new(keys::BACKEND.name, m))? {
                "opentip" => Ok(BackendKind::OpenTip),
                _ => Ok(BackendKind::Tip),
            },
        }
    }

    /// OpenTIP takes its key alone; TIP's keys are ignored, with a warning.
    fn opentip_credentials(&self) -> Result<Credentials, ConfigError> {
        let key = self.secret(&keys::OPENTIP_API_KEY)?.ok_or_else(|| {
            ConfigError::new(keys::OPENTIP_API_KEY.name, "missing; KL_BACKEND: opentip needs the OpenTIP API key")
        })?;
        let tip_only = [&keys::USERNAME, &keys::PASSWORD, &keys::CERT_PATH, &keys::TOKEN, &keys::RECORDS_COUNT];
        let set: Vec<&str> = tip_only.iter().filter(|k| self.get(k).is_some()).map(|k| k.name).collect();
        if !set.is_empty() {
            self.warnings
                .borrow_mut()
                .push(format!("{} are for TIP and are ignored with KL_BACKEND: opentip", set.join(", ")));
        }
        Ok(Credentials::OpenTipKey(key))
    }

    fn http(&self, env: &impl Fn(&str) -> Option<String>) -> Result<HttpSettings, ConfigError> {
        let tokens = match self.secret(&keys::HTTP_TOKENS)? {
            None => Vec::new(),
            Some(list) => {
                let tokens: Vec<Secret> =
                    list.expose().split(',').map(str::trim).filter(|t| !t.is_empty()).map(Secret::new).collect();
                if tokens.iter().any(|t| t.expose().len() < 16) {
                    return Err(ConfigError::new(
                        keys::HTTP_TOKENS.name,
                        "every token must be at least 16 characters long (a random one, such as `openssl rand -hex 24`)",
                    ));
                }
                tokens
            }
        };
        let tls = match (self.path(&keys::HTTP_TLS_CERT, env)?, self.path(&keys::HTTP_TLS_KEY, env)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(keys::HTTP_TLS_KEY.name, "missing; it goes with KL_HTTP_TLS_CERT"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(keys::HTTP_TLS_CERT.name, "missing; it goes with KL_HTTP_TLS_KEY"));
            }
        };
        Ok(HttpSettings {
            listen: self.get(&keys::HTTP_LISTEN).map(str::to_owned),
            tokens,
            tls,
            max_batch: self.number(&keys::HTTP_MAX_BATCH)? as usize,
            max_body_bytes: self.number(&keys::HTTP_MAX_BODY_BYTES)?,
            timeout: self.seconds(&keys::HTTP_TIMEOUT)?,
            max_pending: self.number(&keys::HTTP_MAX_PENDING)? as usize,
        })
    }

    fn credentials(&self) -> Result<Credentials, ConfigError> {
        let token = self.secret(&keys::TOKEN)?;
        let username = self.get(&keys::USERNAME);
        let password = self.secret(&keys::PASSWORD)?;
        let cert = self.get(&keys::CERT_PATH);
        if let Some(user) = username {
            if user.contains(':') {
                return Err(ConfigError::new(
                    keys::USERNAME.name,
                    "contains ':', which Basic authentication cannot carry in a user name",
                ));
            }
        }
        if let Some(token) = token {
            if username.is_some() || password.is_some() || cert.is_some() {
                self.warnings.borrow_mut().push(format!(
                    "{} is set together with {}, {} or {}: the token is used and the others are ignored",
                    keys::TOKEN.name,
                    keys::USERNAME.name,
                    keys::PASSWORD.name,
                    keys::CERT_PATH.name
                ));
            }
            return Ok(Credentials::Token(token));
        }
        let Some(user) = username else {
            return Err(ConfigError::general(format!(
                "no credentials: set {}, {} and {}, or {}",
                keys::USERNAME.name,
                keys::PASSWORD.name,
                keys::CERT_PATH.name,
                keys::TOKEN.name
            )));
        };
        let password = password.ok_or_else(|| {
            ConfigError::new(keys::PASSWORD.name, format!("missing; it goes with {}", keys::USERNAME.name))
        })?;
        if cert.is_none() {
            return Err(ConfigError::new(
                keys::CERT_PATH.name,
                "missing; Basic authentication needs the client certificate PEM",
            ));
        }
        Ok(Credentials::Basic { username: user.to_owned(), password })
    }

    /// `KL_CACHE_URL`: `redis://` or `rediss://`, a host, a numeric
    /// database; shown redacted in every message.
    fn redis(&self) -> Result<Option<RedisSetting>, ConfigError> {
        let Some(url) = self.secret(&keys::CACHE_URL)? else {
            if self.get(&keys::CACHE_PASSWORD).is_some() {
                return Err(ConfigError::new(
                    keys::CACHE_PASSWORD.name,
                    format!("set without {}", keys::CACHE_URL.name),
                ));
            }
            return Ok(None);
        };
        let key = keys::CACHE_URL.name;
        let shown = redact_userinfo(url.expose());
        // Unparsed, the value is not echoed: where a password sits in it is
        // unknown.
        let parsed = Url::parse(url.expose()).map_err(|e| {
            ConfigError::new(key, format!("not a valid URL ({e}); expected redis://[:password@]host:port/db"))
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(ConfigError::new(key, format!("must start with redis:// or rediss:// (TLS): {shown:?}")));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(key, format!("names no host: {shown:?}")));
        }
        let db = parsed.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u16>().is_err() {
            return Err(ConfigError::new(key, format!("the path must be a database number, such as /0: {shown:?}")));
        }
        let key_prefix = self.get(&keys::CACHE_KEY_PREFIX).unwrap_or("kl:").to_owned();
        Ok(Some(RedisSetting { url, password: self.secret(&keys::CACHE_PASSWORD)?, shown, key_prefix }))
    }

    fn check(self, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let backend = self.backend()?;
        let (credentials, default_url) = match backend {
            BackendKind::Tip => (self.credentials()?, DEFAULT_API_URL),
            BackendKind::OpenTip => (self.opentip_credentials()?, DEFAULT_OPENTIP_URL),
        };
        let api_url = check_url(self.get(&keys::API_URL).unwrap_or(default_url))?;
        // The certificate is presented only with Basic authentication.
        let cert_path = match credentials {
            Credentials::Basic { .. } => self.path(&keys::CERT_PATH, env)?,
            Credentials::Token(_) | Credentials::OpenTipKey(_) => None,
        };
        let ca_cert_path = self.path(&keys::CA_CERT_PATH, env)?;
        let cache = match (self.get(&keys::CACHE_PATH), self.redis()?) {
            (Some(_), Some(redis)) => {
                return Err(ConfigError::new(
                    keys::CACHE_URL.name,
                    format!(
                        "{} is set too; choose one: {} for a Redis cache shared by processes ({}), or {} for a local one",
                        keys::CACHE_PATH.name,
                        keys::CACHE_URL.name,
                        redis.shown,
                        keys::CACHE_PATH.name
                    ),
                ));
            }
            (None, Some(redis)) => CacheSetting::Redis(redis),
            (None, None) => CacheSetting::Default,
            (Some(v), None) if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false") => CacheSetting::Off,
            (Some(_), None) => CacheSetting::Path(self.path(&keys::CACHE_PATH, env)?.unwrap_or_default()),
        };
        let ecs_threat_zones = match self.get(&keys::ECS_THREAT_ZONES) {
            None => vec![Zone::Red, Zone::Orange, Zone::Yellow],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|z| !z.is_empty())
                .map(|z| match Zone::parse(z) {
                    Zone::Unknown(_) => Err(ConfigError::new(
                        keys::ECS_THREAT_ZONES.name,
                        format!("unknown zone {z:?}; expected Red, Orange, Yellow, Grey or Green"),
                    )),
                    zone => Ok(zone),
                })
                .collect::<Result<_, _>>()?,
        };
        let log_file = self.path(&keys::LOG_FILE, env)?;
        let http = self.http(env)?;
        if let Some(p) = &log_file {
            if p.is_dir() {
                return Err(ConfigError::new(
                    keys::LOG_FILE.name,
                    format!("{} is a directory; a file is expected", p.display()),
                ));
            }
        }
        Ok(Config {
            backend,
            credentials,
            cert_path,
            ca_cert_path,
            api_url,
            timeout: self.seconds(&keys::TIMEOUT)?,
            concurrency: self.number(&keys::CONCURRENCY)? as usize,
            retries: self.number(&keys::RETRIES)? as u32,
            deadline: self.seconds(&keys::DEADLINE)?,
            drain: self.seconds(&keys::DRAIN)?,
            lookup_private_ips: self.boolean(&keys::LOOKUP_PRIVATE_IPS)?,
            lookup_internal_names: self.boolean(&keys::LOOKUP_INTERNAL_NAMES)?,
            records_count: match backend {
                BackendKind::Tip => self.optional_number(&keys::RECORDS_COUNT)?.map(|n| n as u32),
                BackendKind::OpenTip => None,
            },
            max_response_bytes: self.number(&keys::MAX_RESPONSE_BYTES)?,
            memo_bytes: self.number(&keys::MEMO_BYTES)?,
            cache,
            cache_ttl: self.seconds(&keys::CACHE_TTL)?,
            cache_grey_ttl: self.seconds(&keys::CACHE_GREY_TTL)?,
            ecs_threat_zones,
            log_file,
            base_dir: self.base_dir,
            warnings: self.warnings.into_inner(),
            http,
        })
    }
}

/// `text` with any `user:password@` part of a URL replaced, for messages.
pub fn redact_userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else { return text.to_owned() };
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}[redacted]@{}", &text[..scheme_end], &rest[at + 1..]),
        None => text.to_owned(),
    }
}

/// `https://` anywhere; `http://` only to a loopback host. No credentials,
/// query or fragment: the request paths are appended to this URL.
fn check_url(text: &str) -> Result<Url, ConfigError> {
    let key = keys::API_URL.name;
    let shown = redact_userinfo(text);
    let url = Url::parse(text).map_err(|e| ConfigError::new(key, format!("not a valid URL ({e}): {shown:?}")))?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(ConfigError::new(key, format!("not a usable base URL: {shown:?}")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            key,
            format!(
                "must not carry credentials; use {} and {}, or {}",
                keys::USERNAME.name,
                keys::PASSWORD.name,
                keys::TOKEN.name
            ),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            format!("must not have a query (`?…`) or fragment (`#…`): lookups are appended to its path: {shown:?}"),
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError::new(
            key,
            format!(
                "plain http is refused for {:?}: use https (http is accepted only for loopback hosts such as 127.0.0.1, ::1 and localhost)",
                url.host_str().unwrap_or_default()
            ),
        )),
        other => Err(ConfigError::new(key, format!("unsupported scheme {other:?}; use https"))),
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
            (
                "lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KASPERSKY_API_URL: https://tip.example/api?x=1\n",
                "KASPERSKY_API_URL",
            ),
            (
                "lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KASPERSKY_API_URL: https://tip.example/api#top\n",
                "KASPERSKY_API_URL",
            ),
            (
                "lookup_plugin:\n  KASPERSKY_API_USERNAME: dom:user\n  KASPERSKY_API_PASSWORD: p\n  KASPERSKY_API_CERT_PATH: /x.pem\n",
                "KASPERSKY_API_USERNAME",
            ),
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: \"abc\\u0007def\"\n", "KASPERSKY_API_TOKEN"),
            ("lookup_plugin:\n  KASPERSKY_API_TOKEN: \"abc\\ndef\"\n", "KASPERSKY_API_TOKEN"),
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
    fn an_empty_environment_variable_counts_as_unset() {
        let c =
            Config::from_parts(Some("lookup_plugin:\n  KASPERSKY_API_TOKEN: abc\n  KL_CONCURRENCY: 4\n"), None, |k| {
                (k == "KL_CONCURRENCY" || k == "KASPERSKY_API_TOKEN").then(|| " ".to_owned())
            })
            .unwrap();
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.credentials, Credentials::Token(Secret::new("abc")));
    }

    #[test]
    fn a_directory_where_a_file_belongs_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let e =
            load(&format!("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KASPERSKY_CA_CERT_PATH: {d}\n")).unwrap_err();
        assert_eq!(e.key, Some("KASPERSKY_CA_CERT_PATH"));
        assert!(e.message.contains("is a directory"), "{e}");
        let e = Config::load_with_env(Some(dir.path()), no_env).unwrap_err();
        assert!(e.message.contains("is a directory"), "{e}");
    }

    #[test]
    fn opentip_takes_its_key_and_its_own_default_url() {
        let c = load("lookup_plugin:\n  KL_BACKEND: opentip\n  KASPERSKY_OPENTIP_API_KEY: k-SECRET\n").unwrap();
        assert_eq!(c.backend, BackendKind::OpenTip);
        assert_eq!(c.api_url.as_str(), "https://opentip.kaspersky.com/api/v1");
        assert_eq!(c.credentials, Credentials::OpenTipKey(Secret::new("k-SECRET")));
        assert!(!format!("{c:?}").contains("k-SECRET"));
        let e = load("lookup_plugin:\n  KL_BACKEND: opentip\n").unwrap_err();
        assert_eq!(e.key, Some("KASPERSKY_OPENTIP_API_KEY"));
        let e = load("lookup_plugin:\n  KL_BACKEND: virustotal\n  KASPERSKY_API_TOKEN: a\n").unwrap_err();
        assert_eq!(e.key, Some("KL_BACKEND"));
        let c = load(
            "lookup_plugin:\n  KL_BACKEND: OpenTIP\n  KASPERSKY_OPENTIP_API_KEY: k\n  KASPERSKY_API_TOKEN: t\n  KL_RECORDS_COUNT: 5\n",
        )
        .unwrap();
        assert_eq!(c.records_count, None);
        assert!(c.warnings[0].contains("ignored with KL_BACKEND: opentip"), "{:?}", c.warnings);
    }

    #[test]
    fn threat_zones_are_zones() {
        let c = load("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KL_ECS_THREAT_ZONES: red, Orange\n").unwrap();
        assert_eq!(c.ecs_threat_zones, vec![Zone::Red, Zone::Orange]);
        let e = load("lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n  KL_ECS_THREAT_ZONES: Red,Purple\n").unwrap_err();
        assert_eq!(e.key, Some("KL_ECS_THREAT_ZONES"));
    }

    #[test]
    fn a_redis_url_selects_redis_and_is_never_shown_with_its_password() {
        let base = "lookup_plugin:\n  KASPERSKY_API_TOKEN: a\n";
        let c = load(&format!("{base}  KL_CACHE_URL: redis://:Pa55word@cache.internal:6380/2\n")).unwrap();
        let CacheSetting::Redis(r) = &c.cache else { panic!("{:?}", c.cache) };
        assert_eq!(r.shown, "redis://[redacted]@cache.internal:6380/2");
        assert_eq!(r.key_prefix, "kl:");
        let debug = format!("{c:?}");
        assert!(!debug.contains("Pa55word") && debug.contains("[redacted]@cache.internal"), "{debug}");

        let c = load(&format!(
            "{base}  KL_CACHE_URL: rediss://cache.internal\n  KL_CACHE_PASSWORD: Other-pw\n  KL_CACHE_KEY_PREFIX: 'siem1:'\n"
        ))
        .unwrap();
        let CacheSetting::Redis(r) = &c.cache else { panic!("{:?}", c.cache) };
        assert_eq!(r.key_prefix, "siem1:");
        assert!(r.password.is_some() && !format!("{c:?}").contains("Other-pw"));

        for (extra, key, words) in [
            (
                "  KL_CACHE_URL: redis://:Pa55word@h/0\n  KL_CACHE_PATH: /tmp/c\n",
                "KL_CACHE_URL",
                "KL_CACHE_PATH is set too",
            ),
            ("  KL_CACHE_URL: http://:Pa55word@h/0\n", "KL_CACHE_URL", "redis:// or rediss://"),
            ("  KL_CACHE_URL: redis://:Pa55word@h/zero\n", "KL_CACHE_URL", "database number"),
            ("  KL_CACHE_URL: not a url Pa55word\n", "KL_CACHE_URL", "not a valid URL"),
            ("  KL_CACHE_PASSWORD: Pa55word\n", "KL_CACHE_PASSWORD", "without KL_CACHE_URL"),
        ] {
            let e = load(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(e.key, Some(key), "{extra}");
            let text = e.to_string();
            assert!(text.contains(words) && !text.contains("Pa55word"), "{text}");
        }
    }

    #[test]
    fn a_token_needs_no_certificate_and_wins_over_basic() {
        let c = load("lookup_plugin:\n  KASPERSKY_API_TOKEN: abc\n").unwrap();
        assert_eq!(c.cert_path, None);
        assert!(c.warnings.is_empty());
        let c = load(
            "lookup_plugin:\n  KASPERSKY_API_TOKEN: abc\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_PASSWORD: p\n  KASPERSKY_API_CERT_PATH: /nonexistent.pem\n",
        )
        .unwrap();
        assert_eq!(c.credentials, Credentials::Token(Secret::new("abc")));
        assert_eq!(c.cert_path, None);
        assert!(c.warnings[0].contains("the token is used"), "{:?}", c.warnings);
    }

    #[test]
    fn a_malformed_url_never_echoes_its_credentials() {
        for url in [
            "https://admin:S3cret@tip example/api",
            "https://admin:S3cret@[::1/api",
            "https://admin:S3cret@tip.example/api",
        ] {
            let e = Config::from_parts(None, None, |k| match k {
                "KASPERSKY_API_URL" => Some(url.to_owned()),
                "KASPERSKY_API_TOKEN" => Some("t".to_owned()),
                _ => None,
            })
            .unwrap_err();
            assert!(!e.to_string().contains("S3cret"), "{e}");
            assert_eq!(e.key, Some("KASPERSKY_API_URL"));
        }
        assert_eq!(redact_userinfo("https://a:b@h/p@q"), "https://[redacted]@h/p@q");
        assert_eq!(redact_userinfo("https://h/p@q"), "https://h/p@q");
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
