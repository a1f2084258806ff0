//! Exit statuses, failed lookups between good ones, and secrets.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

async fn expect_exit_2(args: &[&str], stdin: &[u8], envs: &[(&str, &str)], needle: &str) {
    let out = run_kl_dnif(args, stdin, envs).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout must stay empty");
    assert!(stderr.contains(needle), "{args:?}: expected {needle:?} in {stderr}");
}

#[tokio::test]
async fn malformed_stdin_exits_2() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let args = ["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"];
    for (stdin, needle) in [
        (&b"not json"[..], "not valid JSON"),
        (br#"{"$SrcIP":"8.8.8.8"}"#, "found an object"),
        (br#"[{"$SrcIP":"8.8.8.8"}, "8.8.4.4"]"#, "element 1 is a string"),
        (br#"[{"$SrcIP":"8.8.8.8"}"#, "not valid JSON"),
        (b"", "empty"),
        (b"[] []", "not valid JSON"),
    ] {
        expect_exit_2(&args, stdin, &[], needle).await;
    }
}

#[tokio::test]
async fn usage_and_config_errors_exit_2_before_any_lookup() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
    let url = format!("{}/api", server.uri());
    let batch = br#"[{"$SrcIP":"8.8.8.8"}]"#;
    expect_exit_2(&["get_ip_report"], batch, &[], "FIELD").await;
    expect_exit_2(&["get_ipv6_report", "$SrcIP"], batch, &[], "unknown function").await;
    expect_exit_2(
        &["--config", "/nonexistent/dnifconfig.yml", "get_ip_report", "$SrcIP"],
        batch,
        &[],
        "does not exist",
    )
    .await;
    for (extra, needle) in [
        ("  KL_NOT_A_KEY: 1\n", "KL_NOT_A_KEY"),
        ("  KL_CONCURRENCY: lots\n", "KL_CONCURRENCY"),
        ("  KASPERSKY_CA_CERT_PATH: missing-ca.pem\n", "KASPERSKY_CA_CERT_PATH"),
    ] {
        let (_dir, cfg) = config_dir(&url, extra);
        expect_exit_2(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], batch, &[], needle).await;
    }
    let (_dir, cfg) = config_dir(&url, "");
    let args = ["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"];
    expect_exit_2(&args, batch, &[("KASPERSKY_API_URL", "http://tip.example.com/api")], "KASPERSKY_API_URL").await;
    // A bad PEM, with the password only in the environment.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.pem"), "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
        .unwrap();
    let yml = dir.path().join("dnifconfig.yml");
    std::fs::write(
        &yml,
        format!("lookup_plugin:\n  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_CERT_PATH: client.pem\n  KASPERSKY_API_URL: {url}\n"),
    )
    .unwrap();
    let args = ["--config", yml.to_str().unwrap(), "get_ip_report", "$SrcIP"];
    expect_exit_2(&args, batch, &[("KASPERSKY_API_PASSWORD", PASSWORD)], "KASPERSKY_API_CERT_PATH").await;
}

#[tokio::test]
async fn a_failed_lookup_never_carries_another_events_data() {
    let server = MockServer::start().await;
    let good = |ip: &str| json!({"Zone": "Red", "IpGeneralInfo": {"Ip": ip, "Categories": [format!("CATEGORY_{ip}")]}});
    Mock::given(path("/api/ip/1.0.0.1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(good("1.0.0.1")))
        .mount(&server)
        .await;
    Mock::given(path("/api/ip/1.0.0.2")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    Mock::given(path("/api/ip/1.0.0.3"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>busy</html>"))
        .mount(&server)
        .await;
    Mock::given(path("/api/ip/1.0.0.4"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(&br#"{"Zone":"Red","IpGeneralInfo":{"Ip":"1.0"#[..], "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/ip/1.0.0.5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(good("1.0.0.5")))
        .mount(&server)
        .await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "  KL_RETRIES: 2\n");
    let batch: Vec<Value> = (1..=5).map(|i| json!({"$SrcIP": format!("1.0.0.{i}"), "n": i})).collect();
    let out = parse(
        &run_kl_dnif(
            &["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"],
            &serde_json::to_vec(&batch).unwrap(),
            &[],
        )
        .await,
    );
    assert_eq!(out.len(), 5);
    for (i, e) in out.iter().enumerate() {
        assert_eq!(e["n"], i + 1, "order kept");
    }
    assert_eq!(out[0]["$KLCategory"], json!(["CATEGORY_1.0.0.1"]));
    assert_eq!(out[4]["$KLCategory"], json!(["CATEGORY_1.0.0.5"]));
    assert_eq!(out[1]["$KLError"], "HTTP 500 after 2 tries");
    for e in &out[1..4] {
        assert_eq!(kl_keys(e), ["$KLError"], "{e}");
    }
}

#[tokio::test]
async fn unauthorised_stops_the_run_and_every_event_says_why() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(401)).expect(1).mount(&server).await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "  KL_CONCURRENCY: 1\n");
    let batch = br#"[{"ip":"1.0.0.1"},{"ip":"1.0.0.2"},{"ip":"1.0.0.3"}]"#;
    let out = parse(&run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "ip"], batch, &[]).await);
    for e in &out {
        assert_eq!(kl_keys(e), ["$KLError"]);
        assert!(e["$KLError"].as_str().unwrap().contains("authentication failed (HTTP 401)"), "{e}");
    }
}

#[tokio::test]
async fn credentials_never_appear_at_trace_level() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Green"})))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let yml = kl_testkit::write_basic_config(
        dir.path(),
        "dnifconfig.yml",
        &format!("{}/api", server.uri()),
        "kl-user",
        PASSWORD,
        "",
    );
    let out = run_kl_dnif(
        &["--config", yml.to_str().unwrap(), "get_ip_report", "$SrcIP"],
        br#"[{"$SrcIP":"8.8.8.8"},{"$SrcIP":"8.8.4.4"}]"#,
        &[("RUST_LOG", "trace")],
    )
    .await;
    let everything = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"indicator="8.8.4.4""#) && stderr.contains("TRACE"), "trace logging ran: {stderr}");
    // base64("kl-user:pw-5ecret-DNIF")
    for secret in [PASSWORD, "a2wtdXNlcjpwdy01ZWNyZXQtRE5JRg==", "a2wtdXNlcjpwdy01ZWNyZXQtRE5JRg"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    let sent = &server.received_requests().await.unwrap()[0];
    assert_eq!(sent.headers["authorization"], "Basic a2wtdXNlcjpwdy01ZWNyZXQtRE5JRg==");
}

/// Found by fuzzing: a key our number-preserving JSON reserves must not
/// make a batch unreadable, and numbers no float can hold pass unchanged.
#[tokio::test]
async fn any_valid_event_passes_byte_for_byte_with_fields_added() {
    let server = fixture_server().await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let batch = concat!(
        "[\n",
        r#" {"$serde_json::private::Number": 10, "$SrcIP": "8.8.8.8"},"#,
        "\n",
        r#" {"big": 123456789012345678901234567890.50e-3, "nested": {"$serde_json::private::Number": "x"}, "$SrcIP": "8.8.8.8"},"#,
        "\n",
        r#" {"$SrcIP": "8.8.8.8", "$KLZone": "stale", "$KLZone": "twice"}"#,
        "\n]"
    );
    let out = run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], batch.as_bytes(), &[]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(r#"{"$serde_json::private::Number": 10, "$SrcIP": "8.8.8.8","$KLZone":"Green""#), "{text}");
    assert!(
        text.contains(
            r#""big": 123456789012345678901234567890.50e-3, "nested": {"$serde_json::private::Number": "x"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"{"$SrcIP": "8.8.8.8","$KLZone": "Green","#),
        "an existing $KLZone is replaced in place, once: {text}"
    );
    assert_eq!(text.matches("stale").count() + text.matches("twice").count(), 0);
}

/// On SIGTERM, a batch is finished within KL_DRAIN_SECS: lookups still
/// open then get $KLError, every event is written, and the exit is 0.
#[tokio::test]
async fn sigterm_finishes_the_batch_within_the_drain_time() {
    let server = kl_testkit::mock_with_a_stalled_ip("2.2.2.2", Duration::from_secs(120)).await;
    let (_dir, cfg) = config_dir(
        &format!("{}/api", server.uri()),
        "  KL_DRAIN_SECS: 1\n  KL_TIMEOUT_SECS: 300\n  KL_CACHE_PATH: off\n",
    );
    let mut cmd =
        kl_testkit::command(env!("CARGO_BIN_EXE_kl-dnif"), &["--config", cfg.to_str().unwrap(), "get_ip_report", "ip"]);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(br#"[{"ip":"1.1.1.1"},{"ip":"2.2.2.2"},{"ip":"3.3.3.3"}]"#).await.unwrap();
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    while server.received_requests().await.unwrap().len() < 3 {
        tokio::task::yield_now().await;
    }
    kl_testkit::send_signal(child.id().unwrap(), "TERM");
    let (status, stderr) = kl_testkit::wait_within(child, Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {stderr}");
    let mut text = String::new();
    stdout.read_to_string(&mut text).await.unwrap();
    let events: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["$KLZone"], "Green");
    assert!(events[1]["$KLError"].as_str().unwrap().contains("KL_DRAIN_SECS"), "{}", events[1]);
    assert_eq!(events[2]["$KLZone"], "Green");
}

/// A byte-order mark and bytes that are not UTF-8 do not reject a batch:
/// every event comes back, those whose indicator can be read enriched.
#[tokio::test]
async fn a_bom_and_bytes_that_are_not_utf8_keep_every_event() {
    let server = fixture_server().await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let mut batch = b"\xEF\xBB\xBF[".to_vec();
    batch.extend_from_slice(b"{\"$SrcIP\":\"8.8.8.8\",\"note\":\"caf\xe9\"},");
    batch.extend_from_slice(b"{\"$SrcIP\":\"8.8.\xff.8\"},");
    batch.extend_from_slice(b"{\"$SrcIP\":\"8.8.8.8\"}]");
    let out = run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], &batch, &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = &out.stdout;
    assert!(
        text.starts_with(b"[{\"$SrcIP\":\"8.8.8.8\",\"note\":\"caf\xe9\",\"$KLZone\":\"Green\""),
        "{}",
        String::from_utf8_lossy(text)
    );
    let lossy = String::from_utf8_lossy(text);
    assert!(lossy.contains("\"$KLError\":\"the indicator is not valid UTF-8\""), "{lossy}");
    assert_eq!(lossy.matches("\"$SrcIP\"").count(), 3);
}

/// A second lookup stage replaces the first stage's $KL fields: an event's
/// fields are exactly its own lookup's.
#[tokio::test]
async fn a_second_stage_leaves_nothing_of_the_first() {
    let server = fixture_server().await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let events = br#"[{"$SrcIP":"39.90.148.83","$KLRedMd5":["OLD"],"$KLHostedURL":["http://old/"],"$KLZone":"Green"}]"#;
    let out = run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], events, &[]).await;
    let e = &parse(&out)[0];
    assert_eq!(e["$KLZone"], "Red");
    assert!(e.get("$KLRedMd5").is_none() && e.get("$KLHostedURL").is_none(), "{e}");
}

/// `kl-dnif check` reports the account; with OpenTIP, a `_file` function
/// stops before any request.
#[tokio::test]
async fn check_and_opentip_file_functions() {
    let server = MockServer::start().await;
    Mock::given(path("/api/domain/example.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"Zone": "Green", "LicenseInfo": {"AccessType": "Commercial", "DayRequests": 5, "DayQuota": 50}}),
        ))
        .mount(&server)
        .await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let out = run_kl_dnif(&["check", "--config", cfg.to_str().unwrap()], b"", &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DayRequests 5 of DayQuota 50"));

    let opentip = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200)).expect(0).mount(&opentip).await;
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("dnifconfig.yml");
    std::fs::write(
        &yml,
        format!(
            "lookup_plugin:\n  KL_BACKEND: opentip\n  KASPERSKY_OPENTIP_API_KEY: k\n  KASPERSKY_API_URL: {}/api/v1\n",
            opentip.uri()
        ),
    )
    .unwrap();
    let out = run_kl_dnif(
        &["--config", yml.to_str().unwrap(), "get_domain_report_file", "$Domain"],
        br#"[{"$Domain":"a.com"}]"#,
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OpenTIP has no equivalent of get_domain_report_file"));
}
