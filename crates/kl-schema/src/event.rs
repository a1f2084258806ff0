//! Events as raw JSON text.
//!
//! Adapters never rebuild an event from a parsed tree when they can avoid
//! it: an event is split into its top-level members with the values left as
//! raw text, the indicator is read from there, and the new fields are
//! spliced in before the closing brace. Every byte of the event, including
//! numbers no float can hold, stays as it came. (Parsing into
//! `serde_json::Value` would also choke on an event holding the key
//! `$serde_json::private::Number`, which our number-preserving JSON reserves;
//! fuzzing found that.)

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// An object key, borrowed from the text where it has no escapes.
#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON object as its members, in order, with the values as raw text.
#[derive(Debug)]
pub struct RawEvent<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k.0, v));
                }
                Ok(RawEvent { members })
            }
        }
        d.deserialize_map(Members)
    }
}

impl<'a> RawEvent<'a> {
    /// Splits a JSON object (surrounding whitespace allowed); `None` for
    /// anything else.
    pub fn parse(text: &'a [u8]) -> Option<RawEvent<'a>> {
        serde_json::from_slice(text).ok()
    }

    /// The raw value of a top-level key; the last one wins if it repeats.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_ref())
    }
}

/// The JSON type of a raw value, as messages name it.
pub fn raw_type(v: &RawValue) -> &'static str {
    match v.get().trim_start().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// The string a raw value holds, if it is a string.
pub fn raw_string(v: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(v.get()).ok()
}

/// `text` (a JSON object, possibly followed by whitespace and a newline)
/// with `members` (serialised `"key":value` pairs) added before its closing
/// brace. `None` when the text has no closing brace.
///
/// The caller makes sure the object does not already hold those keys.
pub fn splice(text: &[u8], members: &[u8]) -> Option<Vec<u8>> {
    let end = text.iter().rposition(|b| *b == b'}')?;
    let mut out = Vec::with_capacity(text.len() + members.len() + 2);
    out.extend_from_slice(&text[..end]);
    // `{}` takes no comma.
    if text[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        out.push(b',');
    }
    out.extend_from_slice(members);
    out.push(b'}');
    Some(out)
}

/// `additions` serialised as members (`"a":1,"b":2`), for [`splice`].
pub fn members(additions: &Map<String, Value>) -> Vec<u8> {
    let text = serde_json::to_vec(additions).unwrap_or_else(|_| b"{}".to_vec());
    text[1..text.len() - 1].to_vec()
}

/// The event with `additions` written onto it: spliced in when no key is
/// already there, else rebuilt member by member, an existing key keeping
/// its place with the new value. A `threat` object is extended rather than
/// replaced: our `threat.enrichments` entries are appended to the event's
/// own (ECS), and an event whose `threat` is not an object keeps it.
pub fn write(text: &[u8], event: &RawEvent<'_>, additions: &Map<String, Value>) -> Vec<u8> {
    if !additions.keys().any(|k| event.contains(k)) {
        if let Some(out) = splice(text, &members(additions)) {
            return out;
        }
    }
    let mut out = Vec::with_capacity(text.len() + 256);
    out.push(b'{');
    let mut written: Vec<&str> = Vec::new();
    let push = |out: &mut Vec<u8>, key: &str, raw: &[u8]| {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
        out.push(b':');
        out.extend_from_slice(raw);
    };
    for (key, raw) in &event.members {
        let key = key.as_ref();
        if written.contains(&key) && additions.contains_key(key) {
            continue; // a repeated key we replace: written once
        }
        match additions.get(key) {
            None => push(&mut out, key, raw.get().as_bytes()),
            Some(ours) if key == "threat" => push(&mut out, key, &merge_threat(raw, ours)),
            Some(ours) => push(&mut out, key, &serde_json::to_vec(ours).unwrap_or_default()),
        }
        written.push(key);
    }
    for (key, value) in additions {
        if !written.contains(&key.as_str()) {
            push(&mut out, key, &serde_json::to_vec(value).unwrap_or_default());
        }
    }
    out.push(b'}');
    out
}

/// The event's `threat` with our enrichment entries appended.
fn merge_threat(theirs: &RawValue, ours: &Value) -> Vec<u8> {
    let keep = theirs.get().as_bytes().to_vec();
    let Ok(Value::Object(mut threat)) = serde_json::from_str::<Value>(theirs.get()) else { return keep };
    let entries = ours.get("enrichments").and_then(Value::as_array).cloned().unwrap_or_default();
    match threat.entry("enrichments").or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(list) => list.extend(entries),
        _ => return keep,
    }
    serde_json::to_vec(&Value::Object(threat)).unwrap_or(keep)
}

/// Where the indicator sits in an event: a top-level key, a dotted path
/// (`source.ip`, array elements by index) or a JSON pointer (`/source/ip`).
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
            return Err("the field path is empty; name the key that holds the indicator".to_owned());
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

    /// The path as written (for `matched.field`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The raw value at the path, if the event has one.
    pub fn get<'a>(&self, event: &RawEvent<'a>) -> Option<&'a RawValue> {
        match &self.segments {
            None => event.get(&self.text),
            Some(segments) => {
                if !self.text.starts_with('/') {
                    if let Some(v) = event.get(&self.text) {
                        return Some(v);
                    }
                }
                let (first, rest) = segments.split_first()?;
                rest.iter().try_fold(event.get(first)?, |v, seg| child(v, seg))
            }
        }
    }
}

/// The member `seg` of an object, or the element at index `seg` of an array.
fn child<'a>(v: &'a RawValue, seg: &str) -> Option<&'a RawValue> {
    let text = v.get().trim_start();
    if text.starts_with('{') {
        RawEvent::parse(v.get().as_bytes())?.get(seg)
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
    use serde_json::json;

    fn get(path: &str, event: &str) -> Option<String> {
        let e = RawEvent::parse(event.as_bytes()).unwrap();
        FieldPath::parse(path).unwrap().get(&e).map(|v| v.get().to_owned())
    }

    #[test]
    fn three_forms_of_path() {
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
        assert!(RawEvent::parse(b"[1,2]").is_none());
        assert!(RawEvent::parse(b"{\"a\":").is_none());
    }

    #[test]
    fn the_reserved_number_key_is_just_a_key() {
        let text = br#"{"$serde_json::private::Number":10, "ip":"8.8.8.8"}"#;
        let e = RawEvent::parse(text).unwrap();
        assert_eq!(e.get("ip").map(RawValue::get), Some(r#""8.8.8.8""#));
        let mut add = Map::new();
        add.insert("$KLZone".into(), json!("Red"));
        let out = write(text, &e, &add);
        assert_eq!(out, br#"{"$serde_json::private::Number":10, "ip":"8.8.8.8","$KLZone":"Red"}"#);
    }

    #[test]
    fn existing_keys_keep_their_place_and_threat_is_extended() {
        let text = br#"{"a":1,"$KLZone":"old","threat":{"enrichments":[{"x":1}]},"n":123456789012345678901234567890}"#;
        let e = RawEvent::parse(text).unwrap();
        let mut add = Map::new();
        add.insert("$KLZone".into(), json!("Red"));
        add.insert("threat".into(), json!({"enrichments": [{"y": 2}]}));
        add.insert("new".into(), json!(true));
        let out = String::from_utf8(write(text, &e, &add)).unwrap();
        assert_eq!(
            out,
            r#"{"a":1,"$KLZone":"Red","threat":{"enrichments":[{"x":1},{"y":2}]},"n":123456789012345678901234567890,"new":true}"#
        );
        let text = br#"{"threat":"not an object"}"#;
        let e = RawEvent::parse(text).unwrap();
        let out = String::from_utf8(write(text, &e, &add)).unwrap();
        assert!(out.starts_with(r#"{"threat":"not an object","#), "{out}");
    }

    #[test]
    fn splice_into_empty_and_padded_objects() {
        assert_eq!(splice(b"{ }\n", b"\"a\":1").unwrap(), b"{ \"a\":1}");
        assert_eq!(splice(b"{\"b\":2}  \r\n", b"\"a\":1").unwrap(), b"{\"b\":2,\"a\":1}");
        assert_eq!(splice(b"nothing", b"\"a\":1"), None);
    }
}
