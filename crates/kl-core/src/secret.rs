//! A string that must never be printed.

use std::fmt;

/// Holds a password, token or key. `Debug` and `Display` print
/// `[redacted]`; the value is reachable only inside this crate, through
/// `expose`, which each backend calls in exactly one place, to build the
/// header it sends. Other crates can compare a secret, in constant time,
/// but never read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Callers must not log or format it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, compared in constant time (for
    /// the length of the secret), so timing does not tell how much of a
    /// guess was right.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        let mut diff = secret.len() ^ candidate.len();
        for (i, b) in secret.iter().enumerate() {
            diff |= usize::from(b ^ candidate.get(i).copied().unwrap_or(!b));
        }
        diff == 0
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
        assert!(s.matches(b"hunter2"));
        for wrong in [&b"hunter"[..], b"hunter22", b"", b"Hunter2"] {
            assert!(!s.matches(wrong));
        }
    }
}
