//! A TIP server that misbehaves on purpose, for fault-injection tests.
//!
//! wiremock covers statuses and delays; this server also breaks
//! connections mid-body and streams bodies of any size, which a mock
//! framework cannot. Each IPv4 path `/api/ip/<address>` gets the
//! [`Fault`] registered for it; unregistered addresses get a good answer
//! naming that address, so a test can tell every event's data apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Environment variables a test clears before running a kl binary, so the
/// developer's own settings cannot leak in: every config key, and the
/// other variables kl reads.
pub fn env_to_clear() -> impl Iterator<Item = &'static str> {
    kl_model::keys::ALL.iter().map(|k| k.name).chain(kl_model::keys::OTHER_ENV.iter().copied())
}

/// A kl binary as tests run it: pipes for all three streams, and the
/// developer's own kl settings cleared from the environment.
pub fn command(binary: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for key in env_to_clear() {
        cmd.env_remove(key);
    }
    cmd
}

/// Runs `cmd` with `stdin` written in full, then closed, and waits for it.
pub async fn run_with_stdin(mut cmd: tokio::process::Command, stdin: &[u8]) -> std::process::Output {
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    // Written from another task: a child that answers as it reads must not
    // block on a full stdout pipe while we still write.
    let writer = tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    let out = child.wait_with_output().await.expect("wait");
    let _ = writer.await;
    out
}

/// Writes a self-signed client certificate and its key to `dir/client.pem`.
pub fn write_client_pem(dir: &std::path::Path) -> std::path::PathBuf {
    let ck = rcgen::generate_simple_self_signed(vec!["kl-test-client".to_owned()]).expect("rcgen");
    let path = dir.join("client.pem");
    std::fs::write(&path, format!("{}{}", ck.cert.pem(), ck.key_pair.serialize_pem())).expect("write pem");
    path
}

/// Writes `dir/<name>`: a config with Basic authentication (`user`,
/// `password`, a fresh client PEM beside it) against `api_url`, plus
/// `extra` lines. Returns its path.
pub fn write_basic_config(
    dir: &std::path::Path,
    name: &str,
    api_url: &str,
    user: &str,
    password: &str,
    extra: &str,
) -> std::path::PathBuf {
    write_client_pem(dir);
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "lookup_plugin:\n  KASPERSKY_API_USERNAME: {user}\n  KASPERSKY_API_PASSWORD: {password}\n  KASPERSKY_API_CERT_PATH: client.pem\n  KASPERSKY_API_URL: {api_url}\n{extra}"
        ),
    )
    .expect("write config");
    path
}

/// Decodes a percent-encoded fixture name back to its indicator.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8().expect("UTF-8").into_owned()
}

/// How the server answers one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 200 with data that names the address.
    Good,
    /// This status with an empty JSON body.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooManyRequests { retry_after_secs: u64 },
    /// Reads the request and never answers.
    Stall,
    /// Promises a body, sends part of it, then resets the connection.
    ResetMidBody,
    /// 200 with JSON cut short (the length header matches the cut body).
    TruncatedJson,
    /// 200 with an HTML page.
    Html,
    /// 200 with a chunked body of this many bytes, without a length header.
    Huge { bytes: usize },
}

/// The running server.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    requests: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FaultServer {
    /// Starts on a free loopback port.
    pub async fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let faults: Arc<Mutex<HashMap<String, Fault>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r, l) = (faults.clone(), requests.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (f, r, l) = (f.clone(), r.clone(), l.clone());
                tokio::spawn(async move { serve(stream, f, r, l).await });
            }
        });
        FaultServer { addr, faults, requests, log }
    }

    /// The base URL to configure (`http://127.0.0.1:<port>/api`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Makes `ip` answer with `fault`.
    pub fn set(&self, ip: &str, fault: Fault) {
        self.faults.lock().expect("faults").insert(ip.to_owned(), fault);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The request paths received so far, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

/// The good answer for `ip`: its own zone, category and network name.
pub fn good_body(ip: &str) -> serde_json::Value {
    serde_json::json!({
        "LicenseInfo": {"DayRequests": 1, "DayQuota": 1000},
        "Zone": "Red",
        "IpGeneralInfo": {"Ip": ip, "Categories": [format!("CATEGORY_FOR_{ip}")]},
        "IpWhoIs": {"Net": {"Name": format!("NET-{ip}")}}
    })
}

async fn serve(
    mut stream: TcpStream,
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    requests: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        // One request head (GET requests have no body).
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        requests.fetch_add(1, Ordering::SeqCst);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        log.lock().expect("log").push(path.clone());
        let ip = path.trim_start_matches("/api/ip/").split('?').next().unwrap_or_default().to_owned();
        let fault = faults.lock().expect("faults").get(&ip).cloned().unwrap_or(Fault::Good);
        let ok = match fault {
            Fault::Good => {
                respond(&mut stream, 200, "application/json", &[], good_body(&ip).to_string().as_bytes()).await
            }
            Fault::Status(s) => respond(&mut stream, s, "application/json", &[], b"{}").await,
            Fault::TooManyRequests { retry_after_secs } => {
                let ra = retry_after_secs.to_string();
                respond(&mut stream, 429, "application/json", &[("retry-after", &ra)], b"{}").await
            }
            Fault::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                false
            }
            Fault::ResetMidBody => {
                let body = good_body(&ip).to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len() + 500
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body.as_bytes()[..body.len() / 2]).await;
                let _ = stream.flush().await;
                let _ = stream.set_zero_linger();
                return; // dropped with linger 0: a reset
            }
            Fault::TruncatedJson => {
                let body = good_body(&ip).to_string();
                respond(&mut stream, 200, "application/json", &[], &body.as_bytes()[..body.len() - 7]).await
            }
            Fault::Html => {
                respond(&mut stream, 200, "text/html", &[], b"<html><body><h1>Service maintenance</h1></body></html>")
                    .await
            }
            Fault::Huge { bytes } => stream_huge(&mut stream, bytes).await,
        };
        if !ok {
            return;
        }
    }
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, extra: &[(&str, &str)], body: &[u8]) -> bool {
    let mut head = format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await.is_ok()
}

/// A JSON object padded to `bytes`, sent in chunks; stops when the client goes.
async fn stream_huge(stream: &mut TcpStream, bytes: usize) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let mut sent = 0;
    let opening = br#"{"Zone":"Red","Pad":""#;
    let chunk = vec![b'x'; 64 * 1024];
    let mut first = true;
    while sent < bytes {
        let data: &[u8] = if first { opening } else { &chunk };
        first = false;
        let frame = format!("{:x}\r\n", data.len());
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(data).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            return false;
        }
        sent += data.len();
    }
    let tail = b"\"}";
    let _ = stream.write_all(format!("{:x}\r\n", tail.len()).as_bytes()).await;
    let _ = stream.write_all(tail).await;
    stream.write_all(b"\r\n0\r\n\r\n").await.is_ok()
}

/// What an event must come back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Its own address's data ([`good_body`]) and no error.
    OwnData,
    /// `$KLZone: "Grey"` alone.
    Grey,
    /// `$KLError` alone, containing this text.
    Error(&'static str),
    /// Its own data, or `$KLError` alone (after a 401/403 stopped the run).
    OwnDataOrError,
}

/// Config lines for fault runs: two tries, a 1 s timeout, a 1 MiB body cap.
pub const FAULT_CONFIG: &str = "  KL_RETRIES: 2\n  KL_TIMEOUT_SECS: 1\n  KL_MAX_RESPONSE_BYTES: 1048576\n";

/// Eleven kinds of server fault, each between good events. Register the
/// faults on `server`; the list gives each event's address and expectation.
pub fn faults_between_good_events(server: &FaultServer) -> Vec<(&'static str, Expect)> {
    let plan: Vec<(&'static str, Fault, Expect)> = vec![
        ("1.1.1.1", Fault::Good, Expect::OwnData),
        ("2.0.0.1", Fault::Status(500), Expect::Error("HTTP 500 after 2 tries")),
        ("1.1.1.2", Fault::Good, Expect::OwnData),
        ("2.0.0.2", Fault::Status(503), Expect::Error("HTTP 503 after 2 tries")),
        ("1.1.1.3", Fault::Good, Expect::OwnData),
        ("2.0.0.3", Fault::TooManyRequests { retry_after_secs: 1 }, Expect::Error("HTTP 429 after 2 tries")),
        ("1.1.1.4", Fault::Good, Expect::OwnData),
        ("2.0.0.4", Fault::Stall, Expect::Error("timeout after 1s")),
        ("1.1.1.5", Fault::Good, Expect::OwnData),
        ("2.0.0.5", Fault::ResetMidBody, Expect::Error("after 2 tries")),
        ("1.1.1.6", Fault::Good, Expect::OwnData),
        ("2.0.0.6", Fault::TruncatedJson, Expect::Error("invalid response")),
        ("1.1.1.7", Fault::Good, Expect::OwnData),
        ("2.0.0.7", Fault::Html, Expect::Error("invalid response")),
        ("1.1.1.8", Fault::Good, Expect::OwnData),
        ("2.0.0.8", Fault::Huge { bytes: 20 << 20 }, Expect::Error("response larger than 1048576 bytes")),
        ("1.1.1.9", Fault::Good, Expect::OwnData),
        ("2.0.0.9", Fault::Status(404), Expect::Grey),
        ("1.1.1.10", Fault::Good, Expect::OwnData),
    ];
    for (ip, fault, _) in &plan {
        server.set(ip, fault.clone());
    }
    plan.into_iter().map(|(ip, _, e)| (ip, e)).collect()
}

/// A fatal status (401 or 403) between good events.
pub fn fatal_between_good_events(server: &FaultServer, status: u16) -> Vec<(&'static str, Expect)> {
    let reason = if status == 401 { "HTTP 401" } else { "HTTP 403" };
    server.set("3.0.0.1", Fault::Status(status));
    vec![
        ("1.1.2.1", Expect::OwnDataOrError),
        ("3.0.0.1", Expect::Error(reason)),
        ("1.1.2.2", Expect::OwnDataOrError),
        ("1.1.2.3", Expect::OwnDataOrError),
        ("1.1.2.4", Expect::OwnDataOrError),
    ]
}

/// Checks one enriched event (flat `$KL` fields) against its expectation.
pub fn check(event: &serde_json::Value, ip: &str, expect: &Expect) -> Result<(), String> {
    let obj = event.as_object().ok_or("not an object")?;
    let kl: Vec<&str> = obj.keys().map(String::as_str).filter(|k| k.starts_with("$KL")).collect();
    let own = |obj: &serde_json::Map<String, serde_json::Value>| {
        obj.get("$KLZone") == Some(&"Red".into())
            && obj.get("$KLCategory") == Some(&serde_json::json!([format!("CATEGORY_FOR_{ip}")]))
            && obj.get("$KLNetname") == Some(&format!("NET-{ip}").into())
            && !obj.contains_key("$KLError")
    };
    let error_only = |needle: &str| kl == ["$KLError"] && obj["$KLError"].as_str().is_some_and(|m| m.contains(needle));
    let ok = match expect {
        Expect::OwnData => own(obj),
        Expect::Grey => kl == ["$KLZone"] && obj["$KLZone"] == "Grey",
        Expect::Error(needle) => error_only(needle),
        Expect::OwnDataOrError => own(obj) || error_only(""),
    };
    if ok { Ok(()) } else { Err(format!("{ip}: expected {expect:?}, got {event}")) }
}

/// Sends `signal` (`TERM`, `INT`…) to process `pid`, through kill(1): the
/// workspace forbids unsafe code, and tests need no more than this.
pub fn send_signal(pid: u32, signal: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits for `child` to end, for at most `limit`; panics past it (the
/// child is killed). Returns its exit status and everything it wrote on
/// stderr.
pub async fn wait_within(mut child: tokio::process::Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status.expect("wait"), reader.await.unwrap_or_default()),
        Err(_) => {
            let _ = child.kill().await;
            panic!("the process did not end within {limit:?}: {}", reader.await.unwrap_or_default());
        }
    }
}

/// A mock TIP on which the lookup of `ip` stalls for `delay` while every
/// other address answers Green at once: for tests of what a stalled
/// lookup must not hold up.
pub async fn mock_with_a_stalled_ip(ip: &str, delay: std::time::Duration) -> wiremock::MockServer {
    use wiremock::matchers::{any, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(path(format!("/api/ip/{ip}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"Zone": "Red"})).set_delay(delay))
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"Zone": "Green"})))
        .mount(&server)
        .await;
    server
}

/// The workspace's `fixtures/` folder.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A mock TIP serving every recorded answer of `fixtures/responses/` at
/// its API path (each mock named `kind/indicator`), and 404 for anything
/// not recorded.
pub async fn fixture_server() -> wiremock::MockServer {
    use wiremock::matchers::{any, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    for kind in ["ip", "domain", "url", "hash"] {
        for entry in std::fs::read_dir(fixtures_dir().join("responses").join(kind)).unwrap() {
            let p = entry.unwrap().path();
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let body: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            Mock::given(path(format!("/api/{kind}/{stem}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .named(format!("{kind}/{stem}"))
                .mount(&server)
                .await;
        }
    }
    Mock::given(any()).respond_with(ResponseTemplate::new(404)).named("not recorded").mount(&server).await;
    server
}
