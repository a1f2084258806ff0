//! Mapping a TIP response through a function's table.

use std::collections::HashSet;

use kl_model::{Function, Outcome, Zone};
use serde_json::Value;

use crate::table::{ERROR_FIELD, FieldSpec, Kind, ROLE_KEYS, SKIPPED_FIELD, ZONE_FIELD, table};
use crate::tree::{Cursor, Tape};

/// One output field: its `$KL` name, its snake_case name, and its value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Field {
    pub name: String,
    pub snake: String,
    pub value: Value,
}

impl Field {
    fn new(name: impl Into<String>, snake: impl Into<String>, value: Value) -> Field {
        Field { name: name.into(), snake: snake.into(), value }
    }
}

/// The fields an event gets for an engine outcome.
///
/// - data: the flattened fields; an answer with no sections (only
///   `LicenseInfo`, or nothing), or one that yields no field at all, is
///   `$KLZone: "Grey"`, the documented meaning of "no data";
/// - not found: `$KLZone: "Grey"`;
/// - skipped: `$KLSkipped` alone;
/// - failed: `$KLError` alone.
pub fn render(function: Function, outcome: &Outcome) -> Vec<Field> {
    match outcome {
        Outcome::Data(body) => {
            let text = body.text();
            // The borrowed tree; a text it cannot read (none a body gives)
            // goes the long way, through `serde_json`.
            let fields = match Tape::parse(&text) {
                Some(tape) => flatten_any(function, tape.root()),
                None => flatten(function, &body.value()),
            };
            if fields.is_empty() { grey() } else { fields }
        }
        Outcome::NotFound => grey(),
        Outcome::Skipped(reason) => vec![Field::new(SKIPPED_FIELD, "skipped", Value::from(reason.as_str()))],
        Outcome::Failed(reason) => vec![Field::new(ERROR_FIELD, "error", Value::from(reason.as_str()))],
    }
}

fn grey() -> Vec<Field> {
    vec![Field::new(ZONE_FIELD, "zone", Value::from(Zone::Grey.as_str()))]
}

/// Maps `response` through the table of `function`, in table order.
///
/// Never fails: a missing, `null`, empty or wrongly typed source drops that
/// one field. When two rows would produce the same name (a WHOIS role called
/// `Registrar` against `$KLRegistrarEmail`, say), the first one wins.
pub fn flatten(function: Function, response: &Value) -> Vec<Field> {
    flatten_any(function, response)
}

/// What the mapping reads of a JSON value: a `serde_json::Value`, or a
/// [`Cursor`] on the [`Tape`] that answers are read into.
trait Json<'t>: Copy + PartialEq {
    /// The member `key` of an object (the last, if it repeats, as
    /// `serde_json` keeps it); `None` for anything else.
    fn get(self, key: &str) -> Option<Self>;
    fn is_null(self) -> bool;
    fn is_object(self) -> bool;
    /// An array's elements; `None` for anything else.
    fn items(self) -> Option<impl Iterator<Item = Self>>;
    fn as_str(self) -> Option<&'t str>;
    /// A number or a boolean.
    fn is_number_or_bool(self) -> bool;
    fn to_value(self) -> Value;
}

impl<'t> Json<'t> for &'t Value {
    fn get(self, key: &str) -> Option<Self> {
        self.as_object()?.get(key)
    }
    fn is_null(self) -> bool {
        Value::is_null(self)
    }
    fn is_object(self) -> bool {
        Value::is_object(self)
    }
    fn items(self) -> Option<impl Iterator<Item = Self>> {
        self.as_array().map(|a| a.iter())
    }
    fn as_str(self) -> Option<&'t str> {
        Value::as_str(self)
    }
    fn is_number_or_bool(self) -> bool {
        matches!(self, Value::Number(_) | Value::Bool(_))
    }
    fn to_value(self) -> Value {
        self.clone()
    }
}

impl<'t, 'a> Json<'t> for Cursor<'t, 'a> {
    fn get(self, key: &str) -> Option<Self> {
        Cursor::get(self, key)
    }
    fn is_null(self) -> bool {
        Cursor::is_null(self)
    }
    fn is_object(self) -> bool {
        Cursor::is_object(self)
    }
    fn items(self) -> Option<impl Iterator<Item = Self>> {
        Cursor::items(self)
    }
    fn as_str(self) -> Option<&'t str> {
        Cursor::as_str(self)
    }
    fn is_number_or_bool(self) -> bool {
        Cursor::is_number_or_bool(self)
    }
    fn to_value(self) -> Value {
        Cursor::to_value(self)
    }
}

fn flatten_any<'t, J: Json<'t>>(function: Function, response: J) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for spec in table(function) {
        for field in apply(spec, response) {
            // A few dozen fields at most: a scan costs less than hashing.
            if !out.iter().any(|f| f.name == field.name) {
                out.push(field);
            }
        }
    }
    out
}

fn apply<'t, J: Json<'t>>(spec: &FieldSpec, root: J) -> Vec<Field> {
    let single =
        |v: Option<Value>| v.map(|v| Field::new(concat(&["$KL", spec.kl]), spec.snake, v)).into_iter().collect();
    match spec.kind {
        Kind::Scalar { path } => single(get(root, path).and_then(scalar).map(J::to_value)),
        Kind::Zone { path } => single(get(root, path).and_then(zone)),
        Kind::List { path, item } => single(list(root, path, item, false)),
        Kind::Union { path, item } => single(list(root, path, Some(item), true)),
        Kind::Range { path, start, end } => {
            let net = get(root, path);
            let end_of = |keys| net.and_then(|n| first_present(n, keys)).and_then(range_end);
            single(end_of(start).zip(end_of(end)).map(|(s, e)| Value::from(concat(&[s, "-", e]))))
        }
        Kind::Count { path, item } => {
            let mut seen = Vec::new();
            for record in records(root, path) {
                if let Some(v) = record.get(item).and_then(scalar) {
                    push_unique(&mut seen, v);
                }
            }
            single((!seen.is_empty()).then(|| Value::from(seen.len())))
        }
        Kind::ZoneFamily { path, item } => zone_family(spec, root, path, item),
        Kind::Contacts { path, attrs } => contacts(root, path, attrs),
    }
}

/// Walks object keys; anything that is not an object on the way gives `None`.
fn get<'t, J: Json<'t>>(root: J, path: &[&str]) -> Option<J> {
    path.iter().try_fold(root, |v, key| v.get(key))
}

/// A value worth a field: not null, not an empty string or list, not an object.
fn scalar<'t, J: Json<'t>>(v: J) -> Option<J> {
    let empty_list = v.items().is_some_and(|mut items| items.next().is_none());
    if v.is_null() || v.is_object() || v.as_str() == Some("") || empty_list { None } else { Some(v) }
}

/// A list element: a non-empty string, a number or a boolean.
fn element<'t, J: Json<'t>>(v: J) -> Option<J> {
    (v.as_str().is_some_and(|s| !s.is_empty()) || v.is_number_or_bool()).then_some(v)
}

fn zone<'t, J: Json<'t>>(v: J) -> Option<Value> {
    let s = v.as_str().filter(|s| !s.trim().is_empty())?;
    Some(Value::from(Zone::parse(s).as_str()))
}

fn range_end<'t, J: Json<'t>>(v: J) -> Option<&'t str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn first_present<'t, J: Json<'t>>(record: J, keys: &[&str]) -> Option<J> {
    keys.iter().filter_map(|k| record.get(k)).find(|v| !v.is_null())
}

/// The object records of the array at `path`; nothing when it is not an array.
fn records<'t, J: Json<'t>>(root: J, path: &[&str]) -> impl Iterator<Item = J> {
    get(root, path).and_then(J::items).into_iter().flatten().filter(|r| r.is_object())
}

fn push_unique<'t, J: Json<'t>>(list: &mut Vec<J>, v: J) {
    if !list.contains(&v) {
        list.push(v);
    }
}

fn to_array<'t, J: Json<'t>>(items: &[J]) -> Value {
    Value::Array(items.iter().map(|v| v.to_value()).collect())
}

fn list<'t, J: Json<'t>>(root: J, path: &[&str], item: Option<&[&str]>, union: bool) -> Option<Value> {
    let array = get(root, path)?.items()?;
    let mut out = Vec::new();
    for element_or_record in array {
        let v = match item {
            None => Some(element_or_record),
            Some(keys) => element_or_record.is_object().then(|| first_present(element_or_record, keys)).flatten(),
        };
        match v.map(|v| (v, v.items())) {
            Some((_, Some(inner))) if union => inner.filter_map(element).for_each(|e| push_unique(&mut out, e)),
            Some((v, _)) => {
                if let Some(e) = element(v) {
                    push_unique(&mut out, e);
                }
            }
            None => {}
        }
    }
    (!out.is_empty()).then(|| to_array(&out))
}

fn zone_family<'t, J: Json<'t>>(spec: &FieldSpec, root: J, path: &[&str], item: &str) -> Vec<Field> {
    let mut buckets: Vec<Vec<J>> = vec![Vec::new(); Zone::KNOWN.len()];
    for record in records(root, path) {
        let Some(zone) = record.get("Zone").and_then(J::as_str).map(Zone::parse) else {
            continue;
        };
        let Some(slot) = Zone::KNOWN.iter().position(|z| *z == zone) else {
            continue;
        };
        if let Some(v) = record.get(item).and_then(element) {
            push_unique(&mut buckets[slot], v);
        }
    }
    Zone::KNOWN
        .iter()
        .zip(buckets)
        .filter(|(_, values)| !values.is_empty())
        .map(|(zone, values)| {
            Field::new(
                concat(&["$KL", zone.as_str(), spec.kl]),
                concat(&[&zone.as_str().to_ascii_lowercase(), "_", spec.snake]),
                to_array(&values),
            )
        })
        .collect()
}

fn contacts<'t, J: Json<'t>>(root: J, path: &[&str], attrs: &[&str]) -> Vec<Field> {
    let mut out = Vec::new();
    let mut roles = HashSet::new();
    for contact in records(root, path) {
        let Some(words) = first_present(contact, ROLE_KEYS).and_then(J::as_str).map(role_words) else {
            continue;
        };
        if words.is_empty() {
            continue;
        }
        let role: String = words.iter().map(|w| title_case(w)).collect();
        if !roles.insert(role.clone()) {
            continue; // the first contact of a role wins
        }
        let role_snake = words.iter().map(|w| w.to_ascii_lowercase()).collect::<Vec<_>>().join("_");
        for attr in attrs {
            if let Some(v) = contact.get(attr).and_then(scalar) {
                out.push(Field::new(
                    concat(&["$KL", &role, attr]),
                    concat(&[&role_snake, "_", &snake_case(attr)]),
                    v.to_value(),
                ));
            }
        }
    }
    out
}

/// The parts, joined (cheaper than `format!` for a few pieces).
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| out.push_str(p));
    out
}

/// Splits a role into words at anything that is not an ASCII letter or digit.
fn role_words(role: &str) -> Vec<String> {
    role.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
        None => String::new(),
    }
}

/// `OrganizationId` → `organization_id`, `CountryCode` → `country_code`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(f: &[Field]) -> Vec<&str> {
        f.iter().map(|f| f.name.as_str()).collect()
    }

    fn value<'a>(f: &'a [Field], name: &str) -> Option<&'a Value> {
        f.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    #[test]
    fn absent_null_empty_and_wrong_types_drop_only_that_field() {
        let r = json!({
            "Zone": null,
            "IpGeneralInfo": {"Categories": "CATEGORY_MALWARE", "FirstSeen": "", "HitsCount": 0,
                               "HasApt": false, "ThreatScore": {"x": 1}, "CountryCode": "DE"},
            "IpWhoIs": "broken"
        });
        let f = flatten(Function::IpReport, &r);
        assert_eq!(names(&f), ["$KLHits", "$KLHasAdvancedPersistThreat", "$KLCountryCode"]);
        assert_eq!(value(&f, "$KLHits"), Some(&json!(0)));
        assert_eq!(value(&f, "$KLHasAdvancedPersistThreat"), Some(&json!(false)));
    }

    #[test]
    fn lists_dedupe_in_first_seen_order_and_unions_flatten() {
        let r = json!({"IpDnsResolutions": [
            {"Domain": "b.example", "Categories": ["C2", "MALWARE"]},
            {"Domain": "a.example", "Categories": ["MALWARE", null, ""]},
            {"Domain": "b.example", "Categories": "PHISHING"},
            {"Domain": null}, "garbage", 7
        ]});
        let f = flatten(Function::IpReport, &r);
        assert_eq!(value(&f, "$KLIPDNSResolustionsDomains"), Some(&json!(["b.example", "a.example"])));
        assert_eq!(value(&f, "$KLIPDNSResolustionsCategories"), Some(&json!(["C2", "MALWARE", "PHISHING"])));
    }

    #[test]
    fn both_whois_shapes() {
        let old = json!({"IpWhoIs": {"Net": {"StartIp": "1.0.0.0", "EndIp": "1.0.0.255"},
                                      "Asn": [{"Origin": 13335, "Description": "CLOUDFLARENET"}],
                                      "Contacts": [{"Role": "owner", "Email": "a@x"}]}});
        let new = json!({"IpWhoIs": {"Net": {"RangeStart": "1.0.0.0", "RangeEnd": "1.0.0.255"},
                                      "Asn": [{"Number": 13335, "Description": ["CLOUDFLARENET", "Cloudflare"]}],
                                      "Contacts": [{"ContactType": "owner", "Email": "a@x"}]}});
        let (o, n) = (flatten(Function::IpReport, &old), flatten(Function::IpReport, &new));
        for f in [&o, &n] {
            assert_eq!(value(f, "$KLIPRange"), Some(&json!("1.0.0.0-1.0.0.255")));
            assert_eq!(value(f, "$KLASN"), Some(&json!([13335])));
            assert_eq!(value(f, "$KLOwnerEmail"), Some(&json!("a@x")));
        }
        assert_eq!(value(&n, "$KLASDescription"), Some(&json!(["CLOUDFLARENET", "Cloudflare"])));
        let half = json!({"IpWhoIs": {"Net": {"RangeStart": "1.0.0.0"}}});
        assert_eq!(value(&flatten(Function::IpReport, &half), "$KLIPRange"), None);
    }

    #[test]
    fn zone_families_split_by_zone_in_severity_order() {
        let r = json!({"FilesDownloadedFromIp": [
            {"Md5": "G1", "Zone": "Green"}, {"Md5": "R1", "Zone": "red"}, {"Md5": "O1", "Zone": "Orange"},
            {"Md5": "Y1", "Zone": "GRAY"}, {"Md5": "R1", "Zone": "Red"}, {"Md5": "U1", "Zone": "Purple"},
            {"Md5": "N1"}, {"Md5": "", "Zone": "Red"}
        ]});
        let f = flatten(Function::IpReportFile, &r);
        assert_eq!(names(&f), ["$KLRedMd5", "$KLOrangeMd5", "$KLGreyMd5", "$KLGreenMd5"]);
        assert_eq!(value(&f, "$KLRedMd5"), Some(&json!(["R1"])));
        assert_eq!(f[0].snake, "red_downloaded_files_md5");
    }

    #[test]
    fn contact_roles_are_title_cased_and_the_first_wins() {
        let r = json!({"DomainWhoIsInfo": {"Contacts": [
            {"ContactType": "tech contact", "Email": "first@x", "Name": "First"},
            {"ContactType": "Tech Contact", "Email": "second@x", "City": "Second"},
            {"ContactType": "REGISTRANT", "CountryCode": "RU", "Fax": null},
            {"Email": "norole@x"}
        ]}});
        let f = flatten(Function::DomainReport, &r);
        assert_eq!(names(&f), ["$KLTechContactEmail", "$KLTechContactName", "$KLRegistrantCountryCode"]);
        assert_eq!(value(&f, "$KLTechContactEmail"), Some(&json!("first@x")));
        assert_eq!(f[2].snake, "registrant_country_code");
    }

    #[test]
    fn a_role_named_registrar_does_not_override_the_registrar_block() {
        let r = json!({"DomainWhoIsInfo": {"Registrar": {"Email": "abuse@registrar"},
                       "Contacts": [{"ContactType": "registrar", "Email": "other@x"}]}});
        let f = flatten(Function::DomainReport, &r);
        assert_eq!(value(&f, "$KLRegistrarEmail"), Some(&json!("abuse@registrar")));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn subdomain_count_is_distinct_and_absent_when_zero() {
        let r = json!({"Subdomains": [{"Subdomain": "a.x.com", "Zone": "Red"}, {"Subdomain": "a.x.com", "Zone": "Red"}, {"Subdomain": "b.x.com", "Zone": "Green"}]});
        let f = flatten(Function::DomainReport, &r);
        assert_eq!(value(&f, "$KLSubdomainsFilesCount"), Some(&json!(2)));
        assert_eq!(
            value(&flatten(Function::DomainReport, &json!({"Subdomains": []})), "$KLSubdomainsFilesCount"),
            None
        );
    }

    #[test]
    fn render_outcomes() {
        let grey = vec![Field::new("$KLZone", "zone", json!("Grey"))];
        assert_eq!(render(Function::IpReport, &Outcome::NotFound), grey);
        let only_license = Outcome::Data(json!({"LicenseInfo": {"DayRequests": 1}}).into());
        assert_eq!(render(Function::IpReport, &only_license), grey);
        assert_eq!(render(Function::HashReport, &Outcome::Data(json!({}).into())), grey);
        assert_eq!(
            render(Function::IpReport, &Outcome::Failed("timeout after 30s".into())),
            vec![Field::new("$KLError", "error", json!("timeout after 30s"))]
        );
        assert_eq!(
            names(&render(Function::IpReport, &Outcome::Skipped("private or reserved address".into()))),
            ["$KLSkipped"]
        );
    }

    #[test]
    fn zone_is_canonical() {
        assert_eq!(value(&flatten(Function::UrlReport, &json!({"Zone": "gray"})), "$KLZone"), Some(&json!("Grey")));
        assert_eq!(value(&flatten(Function::UrlReport, &json!({"Zone": "Teal"})), "$KLZone"), Some(&json!("Teal")));
        assert_eq!(value(&flatten(Function::UrlReport, &json!({"Zone": 3})), "$KLZone"), None);
    }
}
