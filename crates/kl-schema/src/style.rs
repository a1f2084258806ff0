//! Output styles: how rendered fields are written onto an event.
//!
//! - [`Style::Kl`]: the flat `$KL…` fields, as DNIF has them.
//! - [`Style::Nested`]: the snake_case names under one target key
//!   (`kaspersky.zone`, `kaspersky.error`, `kaspersky.skipped`).
//! - [`Style::Ecs`]: an Elastic Common Schema `threat.enrichments[]` entry,
//!   with every other field nested under the target key.

use kl_model::{Function, HashKind, Indicator, ObjectKind};
use serde_json::{Map, Value};

use crate::flatten::Field;

/// How fields are written onto an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    Kl,
    #[default]
    Nested,
    Ecs,
}

impl std::str::FromStr for Style {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kl" => Ok(Style::Kl),
            "nested" => Ok(Style::Nested),
            "ecs" => Ok(Style::Ecs),
            other => Err(format!("unknown style {other:?}; expected kl, nested or ecs")),
        }
    }
}

/// What the ECS style needs to know about the match.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub function: Function,
    /// The indicator as it stands in the event.
    pub raw: &'a str,
    /// The event field it was taken from, if any (`source.ip`).
    pub field: Option<&'a str>,
}

/// The provider name ECS entries carry.
pub const ECS_PROVIDER: &str = "Kaspersky Threat Intelligence Portal";

/// Writes `fields` onto `event` in `style`; `target` is the nested key.
pub fn write(style: Style, event: &mut Map<String, Value>, fields: Vec<Field>, target: &str, m: Match<'_>) {
    match style {
        Style::Kl => {
            for f in fields {
                event.insert(f.name, f.value);
            }
        }
        Style::Nested => {
            event.insert(target.to_owned(), Value::Object(nested(fields)));
        }
        Style::Ecs => {
            let ours = nested(fields);
            let is_answer = !ours.contains_key("error") && !ours.contains_key("skipped");
            // An entry is added only where `threat` is absent or already an
            // object: an event's own values are never overwritten.
            if is_answer {
                let threat = event.entry("threat").or_insert_with(|| Value::Object(Map::new()));
                if let Some(threat) = threat.as_object_mut() {
                    let list = threat.entry("enrichments").or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(list) = list.as_array_mut() {
                        list.push(ecs_entry(&ours, m));
                    }
                }
            }
            event.insert(target.to_owned(), Value::Object(ours));
        }
    }
}

fn nested(fields: Vec<Field>) -> Map<String, Value> {
    fields.into_iter().map(|f| (f.snake, f.value)).collect()
}

fn first(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Array(a) => a.first().cloned(),
        other => Some(other.clone()),
    }
}

fn put(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = map;
    for p in parents {
        cur = cur.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new())).as_object_mut().expect("object");
    }
    cur.insert(last.to_string(), value);
}

fn ecs_entry(ours: &Map<String, Value>, m: Match<'_>) -> Value {
    let kind = m.function.object();
    let normalised = Indicator::parse(kind, m.raw).ok();
    let value = normalised.as_ref().map_or(m.raw.trim(), Indicator::as_str);
    let mut ind = Map::new();
    let (type_name, key): (&str, Vec<&str>) = match kind {
        ObjectKind::Ipv4 => ("ipv4-addr", vec!["ip"]),
        ObjectKind::Domain => ("domain-name", vec!["url", "domain"]),
        ObjectKind::Url => ("url", vec!["url", "full"]),
        ObjectKind::Hash => {
            let algo = match normalised.as_ref().and_then(Indicator::hash_kind) {
                Some(HashKind::Md5) => "md5",
                Some(HashKind::Sha1) => "sha1",
                _ => "sha256",
            };
            ("file", vec!["file", "hash", algo])
        }
    };
    put(&mut ind, &["type"], Value::from(type_name));
    put(&mut ind, &["provider"], Value::from(ECS_PROVIDER));
    let shown = if kind == ObjectKind::Hash { value.to_ascii_lowercase() } else { value.to_owned() };
    put(&mut ind, &key, Value::from(shown));
    for (ours_key, ecs_path) in [
        ("first_seen", &["first_seen"][..]),
        ("last_seen", &["last_seen"][..]),
        ("asn", &["as", "number"][..]),
        ("as_description", &["as", "organization", "name"][..]),
        ("country_code", &["geo", "country_iso_code"][..]),
    ] {
        if let Some(v) = first(ours.get(ours_key)) {
            put(&mut ind, ecs_path, v);
        }
    }
    if kind == ObjectKind::Hash {
        // The answer knows the file's other hashes; ECS keeps them lower-case.
        for algo in ["md5", "sha1", "sha256"] {
            if let Some(Value::String(h)) = ours.get(algo) {
                put(&mut ind, &["file", "hash", algo], Value::from(h.to_ascii_lowercase()));
            }
        }
        if let Some(size) = ours.get("size").filter(|v| v.is_number()) {
            put(&mut ind, &["file", "size"], size.clone());
        }
    }
    let mut matched = Map::new();
    matched.insert("atomic".into(), Value::from(m.raw.trim()));
    if let Some(field) = m.field {
        matched.insert("field".into(), Value::from(field));
    }
    matched.insert("type".into(), Value::from("indicator_match_rule"));
    let mut entry = Map::new();
    entry.insert("indicator".into(), Value::Object(ind));
    entry.insert("matched".into(), Value::Object(matched));
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str, snake: &str, v: Value) -> Field {
        Field { name: name.into(), snake: snake.into(), value: v }
    }

    #[test]
    fn ecs_entry_for_an_ip() {
        let mut event = Map::new();
        event.insert("threat".into(), json!({"enrichments": [{"existing": true}]}));
        let fields = vec![
            f("$KLZone", "zone", json!("Red")),
            f("$KLFirstSeen", "first_seen", json!("2023-06-11T04:12:00Z")),
            f("$KLCountryCode", "country_code", json!("CN")),
            f("$KLASN", "asn", json!([4837, 1])),
            f("$KLASDescription", "as_description", json!(["China Unicom"])),
        ];
        let m = Match { function: Function::IpReport, raw: " 39.90.148.83 ", field: Some("source.ip") };
        write(Style::Ecs, &mut event, fields, "kaspersky", m);
        assert_eq!(event["threat"]["enrichments"][0], json!({"existing": true}));
        assert_eq!(
            event["threat"]["enrichments"][1],
            json!({"indicator": {"type": "ipv4-addr", "provider": ECS_PROVIDER, "ip": "39.90.148.83",
                                  "first_seen": "2023-06-11T04:12:00Z", "geo": {"country_iso_code": "CN"},
                                  "as": {"number": 4837, "organization": {"name": "China Unicom"}}},
                   "matched": {"atomic": "39.90.148.83", "field": "source.ip", "type": "indicator_match_rule"}})
        );
        assert_eq!(event["kaspersky"]["zone"], "Red");
    }

    #[test]
    fn ecs_errors_add_no_enrichment() {
        let mut event = Map::new();
        let m = Match { function: Function::HashReport, raw: "nope", field: None };
        write(Style::Ecs, &mut event, vec![f("$KLError", "error", json!("invalid hash"))], "kl", m);
        assert_eq!(Value::Object(event), json!({"kl": {"error": "invalid hash"}}));
    }

    #[test]
    fn hash_algorithm_from_length() {
        let mut event = Map::new();
        let m = Match { function: Function::HashReport, raw: &"A".repeat(40), field: None };
        write(Style::Ecs, &mut event, vec![f("$KLZone", "zone", json!("Grey"))], "kaspersky", m);
        assert_eq!(event["threat"]["enrichments"][0]["indicator"]["file"]["hash"]["sha1"], "a".repeat(40));
    }
}
