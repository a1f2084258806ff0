//! Flattening any JSON value never panics, and its output keeps the rules.

use kl_model::{Body, Function, Outcome};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys the tables read, so random responses reach deep into them.
const KEYS: &[&str] = &[
    "Zone",
    "LicenseInfo",
    "IpGeneralInfo",
    "IpWhoIs",
    "IpDnsResolutions",
    "FilesDownloadedFromIp",
    "HostedUrls",
    "UrlGeneralInfo",
    "UrlDomainWhoIs",
    "UrlReferrals",
    "UrlReferredTo",
    "DomainDnsResolutions",
    "FilesAccessed",
    "FilesDownloaded",
    "DomainGeneralInfo",
    "DomainWhoIsInfo",
    "Subdomains",
    "FileGeneralInfo",
    "DetectionsInfo",
    "FileNames",
    "FileAccessedUrls",
    "Net",
    "Asn",
    "Contacts",
    "Role",
    "ContactType",
    "StartIp",
    "RangeStart",
    "EndIp",
    "RangeEnd",
    "Origin",
    "Number",
    "Description",
    "Categories",
    "Domain",
    "Ip",
    "Md5",
    "Url",
    "Subdomain",
    "FileName",
    "DetectionName",
    "Email",
    "Registrar",
    "Name",
    "HitsCount",
    "DomainStatus",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just("Red"), Just("gray"), Just("ORANGE"), Just(""), Just("Purple"), Just("tech contact")]
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![Just("-0"), Just("1.5e-7"), Just("123456789012345678901234567890"), Just("-2.50")]
            .prop_map(|n| serde_json::from_str::<Value>(n).unwrap()),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn flattening_any_value_never_panics(response in json()) {
        for function in Function::ALL {
            let fields = kl_schema::flatten(function, &response);
            let mut names = std::collections::HashSet::new();
            for f in &fields {
                prop_assert!(f.name.starts_with("$KL"));
                prop_assert!(names.insert(f.name.clone()), "{} twice", f.name);
                prop_assert!(!f.value.is_null() && f.value != "" && f.value != Value::Array(vec![]));
                prop_assert!(!f.value.is_object());
            }
            let rendered = kl_schema::render(function, &Outcome::Data(response.clone().into()));
            prop_assert!(!rendered.is_empty());
            prop_assert!(rendered.iter().all(|f| f.name != "$KLError"));
        }
    }

    /// An answer is mapped from its text through a borrowed tree; the
    /// fields are the ones `flatten` gives for the same answer parsed by
    /// `serde_json`, value for value (escapes, numbers as written).
    #[test]
    fn the_borrowed_tree_maps_as_serde_json_does(response in json()) {
        let body = Body::from(response);
        for function in Function::ALL {
            let by_tree = kl_schema::render(function, &Outcome::Data(body.clone()));
            let mut by_value = kl_schema::flatten(function, &body.value());
            if by_value.is_empty() {
                by_value = kl_schema::render(function, &Outcome::NotFound);
            }
            prop_assert_eq!(by_tree, by_value);
        }
    }

    /// One lookup's members written straight from its fields are the bytes
    /// the general path (`output`, then `event::members`) writes.
    #[test]
    fn members_written_straight_are_the_general_paths(response in json()) {
        use kl_schema::{Ecs, Item, Style};
        let outcomes = [
            Outcome::Data(Body::from(response)),
            Outcome::NotFound,
            Outcome::Failed("HTTP 503".into()),
            Outcome::Skipped("private or reserved address".into()),
        ];
        for outcome in &outcomes {
            for function in [Function::IpReport, Function::DomainReport, Function::HashReport] {
                for style in [Style::Kl, Style::Nested, Style::Ecs] {
                    for target in [None, Some("kl \"t\"")] {
                        let items = [Item { function, raw: "8.8.8.8", field: Some("ip"), target, outcome }];
                        let general = kl_schema::event::members(&kl_schema::output(style, "kaspersky", &Ecs::default(), &items).members);
                        let straight = kl_schema::style::members(style, "kaspersky", &Ecs::default(), &items);
                        prop_assert_eq!(String::from_utf8(straight).unwrap(), String::from_utf8(general).unwrap());
                    }
                }
            }
        }
    }
}
