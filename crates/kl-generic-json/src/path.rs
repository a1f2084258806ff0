//! Where the indicator sits in an event: a key, a dotted path or a JSON pointer.
//!
//! Paths are followed through the raw JSON text without building the whole
//! event as a tree: only the objects on the way are split into keys.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

/// An object key, borrowed from the line where it has no escapes.
#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
pub struct Key<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The top level of an event: its keys and their raw values.
pub type RawObject<'a> = HashMap<Key<'a>, &'a RawValue>;

/// Splits a JSON object into its keys; `None` when the text is not an object.
pub fn raw_object(text: &[u8]) -> Option<RawObject<'_>> {
    serde_json::from_slice(text).ok()
}

/// A field path as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    /// Path segments; `None` for a plain top-level key.
    segments: Option<Vec<String>>,
}

impl FieldPath {
    /// `/source/ip` is a JSON pointer (`~1` is `/`, `~0` is `~`); `source.ip`
    /// is a dotted path, unless the event has a top-level key spelt exactly
    /// so; anything else is a top-level key.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("--field is empty; name the key that holds the indicator".to_owned());
        }
        let segments = if let Some(pointer) = text.strip_prefix('/') {
            Some(pointer.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect())
        } else if text.contains('.') {
            Some(text.split('.').map(str::to_owned).collect())
        } else {
            None
        };
        Ok(FieldPath { text: text.to_owned(), segments })
    }

    /// The path as the user wrote it (for `matched.field`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The raw value at the path, if the event has one.
    pub fn get<'a>(&self, event: &RawObject<'a>) -> Option<&'a RawValue> {
        let top = |k: &str| event.get(&Key(Cow::Borrowed(k))).copied();
        match &self.segments {
            None => top(&self.text),
            Some(segments) => {
                if !self.text.starts_with('/') {
                    if let Some(v) = top(&self.text) {
                        return Some(v);
                    }
                }
                let (first, rest) = segments.split_first()?;
                rest.iter().try_fold(top(first)?, |v, seg| child(v, seg))
            }
        }
    }
}

/// The member `seg` of an object, or the element at index `seg` of an array.
fn child<'a>(v: &'a RawValue, seg: &str) -> Option<&'a RawValue> {
    let text = v.get().trim_start();
    if text.starts_with('{') {
        let obj: RawObject<'a> = serde_json::from_str(v.get()).ok()?;
        obj.get(&Key(Cow::Borrowed(seg))).copied()
    } else if text.starts_with('[') {
        let arr: Vec<&'a RawValue> = serde_json::from_str(v.get()).ok()?;
        seg.parse::<usize>().ok().and_then(|i| arr.get(i).copied())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, event: &str) -> Option<String> {
        let obj = raw_object(event.as_bytes()).unwrap();
        FieldPath::parse(path).unwrap().get(&obj).map(|v| v.get().to_owned())
    }

    #[test]
    fn three_forms() {
        let e =
            r#"{"ip":"1","source":{"ip":"2","a/b":{"c~d":"3"}},"list":[{"x":"4"}],"dotted.key":"5","esc\"aped":"6"}"#;
        assert_eq!(get("ip", e).as_deref(), Some(r#""1""#));
        assert_eq!(get("source.ip", e).as_deref(), Some(r#""2""#));
        assert_eq!(get("/source/ip", e).as_deref(), Some(r#""2""#));
        assert_eq!(get("/source/a~1b/c~0d", e).as_deref(), Some(r#""3""#));
        assert_eq!(get("list.0.x", e).as_deref(), Some(r#""4""#));
        assert_eq!(get("dotted.key", e).as_deref(), Some(r#""5""#));
        assert_eq!(get("esc\"aped", e).as_deref(), Some(r#""6""#));
        assert_eq!(get("source.port", e), None);
        assert_eq!(get("ip.deeper", e), None);
        assert!(FieldPath::parse("  ").is_err());
        assert!(raw_object(b"[1,2]").is_none());
        assert!(raw_object(b"{\"a\":").is_none());
    }
}
