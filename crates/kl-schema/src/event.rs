//! Events as raw JSON text.
//!
//! An event is never rebuilt from a parsed tree: it is split into its
//! top-level members, each with its byte span, the indicator is read from
//! there, and the result is written by editing spans: members replaced or
//! removed, new ones added before the closing brace. Every other byte of the
//! event, numbers no float can hold and the spacing included, stays as it
//! came. (Parsing into `serde_json::Value` would also choke on an event
//! holding the key `$serde_json::private::Number`, which our
//! number-preserving JSON reserves; fuzzing found that.)
//!
//! Bytes that are not UTF-8 are read leniently: [`lenient`] gives a copy of
//! the same length with each invalid byte replaced, which parses; the spans
//! found in the copy are then applied to the original bytes, so those bytes
//! pass through unchanged too.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::style::Output;

/// An object key, borrowed from the text where it has no escapes.
#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON object as its members, in order, with the values as raw text.
#[derive(Debug)]
pub struct RawEvent<'a> {
    text: &'a [u8],
    members: Vec<Member<'a>>,
    /// Where the closing brace is.
    close: usize,
}

#[derive(Debug)]
struct Member<'a> {
    key: Cow<'a, str>,
    value: &'a RawValue,
    /// From the key's opening quote to the end of the value.
    span: Range<usize>,
    /// The value's own span.
    value_span: Range<usize>,
}

struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k.0, v));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The offset of `inner` (a slice of `outer`) within `outer`.
fn offset_in(outer: &[u8], inner: &str) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

fn skip_space(text: &[u8], mut at: usize) -> usize {
    while text.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

impl<'a> RawEvent<'a> {
    /// Splits a JSON object (surrounding whitespace allowed); `None` for
    /// anything else.
    pub fn parse(text: &'a [u8]) -> Option<RawEvent<'a>> {
        let Members(raw) = serde_json::from_slice(text).ok()?;
        let open = skip_space(text, 0);
        let mut members = Vec::with_capacity(raw.len());
        let mut cursor = open + 1;
        for (key, value) in raw {
            let start = offset_in(text, value.get());
            let value_span = start..start + value.get().len();
            // The key's opening quote is the first one after the previous
            // member (only whitespace and a comma lie between).
            let key_start = cursor + text[cursor..].iter().position(|b| *b == b'"')?;
            members.push(Member { key, value, span: key_start..value_span.end, value_span: value_span.clone() });
            cursor = value_span.end;
        }
        let close = skip_space(text, cursor);
        (text.get(close) == Some(&b'}')).then_some(RawEvent { text, members, close })
    }

    /// The raw value of a top-level key; the last one wins if it repeats.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|m| m.key == key).map(|m| m.value)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.members.iter().any(|m| m.key == key)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.key.as_ref())
    }

    /// Whether a top-level key starts with `prefix`.
    pub fn has_key_starting_with(&self, prefix: &str) -> bool {
        self.members.iter().any(|m| m.key.starts_with(prefix))
    }

    /// Where `value` (a value of this event, at any depth) sits in the text.
    pub fn span_of(&self, value: &RawValue) -> Range<usize> {
        let start = offset_in(self.text, value.get());
        start..start + value.get().len()
    }
}

/// `bytes` made readable as UTF-8: borrowed when they already are, else a
/// copy of the same length with each invalid byte replaced by `?`.
pub fn lenient(bytes: &[u8]) -> Cow<'_, [u8]> {
    if std::str::from_utf8(bytes).is_ok() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.extend_from_slice(s.as_bytes());
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.extend_from_slice(&rest[..valid]);
                let bad = e.error_len().unwrap_or(rest.len() - valid);
                out.extend(std::iter::repeat_n(b'?', bad));
                rest = &rest[valid + bad..];
            }
        }
    }
    Cow::Owned(out)
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
    let text = v.get();
    // A string without escapes (and so without control characters, which
    // a parsed event cannot hold unescaped) is its text between the quotes.
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains(['\\', '"']) => Some(inner.to_owned()),
        _ => serde_json::from_str::<String>(text).ok(),
    }
}

/// `additions` serialised as members (`"a":1,"b":2`).
pub fn members(additions: &Map<String, Value>) -> Vec<u8> {
    let text = serde_json::to_vec(additions).unwrap_or_else(|_| b"{}".to_vec());
    text[1..text.len() - 1].to_vec()
}

/// Where members (serialised `"key":value` pairs, see [`members`]) are
/// added to an event: before its closing brace, after a comma when it has
/// members already. Only offsets, so the line can travel without the
/// event that borrows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    at: usize,
    comma: bool,
}

impl RawEvent<'_> {
    /// Where members are added to this event.
    pub fn splice(&self) -> Splice {
        Splice { at: self.members.last().map_or(self.close, |m| m.span.end), comma: !self.members.is_empty() }
    }
}

impl Splice {
    /// Appends `original` (the bytes the event was parsed from, and any
    /// bytes after them, such as a line ending) to `out`, with the members
    /// `write` appends added here, every other byte unchanged. The caller
    /// makes sure the event holds none of those keys.
    pub fn write_into(self, out: &mut Vec<u8>, original: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(&original[..self.at]);
        if self.comma {
            out.push(b',');
        }
        let before = out.len();
        write(out);
        if self.comma && out.len() == before {
            out.pop();
        }
        out.extend_from_slice(&original[self.at..]);
    }
}

/// `original` (the bytes `event` was parsed from, or bytes of the same
/// length of which they are a [`lenient`] copy) with `output` written on:
///
/// - with `clear_kl`, every top-level `$KL…` member is removed first;
/// - a member `output` sets that the event has is replaced in place (the
///   last one, if the key repeats; earlier ones are removed), except
///   `threat`, whose `enrichments` list is extended when it is an object
///   with a list there, and left alone otherwise;
/// - the other members of `output` are added before the closing brace.
///
/// Every other byte passes unchanged, including what follows the closing
/// brace (a line ending).
pub fn apply(original: &[u8], event: &RawEvent<'_>, output: &Output) -> Vec<u8> {
    debug_assert_eq!(original.len(), event.text.len());
    let ms = &event.members;
    let last_of = |key: &str| ms.iter().rposition(|m| m.key == key);
    let mut replaced = vec![None::<Vec<u8>>; ms.len()];
    let mut removed = vec![false; ms.len()];
    let mut added = Map::new();
    for (i, m) in ms.iter().enumerate() {
        let key = m.key.as_ref();
        if (output.clear_kl && key.starts_with("$KL") && !output.members.contains_key(key))
            || (output.members.contains_key(key) && last_of(key) != Some(i))
        {
            removed[i] = true;
        }
    }
    for (key, value) in &output.members {
        match last_of(key) {
            Some(i) if key == "threat" => {
                let theirs = &original[ms[i].value_span.clone()];
                replaced[i] = merge_threat(theirs, value);
            }
            Some(i) => replaced[i] = Some(serde_json::to_vec(value).unwrap_or_default()),
            None => {
                added.insert(key.clone(), value.clone());
            }
        }
    }
    let mut out = Vec::with_capacity(original.len() + 256);
    let first = ms.first().map_or(event.close, |m| m.span.start);
    out.extend_from_slice(&original[..first]);
    let mut prev: Option<usize> = None;
    for (i, m) in ms.iter().enumerate() {
        if removed[i] {
            continue;
        }
        match prev {
            Some(p) if p + 1 == i => out.extend_from_slice(&original[ms[p].span.end..m.span.start]),
            Some(_) => out.push(b','),
            None => {}
        }
        match &replaced[i] {
            Some(value) => {
                out.extend_from_slice(&original[m.span.start..m.value_span.start]);
                out.extend_from_slice(value);
            }
            None => out.extend_from_slice(&original[m.span.clone()]),
        }
        prev = Some(i);
    }
    if !added.is_empty() {
        if prev.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(&members(&added));
    }
    let tail = ms.last().map_or(event.close, |m| m.span.end);
    // Space before the closing brace stays where it was: after a kept last
    // member, or (when it was removed) wherever the brace now follows.
    out.extend_from_slice(&original[tail..]);
    out
}

/// The event's `threat` with our enrichment entries appended; `None` (keep
/// theirs as it is) when it is not an object whose `enrichments`, if any,
/// is a list.
fn merge_threat(theirs: &[u8], ours: &Value) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut threat)) = serde_json::from_slice::<Value>(theirs) else { return None };
    let entries = ours.get("enrichments").and_then(Value::as_array).cloned().unwrap_or_default();
    match threat.entry("enrichments").or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(list) => list.extend(entries),
        _ => return None,
    }
    serde_json::to_vec(&Value::Object(threat)).ok()
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

    /// The top-level key the path starts at (`source` of `source.ip`).
    pub fn top(&self) -> &str {
        match &self.segments {
            Some(s) if !self.text.starts_with('/') || !s.is_empty() => s.first().map_or(&self.text, String::as_str),
            _ => &self.text,
        }
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

    fn set(pairs: &[(&str, Value)], clear_kl: bool) -> Output {
        Output { members: pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), clear_kl }
    }

    fn write(text: &str, output: &Output) -> String {
        let e = RawEvent::parse(text.as_bytes()).unwrap();
        String::from_utf8(apply(text.as_bytes(), &e, output)).unwrap()
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
        assert_eq!(FieldPath::parse("source.ip").unwrap().top(), "source");
        assert_eq!(FieldPath::parse("/source/ip").unwrap().top(), "source");
        assert_eq!(FieldPath::parse("ip").unwrap().top(), "ip");
    }

    #[test]
    fn the_reserved_number_key_is_just_a_key() {
        let text = r#"{"$serde_json::private::Number":10, "ip":"8.8.8.8"}"#;
        let e = RawEvent::parse(text.as_bytes()).unwrap();
        assert_eq!(e.get("ip").map(RawValue::get), Some(r#""8.8.8.8""#));
        assert_eq!(
            write(text, &set(&[("$KLZone", json!("Red"))], true)),
            r#"{"$serde_json::private::Number":10, "ip":"8.8.8.8","$KLZone":"Red"}"#
        );
    }

    #[test]
    fn existing_keys_are_replaced_in_place_and_threat_is_extended() {
        let text =
            r#"{"a":1, "kaspersky":"old", "threat":{"enrichments":[{"x":1}]},"n":123456789012345678901234567890}"#;
        let out = set(
            &[
                ("kaspersky", json!({"zone": "Red"})),
                ("threat", json!({"enrichments": [{"y": 2}]})),
                ("new", json!(true)),
            ],
            false,
        );
        assert_eq!(
            write(text, &out),
            r#"{"a":1, "kaspersky":{"zone":"Red"}, "threat":{"enrichments":[{"x":1},{"y":2}]},"n":123456789012345678901234567890,"new":true}"#
        );
        let text = r#"{"threat":"not an object"}"#;
        assert_eq!(write(text, &out), r#"{"threat":"not an object","kaspersky":{"zone":"Red"},"new":true}"#);
    }

    #[test]
    fn clearing_removes_every_old_kl_member_wherever_it_stands() {
        let text = "{\"$KLZone\":\"Green\", \"a\":1,\t\"$KLRedMd5\":[\"X\"],\"b\":{\"$KLZone\":\"kept: not top-level\"} , \"$KLError\":\"old\" }\r\n";
        let out = set(&[("$KLError", json!("timeout after 30s"))], true);
        assert_eq!(
            write(text, &out),
            "{\"a\":1,\"b\":{\"$KLZone\":\"kept: not top-level\"} , \"$KLError\":\"timeout after 30s\" }\r\n"
        );
        let only_kl = "{ \"$KLZone\": \"Red\" }\n";
        assert_eq!(write(only_kl, &set(&[("$KLZone", json!("Grey"))], true)), "{ \"$KLZone\": \"Grey\" }\n");
        assert_eq!(write(only_kl, &set(&[("$KLSkipped", json!("why"))], true)), "{ \"$KLSkipped\":\"why\" }\n");
        assert_eq!(write("{\"$KLA\":1,\"$KLB\":2}", &set(&[], true)), "{}");
    }

    #[test]
    fn repeated_keys_are_written_once() {
        let text = r#"{"k":1,"a":2,"k":3}"#;
        assert_eq!(write(text, &set(&[("k", json!("new"))], false)), r#"{"a":2,"k":"new"}"#);
    }

    #[test]
    fn adding_to_empty_and_padded_objects() {
        assert_eq!(write("{ }\n", &set(&[("a", json!(1))], false)), "{ \"a\":1}\n");
        assert_eq!(write("  {\"b\":2}  \r\n", &set(&[("a", json!(1))], false)), "  {\"b\":2,\"a\":1}  \r\n");
    }

    #[test]
    fn splicing_adds_members_before_the_brace() {
        for (text, expected) in
            [("{\"a\":1 }\r\n", "{\"a\":1,\"k\":2 }\r\n"), ("{ }", "{ \"k\":2}"), ("{}", "{\"k\":2}")]
        {
            let e = RawEvent::parse(text.as_bytes()).unwrap();
            let mut out = b"before ".to_vec();
            e.splice().write_into(&mut out, text.as_bytes(), |out| out.extend_from_slice(b"\"k\":2"));
            let spliced = String::from_utf8(out).unwrap();
            assert_eq!(spliced, format!("before {expected}"));
            assert_eq!(
                spliced["before ".len()..],
                write(text, &set(&[("k", json!(2))], false)),
                "splice and apply agree"
            );
            let mut nothing = Vec::new();
            e.splice().write_into(&mut nothing, text.as_bytes(), |_| {});
            assert_eq!(nothing, text.as_bytes(), "no members, no comma");
        }
    }

    #[test]
    fn invalid_utf8_is_read_leniently_and_kept() {
        let original = b"{\"note\":\"caf\xe9\",\"ip\":\"8.8.8.8\"}";
        let copy = lenient(original);
        assert!(matches!(copy, Cow::Owned(_)));
        assert_eq!(copy.len(), original.len());
        let e = RawEvent::parse(&copy).unwrap();
        assert_eq!(raw_string(e.get("ip").unwrap()).as_deref(), Some("8.8.8.8"));
        let out = apply(original, &e, &set(&[("$KLZone", json!("Red"))], true));
        assert_eq!(out, b"{\"note\":\"caf\xe9\",\"ip\":\"8.8.8.8\",\"$KLZone\":\"Red\"}");
        assert!(matches!(lenient(b"fine"), Cow::Borrowed(_)));
    }
}
