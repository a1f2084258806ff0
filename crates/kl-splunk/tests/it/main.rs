//! The Splunk app end to end: the app folder as `cargo xtask package` lays
//! it out around the test build of kl-splunk, a lookup stanza read from its
//! `transforms.conf`, and its `external_cmd` run as Splunk runs it (python3,
//! in `bin/`, the CSV of `fields_list` on stdin).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use kl_testkit::fixture_server;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The app folder under `apps/`, configured (`local/kl.yml`) for `api`.
fn app(api: &str) -> (tempfile::TempDir, PathBuf) {
    let apps = tempfile::tempdir().unwrap();
    for entry in xtask::package::splunk_entries(&root(), Path::new(env!("CARGO_BIN_EXE_kl-splunk"))).unwrap() {
        let path = apps.path().join(&entry.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &entry.contents).unwrap();
        let mode = if entry.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let dir = apps.path().join(xtask::package::SPLUNK_APP);
    std::fs::create_dir_all(dir.join("local")).unwrap();
    std::fs::write(
        dir.join("local/kl.yml"),
        format!(
            "lookup_plugin:\n  KASPERSKY_API_TOKEN: tok-SPLUNK-5ecret\n  KASPERSKY_API_URL: {api}\n  KL_RETRIES: 1\n"
        ),
    )
    .unwrap();
    (apps, dir)
}

/// A stanza's `external_cmd` and `fields_list`, from the app's transforms.conf.
fn stanza(app: &Path, name: &str) -> (Vec<String>, Vec<String>) {
    let conf = std::fs::read_to_string(app.join("default/transforms.conf")).unwrap();
    let body = conf.split(&format!("[{name}]\n")).nth(1).unwrap().split("\n[").next().unwrap();
    let get = |key: &str| {
        body.lines().find_map(|l| l.strip_prefix(&format!("{key} = "))).unwrap_or_else(|| panic!("{name}: no {key}"))
    };
    let cmd = get("external_cmd").split_whitespace().map(str::to_owned).collect();
    let fields = get("fields_list").split(',').map(|f| f.trim().to_owned()).collect();
    (cmd, fields)
}

/// Runs a stanza as Splunk does: python3, in bin/, `rows` (input values)
/// as the CSV of `fields_list`. Returns the CSV that came back and stderr.
fn splunk_lookup(app: &Path, name: &str, rows: &[&str]) -> (Vec<Vec<String>>, String, Vec<String>) {
    let (cmd, fields) = stanza(app, name);
    let mut input = csv::Writer::from_writer(Vec::new());
    input.write_record(&fields).unwrap();
    for value in rows {
        let mut row = vec![(*value).to_owned()];
        row.resize(fields.len(), String::new());
        input.write_record(&row).unwrap();
    }
    let input = input.into_inner().unwrap();
    let mut child = Command::new("python3")
        .args(&cmd)
        .current_dir(app.join("bin"))
        .env_remove("KL_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the script must exit 0: {}", String::from_utf8_lossy(&out.stderr));
    let records = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(out.stdout.as_slice())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (records, String::from_utf8_lossy(&out.stderr).into_owned(), fields)
}

#[tokio::test]
async fn the_auto_lookup_fills_zones_and_keeps_the_rows() {
    let server = fixture_server().await;
    let (_apps, app) = app(&format!("{}/api", server.uri()));
    let quoted = r#"say "hi", then, "bye""#;
    let rows = [
        "39.90.148.83",
        "secure-paypal-login.info",
        "44d88612fea8a8f36de82e1278abb02f",
        "not an indicator",
        "",
        quoted,
        "10.0.0.1",
        "two\nlines, \"quoted\"",
    ];
    let (out, stderr, fields) = splunk_lookup(&app, "kaspersky_auto", &rows);
    assert_eq!(out[0], fields, "the header comes back unchanged");
    let zone = fields.iter().position(|f| f == "zone").unwrap();
    let error = fields.iter().position(|f| f == "error").unwrap();
    let skipped = fields.iter().position(|f| f == "skipped").unwrap();
    let categories = fields.iter().position(|f| f == "categories").unwrap();
    // The first row of each input, in order (lists add rows after it).
    let mut firsts = Vec::new();
    let mut previous: Option<&String> = None;
    for row in &out[1..] {
        if previous != Some(&row[0]) || row[0].is_empty() {
            firsts.push(row.clone());
        }
        previous = Some(&row[0]);
    }
    let inputs: Vec<&str> = firsts.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(inputs, rows, "the rows come back in order with their inputs intact: {stderr}");
    for i in 0..3 {
        assert!(!firsts[i][zone].is_empty(), "{}: a zone", rows[i]);
    }
    assert_eq!(firsts[0][zone], "Red");
    assert!(firsts[3][zone].is_empty() && firsts[3][error].contains("cannot tell the type"), "{:?}", firsts[3]);
    assert!(firsts[4].iter().all(String::is_empty), "an empty input stays empty");
    assert!(firsts[5][error].contains("hi"), "a value with quotes and commas survives: {:?}", firsts[5]);
    assert_eq!(firsts[6][skipped], "private or reserved address");
    assert!(
        !firsts[7][error].is_empty() && firsts[7][zone].is_empty(),
        "a value with a newline survives: {:?}",
        firsts[7]
    );
    // A list becomes several rows of the same input: Splunk's multivalue.
    let ip_rows: Vec<&Vec<String>> = out[1..].iter().filter(|r| r[0] == "39.90.148.83").collect();
    let cats: Vec<&str> = ip_rows.iter().map(|r| r[categories].as_str()).filter(|c| !c.is_empty()).collect();
    assert!(!cats.is_empty(), "{ip_rows:?}");
    // No request for the invalid, empty, quoted or private values.
    let sent: Vec<String> = server.received_requests().await.unwrap().iter().map(|r| r.url.path().to_owned()).collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
}

#[tokio::test]
async fn every_lookup_of_the_app_answers_its_own_kind() {
    let server = fixture_server().await;
    let (_apps, app) = app(&format!("{}/api", server.uri()));
    for (name, value) in [
        ("kaspersky_ip", "45.155.205.233"),
        ("kaspersky_domain", "kaspersky.com"),
        ("kaspersky_url", "http://secure-paypal-login.info/signin?session=1&next=/account"),
        ("kaspersky_hash", "3395856CE81F2B7382DEE72602F798B642F14140"),
    ] {
        let (out, stderr, fields) = splunk_lookup(&app, name, &[value]);
        let zone = fields.iter().position(|f| f == "zone").unwrap();
        assert_eq!(out[1][0], value, "{name}: the input is never written over");
        assert!(!out[1][zone].is_empty(), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn a_failure_never_breaks_the_search() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(401)).mount(&server).await;
    let (_apps, app) = app(&format!("{}/api", server.uri()));
    // The API refuses: the rows come back, with the error.
    let (out, _, fields) = splunk_lookup(&app, "kaspersky_auto", &["8.8.8.8"]);
    let error = fields.iter().position(|f| f == "error").unwrap();
    assert!(out[1][error].contains("401"));
    // A config error: the CSV comes back as it came, exit 0, the reason on stderr.
    std::fs::write(app.join("local/kl.yml"), "lookup_plugin:\n  KL_BOGUS: 1\n").unwrap();
    let (out, stderr, fields) = splunk_lookup(&app, "kaspersky_auto", &["8.8.8.8", "kaspersky.com"]);
    assert_eq!(out[0], fields);
    assert_eq!(out.len(), 3);
    assert!(out[1][1..].iter().all(String::is_empty));
    assert!(stderr.contains("KL_BOGUS") && stderr.contains("without Kaspersky fields"), "{stderr}");
    // The binary missing: the same.
    std::fs::remove_file(app.join("bin/kl-splunk")).unwrap();
    let (out, stderr, _) = splunk_lookup(&app, "kaspersky_auto", &["8.8.8.8"]);
    assert_eq!(out.len(), 2);
    assert!(stderr.contains("missing"), "{stderr}");
}

#[test]
fn the_committed_transforms_conf_is_fresh() {
    let committed = std::fs::read_to_string(root().join(xtask::docs::TRANSFORMS)).unwrap();
    let generated = kl_schema::splunk::transforms_conf(xtask::docs::SPLUNK_SCRIPT);
    assert!(committed == generated, "transforms.conf is stale: run `cargo xtask docs` and commit the result");
}

#[tokio::test]
async fn check_runs_with_the_apps_config() {
    let server = MockServer::start().await;
    Mock::given(path("/api/domain/example.com"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"Zone": "Green", "LicenseInfo": {"DayRequests": 2, "DayQuota": 9}})),
        )
        .mount(&server)
        .await;
    let (_apps, app) = app(&format!("{}/api", server.uri()));
    let out = Command::new(app.join("bin/kl-splunk")).args(["check"]).env_remove("KL_CONFIG").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DayRequests 2 of DayQuota 9"));
}
