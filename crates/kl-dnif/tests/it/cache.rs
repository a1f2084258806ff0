//! The persistent cache through kl-dnif: a re-run costs no request and
//! gives the same output; errors are never cached; `off` turns it off.

use serde_json::json;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_rerun_is_answered_from_the_cache_beside_the_config() {
    let server = fixture_server().await;
    let (dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let input = std::fs::read(fixtures().join("events/ip.json")).unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"];
    let first = run_kl_dnif(&args, &input, &[]).await;
    let sent = requests(&server).await;
    assert!(sent > 0);
    assert!(
        dir.path().join("cache").join(kl_core::store::CACHE_FILE).is_file(),
        "the cache sits in cache/ beside the config"
    );
    let second = run_kl_dnif(&args, &input, &[]).await;
    assert_eq!(requests(&server).await, sent, "the re-run sent no request");
    assert_eq!(parse(&first), parse(&second), "and gave identical output");
    // Another function asks for other sections: not a cache hit.
    run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report_file", "$SrcIP"], &input, &[]).await;
    assert!(requests(&server).await > sent);
}

#[tokio::test]
async fn errors_are_not_cached_and_off_means_off() {
    let server = MockServer::start().await;
    Mock::given(path("/api/ip/1.0.0.1")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    Mock::given(path("/api/ip/1.0.0.2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Red"})))
        .mount(&server)
        .await;
    let batch = br#"[{"ip":"1.0.0.1"},{"ip":"1.0.0.2"}]"#;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "  KL_RETRIES: 1\n");
    let args = ["--config", cfg.to_str().unwrap(), "get_ip_report", "ip"];
    run_kl_dnif(&args, batch, &[]).await;
    run_kl_dnif(&args, batch, &[]).await;
    let paths: Vec<String> =
        server.received_requests().await.unwrap().iter().map(|r| r.url.path().to_owned()).collect();
    assert_eq!(paths.iter().filter(|p| p.ends_with("1.0.0.1")).count(), 2, "the failure is asked again");
    assert_eq!(paths.iter().filter(|p| p.ends_with("1.0.0.2")).count(), 1, "the answer is cached");

    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "  KL_RETRIES: 1\n  KL_CACHE_PATH: off\n");
    let args = ["--config", cfg.to_str().unwrap(), "get_ip_report", "ip"];
    let before = requests(&server).await;
    run_kl_dnif(&args, batch, &[]).await;
    run_kl_dnif(&args, batch, &[]).await;
    assert_eq!(requests(&server).await - before, 4);
}

#[tokio::test]
async fn an_unusable_cache_is_bypassed_with_a_warning() {
    let server = fixture_server().await;
    let (dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    std::fs::write(dir.path().join("cache").join(kl_core::store::CACHE_FILE), b"garbage, not SQLite".repeat(200))
        .unwrap();
    let out =
        run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], br#"[{"$SrcIP":"8.8.8.8"}]"#, &[])
            .await;
    assert_eq!(parse(&out)[0]["$KLZone"], "Green");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bypassed"));
}

#[tokio::test]
async fn quota_use_is_reported_and_warned_once() {
    let server = MockServer::start().await;
    let licence = json!({"Zone": "Green", "LicenseInfo": {"DayRequests": 1850, "DayQuota": 2000}});
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(licence))
        .mount(&server)
        .await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let batch = br#"[{"ip":"1.0.0.1"},{"ip":"1.0.0.2"},{"ip":"1.0.0.3"}]"#;
    let out = run_kl_dnif(
        &["--config", cfg.to_str().unwrap(), "get_ip_report", "ip"],
        batch,
        &[("RUST_LOG", "warn,kl_dnif=debug")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("1850 of the day's 2000").count(), 1, "{stderr}");
    assert!(stderr.contains("quota_used=1850") && stderr.contains("quota=2000"), "{stderr}");
}

#[tokio::test]
async fn parallel_processes_share_the_cache() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Yellow"})))
        .mount(&server)
        .await;
    let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let cfg = cfg.to_str().unwrap().to_owned();
    let batches: Vec<String> = (0..4)
        .map(|p| {
            let events: Vec<serde_json::Value> =
                (0..50).map(|i| json!({"ip": format!("11.{p}.0.{}", i + 1)})).collect();
            serde_json::to_string(&events).unwrap()
        })
        .collect();
    // Four DNIF lookups at once, as DNIF runs them.
    let runs: Vec<_> = batches
        .iter()
        .map(|b| {
            let (cfg, b) = (cfg.clone(), b.clone());
            tokio::spawn(
                async move { run_kl_dnif(&["--config", &cfg, "get_ip_report", "ip"], b.as_bytes(), &[]).await },
            )
        })
        .collect();
    for run in runs {
        let out = run.await.unwrap();
        assert!(out.status.success());
        assert!(!String::from_utf8_lossy(&out.stderr).contains("bypassed"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = requests(&server).await;
    assert_eq!(sent, 200);
    let all: Vec<serde_json::Value> =
        batches.iter().flat_map(|b| serde_json::from_str::<Vec<serde_json::Value>>(b).unwrap()).collect();
    let out = run_kl_dnif(&["--config", &cfg, "get_ip_report", "ip"], &serde_json::to_vec(&all).unwrap(), &[]).await;
    assert_eq!(parse(&out).len(), 200);
    assert_eq!(requests(&server).await, sent, "every answer written by the four is read back");
}

/// Answers fetched with another `KL_RECORDS_COUNT` are not served: the
/// records per list differ.
#[tokio::test]
async fn the_cache_key_holds_the_records_count() {
    let server = fixture_server().await;
    let cache = tempfile::tempdir().unwrap();
    let cache_line = format!("  KL_CACHE_PATH: {}\n", cache.path().display());
    let input = br#"[{"ip":"8.8.8.8"}]"#;
    let mut sent = Vec::new();
    for count in ["", "  KL_RECORDS_COUNT: 10\n", "  KL_RECORDS_COUNT: 10\n", "  KL_RECORDS_COUNT: 20\n"] {
        let (_dir, cfg) = config_dir(&format!("{}/api", server.uri()), &format!("{cache_line}{count}"));
        run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "ip"], input, &[]).await;
        sent.push(requests(&server).await);
    }
    assert_eq!(sent, [1, 2, 2, 3], "a new count asks again; the same count is served from the cache");
}

/// kl-generic-json, built beside kl-dnif by `cargo test --workspace`.
fn sibling_generic_json() -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_kl-dnif")).with_file_name("kl-generic-json");
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and {} is not built", path.display());
    eprintln!("skipped: {} is not built (run cargo test --workspace)", path.display());
    None
}

#[tokio::test]
async fn what_kl_generic_json_put_in_redis_costs_kl_dnif_nothing() {
    let Some(redis) = kl_testkit::redis::RedisServer::start(Some("dnif-REDIS-pw")) else { return };
    let Some(generic) = sibling_generic_json() else { return };
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::path_regex(r"^/api/ip/"))
        .respond_with(|req: &wiremock::Request| {
            let ip = req.url.path().rsplit('/').next().unwrap_or_default().to_owned();
            ResponseTemplate::new(200)
                .set_body_json(json!({"Zone": "Orange", "IpGeneralInfo": {"Ip": ip, "CountryCode": "NL"}}))
        })
        .mount(&server)
        .await;
    let (dir, cfg) = config_dir(&format!("{}/api", server.uri()), &format!("  KL_CACHE_URL: {}\n", redis.url()));
    let ips: Vec<String> = (0..200).map(|i| format!("12.0.{}.{}", i / 100, i % 100 + 1)).collect();

    let ndjson: String = ips.iter().map(|ip| format!("{}\n", json!({ "src": ip }))).collect();
    let mut cmd = kl_testkit::command(
        generic.to_str().unwrap(),
        &["enrich", "--function", "auto", "--field", "src", "--config", cfg.to_str().unwrap()],
    );
    cmd.env("XDG_CACHE_HOME", dir.path().join("xdg"));
    let out = kl_testkit::run_with_stdin(cmd, ndjson.as_bytes()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(requests(&server).await, 200);

    let batch = serde_json::to_vec(&ips.iter().map(|ip| json!({ "$SrcIP": ip })).collect::<Vec<_>>()).unwrap();
    let out = run_kl_dnif(&["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"], &batch, &[]).await;
    let events = parse(&out);
    assert_eq!(events.len(), 200);
    for (event, ip) in events.iter().zip(&ips) {
        assert_eq!(event["$SrcIP"], ip.as_str());
        assert_eq!(event["$KLZone"], "Orange", "{event}");
        assert_eq!(event["$KLCountryCode"], "NL", "{event}");
    }
    assert_eq!(requests(&server).await, 200, "kl-dnif sent nothing");
    assert!(!dir_has_sqlite(dir.path()), "with KL_CACHE_URL, no SQLite cache is made");
}

fn dir_has_sqlite(dir: &Path) -> bool {
    dir.join("cache").join(kl_core::store::CACHE_FILE).exists()
}
