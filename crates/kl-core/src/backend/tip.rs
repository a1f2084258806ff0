//! The commercial Threat Intelligence Portal.
//!
//! `GET {base}/{ip|domain|url|hash}/{indicator}?sections=…[&count=N]`, the
//! indicator percent-encoded as one path segment, authenticated by Basic
//! auth with a client certificate, or by a bearer token.

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kl_model::keys;
use kl_model::{Answer, Function, Indicator};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};

use super::http::HttpClient;
use super::{Backend, BackendInfo, Fetched, LookupFailure, decode_body};
use crate::config::{Config, ConfigError, Credentials};

/// Asks the TIP API over one pooled HTTPS client.
pub struct TipBackend {
    http: HttpClient,
    base: String,
    headers: HeaderMap,
    auth: &'static str,
    records_count: Option<u32>,
}

impl fmt::Debug for TipBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TipBackend")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .field("records_count", &self.records_count)
            .finish_non_exhaustive()
    }
}

impl TipBackend {
    /// Reads the PEM files and builds the client. Every failure here is a
    /// configuration error, reported before any lookup.
    pub fn from_config(config: &Config) -> Result<TipBackend, ConfigError> {
        let (cert, auth) = match config.credentials {
            Credentials::Basic { .. } => (config.cert_path.as_deref(), "basic+certificate"),
            Credentials::Token(_) => (None, "token"),
            Credentials::OpenTipKey(_) => {
                return Err(ConfigError::new(keys::BACKEND.name, "the TIP backend needs TIP credentials"));
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization(&config.credentials)?);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("kl/", env!("CARGO_PKG_VERSION"))));
        Ok(TipBackend {
            http: HttpClient::build(config, cert)?,
            base: config.api_url.as_str().trim_end_matches('/').to_owned(),
            headers,
            auth,
            records_count: config.records_count,
        })
    }

    /// The request URL for a lookup (no credentials in it).
    pub fn url(&self, function: Function, indicator: &Indicator) -> String {
        let mut url = format!(
            "{}/{}/{}?sections={}",
            self.base,
            indicator.kind().api_type(),
            indicator.path_segment(),
            function.sections_param()
        );
        if let Some(n) = self.records_count {
            url.push_str(&format!("&count={n}"));
        }
        url
    }
}

/// The `Authorization` header: the only place a TIP credential is read.
/// The value is marked sensitive so that the HTTP stack never logs it.
fn authorization(credentials: &Credentials) -> Result<HeaderValue, ConfigError> {
    let (key, text) = match credentials {
        Credentials::Basic { username, password } => {
            (keys::PASSWORD.name, format!("Basic {}", BASE64.encode(format!("{username}:{}", password.expose()))))
        }
        // The token header's name is unconfirmed in Kaspersky's docs; it is
        // written here and nowhere else. A token needs no certificate.
        Credentials::Token(token) => (keys::TOKEN.name, format!("Bearer {}", token.expose())),
        Credentials::OpenTipKey(_) => return Err(ConfigError::new(keys::BACKEND.name, "not TIP credentials")),
    };
    let mut value =
        HeaderValue::from_str(&text).map_err(|_| ConfigError::new(key, "cannot be sent in an HTTP header"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait]
impl Backend for TipBackend {
    async fn fetch(&self, function: Function, indicator: &Indicator) -> Result<Fetched, LookupFailure> {
        tracing::debug!(function = function.name(), indicator = indicator.as_str(), "request");
        let (status, body) = self.http.get(&self.url(function, indicator), self.headers.clone()).await?;
        tracing::debug!(function = function.name(), indicator = indicator.as_str(), status, "response");
        if status == 404 {
            return Ok(Answer::NotFound.into());
        }
        decode_body(&body, None)
    }

    fn cache_scope(&self) -> String {
        match self.records_count {
            Some(n) => format!("tip|{}|count={n}", self.base),
            None => format!("tip|{}", self.base),
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo { name: "tip", endpoint: self.base.clone(), auth: self.auth }
    }

    /// The cheapest request there is, as Kaspersky's own connectivity
    /// test sends it: a well-known domain's zone and the account figures.
    async fn probe(&self) -> Result<Fetched, LookupFailure> {
        let url = format!("{}/domain/example.com?sections=Zone,LicenseInfo", self.base);
        let (status, body) = self.http.get(&url, self.headers.clone()).await?;
        if status == 404 {
            return Ok(Answer::NotFound.into());
        }
        decode_body(&body, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_header() {
        let c = Config::for_url("http://127.0.0.1:1/api").unwrap();
        let b = TipBackend::from_config(&c).unwrap();
        let shown = format!("{b:?}");
        assert!(!shown.contains("test-token"), "{shown}");
        assert_eq!(b.cache_scope(), "tip|http://127.0.0.1:1/api");
    }
}
