//! What a backend answers, and what became of one lookup.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::indicator::{IndicatorError, ObjectKind};

/// An answer's sections as compact JSON text: the form in which the memo,
/// the persistent cache and every event share one answer.
///
/// Text, not a parsed tree: a parsed `serde_json::Value` of a typical
/// answer costs several times its text in memory, and a long-running
/// process keeps tens of thousands of answers. `LicenseInfo` (quota
/// figures, not intelligence) is never part of a body.
///
/// A body also carries one rendering of itself (see [`Body::rendering`]):
/// a stream that writes the same answer onto many events renders it once,
/// and the rendering lives and dies with the answer in the memo.
#[derive(Clone)]
pub struct Body(Arc<Inner>);

struct Inner {
    text: Box<str>,
    /// The last rendering asked for, and the key of the settings it was
    /// made with. A std mutex: held to compare a key and clone an `Arc`.
    rendering: Mutex<Option<(u64, Arc<[u8]>)>>,
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Body {}

/// The section that carries quota figures, not intelligence.
pub const LICENSE_SECTION: &str = "LicenseInfo";

impl Body {
    /// The sections of a decoded answer, less `LicenseInfo`, and only those
    /// in `keep` when it is given.
    pub fn from_sections(sections: &Map<String, Value>, keep: Option<&[&str]>) -> Body {
        let kept: Map<String, Value> = sections
            .iter()
            .filter(|(k, _)| k.as_str() != LICENSE_SECTION && keep.is_none_or(|keep| keep.contains(&k.as_str())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let text = serde_json::to_string(&kept).unwrap_or_else(|_| "{}".to_owned());
        Body::from_text(text)
    }

    fn from_text(text: String) -> Body {
        Body(Arc::new(Inner { text: text.into_boxed_str(), rendering: Mutex::new(None) }))
    }

    /// A body from text a body once gave (a cache entry); `None` unless it
    /// is a JSON object. The text is checked, not rebuilt.
    pub fn from_json(text: &str) -> Option<Body> {
        let _: serde::de::IgnoredAny = serde_json::from_str(text).ok()?;
        text.trim_start().starts_with('{').then(|| Body::from_text(text.to_owned()))
    }

    /// The sections, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// Bytes of text held.
    pub fn len(&self) -> usize {
        self.0.text.len()
    }

    /// Whether the answer holds no section at all (no data: Grey).
    pub fn is_empty(&self) -> bool {
        self.as_str() == "{}"
    }

    /// A rendering of this body for the settings `key` stands for: the one
    /// made last, when it was made for the same key, else `make`'s (which
    /// then replaces it). The rendering lives as long as the body.
    pub fn rendering(&self, key: u64, make: impl FnOnce(&Body) -> Arc<[u8]>) -> Arc<[u8]> {
        if let Some((k, bytes)) = &*self.0.rendering.lock().unwrap_or_else(|p| p.into_inner()) {
            if *k == key {
                return bytes.clone();
            }
        }
        let bytes = make(self);
        *self.0.rendering.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, bytes.clone()));
        bytes
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({})", self.as_str())
    }
}

impl From<Value> for Body {
    fn from(v: Value) -> Body {
        match v {
            Value::Object(map) => Body::from_sections(&map, None),
            _ => Body::from_text("{}".to_owned()),
        }
    }
}

/// What a backend says about one indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The answer's sections.
    Data(Body),
    /// Nothing is known about the object (HTTP 404).
    NotFound,
}

impl Answer {
    /// Whether the answer carries intelligence (some section), as opposed
    /// to "no data", which is kept for the shorter Grey lifetime.
    pub fn has_data(&self) -> bool {
        matches!(self, Answer::Data(b) if !b.is_empty())
    }

    /// Bytes the answer holds.
    pub fn len(&self) -> usize {
        match self {
            Answer::Data(b) => b.len(),
            Answer::NotFound => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of one lookup. Cheap to clone: the data is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The API's answer.
    Data(Body),
    /// Nothing is known about the object: Grey.
    NotFound,
    /// Deliberately not looked up (a private address, say); the reason.
    Skipped(String),
    /// The lookup failed or the indicator is invalid; a short reason.
    Failed(String),
}

impl Outcome {
    /// The outcome for an indicator field holding something other than a
    /// string (`found`: "a number", "an object"…); `kind` is `None` when the
    /// indicator's type was to be detected.
    pub fn not_a_string(kind: Option<ObjectKind>, found: &str) -> Outcome {
        Outcome::Failed(IndicatorError::not_a_string(kind, found).to_string())
    }

    /// Whether this is an answer (data or Grey), as opposed to a skip or a failure.
    pub fn is_answer(&self) -> bool {
        matches!(self, Outcome::Data(_) | Outcome::NotFound)
    }
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Outcome {
        match answer {
            Answer::Data(b) => Outcome::Data(b),
            Answer::NotFound => Outcome::NotFound,
        }
    }
}

/// A JSON value's type, as messages name it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_is_compact_text_without_license_info() {
        let v = json!({"LicenseInfo": {"DayRequests": 1}, "Zone": "Red", "IpGeneralInfo": {"Ip": "1.2.3.4", "HitsCount": 12345678901234567890123u128}});
        let b = Body::from(v);
        assert_eq!(
            b.as_str(),
            r#"{"Zone":"Red","IpGeneralInfo":{"Ip":"1.2.3.4","HitsCount":12345678901234567890123}}"#
        );
        assert_eq!(b.value()["IpGeneralInfo"]["HitsCount"].to_string(), "12345678901234567890123");
        assert!(Answer::Data(b).has_data());
        let only_license = Body::from(json!({"LicenseInfo": {}}));
        assert!(only_license.is_empty());
        assert!(!Answer::Data(only_license).has_data());
        assert!(!Answer::NotFound.has_data());
        let kept = Body::from_sections(json!({"Zone": "Red", "Other": 1}).as_object().unwrap(), Some(&["Zone"]));
        assert_eq!(kept.as_str(), r#"{"Zone":"Red"}"#);
        assert_eq!(Body::from_json("[1]"), None);
        assert_eq!(Body::from_json("{\"Zone\": "), None);
        assert_eq!(Body::from_json(r#"{"Zone":"Red"}"#).unwrap().as_str(), r#"{"Zone":"Red"}"#);
    }

    #[test]
    fn a_rendering_is_made_once_per_key() {
        let b = Body::from(json!({"Zone": "Red"}));
        let shared = b.clone();
        let mut made = 0;
        let mut render = |key: u64, text: &str| {
            b.rendering(key, |_| {
                made += 1;
                Arc::from(text.as_bytes())
            })
        };
        assert_eq!(&*render(1, "one"), b"one");
        assert_eq!(&*render(1, "ignored"), b"one");
        assert_eq!(&*render(2, "two"), b"two");
        assert_eq!(made, 2);
        assert_eq!(&*shared.rendering(2, |_| Arc::from(&b"x"[..])), b"two", "clones share the rendering");
    }
}
