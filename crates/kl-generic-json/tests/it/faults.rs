//! Server faults, hostile input and secrets, through kl-generic-json.

use kl_testkit::{Expect, FAULT_CONFIG, FaultServer, check, fatal_between_good_events, faults_between_good_events};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

async fn run_plan(server: &FaultServer, plan: &[(&str, Expect)], extra: &str) -> usize {
    let (_d, cfg) = config(&server.api_url(), &format!("{FAULT_CONFIG}{extra}"));
    let mut input = String::new();
    for (i, (ip, _)) in plan.iter().enumerate() {
        input.push_str(&format!("{}\n", json!({"n": i, "source": {"ip": ip}})));
        input.push_str("not json, passes through\n");
    }
    let before = server.requests();
    let out = run(
        &["enrich", "--function", "get_ip_report", "--field", "source.ip", "--style", "kl", "--config", &cfg],
        input.as_bytes(),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), plan.len() * 2, "one line out per line in");
    for (i, (ip, expect)) in plan.iter().enumerate() {
        let event: Value = serde_json::from_str(lines[2 * i]).unwrap();
        assert_eq!(event["n"], i, "order kept");
        check(&event, ip, expect).unwrap();
        assert_eq!(lines[2 * i + 1], "not json, passes through");
    }
    server.requests() - before
}

#[tokio::test]
async fn eleven_kinds_of_fault_between_good_events() {
    let server = FaultServer::start().await;
    let plan = faults_between_good_events(&server);
    run_plan(&server, &plan, "  KL_CACHE_PATH: off\n").await;
}

#[tokio::test]
async fn unauthorised_and_forbidden_stop_the_run() {
    for status in [401, 403] {
        let server = FaultServer::start().await;
        let plan = fatal_between_good_events(&server, status);
        // One request at a time. Lines are looked up concurrently, so any
        // of the good ones may go before it, but none goes after it.
        let sent = run_plan(&server, &plan, "  KL_CONCURRENCY: 1\n  KL_CACHE_PATH: off\n").await;
        assert!((1..=plan.len()).contains(&sent), "{status}: {sent} requests");
        assert!(server.paths().last().unwrap().contains("3.0.0.1"), "{status}: nothing is sent after the fatal answer");
    }
}

#[tokio::test]
async fn hostile_indicators_send_nothing() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "");
    let long = "a".repeat(100_000);
    let hostile: Vec<(&str, Value)> = vec![
        ("get_ip_report", json!("10.0.0.1")),
        ("get_ip_report", json!("192.168.1.1")),
        ("get_ip_report", json!("127.0.0.1")),
        ("get_ip_report", json!("8.8.8.8\u{0}")),
        ("get_ip_report", json!("../../etc/passwd")),
        ("get_ip_report", json!("8.8.8.8%2F..")),
        ("get_ip_report", json!("８.８.８.８")),
        ("get_ip_report", json!(long)),
        ("get_ip_report", json!(134744072)),
        ("get_ip_report", json!(null)),
        ("get_ip_report", json!(["8.8.8.8"])),
        ("get_ip_report", json!({"ip": "8.8.8.8"})),
        ("get_domain_report", json!("../evil.com")),
        ("get_domain_report", json!("evil.com%2Fx")),
        ("get_domain_report", json!("bü cher.de")),
        ("get_domain_report", json!("evil.com\r\nHost: x")),
        ("get_domain_report", json!(format!("{long}.com"))),
        ("get_domain_report", json!("")),
        ("get_domain_report", json!("8.8.8.8")),
        ("get_domain_report", json!("999.1.1.1")),
        ("get_domain_report", json!("host.local")),
        ("get_domain_report", json!("localhost")),
        ("get_domain_report", json!("nas.home.arpa")),
        ("get_domain_report", json!("bücher.example")),
        ("get_hash_report", json!("../44d88612fea8a8f36de82e1278abb02f")),
        ("get_hash_report", json!("44d88612fea8a8f36de82e1278abb02f%00")),
        ("get_hash_report", json!("４４d88612fea8a8f36de82e1278abb02f")),
        ("get_hash_report", json!(true)),
        ("get_url_report", json!("http://evil.example/\u{1b}[31m")),
        ("get_url_report", json!(format!("http://evil.com/{long}"))),
        ("get_url_report", json!("   ")),
        ("get_url_report", json!(42)),
        ("get_url_report", json!("/")),
        ("get_url_report", json!("?")),
        ("get_url_report", json!("#x")),
        ("get_url_report", json!("../")),
        ("get_url_report", json!("%2e%2e")),
        ("get_url_report", json!("file:///etc/passwd")),
        ("get_url_report", json!("javascript:alert(1)")),
        ("get_url_report", json!("http://10.0.0.5/admin")),
        ("get_url_report", json!("http://[::1]/")),
        ("get_url_report", json!("http://192.0.2.10/")),
        ("get_url_report", json!("http://intranet/x")),
        ("get_url_report", json!("https://jira.corp.internal/browse/X-1")),
        ("get_url_report", json!("http://user:pw@printer.local/")),
        ("auto", json!("1.2.3")),
        ("auto", json!("999.1.1.1")),
        ("auto", json!("010.1.1.1")),
        ("auto", json!("javascript:alert(1)")),
        ("auto", json!("host.local")),
    ];
    for (function, value) in hostile {
        let line = format!("{}\n", json!({"v": value}));
        let out = run(
            &["enrich", "--function", function, "--field", "v", "--style", "kl", "--config", &cfg, "--quiet"],
            line.as_bytes(),
        )
        .await;
        let event = &stdout_lines(&out)[0];
        let kl: Vec<&String> = event.as_object().unwrap().keys().filter(|k| k.starts_with("$KL")).collect();
        assert!(kl == ["$KLError"] || kl == ["$KLSkipped"], "{function} {value}: {event}");
        if let Some(msg) = event["$KLError"].as_str() {
            assert!(
                (msg.starts_with("invalid") || msg.starts_with("cannot tell the type")) && msg.len() < 300,
                "a short, clear reason: {msg}"
            );
        }
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
    let url = format!("{}/api", server.uri());
    let cfg = kl_testkit::write_basic_config(
        dir.path(),
        "kl.yml",
        &url,
        "kl-user",
        "pw-GENERIC-5ecret",
        "  KL_CACHE_PATH: off\n",
    );
    let cfg = cfg.to_str().unwrap();
    let mut outputs = Vec::new();
    let mut cmd = command(&["enrich", "--function", "auto", "--field", "ip", "--config", cfg]);
    cmd.env("RUST_LOG", "trace");
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(b"{\"ip\":\"8.8.8.8\"}\n").await.unwrap();
    outputs.push(child.wait_with_output().await.unwrap());
    let mut cmd = command(&["lookup", "get_ip_report", "8.8.4.4", "--config", cfg]);
    cmd.env("RUST_LOG", "trace");
    outputs.push(cmd.output().await.unwrap());
    for out in outputs {
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("TRACE"), "trace logging ran");
        let everything = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
        // base64("kl-user:pw-GENERIC-5ecret")
        for secret in ["pw-GENERIC-5ecret", "a2wtdXNlcjpwdy1HRU5FUklDLTVlY3JldA"] {
            assert!(!everything.contains(secret), "{secret} leaked");
        }
    }
    assert_eq!(
        server.received_requests().await.unwrap()[0].headers["authorization"],
        "Basic a2wtdXNlcjpwdy1HRU5FUklDLTVlY3JldA=="
    );
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_at_start() {
    let (_d, cfg) = config("http://tip.example.com/api", "");
    let out =
        run(&["enrich", "--function", "auto", "--field", "ip", "--config", &cfg], b"{\"ip\":\"8.8.8.8\"}\n").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KASPERSKY_API_URL: plain http is refused"));
}
