//! The OpenTIP backend, and `check`, against local mocks.

use serde_json::{Value, json};
use wiremock::matchers::{any, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

/// The sections OpenTIP answers with, per kind of object.
fn opentip_sections(kind: &str) -> &'static [&'static str] {
    match kind {
        "ip" => &["Zone", "IpGeneralInfo", "IpWhoIs"],
        "domain" => &["Zone", "DomainGeneralInfo", "DomainWhoIsInfo"],
        "url" => &["Zone", "UrlGeneralInfo", "UrlDomainWhoIs"],
        _ => &["Zone", "FileGeneralInfo", "DetectionsInfo"],
    }
}

/// A fixture answer cut down to what OpenTIP returns.
fn opentip_answer(kind: &str, file: &str) -> Value {
    let full: Value =
        serde_json::from_str(&std::fs::read_to_string(responses().join(kind).join(file)).unwrap()).unwrap();
    let keep = opentip_sections(kind);
    Value::Object(
        full.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

const KEY: &str = "otip-KEY-5ecret";

fn opentip_config(url: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kl.yml");
    std::fs::write(
        &path,
        format!("lookup_plugin:\n  KL_BACKEND: opentip\n  KASPERSKY_OPENTIP_API_KEY: {KEY}\n  KASPERSKY_API_URL: {url}\n  KL_CACHE_PATH: off\n{extra}"),
    )
    .unwrap();
    let p = path.to_str().unwrap().to_owned();
    (dir, p)
}

/// Fails the test on any request no other mock expects.
async fn nothing_else(server: &MockServer) {
    Mock::given(any()).respond_with(ResponseTemplate::new(599)).named("unexpected").expect(0).mount(server).await;
}

#[tokio::test]
async fn opentip_answers_give_exactly_the_fields_the_same_sections_give_on_tip() {
    let cases = [
        ("ip", "39.90.148.83.json", "39.90.148.83"),
        ("domain", "secure-paypal-login.info.json", "secure-paypal-login.info"),
        (
            "url",
            "http%3A%2F%2Fsecure-paypal-login.info%2Fsignin%3Fsession%3D1%26next%3D%2Faccount.json",
            "http://secure-paypal-login.info/signin?session=1&next=/account",
        ),
        ("hash", "44D88612FEA8A8F36DE82E1278ABB02F.json", "44d88612fea8a8f36de82e1278abb02f"),
    ];
    for (kind, file, indicator) in cases {
        let body = opentip_answer(kind, file);
        let opentip = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/search/{kind}")))
            .and(query_param(
                "request",
                kl_model::Indicator::parse(
                    match kind {
                        "ip" => kl_model::ObjectKind::Ipv4,
                        "domain" => kl_model::ObjectKind::Domain,
                        "url" => kl_model::ObjectKind::Url,
                        _ => kl_model::ObjectKind::Hash,
                    },
                    indicator,
                )
                .unwrap()
                .as_str(),
            ))
            .and(header("x-api-key", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(&body))
            .expect(1)
            .mount(&opentip)
            .await;
        nothing_else(&opentip).await;
        let tip = MockServer::start().await;
        Mock::given(path_regex_for(kind))
            .respond_with(ResponseTemplate::new(200).set_body_json(&body))
            .mount(&tip)
            .await;
        let (_a, ocfg) = opentip_config(&format!("{}/api/v1", opentip.uri()), "");
        let (_b, tcfg) = config(&format!("{}/api", tip.uri()), "  KL_CACHE_PATH: off\n");
        let line = format!("{}\n", json!({"indicator": indicator}));
        let via = |cfg: &str| {
            let cfg = cfg.to_owned();
            let line = line.clone();
            async move {
                let out = run(
                    &["enrich", "--function", "auto", "--field", "indicator", "--style", "kl", "--config", &cfg],
                    line.as_bytes(),
                )
                .await;
                stdout_lines(&out).remove(0)
            }
        };
        let from_opentip = via(&ocfg).await;
        let from_tip = via(&tcfg).await;
        assert_eq!(from_opentip, from_tip, "{kind}");
        assert!(from_opentip.get("$KLZone").is_some(), "{kind}: {from_opentip}");
        // No Basic or Bearer header goes to OpenTIP.
        for r in opentip.received_requests().await.unwrap() {
            assert!(!r.headers.contains_key("authorization"), "{kind}: an Authorization header was sent");
        }
    }
}

fn path_regex_for(kind: &str) -> wiremock::matchers::PathRegexMatcher {
    wiremock::matchers::path_regex(format!("^/api/{kind}/"))
}

#[tokio::test]
async fn statuses_404_and_400_are_grey_and_403_stops_the_run_after_one_request() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/search/hash"))
        .and(query_param("request", "00000000000000000000000000000001"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/search/domain")).respond_with(ResponseTemplate::new(404)).mount(&server).await;
    let (_d, cfg) = opentip_config(&format!("{}/api/v1", server.uri()), "");
    let input = "{\"i\":\"00000000000000000000000000000001\"}\n{\"i\":\"unknown-site.com\"}\n";
    let out =
        run(&["enrich", "--function", "auto", "--field", "i", "--style", "kl", "--config", &cfg], input.as_bytes())
            .await;
    let lines = stdout_lines(&out);
    assert_eq!(lines[0]["$KLZone"], "Grey", "an unknown hash (400) is Grey");
    assert_eq!(lines[1]["$KLZone"], "Grey");

    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(403)).mount(&server).await;
    let (_d, cfg) = opentip_config(&format!("{}/api/v1", server.uri()), "  KL_CONCURRENCY: 1\n");
    let input: String = (1..=5).map(|i| format!("{{\"i\":\"9.9.9.{i}\"}}\n")).collect();
    let out =
        run(&["enrich", "--function", "auto", "--field", "i", "--style", "kl", "--config", &cfg], input.as_bytes())
            .await;
    let lines = stdout_lines(&out);
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "nothing is sent after a 403");
    assert!(lines[0]["$KLError"].as_str().unwrap().contains("quota or request limit exceeded"), "{}", lines[0]);
    for l in &lines[1..] {
        assert!(l["$KLError"].as_str().unwrap().starts_with("not sent"), "{l}");
    }
}

#[tokio::test]
async fn file_functions_with_opentip_exit_2_before_any_request() {
    let server = MockServer::start().await;
    nothing_else(&server).await;
    let (_d, cfg) = opentip_config(&format!("{}/api/v1", server.uri()), "");
    for function in ["get_ip_report_file", "get_url_report_file", "get_domain_report_file"] {
        let out =
            run(&["enrich", "--function", function, "--field", "i", "--config", &cfg], b"{\"i\":\"8.8.8.8\"}\n").await;
        assert_eq!(out.status.code(), Some(2), "{function}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("OpenTIP") && stderr.contains(function), "{stderr}");
        let out = run(&["lookup", function, "8.8.8.8", "--config", &cfg], b"").await;
        assert_eq!(out.status.code(), Some(2), "{function}");
    }
    // Offline, KL_BACKEND=opentip applies OpenTIP's rules to recorded answers.
    let offline = responses();
    let mut cmd = command(&["lookup", "get_ip_report_file", "39.90.148.83", "--offline", offline.to_str().unwrap()]);
    cmd.env("KL_BACKEND", "opentip");
    assert_eq!(kl_testkit::run_with_stdin(cmd, b"").await.status.code(), Some(2));
}

/// A TIP server answering the connectivity probe with `license`.
async fn tip_probe(status: u16, license: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/api/domain/example.com"))
        .and(query_param("sections", "Zone,LicenseInfo"))
        .and(header_exists("authorization"))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({"Zone": "Green", "LicenseInfo": license})))
        .expect(1)
        .mount(&server)
        .await;
    nothing_else(&server).await;
    server
}

#[tokio::test]
async fn check_reports_the_account_and_names_the_failure() {
    let server = tip_probe(
        200,
        json!({"AccessType": "Commercial", "DayRequests": 17, "DayQuota": 2000, "TokenExpirationDate": "2099-03-01T00:00:00Z"}),
    )
    .await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "");
    let out = run(&["check", "--config", &cfg], b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "backend   tip",
        "auth      token",
        "Commercial",
        "DayRequests 17 of DayQuota 2000",
        "TokenExpirationDate 2099-03-01",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let sent = &server.received_requests().await.unwrap()[0];
    assert_eq!(sent.headers["authorization"], "Bearer tok-GENERIC-SECRET", "a TIP token goes as Bearer");

    let server = tip_probe(200, json!({"DayRequests": 3, "DayQuota": 100, "TokenExpirationDate": null})).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "");
    let out = run(&["check", "--config", &cfg, "--json"], b"").await;
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["license"]["day_requests"].clone(), v["license"]["day_quota"].clone()),
        (json!(true), json!(3), json!(100))
    );
    assert_eq!(v["backend"], "tip");

    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(401)).mount(&server).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "");
    let out = run(&["check", "--config", &cfg], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP 401") && stderr.contains("terms and conditions"), "{stderr}");
    let out = run(&["check", "--config", &cfg, "--json"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failure"]["class"], "HTTP 401");

    // Nothing listens: connection refused. A config error: exit 2.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_d, cfg) = config(&format!("http://127.0.0.1:{port}/api"), "  KL_RETRIES: 1\n");
    let out = run(&["check", "--config", &cfg], b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connection refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_d, cfg) = config("http://tip.example.com/api", "");
    assert_eq!(run(&["check", "--config", &cfg], b"").await.status.code(), Some(2));
}

#[tokio::test]
async fn check_with_opentip_sends_one_search_with_the_key() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/search/domain"))
        .and(query_param("request", "example.com"))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Green"})))
        .expect(1)
        .mount(&server)
        .await;
    nothing_else(&server).await;
    let (_d, cfg) = opentip_config(&format!("{}/api/v1", server.uri()), "");
    let out = run(&["check", "--config", &cfg], b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backend   opentip"));
}

#[tokio::test]
async fn the_opentip_key_never_appears_at_trace_level() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Red"})))
        .mount(&server)
        .await;
    let (_d, cfg) = opentip_config(&format!("{}/api/v1", server.uri()), "");
    for args in [
        vec!["enrich", "--function", "auto", "--field", "i", "--config", &cfg],
        vec!["check", "--config", &cfg, "--json"],
        vec!["lookup", "auto", "8.8.8.8", "--config", &cfg],
    ] {
        let mut cmd = command(&args);
        cmd.env("RUST_LOG", "trace");
        let out = kl_testkit::run_with_stdin(cmd, b"{\"i\":\"8.8.8.8\"}\n").await;
        let everything = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(everything.contains("TRACE") || everything.contains("DEBUG"), "trace logging ran");
        assert!(!everything.contains(KEY), "{args:?}: the key leaked");
    }
}

#[tokio::test]
async fn a_token_that_expires_soon_is_warned_about_once() {
    let soon = {
        let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400 + 5;
        // The date `days` after 1970-01-01, by the proleptic Gregorian calendar.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
    };
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"Zone": "Green", "LicenseInfo": {"DayRequests": 1, "DayQuota": 10, "TokenExpirationDate": soon}}),
        ))
        .mount(&server)
        .await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "  KL_CACHE_PATH: off\n");
    let input = "{\"i\":\"8.8.8.8\"}\n{\"i\":\"8.8.4.4\"}\n{\"i\":\"1.1.1.1\"}\n";
    let out = run(&["enrich", "--function", "auto", "--field", "i", "--config", &cfg], input.as_bytes()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("the API token expires on").count(), 1, "{stderr}");
    assert!(stderr.contains("in 5 days"), "{stderr}");
    let out = run(&["check", "--config", &cfg], b"").await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 days left (renew it soon)"));
}
