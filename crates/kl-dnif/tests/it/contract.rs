//! The array contract for all seven functions over the sample batches.

use kl_core::backend::ReplayBackend;
use kl_core::{Body, Function, Indicator, Outcome};
use kl_model::Policy;
use serde_json::{Value, json};
use std::collections::HashSet;

use crate::*;

/// What the event must get: computed from the fixture through kl-schema,
/// whose output the snapshot tests pin.
fn expected(function: Function, raw: &Value) -> Vec<(String, Value)> {
    let outcome = match raw {
        Value::String(s) => match Indicator::parse(function.object(), s) {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(i) if i.withheld(&Policy::default()).is_some() => {
                Outcome::Skipped(i.withheld(&Policy::default()).unwrap_or_default())
            }
            Ok(i) => match std::fs::read_to_string(ReplayBackend::path_for(&fixtures().join("responses"), &i)) {
                Ok(text) => Outcome::Data(Body::from_json(&text).unwrap()),
                Err(_) => Outcome::NotFound,
            },
        },
        other => Outcome::not_a_string(Some(function.object()), kl_core::json_type(other)),
    };
    kl_schema::render(function, &outcome).into_iter().map(|f| (f.name, f.value)).collect()
}

async fn check_batch(function: Function, field: &str, events_file: &str) {
    let server = fixture_server().await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let input = std::fs::read(fixtures().join("events").join(events_file)).unwrap();
    let events: Vec<Value> = serde_json::from_slice(&input).unwrap();
    // DNIF passes the field name as typed, sometimes with spaces around it.
    let out =
        run_kl_dnif(&["--config", cfg.to_str().unwrap(), function.name(), &format!(" {field} ")], &input, &[]).await;
    let enriched = parse(&out);
    assert_eq!(enriched.len(), events.len(), "{function}: every event comes back");

    let mut distinct = HashSet::new();
    for (before, after) in events.iter().zip(&enriched) {
        let (b, a) = (before.as_object().unwrap(), after.as_object().unwrap());
        // Every input key and value unchanged, in order, then the $KL fields.
        let kept: Vec<(&String, &Value)> = a.iter().take(b.len()).collect();
        assert_eq!(kept, b.iter().collect::<Vec<_>>(), "{function}: input keys changed");
        let added: Vec<(String, Value)> = a.iter().skip(b.len()).map(|(k, v)| (k.clone(), v.clone())).collect();
        match b.get(field) {
            None => assert!(added.is_empty(), "{function}: an event without {field} must pass unchanged"),
            Some(raw) => {
                assert_eq!(added, expected(function, raw), "{function}: {raw}");
                if let Some(i) = raw.as_str().and_then(|s| Indicator::parse(function.object(), s).ok()) {
                    if i.withheld(&Policy::default()).is_none() {
                        distinct.insert(i);
                    }
                }
            }
        }
    }
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), distinct.len(), "{function}: one request per distinct valid indicator");
    for r in &requests {
        let sections = r.url.query_pairs().find(|(k, _)| k == "sections").map(|(_, v)| v.into_owned());
        assert_eq!(sections.as_deref(), Some(function.sections_param().as_str()));
    }
}

#[tokio::test]
async fn get_ip_report() {
    check_batch(Function::IpReport, "$SrcIP", "ip.json").await;
}

#[tokio::test]
async fn get_ip_report_file() {
    check_batch(Function::IpReportFile, "$SrcIP", "ip.json").await;
}

#[tokio::test]
async fn get_domain_report() {
    check_batch(Function::DomainReport, "$Domain", "domain.json").await;
}

#[tokio::test]
async fn get_domain_report_file() {
    check_batch(Function::DomainReportFile, "$Domain", "domain.json").await;
}

#[tokio::test]
async fn get_url_report() {
    check_batch(Function::UrlReport, "$URL", "url.json").await;
}

#[tokio::test]
async fn get_url_report_file() {
    check_batch(Function::UrlReportFile, "$URL", "url.json").await;
}

#[tokio::test]
async fn get_hash_report() {
    check_batch(Function::HashReport, "$Filehash", "hash.json").await;
}

/// A few values spelled out, so the test does not only agree with itself.
#[tokio::test]
async fn known_values_arrive_on_the_right_events() {
    let server = fixture_server().await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let input = std::fs::read(fixtures().join("events/ip.json")).unwrap();
    let out = parse(&run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], &input, &[]).await);
    assert_eq!(out[0]["$KLZone"], "Red");
    assert_eq!(out[0]["$KLASN"], json!([4837]));
    assert_eq!(out[0]["$KLIPRange"], "39.64.0.0-39.95.255.255");
    assert_eq!(out[0]["$Bytes"], json!(18446744073709551615u64));
    assert_eq!(out[1]["$KLZone"], "Yellow");
    assert_eq!(out[1]["$KLOwnerEmail"], "tor-abuse@relayon.example");
    assert_eq!(out[2]["$KLZone"], "Green");
    assert_eq!(kl_keys(&out[3]), ["$KLSkipped"]);
    assert_eq!(out[4]["$KLError"], r#"invalid IPv4 address "1.2.3""#);
    assert_eq!(kl_keys(&out[5]), ["$KLZone"]);
    assert_eq!(out[5]["$KLZone"], "Grey");
    assert!(kl_keys(&out[6]).is_empty());
    assert_eq!(kl_keys(&out[7]), ["$KLError"]);
    assert_eq!(out[8]["$KLZone"], "Red");
    assert!(out[11]["$KLError"].as_str().unwrap().contains("IPv6"));
}

#[tokio::test]
async fn an_empty_array_is_fine() {
    let server = fixture_server().await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let out = run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_hash_report", "$Filehash"], b"[]", &[]).await;
    assert_eq!(parse(&out), Vec::<Value>::new());
}
