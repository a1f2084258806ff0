//! What a backend answers, and what became of one lookup.

use std::sync::Arc;

use crate::indicator::{IndicatorError, ObjectKind};

/// What a backend says about one indicator.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The response body: a JSON object of sections.
    Data(serde_json::Value),
    /// Nothing is known about the object (HTTP 404).
    NotFound,
}

/// What became of one lookup. Cheap to clone: the data is shared.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The API's answer (a JSON object of sections).
    Data(Arc<serde_json::Value>),
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
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Outcome {
        match answer {
            Answer::Data(v) => Outcome::Data(Arc::new(v)),
            Answer::NotFound => Outcome::NotFound,
        }
    }
}

/// A JSON value's type, as messages name it.
pub fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
