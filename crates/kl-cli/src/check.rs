//! `check`: is the config right, does the API answer, and how is the
//! account? One cheap request, and a report a person (or, with `--json`,
//! a monitoring system) can act on.

use std::process::ExitCode;
use std::time::SystemTime;

use kl_core::{Answer, BackendInfo, Error, License, TOKEN_WARNING_DAYS, TransportCause};
use serde::Serialize;

use crate::exit;
use crate::setup::Assembled;

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub backend: &'static str,
    pub endpoint: String,
    pub auth: &'static str,
    /// The round trip, when the API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// `data` or `no data`, when the API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<License>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_days_left: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The persistent cache, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

/// Where the cache is and whether it answers. A cache that does not
/// answer is reported, not failed: lookups go on without it.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    pub store: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Why the API did not answer: a class an operator can act on, and the
/// details.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub class: &'static str,
    pub message: String,
}

/// The failure class of an error, with what it means (docs/troubleshooting.md
/// has one section per class).
pub fn classify(e: &Error) -> Failure {
    let (class, what) = match e {
        Error::Transport { cause: TransportCause::Dns, .. } => ("DNS", "the API's host name does not resolve"),
        Error::Transport { cause: TransportCause::Refused, .. } => {
            ("connection refused", "nothing accepts connections at the API's address and port")
        }
        Error::Transport { .. } => ("connection", "the connection failed"),
        Error::Tls { message } if message.contains("not trusted") => {
            ("TLS: untrusted server", "the server's certificate is not trusted")
        }
        Error::Tls { .. } => ("TLS: client certificate refused", "the server refused the client certificate"),
        Error::Status { status: 401, .. } | Error::Refused { status: 401, .. } => (
            "HTTP 401",
            "the credentials were refused, or the portal's terms and conditions have not been accepted in a browser yet",
        ),
        Error::Status { status: 403, .. } | Error::Refused { status: 403, .. } => {
            ("HTTP 403", "the account has no API access, or the day's quota is spent")
        }
        Error::Timeout { .. } => ("timeout", "no answer within KL_TIMEOUT_SECS"),
        Error::Decode { .. } | Error::TooLarge { .. } => ("invalid response", "the answer was not the JSON expected"),
        Error::Status { .. } => ("HTTP error", "the API answered with an error"),
        _ => ("error", "the check failed"),
    };
    Failure { class, message: format!("{what}: {e}") }
}

/// Sends the probe and reports.
pub async fn run(assembled: &Assembled) -> Report {
    let BackendInfo { name, endpoint, auth } = assembled.engine.backend_info();
    let mut report = Report {
        ok: false,
        backend: name,
        endpoint,
        auth,
        elapsed_ms: None,
        answer: None,
        license: None,
        token_days_left: None,
        failure: None,
        cache: None,
    };
    match assembled.engine.probe().await {
        Ok(probe) => {
            report.ok = true;
            report.elapsed_ms = Some(probe.elapsed.as_millis() as u64);
            report.answer = Some(match probe.answer {
                Answer::Data(_) => "data",
                Answer::NotFound => "no data",
            });
            report.token_days_left = probe.license.as_ref().and_then(|l| l.token_days_left(SystemTime::now()));
            report.license = probe.license;
        }
        Err(e) => report.failure = Some(classify(&e)),
    }
    if report.license.is_none() {
        // The figures another process sharing the cache last saw.
        report.license = assembled.engine.shared_license().await;
        report.token_days_left = report.license.as_ref().and_then(|l| l.token_days_left(SystemTime::now()));
    }
    if let Some((store, status)) = assembled.engine.cache_status().await {
        report.cache = Some(CacheStatus { store, ok: status.is_ok(), problem: status.err() });
    }
    report
}

/// Prints the report (text on stdout, or one JSON object) and gives the
/// exit status: 0 when the API answered, 1 when not (with one line naming
/// the failure class on stderr).
pub fn print(program: &str, report: &Report, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_else(|_| "{}".to_owned()));
    } else if report.ok {
        println!("{}", text(report));
    }
    match &report.failure {
        None => ExitCode::SUCCESS,
        Some(f) => {
            eprintln!("{program} check: failed: {}: {}", f.class, f.message);
            ExitCode::from(exit::FAILED)
        }
    }
}

fn text(r: &Report) -> String {
    let mut lines = vec![
        format!("backend   {}", r.backend),
        format!("endpoint  {}", r.endpoint),
        format!("auth      {}", r.auth),
        format!("answered  {} in {:.3} s", r.answer.unwrap_or("?"), r.elapsed_ms.unwrap_or_default() as f64 / 1000.0),
    ];
    if let Some(l) = &r.license {
        if let Some(access) = &l.access_type {
            lines.push(format!("access    {access}"));
        }
        if let (Some(used), Some(quota)) = (l.day_requests, l.day_quota) {
            lines.push(format!("quota     DayRequests {used} of DayQuota {quota} used today"));
        }
        match (&l.token_expiration, r.token_days_left) {
            (Some(date), Some(days)) if days < 0 => lines.push(format!("token     expired on {date}")),
            (Some(date), Some(days)) => {
                let soon = if days < TOKEN_WARNING_DAYS { " (renew it soon)" } else { "" };
                lines.push(format!("token     TokenExpirationDate {date}, {days} days left{soon}"));
            }
            (Some(date), None) => lines.push(format!("token     TokenExpirationDate {date}")),
            (None, _) => lines.push("token     no expiry (no token, or none reported)".to_owned()),
        }
    }
    if let Some(c) = &r.cache {
        match &c.problem {
            None => lines.push(format!("cache     {}", c.store)),
            Some(p) => lines.push(format!("cache     {}: not answering ({p}); lookups go on without it", c.store)),
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_failure_has_a_class() {
        let cases = [
            (Error::Transport { message: "dns error".into(), cause: TransportCause::Dns }, "DNS"),
            (Error::Transport { message: "refused".into(), cause: TransportCause::Refused }, "connection refused"),
            (Error::Tls { message: "TLS: the server's certificate is not trusted".into() }, "TLS: untrusted server"),
            (
                Error::Tls { message: "TLS: the server refused our client certificate".into() },
                "TLS: client certificate refused",
            ),
            (Error::Status { status: 401, body_excerpt: String::new(), retry_after: None }, "HTTP 401"),
            (Error::Refused { status: 403, message: "quota".into() }, "HTTP 403"),
            (Error::Timeout { timeout: Duration::from_secs(30) }, "timeout"),
        ];
        for (e, class) in cases {
            assert_eq!(classify(&e).class, class, "{e}");
        }
        assert!(
            classify(&Error::Status { status: 401, body_excerpt: String::new(), retry_after: None })
                .message
                .contains("terms and conditions")
        );
    }
}
