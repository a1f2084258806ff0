//! The DNIF plugin folder end to end: `kaspersky.py` under Python 3 and,
//! where one is installed, Python 2.7, against the wiremock TIP.
//!
//! The folder is assembled by `xtask::package::dnif_entries`, exactly as
//! `cargo xtask package` packs it, around the test build of kl-dnif.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::process::Command;

use kl_core::Function;
use serde_json::Value;

use crate::*;

const DRIVER: &str = r#"
import datetime, decimal, json, logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")
sys.path.insert(0, sys.argv[1])
from kaspersky import kaspersky
function, field, events_file, mode = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
events = json.load(open(events_file))
extras = {}
if mode == "extras":
    for e in events:
        e["when"] = datetime.datetime(2026, 11, 26, 8, 0, 0)
        e["amount"] = decimal.Decimal("1.10")
        e["tags"] = set(["a", "b"])
        e["raw"] = b"\xff\x00"
        extras[id(e)] = (e["when"], e["amount"], e["tags"], e["raw"])
before = [id(e) for e in events]
returned = getattr(kaspersky, function)(events, [" " + field + " "])
assert returned is events, "the same list is returned"
assert [id(e) for e in returned] == before, "the same dicts, updated in place"
for e in events:
    if mode == "extras":
        kept = (e.pop("when"), e.pop("amount"), e.pop("tags"), e.pop("raw"))
        assert all(a is b for a, b in zip(kept, extras[id(e)])), "values JSON cannot carry stay untouched"
sys.stdout.write(json.dumps(events))
"#;

/// The interpreters to test: Python 3 and 2.7, each where installed
/// (a missing one is skipped with a note, not failed).
fn pythons() -> Vec<(String, Vec<(String, String)>)> {
    let pyenv27 = vec![("PYENV_VERSION".to_owned(), "2.7.18".to_owned())];
    let mut found = Vec::new();
    for (major, candidates) in
        [("3", vec![("python3", vec![])]), ("2", vec![("python2.7", vec![]), ("python2", pyenv27)])]
    {
        let hit = candidates.into_iter().find(|(bin, env)| {
            Command::new(bin)
                .envs(env.iter().cloned())
                .args(["-c", "import sys; sys.stdout.write(str(sys.version_info[0]))"])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout == major.as_bytes())
        });
        match hit {
            Some((bin, env)) => found.push((bin.to_owned(), env)),
            None => eprintln!("skipped: no Python {major} on this machine"),
        }
    }
    found
}

/// `lookup_plugins/kaspersky/` in a temporary folder, configured for `url`.
fn plugin_folder(url: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("lookup_plugins");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for entry in xtask::package::dnif_entries(&workspace, Path::new(env!("CARGO_BIN_EXE_kl-dnif"))).unwrap() {
        let path = plugins.join(&entry.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &entry.contents).unwrap();
        let mode = if entry.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let dir = plugins.join("kaspersky");
    std::fs::write(
        dir.join("dnifconfig.yml"),
        format!(
            "lookup_plugin:\n  KASPERSKY_API_TOKEN: tok-SHIM-SECRET\n  KASPERSKY_API_URL: {url}\n  KL_RETRIES: 1\n"
        ),
    )
    .unwrap();
    (root, dir)
}

struct Call<'a> {
    function: &'a str,
    field: &'a str,
    events: &'a Path,
    mode: &'a str,
    timeout_secs: &'a str,
}

fn shim(python: &(String, Vec<(String, String)>), plugins: &Path, call: Call<'_>) -> (Vec<Value>, String) {
    let Call { function, field, events, mode, timeout_secs } = call;
    let out = Command::new(&python.0)
        .envs(python.1.iter().cloned())
        .env("KL_SHIM_TIMEOUT_SECS", timeout_secs)
        .env_remove("KL_CONFIG")
        .args(["-c", DRIVER])
        .arg(plugins)
        .args([function, field])
        .arg(events)
        .arg(mode)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", python.0);
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[tokio::test]
async fn the_shim_returns_what_kl_dnif_returns_for_all_seven_functions() {
    let server = fixture_server().await;
    let (_root, dir) = plugin_folder(&format!("{}/api", server.uri()));
    let plugins = dir.parent().unwrap();
    for (function, field, file) in [
        (Function::IpReport, "$SrcIP", "ip.json"),
        (Function::IpReportFile, "$SrcIP", "ip.json"),
        (Function::UrlReport, "$URL", "url.json"),
        (Function::UrlReportFile, "$URL", "url.json"),
        (Function::DomainReport, "$Domain", "domain.json"),
        (Function::DomainReportFile, "$Domain", "domain.json"),
        (Function::HashReport, "$Filehash", "hash.json"),
    ] {
        let events = fixtures().join("events").join(file);
        let config = dir.join("dnifconfig.yml");
        let direct = parse(
            &run_kl_dnif(
                &["--config", config.to_str().unwrap(), function.name(), field],
                &std::fs::read(&events).unwrap(),
                &[],
            )
            .await,
        );
        for python in pythons() {
            for mode in ["plain", "extras"] {
                let call = Call { function: function.name(), field, events: &events, mode, timeout_secs: "600" };
                let (through_shim, stderr) = shim(&python, plugins, call);
                assert_eq!(through_shim, direct, "{} {function} {mode}", python.0);
                assert!(!stderr.contains("WARNING"), "{stderr}");
            }
        }
    }
}

#[tokio::test]
async fn a_missing_crashing_or_hanging_binary_returns_events_unchanged() {
    let server = fixture_server().await;
    let (_root, dir) = plugin_folder(&format!("{}/api", server.uri()));
    let plugins = dir.parent().unwrap();
    let events = fixtures().join("events/ip.json");
    let original: Vec<Value> = serde_json::from_slice(&std::fs::read(&events).unwrap()).unwrap();
    let bin = dir.join("bin/kl-dnif");
    let fake = |script: &str| {
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    type Breaker<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("is missing", Box::new(|| std::fs::remove_file(&bin).unwrap())),
        ("exited with status 3", Box::new(|| fake("#!/bin/sh\necho 'kl-dnif: boom' >&2\nexit 3\n"))),
        ("exited with status", Box::new(|| fake("#!/bin/sh\nkill -SEGV $$\n"))),
        ("did not finish", Box::new(|| fake("#!/bin/sh\nexec sleep 60\n"))),
        ("", Box::new(|| fake("#!/bin/sh\necho 'not json'\n"))),
        ("one event per event", Box::new(|| fake("#!/bin/sh\necho '[]'\n"))),
    ];
    for (needle, break_it) in cases {
        break_it();
        for python in pythons() {
            // Only the hanging case needs a short timeout; the others get room on a busy machine.
            let timeout_secs = if needle == "did not finish" { "1" } else { "600" };
            let call =
                Call { function: "get_ip_report", field: "$SrcIP", events: &events, mode: "extras", timeout_secs };
            let (got, stderr) = shim(&python, plugins, call);
            assert_eq!(got, original, "{} ({needle}): events must come back unchanged", python.0);
            assert_eq!(stderr.matches("WARNING").count(), 1, "one warning: {stderr}");
            assert!(stderr.contains(needle), "{needle}: {stderr}");
            assert!(!stderr.contains("Traceback"), "{stderr}");
        }
    }
}

#[tokio::test]
async fn the_shim_replaces_an_events_kl_fields_with_its_own_lookups() {
    let server = fixture_server().await;
    let (root, dir) = plugin_folder(&format!("{}/api", server.uri()));
    let plugins = dir.parent().unwrap();
    // An earlier lookup stage's fields, and a log source's planted zone.
    let events = root.path().join("staged.json");
    std::fs::write(
        &events,
        serde_json::to_vec(&serde_json::json!([
            {"$SrcIP": "1.2.3", "$KLZone": "Red", "$KLRedMd5": ["X"]},
            {"$SrcIP": "8.8.8.8", "$KLZone": "Green", "$KLCategory": ["planted"]},
            {"other": 1, "$KLZone": "Red"}
        ]))
        .unwrap(),
    )
    .unwrap();
    for python in pythons() {
        let call =
            Call { function: "get_ip_report", field: "$SrcIP", events: &events, mode: "plain", timeout_secs: "600" };
        let (got, stderr) = shim(&python, plugins, call);
        let kl = |v: &Value| -> Vec<String> {
            v.as_object().unwrap().keys().filter(|k| k.starts_with("$KL")).cloned().collect()
        };
        assert_eq!(kl(&got[0]), ["$KLError"], "{}: {}", python.0, got[0]);
        assert!(got[1].get("$KLCategory").is_none(), "{}: {}", python.0, got[1]);
        assert_eq!(got[1]["$KLZone"], "Green");
        // No lookup for an event without the field: it comes back as it was.
        assert_eq!(got[2], serde_json::json!({"other": 1, "$KLZone": "Red"}));
        assert!(!stderr.contains("WARNING"), "{stderr}");
    }
}
