//! The free OpenTIP API.
//!
//! `GET {base}/search/{ip|domain|url|hash}?request={indicator}` with the key
//! in `x-api-key`. There is no certificate, no Basic auth, and no
//! `sections` or `count`: OpenTIP answers with a fixed set of sections
//! (the zone, the general information, WHOIS; for hashes also detections),
//! under the same names as TIP, so the same tables map them to the same
//! fields. There are no `_file` lookups.

use std::fmt;

use async_trait::async_trait;
use kl_model::keys;
use kl_model::{Answer, Function, Indicator};
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use super::http::HttpClient;
use super::{Backend, BackendInfo, Fetched, LookupFailure, decode_body};
use crate::config::{Config, ConfigError, Credentials};
use crate::error::Error;

/// Asks OpenTIP over one pooled HTTPS client.
pub struct OpenTipBackend {
    http: HttpClient,
    base: String,
    headers: HeaderMap,
}

impl fmt::Debug for OpenTipBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenTipBackend").field("base", &self.base).finish_non_exhaustive()
    }
}

impl OpenTipBackend {
    pub fn from_config(config: &Config) -> Result<OpenTipBackend, ConfigError> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), api_key(&config.credentials)?);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("kl/", env!("CARGO_PKG_VERSION"))));
        Ok(OpenTipBackend {
            http: HttpClient::build(config, None)?,
            base: config.api_url.as_str().trim_end_matches('/').to_owned(),
            headers,
        })
    }

    /// The request URL for a lookup (no credentials in it).
    pub fn url(&self, indicator: &Indicator) -> String {
        format!("{}/search/{}?request={}", self.base, indicator.kind().api_type(), indicator.path_segment())
    }

    async fn get(&self, indicator: &Indicator, keep: &[&str]) -> Result<Fetched, LookupFailure> {
        let result = self.http.get(&self.url(indicator), self.headers.clone()).await;
        match result {
            Ok((404, _)) => Ok(Answer::NotFound.into()),
            Ok((_, body)) => decode_body(&body, Some(keep)),
            // Kaspersky's own OpenTIP scanner reads a 400 for a hash it was
            // sure of as "unknown". Every indicator here was validated
            // before it was sent, so a 400 means "no data": Grey.
            Err(Error::Status { status: 400, .. }) => Ok(Answer::NotFound.into()),
            Err(Error::Status { status: 401, .. }) => {
                Err(Error::Refused { status: 401, message: "OpenTIP refused the API key (HTTP 401)".to_owned() })
            }
            Err(Error::Status { status: 403, .. }) => Err(Error::Refused {
                status: 403,
                message: "OpenTIP quota or request limit exceeded (HTTP 403)".to_owned(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// The `x-api-key` header: the only place the OpenTIP key is read. Marked
/// sensitive so that the HTTP stack never logs it.
fn api_key(credentials: &Credentials) -> Result<HeaderValue, ConfigError> {
    let key = keys::OPENTIP_API_KEY.name;
    let Credentials::OpenTipKey(secret) = credentials else {
        return Err(ConfigError::new(key, "missing; KL_BACKEND: opentip needs the OpenTIP API key"));
    };
    let mut value = HeaderValue::from_str(secret.expose())
        .map_err(|_| ConfigError::new(key, "cannot be sent in an HTTP header"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait]
impl Backend for OpenTipBackend {
    async fn fetch(&self, function: Function, indicator: &Indicator) -> Result<Fetched, LookupFailure> {
        self.supports(function).map_err(|message| Error::Refused { status: 0, message })?;
        tracing::debug!(function = function.name(), indicator = indicator.as_str(), "request");
        self.get(indicator, function.sections()).await
    }

    fn cache_scope(&self) -> String {
        format!("opentip|{}", self.base)
    }

    fn info(&self) -> BackendInfo {
        BackendInfo { name: "opentip", endpoint: self.base.clone(), auth: "api key" }
    }

    fn supports(&self, function: Function) -> Result<(), String> {
        match function {
            Function::IpReport | Function::DomainReport | Function::UrlReport | Function::HashReport => Ok(()),
            f => Err(format!(
                "OpenTIP has no equivalent of {f} (KL_BACKEND: opentip answers only the four *_report functions)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_model::ObjectKind;

    fn config() -> Config {
        Config::load_with_env(None, |k| match k {
            "KL_BACKEND" => Some("opentip".to_owned()),
            "KASPERSKY_OPENTIP_API_KEY" => Some("key-SECRET".to_owned()),
            "KASPERSKY_API_URL" => Some("http://127.0.0.1:1/api/v1".to_owned()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn requests_are_searches_and_the_key_is_never_shown() {
        let b = OpenTipBackend::from_config(&config()).unwrap();
        let url = Indicator::parse(ObjectKind::Url, "http://evil.com/a?b=c&d").unwrap();
        assert_eq!(b.url(&url), "http://127.0.0.1:1/api/v1/search/url?request=http%3A%2F%2Fevil.com%2Fa%3Fb%3Dc%26d");
        assert!(!format!("{b:?}").contains("key-SECRET"));
        assert_eq!(b.cache_scope(), "opentip|http://127.0.0.1:1/api/v1");
        assert!(b.supports(Function::HashReport).is_ok());
        let e = b.supports(Function::IpReportFile).unwrap_err();
        assert!(e.contains("OpenTIP") && e.contains("get_ip_report_file"), "{e}");
    }
}
