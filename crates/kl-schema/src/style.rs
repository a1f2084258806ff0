//! Output styles: how rendered fields are written onto an event.
//!
//! - [`Style::Kl`]: the flat `$KL…` fields, as DNIF has them.
//! - [`Style::Nested`]: the snake_case names under one target key
//!   (`kaspersky.zone`, `kaspersky.error`, `kaspersky.skipped`).
//! - [`Style::Ecs`]: an Elastic Common Schema `threat.enrichments[]` entry,
//!   with every other field nested under the target key.

use kl_model::{Function, HashKind, Indicator, ObjectKind, Outcome, Portal, Zone};
use serde_json::{Map, Value, json};

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

/// One lookup's result, to be written onto an event.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub function: Function,
    /// The indicator as it stands in the event.
    pub raw: &'a str,
    /// The event field it was taken from, if any (`source.ip`).
    pub field: Option<&'a str>,
    /// The key this item's fields go under, when one was given for it.
    pub target: Option<&'a str>,
    pub outcome: &'a Outcome,
}

/// What an event gets: top-level members to set, and whether the event's
/// own `$KL…` members go first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Members to set. One the event already has is replaced, except
    /// `threat`, whose `enrichments` list is extended (ECS).
    pub members: Map<String, Value>,
    /// Remove every top-level `$KL…` member of the event before writing, so
    /// that its `$KL` fields are exactly its own lookup's.
    pub clear_kl: bool,
}

/// What the ECS style needs to know besides the answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecs {
    /// The zones that make an answer a threat match, worth a
    /// `threat.enrichments[]` entry (`KL_ECS_THREAT_ZONES`).
    pub threat_zones: Vec<Zone>,
    /// Who answered: the entry's provider and reference page.
    pub portal: Portal,
}

impl Default for Ecs {
    fn default() -> Ecs {
        Ecs { threat_zones: vec![Zone::Red, Zone::Orange, Zone::Yellow], portal: Portal::Tip }
    }
}

/// What `items` add to an event in `style`. Items without a target of
/// their own go under `default_target` (nested and ECS), or flat at the top
/// (kl); where several ECS items share the default target, each goes under
/// its field path within it.
pub fn output(style: Style, default_target: &str, ecs: &Ecs, items: &[Item<'_>]) -> Output {
    let mut out = Output::default();
    let untargeted = items.iter().filter(|i| i.target.is_none()).count();
    for item in items {
        let fields = crate::render(item.function, item.outcome);
        match style {
            Style::Kl => match item.target {
                None => {
                    out.clear_kl = true;
                    out.members.extend(fields.into_iter().map(|f| (f.name, f.value)));
                }
                Some(t) => {
                    let flat: Map<String, Value> = fields.into_iter().map(|f| (f.name, f.value)).collect();
                    out.members.insert(t.to_owned(), Value::Object(flat));
                }
            },
            Style::Nested => {
                let key = item.target.unwrap_or(default_target).to_owned();
                out.members.insert(key, Value::Object(nested(fields)));
            }
            Style::Ecs => {
                let ours = nested(fields);
                // An entry says "this matched threat intelligence": only an
                // answer in a threat zone gets one. Every answer keeps its
                // zone under the target key.
                let zone = ours.get("zone").and_then(Value::as_str).map(Zone::parse);
                if let Some(zone) = zone.filter(|z| item.outcome.is_answer() && ecs.threat_zones.contains(z)) {
                    let threat = out.members.entry("threat").or_insert_with(|| json!({"enrichments": []}));
                    if let Some(list) = threat["enrichments"].as_array_mut() {
                        list.push(ecs_entry(&ours, item, &zone, ecs.portal));
                    }
                }
                match item.target {
                    Some(t) => {
                        out.members.insert(t.to_owned(), Value::Object(ours));
                    }
                    None if untargeted == 1 => {
                        out.members.insert(default_target.to_owned(), Value::Object(ours));
                    }
                    None => {
                        let shared = out.members.entry(default_target).or_insert_with(|| Value::Object(Map::new()));
                        if let Some(shared) = shared.as_object_mut() {
                            shared.insert(item.field.unwrap_or(item.raw).to_owned(), Value::Object(ours));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The members `items` add to an event that holds none of them, serialised
/// as `"key":value` pairs: the bytes of [`output`]'s members without the
/// braces (see [`crate::event::members`]). One lookup in the kl or nested
/// style, the common case of a stream, is written straight from its fields;
/// anything else goes through [`output`].
pub fn members(style: Style, default_target: &str, ecs: &Ecs, items: &[Item<'_>]) -> Vec<u8> {
    if let [item] = items {
        let fields = crate::render(item.function, item.outcome);
        // Where the fields go (flat, or under a key), and by which name.
        let placed = match (style, item.target) {
            (Style::Kl, target) => Some((target, false)),
            // Two fields with one snake_case name would make one member.
            (Style::Nested, target)
                if !fields.iter().enumerate().any(|(i, f)| fields[..i].iter().any(|g| g.snake == f.snake)) =>
            {
                Some((Some(target.unwrap_or(default_target)), true))
            }
            _ => None,
        };
        if let Some((under, snake)) = placed {
            let mut out = Vec::with_capacity(64 * fields.len());
            if let Some(key) = under {
                write_key(&mut out, key);
                out.push(b'{');
            }
            let names = fields.iter().map(|f| if snake { f.snake.as_str() } else { f.name.as_str() });
            write_pairs(&mut out, names.zip(fields.iter().map(|f| &f.value)));
            if under.is_some() {
                out.push(b'}');
            }
            return out;
        }
    }
    crate::event::members(&output(style, default_target, ecs, items).members)
}

/// `"key":`.
fn write_key(out: &mut Vec<u8>, key: &str) {
    // Writing to a Vec fails only for a map with keys that are not
    // strings, which a `&str` never is.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// `"k":v,"k":v…`, as `serde_json` writes an object's members.
fn write_pairs<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a Value)>) {
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, k);
        let _ = serde_json::to_writer(&mut *out, v);
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

/// ECS `indicator.confidence` for a zone.
fn confidence(zone: &Zone) -> &'static str {
    match zone {
        Zone::Red => "High",
        Zone::Orange => "Medium",
        Zone::Yellow => "Low",
        _ => "Not Specified",
    }
}

fn ecs_entry(ours: &Map<String, Value>, m: &Item<'_>, zone: &Zone, portal: Portal) -> Value {
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
    put(&mut ind, &["provider"], Value::from(portal.name()));
    put(&mut ind, &["confidence"], Value::from(confidence(zone)));
    put(&mut ind, &["reference"], Value::from(portal.page(value)));
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

    fn data(v: Value) -> Outcome {
        Outcome::Data(v.into())
    }

    fn item<'a>(function: Function, raw: &'a str, field: Option<&'a str>, outcome: &'a Outcome) -> Item<'a> {
        Item { function, raw, field, target: None, outcome }
    }

    #[test]
    fn ecs_entry_for_an_ip() {
        let answer =
            data(json!({"Zone": "Red", "IpGeneralInfo": {"FirstSeen": "2023-06-11T04:12:00Z", "CountryCode": "CN"},
            "IpWhoIs": {"Asn": [{"Number": 4837, "Description": ["China Unicom"]}, {"Number": 1}]}}));
        let out = output(
            Style::Ecs,
            "kaspersky",
            &Ecs::default(),
            &[item(Function::IpReport, " 39.90.148.83 ", Some("source.ip"), &answer)],
        );
        assert_eq!(
            out.members["threat"]["enrichments"][0],
            json!({"indicator": {"type": "ipv4-addr", "provider": "Kaspersky Threat Intelligence Portal",
                                  "confidence": "High", "reference": "https://tip.kaspersky.com/search?searchString=39.90.148.83",
                                  "ip": "39.90.148.83",
                                  "first_seen": "2023-06-11T04:12:00Z", "geo": {"country_iso_code": "CN"},
                                  "as": {"number": 4837, "organization": {"name": "China Unicom"}}},
                   "matched": {"atomic": "39.90.148.83", "field": "source.ip", "type": "indicator_match_rule"}})
        );
        assert_eq!(out.members["kaspersky"]["zone"], "Red");
        assert!(!out.clear_kl);
    }

    #[test]
    fn ecs_errors_add_no_enrichment() {
        let failed = Outcome::Failed("invalid hash".into());
        let out = output(Style::Ecs, "kl", &Ecs::default(), &[item(Function::HashReport, "nope", None, &failed)]);
        assert_eq!(Value::Object(out.members), json!({"kl": {"error": "invalid hash"}}));
    }

    #[test]
    fn hash_algorithm_from_length() {
        let yellow = data(json!({"Zone": "Yellow"}));
        let raw = "A".repeat(40);
        let out = output(Style::Ecs, "kaspersky", &Ecs::default(), &[item(Function::HashReport, &raw, None, &yellow)]);
        let ind = &out.members["threat"]["enrichments"][0]["indicator"];
        assert_eq!(ind["file"]["hash"]["sha1"], "a".repeat(40));
        assert_eq!(ind["confidence"], "Low");
    }

    #[test]
    fn only_threat_zones_get_an_entry_and_every_answer_keeps_its_zone() {
        let ecs = Ecs::default();
        for (zone, entry) in [("Red", true), ("Orange", true), ("Yellow", true), ("Green", false), ("Grey", false)] {
            let answer = data(json!({"Zone": zone}));
            let out = output(Style::Ecs, "kaspersky", &ecs, &[item(Function::DomainReport, "a.com", None, &answer)]);
            assert_eq!(out.members.contains_key("threat"), entry, "{zone}");
            assert_eq!(out.members["kaspersky"]["zone"], zone);
        }
        let out =
            output(Style::Ecs, "kaspersky", &ecs, &[item(Function::IpReport, "8.8.8.8", None, &Outcome::NotFound)]);
        assert!(!out.members.contains_key("threat"));
        assert_eq!(out.members["kaspersky"]["zone"], "Grey");
        let strict = Ecs { threat_zones: vec![Zone::Red], portal: Portal::OpenTip };
        let orange = data(json!({"Zone": "Orange"}));
        let out = output(Style::Ecs, "k", &strict, &[item(Function::IpReport, "8.8.8.8", None, &orange)]);
        assert!(!out.members.contains_key("threat"));
        let red = data(json!({"Zone": "Red"}));
        let out = output(Style::Ecs, "k", &strict, &[item(Function::IpReport, "8.8.8.8", None, &red)]);
        let ind = &out.members["threat"]["enrichments"][0]["indicator"];
        assert_eq!(ind["provider"], "Kaspersky OpenTIP");
        assert_eq!(ind["reference"], "https://opentip.kaspersky.com/8.8.8.8/");
    }

    #[test]
    fn several_fields_each_get_their_own_entry_and_place() {
        let red = data(json!({"Zone": "Red"}));
        let orange = data(json!({"Zone": "Orange"}));
        let items = [
            item(Function::IpReport, "1.2.3.4", Some("source.ip"), &red),
            item(Function::IpReport, "5.6.7.8", Some("destination.ip"), &orange),
        ];
        let out = output(Style::Ecs, "kaspersky", &Ecs::default(), &items);
        let entries = out.members["threat"]["enrichments"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["matched"]["field"], "source.ip");
        assert_eq!(entries[1]["matched"]["field"], "destination.ip");
        assert_eq!(
            out.members["kaspersky"],
            json!({"source.ip": {"zone": "Red"}, "destination.ip": {"zone": "Orange"}})
        );

        let targeted = [Item { target: Some("src_kl"), ..items[0] }, Item { target: Some("dst_kl"), ..items[1] }];
        let out = output(Style::Nested, "kaspersky", &Ecs::default(), &targeted);
        assert_eq!(Value::Object(out.members), json!({"src_kl": {"zone": "Red"}, "dst_kl": {"zone": "Orange"}}));
        let out = output(Style::Kl, "kaspersky", &Ecs::default(), &targeted);
        assert_eq!(Value::Object(out.members), json!({"src_kl": {"$KLZone": "Red"}, "dst_kl": {"$KLZone": "Orange"}}));
        assert!(!out.clear_kl);
        let out = output(Style::Kl, "kaspersky", &Ecs::default(), &items[..1]);
        assert_eq!(Value::Object(out.members), json!({"$KLZone": "Red"}));
        assert!(out.clear_kl, "flat $KL fields replace the event's own");
    }
}
