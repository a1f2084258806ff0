//! What a backend answers, and what became of one lookup.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::indicator::{IndicatorError, ObjectKind};

/// An answer's sections as compact JSON text: the form in which the memo,
/// the persistent cache and every event share one answer.
///
/// Text, not a parsed tree: a parsed `serde_json::Value` of a typical
/// answer costs several times its text in memory, and a long-running
/// process keeps tens of thousands of answers. The text is held
/// LZ4-compressed against a dictionary and unpacked when read, which costs
/// about a microsecond a kilobyte. `LicenseInfo` (quota figures, not
/// intelligence) is never part of a body.
///
/// A body also carries one rendering of itself (see [`Body::render_into`]):
/// a stream that writes the same answer onto many events renders it once,
/// and the rendering lives and dies with the answer in the memo.
#[derive(Clone)]
pub struct Body(Arc<Inner>);

struct Inner {
    text: Packed,
    /// The length of the kept rendering, unpacked (0 before one is made):
    /// what a caller reserves room for.
    rendering_len: AtomicUsize,
    /// The bytes the kept rendering holds, packed.
    rendering_held: AtomicUsize,
    /// The last rendering asked for, packed, and the key of the settings it
    /// was made with. A std mutex: held to compare a key and unpack, and
    /// while a rendering is made (never across an await).
    rendering: Mutex<Option<(u64, Packed)>>,
}

/// Bytes, LZ4-compressed; against a dictionary of the process when `dict`.
///
/// Answers of one API share their keys and much of their layout, and so do
/// their renderings, so the first sizeable one a process sees makes a good
/// dictionary for the rest: with it a 1 to 2.5 KB answer packs to a
/// fraction of its size, where LZ4 alone saves about a third.
struct Packed {
    bytes: Box<[u8]>,
    len: usize,
    dict: bool,
}

/// A dictionary: the first bytes of at least [`DICT_MIN`] packed with it
/// in this process. Set once and never changed, so what was packed against
/// it can always be unpacked.
type Dict = OnceLock<Box<[u8]>>;

/// The dictionary of answer texts.
static TEXT_DICT: Dict = OnceLock::new();

/// The dictionary of renderings.
static RENDERING_DICT: Dict = OnceLock::new();

/// Shorter bytes are little use as a dictionary.
const DICT_MIN: usize = 128;

impl Packed {
    fn new(data: &[u8], dict: &'static Dict) -> Packed {
        let dict = match dict.get() {
            Some(d) => Some(d),
            None if data.len() >= DICT_MIN => Some(dict.get_or_init(|| data.into())),
            None => None,
        };
        let bytes = match dict {
            Some(d) => lz4_flex::block::compress_with_dict(data, d),
            None => lz4_flex::block::compress(data),
        };
        // Copied out rather than shrunk in place: the compressor's buffer is
        // sized for the worst case, and shrinking it would leave each long-
        // lived entry pinning a hole several times its size.
        Packed { bytes: Box::from(bytes.as_slice()), len: data.len(), dict: dict.is_some() }
    }

    /// Appends the unpacked bytes to `out`; nothing, if they do not unpack
    /// (packed forms read back from a cache are not trusted blindly).
    fn unpack_into(&self, dict: &'static Dict, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.len, 0);
        let written = match (self.dict, dict.get()) {
            (true, Some(d)) => lz4_flex::block::decompress_into_with_dict(&self.bytes, &mut out[start..], d),
            (false, _) => lz4_flex::block::decompress_into(&self.bytes, &mut out[start..]),
            (true, None) => Ok(0),
        };
        if written.ok() != Some(self.len) {
            out.truncate(start);
        }
    }
}

/// A body's text and one rendering, packed against the process's
/// [`Dictionaries`]: what a persistent cache keeps so that a later process
/// with the same dictionaries takes the answer up without decoding,
/// checking, packing or rendering it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBody {
    pub text: Vec<u8>,
    pub text_len: usize,
    pub rendering: Vec<u8>,
    pub rendering_len: usize,
}

/// The dictionaries bodies of this process are packed against, once both
/// are set.
#[derive(Debug, Clone, Copy)]
pub struct Dictionaries {
    text: &'static [u8],
    rendering: &'static [u8],
}

impl Dictionaries {
    /// This process's, once both are set.
    pub fn get() -> Option<Dictionaries> {
        Some(Dictionaries { text: TEXT_DICT.get()?, rendering: RENDERING_DICT.get()? })
    }

    /// Sets the dictionaries to those another process used (a persistent
    /// cache keeps them), for those not set yet; to be called before
    /// anything is packed. Returns this process's dictionaries after.
    pub fn adopt(text: &[u8], rendering: &[u8]) -> Option<Dictionaries> {
        if text.len() >= DICT_MIN {
            TEXT_DICT.get_or_init(|| text.into());
        }
        if rendering.len() >= DICT_MIN {
            RENDERING_DICT.get_or_init(|| rendering.into());
        }
        Dictionaries::get()
    }

    /// The dictionary of answer texts.
    pub fn text(&self) -> &'static [u8] {
        self.text
    }

    /// The dictionary of renderings.
    pub fn rendering(&self) -> &'static [u8] {
        self.rendering
    }

    /// Tells these dictionaries from others: packed forms are shared only
    /// between processes whose ids match.
    pub fn id(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // Hashed once: the dictionaries never change once set, and every
        // read of a packed form asks.
        static ID: OnceLock<u64> = OnceLock::new();
        *ID.get_or_init(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (self.text, self.rendering).hash(&mut h);
            // SQLite keeps signed 64-bit integers; the top bit is dropped so
            // an id reads back as it was written, whatever the column's type.
            h.finish() >> 1
        })
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.len() == other.len() && self.text() == other.text()
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
        Body::from_text(&text)
    }

    fn from_text(text: &str) -> Body {
        Body(Arc::new(Inner {
            text: Packed::new(text.as_bytes(), &TEXT_DICT),
            rendering_len: AtomicUsize::new(0),
            rendering_held: AtomicUsize::new(0),
            rendering: Mutex::new(None),
        }))
    }

    /// A body from text a body once gave (a cache entry); `None` unless it
    /// is a JSON object. The text is checked, not rebuilt.
    pub fn from_json(text: &str) -> Option<Body> {
        let _: serde::de::IgnoredAny = serde_json::from_str(text).ok()?;
        text.trim_start().starts_with('{').then(|| Body::from_text(text))
    }

    /// The sections, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The compact JSON text.
    pub fn text(&self) -> String {
        let mut bytes = Vec::new();
        self.0.text.unpack_into(&TEXT_DICT, &mut bytes);
        String::from_utf8(bytes).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Bytes of text (unpacked).
    pub fn len(&self) -> usize {
        self.0.text.len
    }

    /// Bytes held: the packed text and the rendering, if one is made.
    pub fn held(&self) -> usize {
        self.0.text.bytes.len() + self.0.rendering_held.load(Ordering::Relaxed)
    }

    /// Whether the answer holds no section at all (no data: Grey).
    pub fn is_empty(&self) -> bool {
        // `{}` is the only JSON object two bytes long.
        self.len() == 2
    }

    /// Appends this body's rendering for the settings `key` stands for to
    /// `out`: the one made last, when it was made for the same key, else
    /// `make`'s, which then replaces it. The rendering lives as long as the
    /// body. `true` when `make` was called (the body now holds more).
    ///
    /// A rendering is made under the body's lock: two threads that want it
    /// at once (a cache's thread preparing it, the stream needing it) make
    /// it once, the second waiting for the first.
    pub fn render_into(&self, key: u64, out: &mut Vec<u8>, make: impl FnOnce(&Body) -> Vec<u8>) -> bool {
        let mut kept = self.0.rendering.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, packed)) = &*kept {
            if *k == key {
                packed.unpack_into(&RENDERING_DICT, out);
                return false;
            }
        }
        let bytes = make(self);
        out.extend_from_slice(&bytes);
        let packed = Packed::new(&bytes, &RENDERING_DICT);
        self.0.rendering_len.store(bytes.len(), Ordering::Relaxed);
        self.0.rendering_held.store(packed.bytes.len(), Ordering::Relaxed);
        *kept = Some((key, packed));
        true
    }

    /// The body's text and its rendering for the settings `key` stands
    /// for, as held: packed against the process's [`Dictionaries`]. `None`
    /// unless a rendering for `key` is kept and both were packed against
    /// the dictionaries (an answer too short to be is not).
    pub fn packed(&self, key: u64) -> Option<PackedBody> {
        let kept = self.0.rendering.lock().unwrap_or_else(|p| p.into_inner());
        match kept.as_ref() {
            Some((k, rendering)) if *k == key && rendering.dict && self.0.text.dict => Some(PackedBody {
                text: self.0.text.bytes.to_vec(),
                text_len: self.0.text.len,
                rendering: rendering.bytes.to_vec(),
                rendering_len: rendering.len,
            }),
            _ => None,
        }
    }

    /// A body from what [`Body::packed`] gave, with its rendering kept for
    /// `key`. Only for packed forms made against the dictionaries this
    /// process has now (see [`Dictionaries::id`]); the text is not checked
    /// again. Bytes that do not unpack read as an empty answer.
    pub fn from_packed(key: u64, packed: PackedBody) -> Body {
        let text = Packed { bytes: packed.text.into_boxed_slice(), len: packed.text_len, dict: true };
        let rendering = Packed { bytes: packed.rendering.into_boxed_slice(), len: packed.rendering_len, dict: true };
        Body(Arc::new(Inner {
            text,
            rendering_len: AtomicUsize::new(rendering.len),
            rendering_held: AtomicUsize::new(rendering.bytes.len()),
            rendering: Mutex::new(Some((key, rendering))),
        }))
    }

    /// The length of the rendering last made (0 before one is): room to
    /// reserve before [`Body::render_into`].
    pub fn rendering_len(&self) -> usize {
        self.0.rendering_len.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({})", self.text())
    }
}

impl From<Value> for Body {
    fn from(v: Value) -> Body {
        match v {
            Value::Object(map) => Body::from_sections(&map, None),
            _ => Body::from_text("{}"),
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
        assert_eq!(b.text(), r#"{"Zone":"Red","IpGeneralInfo":{"Ip":"1.2.3.4","HitsCount":12345678901234567890123}}"#);
        assert_eq!(b.value()["IpGeneralInfo"]["HitsCount"].to_string(), "12345678901234567890123");
        assert!(Answer::Data(b).has_data());
        let only_license = Body::from(json!({"LicenseInfo": {}}));
        assert!(only_license.is_empty());
        assert!(!Answer::Data(only_license).has_data());
        assert!(!Answer::NotFound.has_data());
        let kept = Body::from_sections(json!({"Zone": "Red", "Other": 1}).as_object().unwrap(), Some(&["Zone"]));
        assert_eq!(kept.text(), r#"{"Zone":"Red"}"#);
        assert_eq!(Body::from_json("[1]"), None);
        assert_eq!(Body::from_json("{\"Zone\": "), None);
        assert_eq!(Body::from_json(r#"{"Zone":"Red"}"#).unwrap().text(), r#"{"Zone":"Red"}"#);
    }

    #[test]
    fn a_rendering_is_made_once_per_key() {
        let b = Body::from(json!({"Zone": "Red"}));
        let shared = b.clone();
        let mut made = 0;
        let mut render = |key: u64, text: &str| {
            let mut out = b"prefix ".to_vec();
            let new = b.render_into(key, &mut out, |_| {
                made += 1;
                text.as_bytes().to_vec()
            });
            (String::from_utf8(out).unwrap(), new)
        };
        assert_eq!(render(1, "one"), ("prefix one".to_owned(), true));
        assert_eq!(render(1, "ignored"), ("prefix one".to_owned(), false));
        let long = "a rendering long enough to be packed against the dictionary, ".repeat(4);
        assert_eq!(render(2, &long), (format!("prefix {long}"), true));
        assert_eq!(render(2, "ignored").0, format!("prefix {long}"));
        assert_eq!(made, 2);
        let mut out = Vec::new();
        assert!(!shared.render_into(2, &mut out, |_| b"x".to_vec()), "clones share the rendering");
        assert_eq!(out, long.as_bytes());
    }

    #[test]
    fn packed_text_reads_back_exactly() {
        let big = json!({"IpGeneralInfo": {"Ip": "1.2.3.4", "Note": "é ✓ \u{1F600}".repeat(50)}, "Zone": "Red"});
        for v in [big.clone(), json!({}), json!({"Zone": "Grey"}), big] {
            let b = Body::from(v.clone());
            assert_eq!(b.value(), v);
            assert_eq!(b.len(), b.text().len());
            assert!(b.held() < b.len().max(64), "{} bytes held for {} of text", b.held(), b.len());
        }
    }
}
