//! Where answers come from: the TIP API, or recorded responses.

use async_trait::async_trait;

pub use crate::error::FailureKind;
use kl_model::{Answer, Function, Indicator, json_type};

/// A failed fetch. The engine decides from [`crate::Error::kind`] whether to
/// retry, give up on this lookup, or stop the run.
pub type LookupFailure = crate::Error;

/// A source of TIP answers. One call is one request: retries, deduplication,
/// concurrency limits and caching live in the [`crate::Engine`], so every
/// backend gets them.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Asks for the sections of `function` about `indicator`.
    async fn fetch(&self, function: Function, indicator: &Indicator) -> Result<Answer, LookupFailure>;
}

/// Decodes a response body into a JSON object; an error names where it broke.
pub(crate) fn decode_body(body: &[u8]) -> Result<serde_json::Value, crate::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: serde_json::Value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| crate::Error::Decode { path: e.path().to_string(), message: e.inner().to_string() })?;
    de.end().map_err(|e| crate::Error::Decode { path: String::new(), message: e.to_string() })?;
    if !value.is_object() {
        return Err(crate::Error::Decode {
            path: String::new(),
            message: format!("expected a JSON object, found {}", json_type(&value)),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_key() {
        let e = decode_body(br#"{"IpWhoIs":{"Net":{"Name":"X","#).unwrap_err().to_string();
        assert!(e.contains("IpWhoIs.Net"), "{e}");
        let e = decode_body(b"<html><body>maintenance</body></html>").unwrap_err().to_string();
        assert!(e.starts_with("invalid response"), "{e}");
        let e = decode_body(b"[1,2]").unwrap_err().to_string();
        assert!(e.contains("expected a JSON object"), "{e}");
        assert!(decode_body(br#"{"Zone":"Red"} trailing"#).is_err());
        assert!(decode_body(br#"{"Zone":"Red"}"#).is_ok());
    }
}
