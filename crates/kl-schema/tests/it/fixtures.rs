//! Every recorded response through every function of its object type, one
//! reviewed snapshot per pair. The snapshot is the event as an analyst
//! would see it: the `$KL` fields in output order.

use kl_model::{Function, Outcome};
use serde_json::{Map, Value};

fn event_fields(function: Function, response: Value) -> Map<String, Value> {
    kl_schema::render(function, &Outcome::Data(response.into())).into_iter().map(|f| (f.name, f.value)).collect()
}

fn snapshot_all(function: Function) {
    let pattern = format!("responses/{}/*.json", function.object().api_type());
    insta::glob!("../../../../fixtures", &pattern, |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let response: Value = serde_json::from_str(&text).unwrap();
        // Through serde_json, so numbers print exactly as they will in events.
        let pretty = serde_json::to_string_pretty(&event_fields(function, response)).unwrap();
        insta::assert_snapshot!(function.name(), pretty);
    });
}

#[test]
fn get_ip_report() {
    snapshot_all(Function::IpReport);
}

#[test]
fn get_ip_report_file() {
    snapshot_all(Function::IpReportFile);
}

#[test]
fn get_url_report() {
    snapshot_all(Function::UrlReport);
}

#[test]
fn get_url_report_file() {
    snapshot_all(Function::UrlReportFile);
}

#[test]
fn get_domain_report() {
    snapshot_all(Function::DomainReport);
}

#[test]
fn get_domain_report_file() {
    snapshot_all(Function::DomainReportFile);
}

#[test]
fn get_hash_report() {
    snapshot_all(Function::HashReport);
}

/// The nested names are unique within each snapshot too.
#[test]
fn snake_names_are_unique_per_event() {
    for function in Function::ALL {
        let dir = format!("{}/../../fixtures/responses/{}", env!("CARGO_MANIFEST_DIR"), function.object().api_type());
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let fields = kl_schema::flatten(function, &serde_json::from_str(&text).unwrap());
            let mut seen = std::collections::HashSet::new();
            for f in &fields {
                assert!(seen.insert(&f.snake), "{function}: {} twice", f.snake);
            }
        }
    }
}
