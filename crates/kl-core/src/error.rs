//! The errors of kl-core. Messages are lowercase, carry no trailing period,
//! and never contain a credential: they end up in `$KLError` fields.

use std::time::Duration;

use crate::config::ConfigError;
use kl_model::IndicatorError;

/// Everything that can go wrong in kl-core, one variant per thing a caller
/// can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable; the run must not start.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The raw value is not an indicator of the function's type.
    #[error(transparent)]
    InvalidIndicator(#[from] IndicatorError),
    /// The connection could not be made or broke off.
    #[error("connection failed: {message}")]
    Transport { message: String, cause: TransportCause },
    /// The API refused us for good (a bad key, no access, a spent quota),
    /// in words the backend chose.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The TLS handshake failed on a certificate: the server's is not
    /// trusted, or ours was refused. Permanent for the run.
    #[error("{message}")]
    Tls { message: String },
    /// No complete answer within the request timeout.
    #[error("timeout after {}s", secs(*timeout))]
    Timeout { timeout: Duration },
    /// The API answered with a status we do not map to data.
    #[error("{}", status_message(*status))]
    Status {
        status: u16,
        /// The first bytes of the body, for logs (never shown in events).
        body_excerpt: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The body is not the JSON object we expect; `path` names where it broke.
    #[error("invalid response{}: {message}", if path.is_empty() || path == "." { String::new() } else { format!(" at {path}") })]
    Decode { path: String, message: String },
    /// The body is larger than the configured cap.
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// A replay directory could not be read.
    #[error("replay: {message}")]
    Replay { message: String },
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{}", s as u64) } else { format!("{s:.3}") }
}

fn status_message(status: u16) -> String {
    match status {
        400 => "HTTP 400 bad request".to_owned(),
        401 => "authentication failed (HTTP 401)".to_owned(),
        403 => "access denied or quota exceeded (HTTP 403)".to_owned(),
        414 => "HTTP 414 URL too long".to_owned(),
        429 => "HTTP 429 too many requests".to_owned(),
        s => format!("HTTP {s}"),
    }
}

/// What a connection failure was, as far as can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCause {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens there (or a firewall says so).
    Refused,
    /// Anything else: a reset, a broken proxy…
    Other,
}

/// How the engine treats a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth another try: connect errors, timeouts, 429, 5xx.
    Transient,
    /// Stop the whole run: 401 and 403 (bad credentials, no access, quota),
    /// and certificate failures (no later request would do better).
    Fatal,
    /// This lookup failed; others may still succeed.
    Permanent,
}

impl Error {
    /// How the engine should react to this failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } => FailureKind::Transient,
            Error::Status { status: 401 | 403, .. } | Error::Tls { .. } | Error::Refused { .. } => FailureKind::Fatal,
            Error::Status { status, .. } if *status == 429 || (500..600).contains(status) => FailureKind::Transient,
            _ => FailureKind::Permanent,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(Error::Timeout { timeout: Duration::from_secs(30) }.to_string(), "timeout after 30s");
        assert_eq!(Error::Timeout { timeout: Duration::from_millis(250) }.to_string(), "timeout after 0.250s");
        let st = |status| Error::Status { status, body_excerpt: String::new(), retry_after: None };
        assert_eq!(st(503).to_string(), "HTTP 503");
        assert_eq!(st(503).kind(), FailureKind::Transient);
        assert_eq!(st(429).kind(), FailureKind::Transient);
        assert_eq!(st(401).kind(), FailureKind::Fatal);
        assert_eq!(st(403).kind(), FailureKind::Fatal);
        for s in [400, 404, 414, 418] {
            assert_eq!(st(s).kind(), FailureKind::Permanent, "{s}");
        }
        assert_eq!(
            Error::Decode { path: "IpWhoIs.Net".into(), message: "EOF".into() }.to_string(),
            "invalid response at IpWhoIs.Net: EOF"
        );
    }
}
