//! A stream that runs for weeks: signals, several fields, many indicators.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

/// Answers every IP with a Red zone naming it, after `delay`.
async fn ip_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path_regex(r"^/api/ip/[0-9.]+$"))
        .respond_with(move |req: &wiremock::Request| {
            let ip = req.url.path().rsplit('/').next().unwrap_or_default().to_owned();
            ResponseTemplate::new(200)
                .set_body_json(json!({"Zone": "Red", "IpGeneralInfo": {"Ip": ip}}))
                .set_delay(delay)
        })
        .mount(&server)
        .await;
    server
}

fn ips(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("11.1.{}.{}", i / 200, i % 200 + 1)).collect()
}

const ENRICH: [&str; 7] = ["enrich", "--function", "get_ip_report", "--field", "ip", "--style", "kl"];

#[tokio::test]
async fn after_sigterm_with_stdin_open_every_answer_is_in_the_cache() {
    let server = ip_server(Duration::ZERO).await;
    let cache = tempfile::tempdir().unwrap();
    let (_d, cfg) = config(&format!("{}/api", server.uri()), &format!("  KL_CACHE_PATH: {}\n", cache.path().display()));
    let args: Vec<&str> = ENRICH.iter().copied().chain(["--config", &cfg]).collect();
    let input: String = ips(300).iter().map(|ip| format!("{}\n", json!({"ip": ip}))).collect();

    let mut child = command(&args).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(input.as_bytes()).await.unwrap();
    // stdin stays open: the stream is still running when the signal comes.
    for ip in ips(300) {
        let line = stdout.next_line().await.unwrap().expect("a line per line");
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["ip"], ip.as_str());
        assert_eq!(event["$KLZone"], "Red");
    }
    let pid = child.id().unwrap();
    kl_testkit::send_signal(pid, "TERM");
    let (status, stderr) = kl_testkit::wait_within(child, Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("300 lines, 300 enriched"), "{stderr}");
    drop(stdin);
    assert_eq!(server.received_requests().await.unwrap().len(), 300);

    // Everything answered was written to the cache: a re-run asks nothing.
    let again = run(&args, input.as_bytes()).await;
    assert_eq!(stdout_lines(&again).len(), 300);
    let summary = String::from_utf8_lossy(&again.stderr);
    assert!(summary.contains("; 0 requests, 300 cache hits"), "{summary}");
    assert_eq!(server.received_requests().await.unwrap().len(), 300);
}

#[tokio::test]
async fn a_signal_drains_stalled_lookups_within_the_drain_time_and_writes_every_line() {
    let server = kl_testkit::mock_with_a_stalled_ip("2.2.2.2", Duration::from_secs(120)).await;
    let (_d, cfg) =
        config(&format!("{}/api", server.uri()), "  KL_CACHE_PATH: off\n  KL_DRAIN_SECS: 1\n  KL_TIMEOUT_SECS: 300\n");
    let args: Vec<&str> = ENRICH.iter().copied().chain(["--config", &cfg]).collect();
    let mut child = command(&args).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(b"{\"ip\":\"1.1.1.1\"}\n{\"ip\":\"2.2.2.2\"}\n{\"ip\":\"3.3.3.3\"}\n").await.unwrap();
    let first = stdout.next_line().await.unwrap().unwrap();
    assert!(first.contains("Green"), "{first}");
    // The stalled lookup has reached the server.
    while server.received_requests().await.unwrap().len() < 3 {
        tokio::task::yield_now().await;
    }
    kl_testkit::send_signal(child.id().unwrap(), "INT");
    let rest: Vec<String> =
        [stdout.next_line().await.unwrap().unwrap(), stdout.next_line().await.unwrap().unwrap()].into();
    let (status, stderr) = kl_testkit::wait_within(child, Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {stderr}");
    let stalled: Value = serde_json::from_str(&rest[0]).unwrap();
    assert_eq!(stalled["ip"], "2.2.2.2");
    assert!(stalled["$KLError"].as_str().unwrap().contains("KL_DRAIN_SECS"), "{stalled}");
    assert!(stalled.get("$KLZone").is_none());
    assert!(rest[1].contains("3.3.3.3") && rest[1].contains("Green"), "{}", rest[1]);
    assert!(stderr.contains("3 lines, 2 enriched, 1 errors"), "{stderr}");
    drop(stdin);
}

#[tokio::test]
async fn several_fields_in_one_pass() {
    let server = ip_server(Duration::ZERO).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "  KL_CACHE_PATH: off\n");
    let input =
        b"{\"source\":{\"ip\":\"1.2.3.4\"},\"destination\":{\"ip\":\"5.6.7.8\"}}\n{\"source\":{\"ip\":\"5.6.7.8\"}}\n";
    let out = run(
        &[
            "enrich",
            "--function",
            "auto",
            "--field",
            "source.ip",
            "--field",
            "destination.ip",
            "--style",
            "ecs",
            "--config",
            &cfg,
        ],
        input,
    )
    .await;
    let lines = stdout_lines(&out);
    let entries = lines[0]["threat"]["enrichments"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["matched"]["field"], "source.ip");
    assert_eq!(entries[0]["indicator"]["ip"], "1.2.3.4");
    assert_eq!(entries[1]["matched"]["field"], "destination.ip");
    assert_eq!(entries[1]["indicator"]["ip"], "5.6.7.8");
    assert_eq!(lines[1]["threat"]["enrichments"].as_array().unwrap().len(), 1);
    // One request per distinct indicator across both fields.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);

    let out = run(
        &[
            "enrich",
            "--function",
            "auto",
            "--field",
            "source.ip=src_kl",
            "--field",
            "destination.ip=dst_kl",
            "--style",
            "nested",
            "--config",
            &cfg,
        ],
        input,
    )
    .await;
    let lines = stdout_lines(&out);
    assert_eq!(lines[0]["src_kl"]["zone"], "Red");
    assert_eq!(lines[0]["dst_kl"]["zone"], "Red");

    for style in ["nested", "kl"] {
        let out = run(
            &[
                "enrich",
                "--function",
                "auto",
                "--field",
                "source.ip",
                "--field",
                "destination.ip",
                "--style",
                style,
                "--config",
                &cfg,
            ],
            input,
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{style}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("each needs its own target") && stderr.contains("source.ip=TARGET"), "{stderr}");
    }
}

/// A warm stream writes byte for byte what the cold one wrote, in every
/// style: answers read from the cache are rendered on the cache's thread
/// (kl and nested, one field) or by the stream (ECS), kept packed in the
/// memo, and reused, and none of that may change a line.
#[tokio::test]
async fn a_warm_stream_writes_what_the_cold_one_wrote_in_every_style() {
    let server = kl_testkit::fixture_server().await;
    let indicators = [
        "185.220.101.4",
        "39.90.148.83",
        "45.155.205.233",
        "8.8.8.8",
        "93.184.216.34",
        "kaspersky.com",
        "secure-paypal-login.info",
        "nodata.example.org",
        "44D88612FEA8A8F36DE82E1278ABB02F",
        "not-recorded.example",
    ];
    // Each indicator several times, in an order that mixes first sights
    // and repeats, with a field of the event's own beside it.
    let input: String =
        (0..60).map(|i| format!("{}\n", json!({"n": i, "ip": indicators[(i * 7) % indicators.len()]}))).collect();
    let styles = [
        &["--style", "kl", "--field", "ip"][..],
        &["--style", "nested", "--field", "ip"],
        &["--style", "ecs", "--field", "ip"],
        &["--style", "kl", "--field", "ip=kl"][..],
    ];
    let args = |cfg: &str, style: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = ["enrich", "--function", "auto", "--config", cfg].map(String::from).to_vec();
        args.extend(style.iter().map(|s| s.to_string()));
        args
    };
    let mut colds = Vec::new();
    for style in styles {
        let cache = tempfile::tempdir().unwrap();
        let (_d, cfg) =
            config(&format!("{}/api", server.uri()), &format!("  KL_CACHE_PATH: {}\n", cache.path().display()));
        let args = args(&cfg, style);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cold = run(&args, input.as_bytes()).await;
        let warm = run(&args, input.as_bytes()).await;
        assert!(cold.status.success() && warm.status.success(), "{style:?}");
        assert_eq!(stdout_lines(&cold).len(), 60, "{style:?}");
        for (i, event) in stdout_lines(&cold).iter().enumerate() {
            assert_eq!(event["n"], i, "{style:?}: lines keep their order and their own fields");
        }
        assert_eq!(String::from_utf8_lossy(&warm.stdout), String::from_utf8_lossy(&cold.stdout), "{style:?}");
        let summary = String::from_utf8_lossy(&warm.stderr);
        assert!(summary.contains("; 0 requests,"), "{style:?}: {summary}");
        // What a stream renders alike for every event is kept with the
        // answers (not ECS output, which names each event's indicator).
        let forms: i64 = rusqlite::Connection::open(cache.path().join("kl-cache.sqlite3"))
            .unwrap()
            .query_row("SELECT count(*) FROM renderings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(forms > 0, style[1] != "ecs", "{style:?}: {forms} forms kept");
        colds.push(cold.stdout);
    }

    // Streams of every style, one after another on one cache, each find
    // the others' forms kept there and write exactly what they wrote cold.
    let cache = tempfile::tempdir().unwrap();
    let (_d, cfg) = config(&format!("{}/api", server.uri()), &format!("  KL_CACHE_PATH: {}\n", cache.path().display()));
    for round in 0..2 {
        for (style, cold) in styles.iter().zip(&colds) {
            let args = args(&cfg, style);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args, input.as_bytes()).await;
            assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(cold), "{style:?}, round {round}");
        }
    }
}
