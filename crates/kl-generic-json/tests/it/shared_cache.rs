//! The Redis cache (`KL_CACHE_URL`) against a real `redis-server` on a
//! free loopback port: answers shared between processes, TTLs, the race on
//! new indicators, Redis dying mid-stream, and the password never shown.

use std::time::Duration;

use kl_testkit::redis::RedisServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

const PASSWORD: &str = "redis-PW-5ecret";

/// Answers every IP and domain after `delay`: a Red zone naming it; the
/// domains under `grey.example.com` get 404 (nothing known).
async fn api(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path_regex(r"^/api/(ip|domain)/[^/]+$"))
        .respond_with(move |req: &wiremock::Request| {
            let name = req.url.path().rsplit('/').next().unwrap_or_default().to_owned();
            if name.ends_with("grey.example.com") {
                return ResponseTemplate::new(404).set_delay(delay);
            }
            ResponseTemplate::new(200)
                .set_body_json(json!({"Zone": "Red", "IpGeneralInfo": {"Ip": name}, "LicenseInfo": {"DayRequests": 77, "DayQuota": 5000}}))
                .set_delay(delay)
        })
        .mount(&server)
        .await;
    server
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

fn ndjson(field: &str, values: &[String]) -> String {
    values.iter().map(|v| format!("{}\n", json!({ field: v }))).collect()
}

fn ips(n: usize, third: u8) -> Vec<String> {
    (0..n).map(|i| format!("11.{third}.{}.{}", i / 200, i % 200 + 1)).collect()
}

fn enrich<'a>(function: &'a str, field: &'a str, cfg: &'a str) -> Vec<&'a str> {
    vec!["enrich", "--function", function, "--field", field, "--style", "kl", "--config", cfg]
}

#[tokio::test]
async fn processes_share_answers_and_every_entry_expires_within_its_ttl() {
    let Some(redis) = RedisServer::start(Some(PASSWORD)) else { return };
    let api = api(Duration::ZERO).await;
    let extra = format!("  KL_CACHE_URL: {}\n  KL_CACHE_TTL_SECS: 3600\n  KL_CACHE_GREY_TTL_SECS: 600\n", redis.url());
    let (_d, cfg) = config(&format!("{}/api", api.uri()), &extra);
    let addresses = ips(200, 1);

    let first = run(&enrich("get_ip_report", "ip", &cfg), ndjson("ip", &addresses).as_bytes()).await;
    let lines = stdout_lines(&first);
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l["$KLZone"] == "Red"));
    assert_eq!(requests(&api).await, 200, "one request per distinct address");

    // A second process (its own SQLite folder, unused) finds them all.
    let second = run(&enrich("auto", "ip", &cfg), ndjson("ip", &addresses).as_bytes()).await;
    let again = stdout_lines(&second);
    assert_eq!(again, lines, "the same fields from the shared cache");
    assert_eq!(requests(&api).await, 200, "the second process sends nothing");
    let summary = String::from_utf8_lossy(&second.stderr);
    assert!(summary.contains("0 requests, 200 cache hits"), "{summary}");
    assert!(summary.contains("quota 77/5000"), "the fleet's quota figure, though this run sent nothing: {summary}");

    // Grey answers keep the shorter lifetime.
    let greys: Vec<String> = (0..20).map(|i| format!("n{i}.grey.example.com")).collect();
    let grey = run(&enrich("get_domain_report", "domain", &cfg), ndjson("domain", &greys).as_bytes()).await;
    assert_eq!(stdout_lines(&grey).len(), 20);

    let answers = redis.keys("kl:answer:*");
    assert_eq!(answers.len(), 220, "{answers:?}");
    for key in &answers {
        let ttl = redis.command(&["PTTL", key]).int();
        let limit = if key.contains("grey.example.com") { 600_000 } else { 3_600_000 };
        assert!(ttl > 0 && ttl <= limit, "{key}: PTTL {ttl} not within {limit}");
    }
    let everything = redis.keys("*");
    assert!(everything.iter().all(|k| k.starts_with("kl:")), "{everything:?}");
    assert!(redis.keys("kl:lock:*").is_empty(), "every lock was released");
    for key in &everything {
        assert!(redis.command(&["PTTL", key]).int() > 0, "{key} never expires");
    }

    // Another prefix is another cache.
    let (_d2, other) = config(&format!("{}/api", api.uri()), &format!("{extra}  KL_CACHE_KEY_PREFIX: 'fleet-b:'\n"));
    let third = run(&enrich("get_ip_report", "ip", &other), ndjson("ip", &addresses[..10]).as_bytes()).await;
    assert_eq!(stdout_lines(&third).len(), 10);
    assert_eq!(requests(&api).await, 230);
    assert_eq!(redis.keys("fleet-b:answer:*").len(), 10);
}

#[tokio::test]
async fn four_processes_racing_on_new_domains_ask_for_each_about_once() {
    let Some(redis) = RedisServer::start(Some(PASSWORD)) else { return };
    let api = api(Duration::from_millis(40)).await;
    let (_d, cfg) = config(&format!("{}/api", api.uri()), &format!("  KL_CACHE_URL: {}\n", redis.url()));
    let domains: Vec<String> = (0..300).map(|i| format!("race{i}.example.com")).collect();

    let mut runs = Vec::new();
    for p in 0..4 {
        // Each process meets the domains in its own order.
        let mut mine = domains.clone();
        mine.rotate_left(p * 75);
        let input = ndjson("domain", &mine);
        let args: Vec<String> = enrich("get_domain_report", "domain", &cfg).iter().map(|s| s.to_string()).collect();
        runs.push(tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, input.as_bytes()).await
        }));
    }
    for r in runs {
        let out = r.await.unwrap();
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 300);
        assert!(lines.iter().all(|l| l["$KLZone"] == "Red"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = requests(&api).await;
    assert!((300..=330).contains(&sent), "4 processes on 300 new domains sent {sent} requests");
}

#[tokio::test]
async fn redis_dying_mid_stream_loses_no_line_and_warns_once() {
    let Some(mut redis) = RedisServer::start(Some(PASSWORD)) else { return };
    let api = api(Duration::ZERO).await;
    let (_d, cfg) = config(&format!("{}/api", api.uri()), &format!("  KL_CACHE_URL: {}\n", redis.url()));
    let addresses = ips(3000, 2);

    let mut child = command(&enrich("get_ip_report", "ip", &cfg)).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (first, rest) = addresses.split_at(1000);
    stdin.write_all(ndjson("ip", first).as_bytes()).await.unwrap();
    for ip in first {
        let line = stdout.next_line().await.unwrap().expect("a line per line");
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["ip"], ip.as_str());
    }
    assert!(!redis.keys("kl:answer:*").is_empty());
    redis.kill();

    let input = ndjson("ip", rest);
    let writer = tokio::spawn(async move {
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
    });
    for ip in rest {
        let line = stdout.next_line().await.unwrap().expect("a line per line after Redis died");
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["ip"], ip.as_str());
        assert_eq!(event["$KLZone"], "Red", "{event}");
    }
    assert_eq!(stdout.next_line().await.unwrap(), None);
    writer.await.unwrap();
    let (status, stderr) = kl_testkit::wait_within(child, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr.matches("the Redis cache at").count(), 1, "one warning: {stderr}");
    assert!(stderr.contains("3000 lines, 3000 enriched"), "{stderr}");
    assert_eq!(requests(&api).await, 3000);
    assert!(!stderr.contains(PASSWORD));
}

#[tokio::test]
async fn the_redis_password_appears_in_no_output() {
    let Some(redis) = RedisServer::start(Some(PASSWORD)) else { return };
    let api = api(Duration::ZERO).await;
    let ok = format!("  KL_CACHE_URL: {}\n", redis.url());
    let wrong = format!("  KL_CACHE_URL: redis://:wrong-{PASSWORD}@127.0.0.1:{}/0\n", redis.port());
    let dead = format!("  KL_CACHE_URL: redis://:{PASSWORD}@127.0.0.1:1/0\n");
    let input = ndjson("ip", &ips(20, 3));
    for extra in [ok, wrong, dead] {
        let (_d, cfg) = config(&format!("{}/api", api.uri()), &extra);
        let mut outputs = Vec::new();
        let mut cmd = command(&enrich("get_ip_report", "ip", &cfg));
        cmd.env("RUST_LOG", "trace");
        let out = kl_testkit::run_with_stdin(cmd, input.as_bytes()).await;
        assert_eq!(stdout_lines(&out).len(), 20, "{}", String::from_utf8_lossy(&out.stderr));
        outputs.push(out);
        let mut cmd = command(&["check", "--config", &cfg]);
        cmd.env("RUST_LOG", "trace");
        let check = cmd.output().await.unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        let text = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(text.contains("cache     Redis at redis://[redacted]@127.0.0.1:"), "{text}");
        outputs.push(check);
        let mut cmd = command(&["check", "--json", "--config", &cfg]);
        cmd.env("RUST_LOG", "trace");
        outputs.push(cmd.output().await.unwrap());
        for out in &outputs {
            for text in [&out.stdout, &out.stderr] {
                let text = String::from_utf8_lossy(text);
                assert!(!text.contains(PASSWORD), "the Redis password in: {text}");
            }
        }
    }

    // A config error names the key and shows the URL redacted.
    let both = format!("  KL_CACHE_URL: {}\n  KL_CACHE_PATH: /tmp/kl-cache\n", redis.url());
    let (_d, cfg) = config(&format!("{}/api", api.uri()), &both);
    let out = run(&enrich("get_ip_report", "ip", &cfg), input.as_bytes()).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KL_CACHE_URL") && stderr.contains("KL_CACHE_PATH"), "{stderr}");
    assert!(!stderr.contains(PASSWORD) && out.stdout.is_empty(), "{stderr}");
}
