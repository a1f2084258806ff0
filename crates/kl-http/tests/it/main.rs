//! kl-http as a pipeline calls it: the release contract, against local mocks.

pub(crate) use kl_testkit::fixture_server;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use wiremock::matchers::{any, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod recipes;

pub(crate) const TOKEN: &str = "client-token-0123456789abcdef";
const PASSWORD: &str = "pw-HTTP-5ecret";

/// A running kl-http; killed when dropped.
pub(crate) struct Service {
    child: tokio::process::Child,
    pub(crate) base: String,
    stderr: Arc<std::sync::Mutex<String>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts kl-http on a free loopback port with a Basic-auth config
    /// against `api`, plus `extra` config lines and environment.
    pub(crate) async fn start(api: &str, extra: &str, env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let cfg = kl_testkit::write_basic_config(
            dir.path(),
            "kl.yml",
            api,
            "kl-user",
            PASSWORD,
            &format!("  KL_CACHE_PATH: off\n  KL_HTTP_TOKENS: {TOKEN}\n{extra}"),
        );
        let mut cmd = kl_testkit::command(
            env!("CARGO_BIN_EXE_kl-http"),
            &["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        );
        cmd.envs(env.iter().copied()).stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let base = loop {
            let line = lines.next_line().await.unwrap().expect("kl-http ended before listening");
            stderr.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split(',').next().unwrap().to_owned();
            }
        };
        let log = stderr.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Service { child, base, stderr, reader: Some(reader), _dir: dir }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn client() -> reqwest::Client {
        // reqwest is built without a crypto provider of its own (kl-core
        // hands it a finished TLS config); a test client needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        Self::client().get(self.url(path)).bearer_auth(TOKEN).send().await.unwrap()
    }

    /// Everything the service wrote on stderr, once it has ended.
    async fn drained_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.await;
        }
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Every IP answers Red with its own address; `delay` per answer.
async fn ip_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path_regex(r"^/api/ip/[0-9.]+$"))
        .respond_with(move |req: &wiremock::Request| {
            let ip = req.url.path().rsplit('/').next().unwrap_or_default().to_owned();
            ResponseTemplate::new(200)
                .set_body_json(json!({"Zone": "Red", "IpGeneralInfo": {"Ip": ip, "CountryCode": "NL"}}))
                .set_delay(delay)
        })
        .mount(&server)
        .await;
    server
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/responses")
}

#[tokio::test]
async fn a_get_answers_as_kl_generic_json_lookup_does() {
    let server = fixture_server().await;
    let svc = Service::start(&format!("{}/api", server.uri()), "", &[]).await;
    for (function, indicator) in [
        ("auto", "39.90.148.83"),
        ("auto", "secure-paypal-login.info"),
        ("get_hash_report", "44d88612fea8a8f36de82e1278abb02f"),
    ] {
        let resp = svc.get(&format!("/v1/lookup/{function}/{indicator}")).await;
        assert_eq!(resp.status(), 200, "{indicator}");
        let served: Value = resp.json().await.unwrap();
        // What `kl-generic-json lookup` prints: the same code, over the
        // same recorded answers.
        let offline = kl_cli::setup::offline_engine(&fixtures()).unwrap();
        let choice = function.parse().unwrap();
        let printed = kl_cli::lookup::lookup(&offline, choice, indicator, kl_schema::Style::Nested, "kaspersky").await;
        assert_eq!(served, printed.object, "{indicator}");
        assert!(served["kaspersky"]["zone"].is_string(), "{served}");
    }
    let kl: Value = svc.get("/v1/lookup/auto/39.90.148.83?style=kl").await.json().await.unwrap();
    assert_eq!(kl["$KLZone"], "Red");
    // A URL is one percent-encoded path segment.
    let url = "http%3A%2F%2Fsecure-paypal-login.info%2Fsignin%3Fsession%3D1%26next%3D%2Faccount";
    let resp = svc.get(&format!("/v1/lookup/get_url_report/{url}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["kaspersky"]["zone"], "Red");
}

#[tokio::test]
async fn clients_need_a_valid_token_and_invalid_requests_cost_nothing() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Red"})))
        .expect(0)
        .mount(&server)
        .await;
    let svc = Service::start(&format!("{}/api", server.uri()), "", &[]).await;
    let client = Service::client();
    let no_token = client.get(svc.url("/v1/lookup/auto/8.8.8.8")).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .get(svc.url("/v1/lookup/auto/8.8.8.8"))
        .bearer_auth("client-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(client.get(svc.url("/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(svc.url("/healthz")).send().await.unwrap().status(), 200, "healthz needs no token");
    for bad in [
        "/v1/lookup/auto/1.2.3",
        "/v1/lookup/get_ip_report/not-an-ip",
        "/v1/lookup/get_nothing/8.8.8.8",
        "/v1/lookup/get_url_report/javascript%3Aalert(1)",
    ] {
        let resp = svc.get(bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["status"], 400);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{problem}");
    }
    // A private address is answered (skipped), never sent.
    let skipped: Value = svc.get("/v1/lookup/auto/10.1.2.3").await.json().await.unwrap();
    assert_eq!(skipped["kaspersky"]["skipped"], "private or reserved address");
    // wiremock checks expect(0) when the server drops.
}

#[tokio::test]
async fn many_clients_asking_the_same_indicators_cost_one_request_each() {
    let server = ip_server(Duration::from_millis(5)).await;
    let svc = Arc::new(Service::start(&format!("{}/api", server.uri()), "", &[]).await);
    let ips: Arc<Vec<String>> = Arc::new((0..200).map(|i| format!("11.2.{}.{}", i / 100, i % 100 + 1)).collect());
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..64 {
        let (svc, ips) = (svc.clone(), ips.clone());
        clients.spawn(async move {
            let client = Service::client();
            for k in 0..50 {
                let ip = &ips[(c * 7 + k * 13) % ips.len()];
                let resp = client
                    .get(svc.url(&format!("/v1/lookup/get_ip_report/{ip}")))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["kaspersky"]["zone"], "Red", "{v}");
            }
        });
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    let asked: std::collections::HashSet<usize> =
        (0..64).flat_map(|c| (0..50).map(move |k| (c * 7 + k * 13) % 200)).collect();
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        asked.len(),
        "one upstream request per distinct indicator"
    );
    let metrics = svc.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("kl_http_requests_total"), "{metrics}");
    assert!(metrics.contains(&format!("kl_upstream_requests_total{{status=\"200\"}} {}", asked.len())), "{metrics}");
    for name in [
        "kl_memory_hits_total",
        "kl_lookup_duration_seconds_bucket",
        "kl_lookups_in_flight",
        "kl_upstream_retries_total",
    ] {
        assert!(metrics.contains(name), "{name}: {metrics}");
    }
    assert!(
        metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).all(|l| l.starts_with("kl_")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_batch_comes_back_in_order_with_errors_in_place_and_has_a_limit() {
    let server = ip_server(Duration::ZERO).await;
    let svc = Service::start(&format!("{}/api", server.uri()), "  KL_HTTP_MAX_BATCH: 3\n", &[]).await;
    let client = Service::client();
    let resp = client
        .post(svc.url("/v1/lookup"))
        .bearer_auth(TOKEN)
        .json(&json!({"function": "auto", "indicators": ["1.1.1.1", "not an indicator", "8.8.8.8"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["kaspersky"]["zone"], "Red");
    assert!(results[1]["kaspersky"]["error"].as_str().unwrap().contains("cannot tell the type"));
    assert_eq!(results[2]["kaspersky"]["zone"], "Red");
    let too_many = client
        .post(svc.url("/v1/lookup"))
        .bearer_auth(TOKEN)
        .json(&json!({"function": "auto", "indicators": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 413);
    let garbage = client.post(svc.url("/v1/lookup")).bearer_auth(TOKEN).body("not json").send().await.unwrap();
    assert_eq!(garbage.status(), 400);
}

#[tokio::test]
async fn enrich_streams_ndjson_as_kl_generic_json_does() {
    let server = ip_server(Duration::ZERO).await;
    let svc = Service::start(&format!("{}/api", server.uri()), "", &[]).await;
    let body = "{\"ip\":\"1.2.3.4\",\"n\":1}\nnot json\n{\"n\":3}\n{\"ip\":\"10.0.0.1\"}\n";
    let resp = Service::client()
        .post(svc.url("/v1/enrich?function=get_ip_report&field=ip&style=kl"))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("{\"ip\":\"1.2.3.4\",\"n\":1,\"$KLZone\":\"Red\""), "{text}");
    assert_eq!(lines[1], "not json");
    assert_eq!(lines[2], "{\"n\":3}");
    assert!(lines[3].contains("$KLSkipped"));
    let bad =
        Service::client().post(svc.url("/v1/enrich?field=ip")).bearer_auth(TOKEN).body("{}").send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn after_a_fatal_answer_lookups_get_503_and_readyz_says_so() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(401)).mount(&server).await;
    let svc = Service::start(&format!("{}/api", server.uri()), "", &[]).await;
    assert_eq!(svc.get("/readyz").await.status(), 200);
    let first: Value = svc.get("/v1/lookup/auto/8.8.8.8").await.json().await.unwrap();
    assert!(first["kaspersky"]["error"].as_str().unwrap().contains("401"), "{first}");
    let after = svc.get("/v1/lookup/auto/8.8.4.4").await;
    assert_eq!(after.status(), 503);
    assert!(after.headers().contains_key("retry-after"));
    assert_eq!(svc.get("/readyz").await.status(), 503);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn sigterm_ends_the_service_within_five_seconds() {
    let server = ip_server(Duration::from_millis(200)).await;
    let mut svc = Service::start(&format!("{}/api", server.uri()), "", &[]).await;
    // A request in progress when the signal comes is still answered.
    let url = svc.url("/v1/lookup/auto/9.9.9.9");
    let in_flight = tokio::spawn(async move { Service::client().get(url).bearer_auth(TOKEN).send().await });
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.received_requests().await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the request reached the upstream");
    kl_testkit::send_signal(svc.child.id().unwrap(), "TERM");
    let status =
        tokio::time::timeout(Duration::from_secs(5), svc.child.wait()).await.expect("ended within 5 s").unwrap();
    assert!(status.success(), "{status:?}");
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn listening_beyond_loopback_needs_client_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kl.yml");
    std::fs::write(&cfg, "lookup_plugin:\n  KASPERSKY_API_TOKEN: t\n").unwrap();
    let out = kl_testkit::run_with_stdin(
        kl_testkit::command(
            env!("CARGO_BIN_EXE_kl-http"),
            &["--config", cfg.to_str().unwrap(), "--listen", "0.0.0.0:0"],
        ),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KL_HTTP_TOKENS"));
}

#[tokio::test]
async fn no_secret_appears_in_the_log_at_trace_level() {
    let server = ip_server(Duration::ZERO).await;
    let svc = Service::start(&format!("{}/api", server.uri()), "", &[("RUST_LOG", "trace")]).await;
    svc.get("/v1/lookup/auto/8.8.8.8").await;
    let _ =
        Service::client().get(svc.url("/v1/lookup/auto/8.8.8.8")).bearer_auth("wrong-token-0000000000000").send().await;
    let sent = &server.received_requests().await.unwrap()[0];
    let basic = sent.headers["authorization"].to_str().unwrap().to_owned();
    // The whole log: once the process has ended, the reader has all of it.
    let mut svc = svc;
    kl_testkit::send_signal(svc.child.id().unwrap(), "TERM");
    svc.child.wait().await.unwrap();
    let log = svc.drained_log().await;
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "trace logging ran: {log}");
    for secret in [PASSWORD, TOKEN, basic.trim_start_matches("Basic "), "wrong-token-0000000000000"] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
}
