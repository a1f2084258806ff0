//! The properties the fuzz targets check, shared with the tests that replay
//! the fuzz corpora (`tests/corpus.rs`), so a corpus entry that once broke
//! something is checked on every `cargo test`.
//!
//! Each function panics when a property fails.

use kl_model::{Function, Indicator, ObjectKind, Outcome};
use kl_schema::Output;
use kl_schema::event::{self, FieldPath, RawEvent};
use serde_json::{Map, Value, json};

/// A response, any bytes: flattening never panics; fields are `$KL` names,
/// unique, never null, empty or an object; rendering data never errors,
/// and gives what flattening the parsed answer gives.
pub fn flatten(data: &[u8]) {
    let Ok(response) = serde_json::from_slice::<Value>(data) else { return };
    for function in Function::ALL {
        let fields = kl_schema::flatten(function, &response);
        let mut seen = std::collections::HashSet::new();
        for f in &fields {
            assert!(f.name.starts_with("$KL"), "{}", f.name);
            assert!(seen.insert(&f.name), "{} twice", f.name);
            assert!(!f.value.is_null() && !f.value.is_object() && f.value != "", "{}: {}", f.name, f.value);
        }
        let body = kl_model::Body::from(response.clone());
        let rendered = kl_schema::render(function, &Outcome::Data(body.clone()));
        assert!(!rendered.is_empty() && rendered.iter().all(|f| f.name != "$KLError"));
        // The borrowed tree answers are mapped through agrees with serde_json.
        let by_value = kl_schema::flatten(function, &body.value());
        assert!(by_value.is_empty() || rendered == by_value, "{rendered:?} != {by_value:?}");
    }
}

/// A raw indicator, any bytes: parsing never panics; normalising is
/// idempotent; the encoded form is exactly one path segment that decodes
/// back to the indicator.
pub fn indicators(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    for kind in [ObjectKind::Ipv4, ObjectKind::Domain, ObjectKind::Url, ObjectKind::Hash] {
        let Ok(ind) = Indicator::parse(kind, &raw) else { continue };
        let again = Indicator::parse(kind, ind.as_str()).expect("a normalised indicator parses again");
        assert_eq!(again.as_str(), ind.as_str());
        let seg = ind.path_segment();
        assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{seg}");
        let decoded = percent_encoding::percent_decode_str(&seg).collect::<Vec<u8>>();
        assert_eq!(decoded, ind.as_str().as_bytes());
        let url = url::Url::parse(&format!("https://tip.example/api/{}/{seg}?sections=Zone", kind.api_type()))
            .expect("a URL");
        let segments: Vec<&str> = url.path_segments().expect("segments").collect();
        assert_eq!(segments, ["api", kind.api_type(), seg.as_str()], "the indicator must stay one path segment");
    }
    let _ = Indicator::detect(&raw);
}

/// An NDJSON line, any bytes: reading a field never panics, and writing
/// fields onto an object (read leniently) gives an object holding the new
/// members, every other member's raw text unchanged, and no old `$KL`
/// member when those are cleared.
pub fn ndjson_line(data: &[u8]) {
    let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let readable = event::lenient(line);
    let Some(event) = RawEvent::parse(&readable) else { return };
    for path in ["indicator", "source.ip", "/source/ip", "a.0.b"] {
        let _ = FieldPath::parse(path).expect("valid path").get(&event);
    }
    let first = event.keys().next().map(str::to_owned);
    let mut cases =
        vec![Output { members: Map::from_iter([("kl_fuzz".to_owned(), json!({"zone": "Red"}))]), clear_kl: false }];
    if let Some(k) = &first {
        cases.push(Output {
            members: Map::from_iter([(k.clone(), json!("replaced")), ("kl_fuzz".to_owned(), json!(1))]),
            clear_kl: false,
        });
    }
    cases.push(Output { members: Map::from_iter([("$KLZone".to_owned(), json!("Grey"))]), clear_kl: true });
    for output in cases {
        let out = event::apply(line, &event, &output);
        let out_readable = event::lenient(&out);
        let after = RawEvent::parse(&out_readable)
            .unwrap_or_else(|| panic!("not an object: {}", String::from_utf8_lossy(&out)));
        for (k, v) in &output.members {
            if k == "threat" {
                continue;
            }
            let written = after.get(k).expect("an added key is there");
            assert_eq!(serde_json::from_str::<Value>(written.get()).ok().as_ref(), Some(v), "{k}");
        }
        for k in event.keys() {
            let cleared = output.clear_kl && k.starts_with("$KL");
            if cleared && !output.members.contains_key(k) {
                assert!(after.get(k).is_none(), "{k} was not cleared");
            } else if !output.members.contains_key(k) {
                assert_eq!(after.get(k).map(|v| v.get()), event.get(k).map(|v| v.get()), "{k} changed");
            }
        }
    }
}
