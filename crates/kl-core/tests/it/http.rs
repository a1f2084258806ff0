//! The TIP client against a wiremock server: request shape, statuses,
//! limits, and what is never sent.

use std::time::Duration;

use kl_core::{Function, Outcome};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::*;

async fn server() -> MockServer {
    MockServer::start().await
}

/// Mounted last: any request no other mock expects fails the test.
async fn fail_on_anything_else(server: &MockServer) {
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(599))
        .named("unexpected request")
        .expect(0)
        .mount(server)
        .await;
}

fn api(server: &MockServer) -> String {
    format!("{}/api", server.uri())
}

#[tokio::test]
async fn request_shape_per_function() {
    let cases = [
        (Function::IpReport, " 8.8.8.8 ", "/api/ip/8.8.8.8"),
        (Function::IpReportFile, "8.8.8.8", "/api/ip/8.8.8.8"),
        (Function::DomainReport, "Example.COM.", "/api/domain/example.com"),
        (Function::DomainReportFile, "example.com", "/api/domain/example.com"),
        (
            Function::UrlReport,
            "http://evil.com/a b?x=1&y=/../#frag",
            "/api/url/http%3A%2F%2Fevil.com%2Fa%20b%3Fx%3D1%26y%3D%2F..%2F%23frag",
        ),
        (Function::UrlReportFile, "https://evil.com/%2F@x", "/api/url/https%3A%2F%2Fevil.com%2F%252F%40x"),
        // Credentials in a URL are stripped before anything is sent.
        (Function::UrlReport, "https://admin:S3cretPw@evil.com/in", "/api/url/https%3A%2F%2Fevil.com%2Fin"),
        (Function::HashReport, "44d88612fea8a8f36de82e1278abb02f", "/api/hash/44D88612FEA8A8F36DE82E1278ABB02F"),
    ];
    for (function, raw, expected_path) in cases {
        let server = server().await;
        Mock::given(method("GET"))
            .and(path(expected_path))
            .and(query_param("sections", function.sections_param()))
            .and(header("authorization", "Bearer tok-SECRET-42"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Red"})))
            .named(function.name())
            .expect(1)
            .mount(&server)
            .await;
        fail_on_anything_else(&server).await;
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&token_config(dir.path(), &api(&server)));
        let out = engine.lookup(function, raw).await;
        assert_eq!(out, Outcome::Data(json!({"Zone": "Red"}).into()), "{function}");
        // The raw request: exactly one path segment after the type, and no count=.
        let reqs = server.received_requests().await.unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].url.path_segments().unwrap().count(), 3, "{}", reqs[0].url);
        assert!(reqs[0].url.query_pairs().all(|(k, _)| k != "count"));
    }
}

#[tokio::test]
async fn basic_auth_and_count_when_configured() {
    let server = server().await;
    Mock::given(method("GET"))
        .and(path("/api/ip/1.1.1.1"))
        .and(query_param("count", "25"))
        // base64("kl-user:pw-9f8e7d-SECRET")
        .and(header("authorization", "Basic a2wtdXNlcjpwdy05ZjhlN2QtU0VDUkVU"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Green"})))
        .expect(1)
        .mount(&server)
        .await;
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = client_pem(dir.path());
    let cfg = config(
        dir.path(),
        &api(&server),
        &format!(
            "  KASPERSKY_API_USERNAME: {USER}\n  KASPERSKY_API_PASSWORD: {PASSWORD}\n  KASPERSKY_API_CERT_PATH: {}\n  KL_RECORDS_COUNT: 25\n",
            pem.display()
        ),
    );
    assert!(matches!(engine(&cfg).lookup(Function::IpReport, "1.1.1.1").await, Outcome::Data(_)));
}

#[tokio::test]
async fn not_found_is_grey_and_permanent_errors_are_not_retried() {
    let server = server().await;
    for (ip, status) in [("1.0.0.4", 404), ("1.0.0.1", 400), ("1.0.0.2", 414), ("1.0.0.3", 418)] {
        Mock::given(path(format!("/api/ip/{ip}")))
            .respond_with(ResponseTemplate::new(status))
            .expect(1)
            .mount(&server)
            .await;
    }
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&token_config(dir.path(), &api(&server)));
    assert_eq!(engine.lookup(Function::IpReport, "1.0.0.4").await, Outcome::NotFound);
    assert_eq!(engine.lookup(Function::IpReport, "1.0.0.1").await, Outcome::Failed("HTTP 400 bad request".into()));
    assert_eq!(engine.lookup(Function::IpReport, "1.0.0.2").await, Outcome::Failed("HTTP 414 URL too long".into()));
    assert_eq!(engine.lookup(Function::IpReport, "1.0.0.3").await, Outcome::Failed("HTTP 418".into()));
    assert_eq!(engine.stats().retries, 0);
}

/// Answers with the given statuses in turn, then 200.
struct Sequence(std::sync::Mutex<Vec<ResponseTemplate>>);

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut seq = self.0.lock().unwrap();
        if seq.is_empty() { ResponseTemplate::new(200).set_body_json(json!({"Zone": "Yellow"})) } else { seq.remove(0) }
    }
}

#[tokio::test]
async fn transient_failures_are_retried_then_reported() {
    let server = server().await;
    // 503 then 429 (Retry-After) then data: three requests, one answer.
    Mock::given(path("/api/ip/2.2.2.2"))
        .respond_with(Sequence(std::sync::Mutex::new(vec![
            ResponseTemplate::new(503),
            ResponseTemplate::new(429).insert_header("retry-after", "1"),
        ])))
        .expect(3)
        .mount(&server)
        .await;
    // Always 503: exactly KL_RETRIES (3) tries.
    Mock::given(path("/api/ip/3.3.3.3")).respond_with(ResponseTemplate::new(503)).expect(3).mount(&server).await;
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&token_config(dir.path(), &api(&server)));
    assert!(matches!(engine.lookup(Function::IpReport, "2.2.2.2").await, Outcome::Data(_)));
    assert_eq!(engine.lookup(Function::IpReport, "3.3.3.3").await, Outcome::Failed("HTTP 503 after 3 tries".into()));
    assert_eq!(engine.stats().retries, 4);
}

#[tokio::test]
async fn unauthorised_stops_the_run() {
    for (status, reason) in
        [(401, "authentication failed (HTTP 401)"), (403, "access denied or quota exceeded (HTTP 403)")]
    {
        let server = server().await;
        Mock::given(path("/api/ip/4.4.4.4")).respond_with(ResponseTemplate::new(status)).expect(1).mount(&server).await;
        fail_on_anything_else(&server).await;
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&token_config(dir.path(), &api(&server)));
        assert_eq!(engine.lookup(Function::IpReport, "4.4.4.4").await, Outcome::Failed(reason.into()));
        let later = engine.lookup_all(Function::IpReport, &["5.5.5.5", "6.6.6.6"]).await;
        for o in later {
            let Outcome::Failed(msg) = o else { panic!("{o:?}") };
            assert!(msg.contains(reason) && msg.starts_with("not sent"), "{msg}");
        }
        assert_eq!(engine.stats().requests, 1);
    }
}

#[tokio::test]
async fn body_cap_and_garbage_bodies() {
    let server = server().await;
    Mock::given(path("/api/ip/7.7.7.1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("{{\"Zone\":\"{}\"}}", "R".repeat(4096))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/ip/7.7.7.2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/ip/7.7.7.3"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"IpGeneralInfo":{"Ip":"7.7.7.3","#))
        .expect(1)
        .mount(&server)
        .await;
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &api(&server), "  KASPERSKY_API_TOKEN: t\n  KL_MAX_RESPONSE_BYTES: 1024\n");
    let engine = engine(&cfg);
    let out = engine.lookup_all(Function::IpReport, &["7.7.7.1", "7.7.7.2", "7.7.7.3"]).await;
    assert_eq!(out[0], Outcome::Failed("response larger than 1024 bytes".into()));
    let Outcome::Failed(html) = &out[1] else { panic!("{:?}", out[1]) };
    assert!(html.starts_with("invalid response"), "{html}");
    let Outcome::Failed(cut) = &out[2] else { panic!("{:?}", out[2]) };
    assert!(cut.contains("IpGeneralInfo"), "{cut}");
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let server = server().await;
    Mock::given(path("/api/ip/9.9.9.9"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &api(&server), "  KASPERSKY_API_TOKEN: t\n  KL_RETRIES: 2\n");
    cfg.timeout = Duration::from_millis(200);
    let out = engine(&cfg).lookup(Function::IpReport, "9.9.9.9").await;
    assert_eq!(out, Outcome::Failed("timeout after 0.200s (after 2 tries)".into()));
}

#[tokio::test]
async fn invalid_and_private_indicators_send_nothing() {
    let server = server().await;
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&token_config(dir.path(), &api(&server)));
    let cases = [
        (Function::IpReport, "10.1.2.3"),
        (Function::IpReport, "192.168.0.1"),
        (Function::IpReport, "1.2.3"),
        (Function::IpReport, "::1"),
        (Function::IpReport, "http://8.8.8.8"),
        (Function::DomainReport, "not a domain"),
        (Function::DomainReport, "../etc/passwd"),
        (Function::HashReport, "xyz"),
        (Function::UrlReport, ""),
        (Function::UrlReport, "http://a/\u{0}"),
    ];
    for (function, raw) in cases {
        let out = engine.lookup(function, raw).await;
        assert!(matches!(out, Outcome::Failed(_) | Outcome::Skipped(_)), "{raw}: {out:?}");
    }
    assert_eq!(
        engine.lookup(Function::IpReport, "10.1.2.3").await,
        Outcome::Skipped("private or reserved address".into())
    );
    assert_eq!(engine.stats().requests, 0);
}

#[tokio::test]
async fn private_addresses_are_sent_when_configured() {
    let server = server().await;
    Mock::given(path("/api/ip/10.1.2.3")).respond_with(ResponseTemplate::new(404)).expect(1).mount(&server).await;
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &api(&server), "  KASPERSKY_API_TOKEN: t\n  KL_LOOKUP_PRIVATE_IPS: true\n");
    assert_eq!(engine(&cfg).lookup(Function::IpReport, "10.1.2.3").await, Outcome::NotFound);
}

#[tokio::test]
async fn a_batch_makes_one_request_per_distinct_indicator() {
    let server = server().await;
    for ip in ["8.8.8.8", "8.8.4.4"] {
        Mock::given(path(format!("/api/ip/{ip}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"Zone": "Green", "IpGeneralInfo": {"Ip": ip}})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    fail_on_anything_else(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&token_config(dir.path(), &api(&server)));
    let raws = ["8.8.8.8", " 8.8.8.8", "8.8.4.4", "8.8.8.8 ", "8.8.4.4", "10.0.0.1", "8.8.8.8"];
    let out = engine.lookup_all(Function::IpReport, &raws).await;
    assert_eq!(out.len(), raws.len());
    for (raw, o) in raws.iter().zip(&out) {
        match (raw.trim(), o) {
            ("10.0.0.1", Outcome::Skipped(_)) => {}
            (ip, Outcome::Data(v)) => {
                assert_eq!(v.value()["IpGeneralInfo"]["Ip"], ip, "each event gets its own answer")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(engine.stats().requests, 2);
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yml");
    std::fs::write(
        &path,
        "lookup_plugin:\n  KASPERSKY_API_TOKEN: t\n  KASPERSKY_API_URL: http://tip.kaspersky.com/api\n",
    )
    .unwrap();
    let e = kl_core::Config::load_with_env(Some(&path), |_| None).unwrap_err();
    assert_eq!(e.key, Some("KASPERSKY_API_URL"));
}
