//! Where the indicator sits in an event: a key, a dotted path or a JSON pointer.

use serde_json::{Map, Value};

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

    /// The value at the path, if the event has one.
    pub fn get<'a>(&self, event: &'a Map<String, Value>) -> Option<&'a Value> {
        match &self.segments {
            None => event.get(&self.text),
            Some(segments) => {
                if !self.text.starts_with('/') {
                    if let Some(v) = event.get(&self.text) {
                        return Some(v);
                    }
                }
                let (first, rest) = segments.split_first()?;
                rest.iter().try_fold(event.get(first)?, |v, seg| match v {
                    Value::Object(m) => m.get(seg),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(path: &str, event: Value) -> Option<Value> {
        FieldPath::parse(path).unwrap().get(event.as_object().unwrap()).cloned()
    }

    #[test]
    fn three_forms() {
        let e = json!({"ip": "1", "source": {"ip": "2", "a/b": {"c~d": "3"}}, "list": [{"x": "4"}], "dotted.key": "5"});
        assert_eq!(get("ip", e.clone()), Some(json!("1")));
        assert_eq!(get("source.ip", e.clone()), Some(json!("2")));
        assert_eq!(get("/source/ip", e.clone()), Some(json!("2")));
        assert_eq!(get("/source/a~1b/c~0d", e.clone()), Some(json!("3")));
        assert_eq!(get("list.0.x", e.clone()), Some(json!("4")));
        assert_eq!(get("dotted.key", e.clone()), Some(json!("5")));
        assert_eq!(get("source.port", e.clone()), None);
        assert_eq!(get("ip.deeper", e), None);
        assert!(FieldPath::parse("  ").is_err());
    }
}
