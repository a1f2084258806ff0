//! `cargo xtask package`: the release tarballs, one per adapter.
//!
//! - `kl-dnif-<version>-<target>.tar.gz`: one folder `kaspersky/`, the DNIF
//!   plugin: every file of `crates/kl-dnif/plugin/`, the LICENSE and
//!   `bin/kl-dnif`;
//! - `kl-generic-json-…` and `kl-http-…`: one folder of the same name with
//!   the binary, README, LICENSE, an example config and the docs;
//! - `kl-splunk-…`: the Splunk app folder `TA-kaspersky-tip/`, its
//!   `bin/` holding the shim and `kl-splunk`;
//! - `SHA256SUMS` over all of them.
//!
//! Every tarball carries `THIRD-PARTY-LICENSES.txt` for the crates in its
//! binary. The binaries are built by cargo-zigbuild for
//! `x86_64-unknown-linux-gnu.2.17`, and packaging fails if one of them needs
//! a newer glibc. No network beyond installing the pinned zigbuild tools
//! once: the build uses the locked, already fetched dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::archive::{Entry, sha256_hex, write_tar_gz};
use crate::glibc::{self, GlibcVersion};
use crate::licenses::{self, Graph};
use crate::zigbuild::{self, PORTABLE_TARGET};

/// Every shipped binary, each the package of the same name.
pub const BINARIES: [&str; 4] = ["kl-dnif", "kl-generic-json", "kl-http", "kl-splunk"];

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct Options {
    /// A zigbuild target: a Rust triple, with `.2.17`-style glibc suffix
    /// for the GNU ones.
    pub target: String,
    /// The cargo profile; `dist` for releases.
    pub profile: String,
    /// The output folder (emptied first); `dist/` by default.
    pub out: Option<PathBuf>,
    /// Where cargo builds; its default when `None`.
    pub target_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options { target: PORTABLE_TARGET.to_owned(), profile: "dist".to_owned(), out: None, target_dir: None }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut opts = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--target" => opts.target = value()?.clone(),
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
    let triple = zigbuild::rust_triple(&opts.target);
    let bin_dir = build(root, opts)?;
    let bin = |name: &str| bin_dir.join(name);
    match glibc_floor(&opts.target) {
        Some(floor) => {
            for name in BINARIES {
                glibc::check(&bin(name), floor)?;
            }
        }
        None => eprintln!("note: {} names no glibc version; the binaries' glibc needs are not checked", opts.target),
    }
    let graph = Graph::load(root, triple)?;
    let third_party = |package: &str, path: String| -> anyhow::Result<Entry> {
        let text = licenses::render(&graph.linked(&[package])?, package)?;
        Ok(Entry { path, contents: text.into_bytes(), executable: false })
    };

    let out = opts.out.clone().unwrap_or_else(|| root.join("dist"));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clean {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let mtime = source_date_epoch(root);
    let mut tarballs = Vec::new();
    let mut write = |package: &str, entries: Vec<Entry>| -> anyhow::Result<()> {
        let tarball = out.join(format!("{package}-{version}-{triple}.tar.gz"));
        write_tar_gz(&tarball, entries, mtime)?;
        tarballs.push(tarball);
        Ok(())
    };

    let mut dnif = dnif_entries(root, &bin("kl-dnif"))?;
    dnif.push(third_party("kl-dnif", format!("kaspersky/{}", licenses::FILE_NAME))?);
    write("kl-dnif", dnif)?;

    for (package, doc) in [("kl-generic-json", "docs/generic-json.md"), ("kl-http", "docs/http.md")] {
        let folder = format!("{package}-{version}-{triple}");
        let f = |p: &str| format!("{folder}/{p}");
        let entries = vec![
            Entry::executable(f(package), &bin(package))?,
            Entry::file(f("README.md"), &root.join("README.md"))?,
            Entry::file(f("LICENSE"), &root.join("LICENSE"))?,
            third_party(package, f(licenses::FILE_NAME))?,
            Entry::file(f("kl.example.yml"), &root.join("crates/kl-generic-json/kl.example.yml"))?,
            Entry::file(f(&doc.replace("docs/", "doc/")), &root.join(doc))?,
            Entry::file(f("doc/fields.md"), &root.join("docs/fields.md"))?,
        ];
        write(package, entries)?;
    }

    let mut splunk = splunk_entries(root, &bin("kl-splunk"))?;
    splunk.push(third_party("kl-splunk", format!("{SPLUNK_APP}/{}", licenses::FILE_NAME))?);
    write("kl-splunk", splunk)?;

    let mut sums = String::new();
    for t in &tarballs {
        let name = t.file_name().and_then(|n| n.to_str()).context("tarball name")?;
        sums.push_str(&format!("{}  {name}\n", sha256_hex(t)?));
    }
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    Ok(Written { dir: out, tarballs, sums })
}

/// The newest glibc the binaries may need: the target's suffix
/// (`….2.17`), the portable floor for a plain GNU triple, and `None` for a
/// target without glibc (musl).
fn glibc_floor(target: &str) -> Option<GlibcVersion> {
    match target.find("-gnu.") {
        Some(at) => GlibcVersion::parse(&format!("GLIBC_{}", &target[at + "-gnu.".len()..])),
        None if target.ends_with("-gnu") => Some(glibc::FLOOR),
        None => None,
    }
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

/// Builds every shipped binary with cargo-zigbuild; returns the folder
/// that holds them.
fn build(root: &Path, opts: &Options) -> anyhow::Result<PathBuf> {
    let mut cmd = zigbuild::command(root)?;
    cmd.current_dir(root).args(["--locked", "--profile", &opts.profile, "--target", &opts.target]);
    for package in BINARIES {
        cmd.args(["-p", package]);
    }
    if let Some(d) = &opts.target_dir {
        cmd.env("CARGO_TARGET_DIR", d);
    }
    let status = cmd.status().context("cannot run cargo zigbuild")?;
    ensure!(status.success(), "cargo zigbuild failed ({status})");
    let target_dir = opts
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target"));
    let profile_dir = if opts.profile == "dev" { "debug" } else { opts.profile.as_str() };
    Ok(target_dir.join(zigbuild::rust_triple(&opts.target)).join(profile_dir))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glibc_floor_comes_from_the_target() {
        assert_eq!(glibc_floor(PORTABLE_TARGET), Some(glibc::FLOOR));
        assert_eq!(glibc_floor("aarch64-unknown-linux-gnu.2.28"), Some(GlibcVersion(2, 28, 0)));
        assert_eq!(glibc_floor("x86_64-unknown-linux-gnu"), Some(glibc::FLOOR));
        assert_eq!(glibc_floor("x86_64-unknown-linux-musl"), None);
    }
}
