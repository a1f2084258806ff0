//! `cargo xtask package`: the release tarballs.
//!
//! - `kl-dnif-<version>-<target>.tar.gz`: one folder `kaspersky/`, the DNIF
//!   plugin: every file of `crates/kl-dnif/plugin/`, the LICENSE and
//!   `bin/kl-dnif`;
//! - `kl-generic-json-<version>-<target>.tar.gz`: one folder of the same
//!   name with the binary, README, LICENSE, an example config and the docs;
//! - `SHA256SUMS` over both.
//!
//! No network: the build uses the locked, already fetched dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::archive::{Entry, sha256_hex, write_tar_gz};

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct Options {
    /// A target triple; the host's when `None`.
    pub target: Option<String>,
    /// The cargo profile; `dist` for releases.
    pub profile: String,
    /// The output folder (emptied first); `dist/` by default.
    pub out: Option<PathBuf>,
    /// Where cargo builds; its default when `None`.
    pub target_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options { target: None, profile: "dist".to_owned(), out: None, target_dir: None }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut opts = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--target" => opts.target = Some(value()?.clone()),
                "--profile" => opts.profile = value()?.clone(),
                "--out" => opts.out = Some(PathBuf::from(value()?)),
                other => bail!("unknown option {other:?} for package"),
            }
        }
        Ok(opts)
    }
}

/// What `run` wrote.
#[derive(Debug)]
pub struct Written {
    pub dir: PathBuf,
    pub tarballs: Vec<PathBuf>,
    /// The contents of `SHA256SUMS`.
    pub sums: String,
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<Written> {
    let version = workspace_version(root)?;
    let target = match &opts.target {
        Some(t) => t.clone(),
        None => host_target()?,
    };
    let bin_dir = build(root, opts)?;
    let out = opts.out.clone().unwrap_or_else(|| root.join("dist"));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clean {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let mtime = source_date_epoch(root);

    let dnif = out.join(format!("kl-dnif-{version}-{target}.tar.gz"));
    write_tar_gz(&dnif, dnif_entries(root, &bin_dir.join("kl-dnif"))?, mtime)?;

    let generic_name = format!("kl-generic-json-{version}-{target}");
    let generic = out.join(format!("{generic_name}.tar.gz"));
    let g = |p: &str| format!("{generic_name}/{p}");
    let generic_entries = vec![
        Entry::executable(g("kl-generic-json"), &bin_dir.join("kl-generic-json"))?,
        Entry::file(g("README.md"), &root.join("README.md"))?,
        Entry::file(g("LICENSE"), &root.join("LICENSE"))?,
        Entry::file(g("kl.example.yml"), &root.join("crates/kl-generic-json/kl.example.yml"))?,
        Entry::file(g("doc/generic-json.md"), &root.join("docs/generic-json.md"))?,
        Entry::file(g("doc/fields.md"), &root.join("docs/fields.md"))?,
    ];
    write_tar_gz(&generic, generic_entries, mtime)?;

    let tarballs = vec![dnif, generic];
    let mut sums = String::new();
    for t in &tarballs {
        let name = t.file_name().and_then(|n| n.to_str()).context("tarball name")?;
        sums.push_str(&format!("{}  {name}\n", sha256_hex(t)?));
    }
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    Ok(Written { dir: out, tarballs, sums })
}

/// The plugin folder: the rule the DNIF end-to-end test assembles by too.
pub fn dnif_entries(root: &Path, kl_dnif: &Path) -> anyhow::Result<Vec<Entry>> {
    let plugin = root.join("crates/kl-dnif/plugin");
    let mut entries = vec![
        Entry::executable("kaspersky/bin/kl-dnif", kl_dnif)?,
        Entry::file("kaspersky/LICENSE", &root.join("LICENSE"))?,
    ];
    for item in std::fs::read_dir(&plugin).with_context(|| format!("cannot read {}", plugin.display()))? {
        let path = item?.path();
        if path.is_file() {
            let name = path.file_name().and_then(|n| n.to_str()).context("plugin file name")?;
            entries.push(Entry::file(format!("kaspersky/{name}"), &path)?);
        }
    }
    Ok(entries)
}

/// The Splunk app folder: every file of `crates/kl-splunk/app/`, the LICENSE
/// and `bin/kl-splunk` (the rule the Splunk end-to-end test assembles by too).
pub fn splunk_entries(root: &Path, kl_splunk: &Path) -> anyhow::Result<Vec<Entry>> {
    let app = root.join("crates/kl-splunk/app");
    let mut entries = vec![
        Entry::executable(format!("{SPLUNK_APP}/bin/kl-splunk"), kl_splunk)?,
        Entry::file(format!("{SPLUNK_APP}/LICENSE"), &root.join("LICENSE"))?,
    ];
    let mut stack = vec![app.join(SPLUNK_APP)];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = item?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(&app)?.to_str().context("app file name")?.to_owned();
                entries.push(Entry::file(relative, &path)?);
            }
        }
    }
    Ok(entries)
}

/// The Splunk app's folder name.
pub const SPLUNK_APP: &str = "TA-kaspersky-tip";

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Builds both binaries; returns the folder that holds them.
fn build(root: &Path, opts: &Options) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root).args([
        "build",
        "--locked",
        "--profile",
        &opts.profile,
        "-p",
        "kl-dnif",
        "-p",
        "kl-generic-json",
    ]);
    if let Some(t) = &opts.target {
        cmd.args(["--target", t]);
    }
    if let Some(d) = &opts.target_dir {
        cmd.env("CARGO_TARGET_DIR", d);
    }
    let status = cmd.status().context("cannot run cargo build")?;
    ensure!(status.success(), "cargo build failed ({status})");
    let target_dir = opts
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target"));
    let profile_dir = if opts.profile == "dev" { "debug" } else { opts.profile.as_str() };
    Ok(match &opts.target {
        Some(t) => target_dir.join(t).join(profile_dir),
        None => target_dir.join(profile_dir),
    })
}

fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("version") {
                return Ok(v.trim_start_matches([' ', '=']).trim().trim_matches('"').to_owned());
            }
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

fn host_target() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("cannot run rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV did not name the host")
}

/// `SOURCE_DATE_EPOCH` if set, else the last commit's time, else 0: the
/// same commit always packs to the same bytes.
fn source_date_epoch(root: &Path) -> u64 {
    if let Some(t) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok()) {
        return t;
    }
    Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
