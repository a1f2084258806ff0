//! Where answers come from: one module per backend, behind one trait.
//!
//! - [`tip`]: the commercial Threat Intelligence Portal over HTTPS;
//! - [`opentip`]: the free OpenTIP API over HTTPS;
//! - [`replay`]: recorded answers in a folder (`--offline`).
//!
//! A backend makes exactly one request per call. Retries, deduplication,
//! the concurrency limit, the memo and the persistent cache live in the
//! [`crate::Engine`], so every backend gets them. [`select`] picks the
//! backend a configuration asks for.

mod http;
pub(crate) mod opentip;
pub(crate) mod replay;
pub(crate) mod tip;

use std::sync::Arc;

use async_trait::async_trait;
use kl_model::{Answer, Body, Function, Indicator, LICENSE_SECTION, json_type};
use serde_json::Value;

use crate::config::{BackendKind, Config, ConfigError};
pub use crate::error::FailureKind;

pub use opentip::OpenTipBackend;
pub use replay::ReplayBackend;
pub use tip::TipBackend;

/// What one request brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub answer: Answer,
    /// The account's figures, when the answer carried `LicenseInfo`.
    pub license: Option<License>,
}

impl From<Answer> for Fetched {
    fn from(answer: Answer) -> Fetched {
        Fetched { answer, license: None }
    }
}

/// `LicenseInfo`: the account's access type, quota use and token expiry.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct License {
    pub access_type: Option<String>,
    pub day_requests: Option<u64>,
    pub day_quota: Option<u64>,
    /// `TokenExpirationDate` as the API gave it (`null` without a token).
    pub token_expiration: Option<String>,
}

impl License {
    fn from_value(v: &Value) -> Option<License> {
        let obj = v.as_object()?;
        let number = |v: Option<&Value>| {
            let v = v?;
            v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        Some(License {
            access_type: text(obj.get("AccessType")),
            day_requests: number(obj.get("DayRequests")),
            day_quota: number(obj.get("DayQuota")),
            token_expiration: text(obj.get("TokenExpirationDate")),
        })
    }

    /// `(used, quota)` when both are known.
    pub fn quota(&self) -> Option<(u64, u64)> {
        self.day_requests.zip(self.day_quota)
    }

    /// Whole days from `now` until the token expires (negative once it
    /// has), when the answer gave an expiry date.
    pub fn token_days_left(&self, now: std::time::SystemTime) -> Option<i64> {
        let expires = days_since_epoch(self.token_expiration.as_deref()?)?;
        let today = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() / 86_400;
        Some(expires - today as i64)
    }
}

/// Days since 1970-01-01 of a date written `YYYY-MM-DD…` (an ISO-8601 date
/// or timestamp; what follows the date is ignored).
fn days_since_epoch(text: &str) -> Option<i64> {
    let date = text.trim().get(..10)?;
    let mut parts = date.split('-');
    let (y, m, d): (i64, i64, i64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// What `check` and the start-up line say about a backend (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendInfo {
    /// `tip`, `replay`…
    pub name: &'static str,
    /// The base URL or folder.
    pub endpoint: String,
    /// How requests authenticate (`basic+certificate`, `token`, `none`).
    pub auth: &'static str,
}

/// A failed fetch. The engine decides from [`crate::Error::kind`] whether to
/// retry, give up on this lookup, or stop the run.
pub type LookupFailure = crate::Error;

/// A source of answers. One call is one request.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Asks about `indicator` for `function`.
    async fn fetch(&self, function: Function, indicator: &Indicator) -> Result<Fetched, LookupFailure>;

    /// What sets this backend's answers apart in a shared cache: its name,
    /// endpoint and request parameters. Two backends whose answers may
    /// differ never share a scope.
    fn cache_scope(&self) -> String;

    /// The backend's name, endpoint and authentication, for people.
    fn info(&self) -> BackendInfo;

    /// Whether the backend can answer `function` at all; the reason when not.
    fn supports(&self, _function: Function) -> Result<(), String> {
        Ok(())
    }

    /// The request `check` sends: the cheapest lookup there is (a report
    /// on `example.com` unless the backend knows a cheaper one).
    async fn probe(&self) -> Result<Fetched, LookupFailure> {
        let indicator = Indicator::parse(kl_model::ObjectKind::Domain, "example.com").map_err(crate::Error::from)?;
        self.fetch(Function::DomainReport, &indicator).await
    }
}

/// The backend a configuration asks for.
pub fn select(config: &Config) -> Result<Arc<dyn Backend>, ConfigError> {
    Ok(match config.backend {
        BackendKind::Tip => Arc::new(TipBackend::from_config(config)?),
        BackendKind::OpenTip => Arc::new(OpenTipBackend::from_config(config)?),
    })
}

/// Decodes a response body: a JSON object, whose `LicenseInfo` is read and
/// whose other sections (those in `keep`, when given) form the answer. An
/// error names where the body broke.
pub(crate) fn decode_body(body: &[u8], keep: Option<&[&str]>) -> Result<Fetched, crate::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: Value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| crate::Error::Decode { path: e.path().to_string(), message: e.inner().to_string() })?;
    de.end().map_err(|e| crate::Error::Decode { path: String::new(), message: e.to_string() })?;
    let Value::Object(sections) = value else {
        return Err(crate::Error::Decode {
            path: String::new(),
            message: format!("expected a JSON object, found {}", json_type(&value)),
        });
    };
    let license = sections.get(LICENSE_SECTION).and_then(License::from_value);
    Ok(Fetched { answer: Answer::Data(Body::from_sections(&sections, keep)), license })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_key() {
        let e = decode_body(br#"{"IpWhoIs":{"Net":{"Name":"X","#, None).unwrap_err().to_string();
        assert!(e.contains("IpWhoIs.Net"), "{e}");
        let e = decode_body(b"<html><body>maintenance</body></html>", None).unwrap_err().to_string();
        assert!(e.starts_with("invalid response"), "{e}");
        let e = decode_body(b"[1,2]", None).unwrap_err().to_string();
        assert!(e.contains("expected a JSON object"), "{e}");
        assert!(decode_body(br#"{"Zone":"Red"} trailing"#, None).is_err());
        assert!(decode_body(br#"{"Zone":"Red"}"#, None).is_ok());
    }

    #[test]
    fn token_expiry_in_days() {
        let day = |n: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(n * 86_400 + 3600);
        let license = |d: &str| License { token_expiration: Some(d.to_owned()), ..License::default() };
        assert_eq!(days_since_epoch("1970-01-01"), Some(0));
        assert_eq!(days_since_epoch("2000-03-01T00:00:00Z"), Some(11_017));
        assert_eq!(license("1970-01-11T12:00:00Z").token_days_left(day(1)), Some(9));
        assert_eq!(license("1970-01-01").token_days_left(day(3)), Some(-3));
        assert_eq!(license("soon").token_days_left(day(1)), None);
        assert_eq!(License::default().token_days_left(day(1)), None);
    }

    #[test]
    fn license_info_is_read_apart_from_the_answer() {
        let f = decode_body(
            br#"{"LicenseInfo":{"AccessType":"Commercial","DayRequests":"17","DayQuota":2000,"TokenExpirationDate":null},"Zone":"Red"}"#,
            None,
        )
        .unwrap();
        let license = f.license.unwrap();
        assert_eq!(license.quota(), Some((17, 2000)));
        assert_eq!(license.access_type.as_deref(), Some("Commercial"));
        assert_eq!(license.token_expiration, None);
        let Answer::Data(body) = f.answer else { panic!() };
        assert_eq!(body.text(), r#"{"Zone":"Red"}"#);
    }
}
