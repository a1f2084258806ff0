//! kl-generic-json as a pipeline runs it.

use std::path::{Path, PathBuf};
use std::process::Output;

mod cli;
mod faults;
mod hardening;
mod longrun;
mod opentip;
mod recipes;
mod shared_cache;
mod styles;

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kl-generic-json")
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn responses() -> PathBuf {
    root().join("fixtures/responses")
}

/// Each run gets a cache folder of its own (the default XDG place, under a
/// fresh `XDG_CACHE_HOME`), so no test sees another's answers.
pub(crate) fn command(args: &[&str]) -> tokio::process::Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let xdg = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kl-generic-json-test-{}-{n}", std::process::id()));
    let mut cmd = kl_testkit::command(bin(), args);
    cmd.env("XDG_CACHE_HOME", xdg);
    cmd
}

/// Runs with `stdin` written in full, then closed.
pub(crate) async fn run(args: &[&str], stdin: &[u8]) -> Output {
    kl_testkit::run_with_stdin(command(args), stdin).await
}

pub(crate) fn stdout_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A token config for `url` in a temporary folder.
pub(crate) fn config(url: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kl.yml");
    std::fs::write(
        &path,
        format!("lookup_plugin:\n  KASPERSKY_API_TOKEN: tok-GENERIC-SECRET\n  KASPERSKY_API_URL: {url}\n{extra}"),
    )
    .unwrap();
    let p = path.to_str().unwrap().to_owned();
    (dir, p)
}
