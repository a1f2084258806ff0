//! What the HTTPS backends share: one pooled client with our TLS setup, a
//! capped body reader, and the mapping of transport failures and statuses
//! to [`Error`]s.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::{Config, ConfigError};
use crate::error::{Error, TransportCause};

/// One pooled HTTPS client and the limits of its requests.
#[derive(Debug)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    timeout: Duration,
    max_body: u64,
}

/// The most time to spend opening a connection (capped by the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpClient {
    /// Builds the client: trust roots, the client identity when `cert` is
    /// given, timeouts, no redirects. Every failure is a config error.
    pub(crate) fn build(config: &Config, cert: Option<&std::path::Path>) -> Result<HttpClient, ConfigError> {
        let tls = crate::tls::client_config(cert, config.ca_cert_path.as_deref())?;
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        if crate::config::is_loopback(&config.api_url) {
            // On loopback a new connection costs microseconds, while reusing
            // one can cost 40 ms a response: local test servers and proxies
            // that write headers and body separately with Nagle's algorithm
            // on wait for our delayed ACK on every reused connection.
            // A proxy from the environment cannot reach our loopback anyway.
            builder = builder.pool_max_idle_per_host(0).no_proxy();
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::general(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpClient { client, timeout: config.timeout, max_body: config.max_response_bytes })
    }

    /// Sends one GET; a 2xx or 404 comes back with its body read (within
    /// the cap), any other status as [`Error::Status`].
    pub(crate) async fn get(&self, url: &str, headers: HeaderMap) -> Result<(u16, Vec<u8>), Error> {
        let resp = self.client.get(url).headers(headers).send().await.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() || status == 404 {
            return Ok((status, self.read_body(resp).await?));
        }
        let retry_after = retry_after(resp.headers());
        let body = self.read_body(resp).await.unwrap_or_default();
        let body_excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        Err(Error::Status { status, body_excerpt, retry_after })
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout { timeout: self.timeout };
        }
        if let Some(tls) = certificate_failure(&e) {
            return tls;
        }
        // The innermost cause says what happened ("Connection refused");
        // the layers above it only say where.
        let mut root: &dyn std::error::Error = &e;
        while let Some(s) = root.source() {
            root = s;
        }
        let cause = transport_cause(&e);
        let message = if std::ptr::addr_eq(root, &e) { e.without_url().to_string() } else { root.to_string() };
        Error::Transport { message, cause }
    }

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, Error> {
        if resp.content_length().is_some_and(|n| n > self.max_body) {
            return Err(Error::TooLarge { limit: self.max_body });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(e))? {
            if (body.len() + chunk.len()) as u64 > self.max_body {
                return Err(Error::TooLarge { limit: self.max_body });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// What a connection failure was: a name that did not resolve, a refused
/// connection, or something else.
fn transport_cause(e: &(dyn std::error::Error + 'static)) -> TransportCause {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let mut inner = Some(c);
        // `io::Error` hides what it wraps from `source`.
        while let Some(i) = inner {
            if let Some(io) = i.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return TransportCause::Refused;
                }
                inner = io.get_ref().map(|r| r as &(dyn std::error::Error + 'static));
            } else {
                inner = None;
            }
        }
        let text = c.to_string();
        if text.contains("dns error")
            || text.contains("failed to lookup address")
            || text.contains("Name or service not known")
        {
            return TransportCause::Dns;
        }
        cause = c.source();
    }
    TransportCause::Other
}

/// A certificate failure somewhere in the error's causes, as an error that
/// says what to do about it.
fn certificate_failure(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    use rustls::AlertDescription as A;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = rustls_error(c) {
            let message = match r {
                rustls::Error::InvalidCertificate(why) => format!(
                    "TLS: the server's certificate is not trusted ({why:?}); if a TLS-inspecting proxy is in the way, put its CA in KASPERSKY_CA_CERT_PATH"
                ),
                rustls::Error::AlertReceived(
                    A::BadCertificate
                    | A::CertificateRequired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::UnsupportedCertificate
                    | A::AccessDenied,
                ) => format!(
                    "TLS: the server refused our client certificate ({r}); check KASPERSKY_API_CERT_PATH and that the certificate is still valid"
                ),
                _ => return None,
            };
            return Some(Error::Tls { message });
        }
        cause = c.source();
    }
    None
}

/// The rustls error `e` is, or wraps in `io::Error`s (whose `source` skips
/// the error they wrap).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, SystemTime::now())
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`; a
/// date in the past means "now".
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
