//! The recipes of docs/http.md, sent as written (host and token aside).

use serde_json::{Value, json};

use crate::*;

fn doc() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/http.md")).unwrap()
}

#[tokio::test]
async fn the_documented_urls_and_bodies_work() {
    let server = fixture_server().await;
    let svc = Service::start(&format!("{}/api", server.uri()), "", &[]).await;
    let doc = doc();
    // curl, as documented.
    for path in [
        "/v1/lookup/auto/39.90.148.83",
        "/v1/lookup/get_url_report/http%3A%2F%2Fsecure-paypal-login.info%2Fsignin?style=kl",
    ] {
        assert!(doc.contains(&format!("http://127.0.0.1:8080{path}")), "{path} is not in docs/http.md");
        let resp = svc.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    let batch = r#"{"function": "auto", "indicators": ["8.8.8.8", "secure-paypal-login.info"]}"#;
    assert!(doc.contains(batch));
    let resp = Service::client().post(svc.url("/v1/lookup")).bearer_auth(TOKEN).body(batch).send().await.unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["results"][1]["kaspersky"]["zone"], "Red");
    let enrich = "/v1/enrich?function=auto&field=source.ip&style=ecs";
    assert!(doc.contains(enrich));
    let body = format!("{}\n", json!({"source": {"ip": "39.90.148.83"}}));
    let out = Service::client()
        .post(svc.url(enrich))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["threat"]["enrichments"][0]["matched"]["field"], "source.ip");

    // Logstash puts the field's value in the path; Graylog and NiFi encode
    // their key: the same route, and the zone where the JSONPath looks.
    assert!(doc.contains("/v1/lookup/auto/%{[source][ip]}"));
    assert!(doc.contains("/v1/lookup/auto/${key}") && doc.contains("$.kaspersky.zone"));
    assert!(doc.contains("/v1/lookup/auto/${source.ip:urlEncode()}"));
    let v: Value = svc.get("/v1/lookup/auto/secure-paypal-login.info").await.json().await.unwrap();
    assert_eq!(v["kaspersky"]["zone"], "Red", "$.kaspersky.zone finds the zone");
    // The systemd unit's hardening options are there.
    for option in ["DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "TimeoutStopSec=30"] {
        assert!(doc.contains(option), "{option}");
    }
}

#[tokio::test]
async fn https_with_the_configured_certificate() {
    let server = fixture_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let svc = Service::start(
        &format!("{}/api", server.uri()),
        &format!("  KL_HTTP_TLS_CERT: {}\n  KL_HTTP_TLS_KEY: {}\n", cert.display(), key.display()),
        &[],
    )
    .await;
    assert!(svc.base.starts_with("https://"), "{}", svc.base);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client.get(svc.url("/v1/lookup/auto/39.90.148.83")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
