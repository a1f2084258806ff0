//! A string that must never be printed.

use std::fmt;

/// Holds a password or token. `Debug` and `Display` print `[redacted]`;
/// the value is reachable only through [`Secret::expose`], which the HTTP
/// client calls in exactly one place, to build the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_printed() {
        let s = super::Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {s:#?}"), "[redacted] [redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }
}
