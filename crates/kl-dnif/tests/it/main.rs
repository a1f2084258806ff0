//! kl-dnif driven as DNIF drives it: a JSON array on stdin, the enriched
//! array on stdout, against a wiremock TIP.

pub(crate) use kl_testkit::fixture_server;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

mod cache;
mod contract;
mod failures;
mod faults;
mod shim;

const PASSWORD: &str = "pw-5ecret-DNIF";

pub(crate) async fn run_kl_dnif(args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> Output {
    let mut cmd = kl_testkit::command(env!("CARGO_BIN_EXE_kl-dnif"), args);
    cmd.envs(envs.iter().copied());
    kl_testkit::run_with_stdin(cmd, stdin).await
}

/// A config folder with a token config pointing at `url`, plus `extra` lines.
pub(crate) fn config_dir(url: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dnifconfig.yml");
    std::fs::write(
        &path,
        format!("lookup_plugin:\n  KASPERSKY_API_TOKEN: tok-DNIF-SECRET\n  KASPERSKY_API_URL: {url}\n{extra}"),
    )
    .unwrap();
    (dir, path)
}

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub(crate) fn parse(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `$KL` keys of an event.
pub(crate) fn kl_keys(event: &Value) -> Vec<&str> {
    event.as_object().unwrap().keys().map(String::as_str).filter(|k| k.starts_with("$KL")).collect()
}

#[tokio::test]
async fn counts_requests_by_path() {
    // A sanity check of the fixture server itself: unknown paths are 404.
    let server = fixture_server().await;
    let (_d, cfg) = config_dir(&format!("{}/api", server.uri()), "");
    let out = run_kl_dnif(
        &["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"],
        br#"[{"$SrcIP":"5.45.0.77"}]"#,
        &[],
    )
    .await;
    assert_eq!(parse(&out), vec![json!({"$SrcIP": "5.45.0.77", "$KLZone": "Grey"})]);
}
