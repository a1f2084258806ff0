//! `THIRD-PARTY-LICENSES.txt`: the licence texts of every crate compiled
//! into a binary, from `cargo metadata` and the licence files each crate
//! ships in its package.
//!
//! The crates are those the binary's package reaches through normal
//! dependencies on the release target; build scripts' and proc-macros'
//! crates run at build time only and are not in the binary. Each distinct
//! text appears once, followed by the crates it covers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// The file name in every tarball.
pub const FILE_NAME: &str = "THIRD-PARTY-LICENSES.txt";

/// One third-party crate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// The SPDX expression from its manifest.
    pub license: String,
    dir: PathBuf,
}

/// The crate graph of the workspace, for one target.
#[derive(Debug)]
pub struct Graph {
    packages: HashMap<String, Package>,
    /// Normal (linked) dependencies of each package id.
    deps: HashMap<String, Vec<String>>,
}

#[derive(Debug)]
struct Package {
    krate: Crate,
    local: bool,
    proc_macro: bool,
}

impl Graph {
    /// Reads `cargo metadata` for `root`'s workspace as resolved for `triple`.
    pub fn load(root: &Path, triple: &str) -> anyhow::Result<Graph> {
        let out = Command::new(crate::cargo())
            .current_dir(root)
            .args(["metadata", "--format-version", "1", "--locked", "--filter-platform", triple])
            .output()
            .context("cannot run cargo metadata")?;
        ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
        let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
        Graph::from_metadata(&meta)
    }

    fn from_metadata(meta: &Value) -> anyhow::Result<Graph> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut packages = HashMap::new();
        for p in meta["packages"].as_array().context("metadata: no packages")? {
            let manifest = PathBuf::from(text(p, "manifest_path"));
            let proc_macro = p["targets"].as_array().is_some_and(|targets| {
                targets.iter().any(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "proc-macro")))
            });
            let krate = Crate {
                name: text(p, "name"),
                version: text(p, "version"),
                license: p.get("license").and_then(Value::as_str).unwrap_or("(none stated)").to_owned(),
                dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            packages.insert(text(p, "id"), Package { krate, local: p["source"].is_null(), proc_macro });
        }
        let mut deps = HashMap::new();
        for node in meta["resolve"]["nodes"].as_array().context("metadata: no resolve graph")? {
            let linked = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["dep_kinds"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null())))
                .map(|d| text(d, "pkg"))
                .collect();
            deps.insert(text(node, "id"), linked);
        }
        Ok(Graph { packages, deps })
    }

    /// The third-party crates linked into the binaries of `roots` (package
    /// names of this workspace), sorted by name and version.
    pub fn linked(&self, roots: &[&str]) -> anyhow::Result<Vec<Crate>> {
        let mut stack: Vec<&String> = Vec::new();
        for name in roots {
            let id = self
                .packages
                .iter()
                .find(|(_, p)| p.local && p.krate.name == *name)
                .map(|(id, _)| id)
                .with_context(|| format!("no workspace package {name}"))?;
            stack.push(id);
        }
        let mut seen = BTreeSet::new();
        let mut found = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let package = self.packages.get(id).with_context(|| format!("metadata: unknown package {id}"))?;
            if package.proc_macro {
                continue;
            }
            if !package.local {
                found.insert(package.krate.clone());
            }
            stack.extend(self.deps.get(id).into_iter().flatten());
        }
        Ok(found.into_iter().collect())
    }
}

/// The licence files a crate ships (`LICENSE-MIT`, `COPYING`, `NOTICE`…),
/// sorted by name.
fn licence_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    const STEMS: [&str; 6] = ["LICENSE", "LICENCE", "COPYING", "NOTICE", "UNLICENSE", "COPYRIGHT"];
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = item?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if path.is_file() && STEMS.iter().any(|s| name.to_ascii_uppercase().starts_with(s)) {
            let text = String::from_utf8_lossy(&std::fs::read(&path)?).replace("\r\n", "\n");
            files.push((name.to_owned(), text.trim_end().to_owned()));
        }
    }
    files.sort();
    Ok(files)
}

/// The file for a tarball whose binaries come from `roots`: `product`
/// names it at the top.
pub fn render(crates: &[Crate], product: &str) -> anyhow::Result<String> {
    if crates.is_empty() {
        bail!("{product}: no third-party crates found; cargo metadata and the build disagree");
    }
    let mut out = format!(
        "Third-party licences for {product}\n\n\
         {product} is licensed under GPL-3.0-or-later (see LICENSE). Its binaries\n\
         include the {} crates below, compiled in; each is under the licence its\n\
         authors chose. The licence texts they ship follow the list, each text\n\
         once, with the crates it came with.\n\n",
        crates.len()
    );
    let width = crates.iter().map(|c| c.name.len() + c.version.len() + 1).max().unwrap_or(0);
    // Each distinct text, with the crates (and file names) it came from.
    let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut without_text = Vec::new();
    let mut notes = Vec::new();
    for c in crates {
        let id = format!("{} {}", c.name, c.version);
        out.push_str(&format!("  {id:width$}  {}\n", c.license));
        let files = licence_files(&c.dir)?;
        if files.is_empty() {
            without_text.push(format!("{id} ({})", c.license));
        }
        for (file, text) in files {
            texts.entry(text).or_default().push(format!("{id} ({file})"));
        }
        if c.name == "libsqlite3-sys" {
            notes.push(format!("{id} compiles in the SQLite C library, which is in the public domain."));
        }
    }
    if !without_text.is_empty() {
        out.push_str("\nShipped without a licence text of their own (the licence named is theirs):\n");
        for line in &without_text {
            out.push_str(&format!("  {line}\n"));
        }
    }
    for note in &notes {
        out.push_str(&format!("\n{note}\n"));
    }
    // Order the texts by the first crate that carries each, for a stable,
    // readable file.
    let mut ordered: Vec<(Vec<String>, String)> = texts.into_iter().map(|(text, users)| (users, text)).collect();
    ordered.sort();
    for (users, text) in ordered {
        out.push_str(&format!("\n{}\n", "=".repeat(78)));
        out.push_str(&format!("The text below comes with: {}\n{}\n\n", users.join(", "), "-".repeat(78)));
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(id: &str, name: &str, local: bool, proc_macro: bool, dir: &Path) -> Value {
        let kind = if proc_macro { "proc-macro" } else { "lib" };
        json!({
            "id": id, "name": name, "version": "1.0.0", "license": "MIT",
            "source": if local { Value::Null } else { json!("registry+https://github.com/rust-lang/crates.io-index") },
            "manifest_path": dir.join(name).join("Cargo.toml"),
            "targets": [{"kind": [kind]}, {"kind": ["test"]}],
        })
    }

    fn dep(pkg: &str, kind: Value) -> Value {
        json!({"pkg": pkg, "dep_kinds": [{"kind": kind, "target": null}]})
    }

    #[test]
    fn only_linked_crates_are_listed_and_each_text_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("tokio", "MIT text\r\n"), ("bytes", "MIT text\n"), ("ring", "ISC text\n")] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("LICENSE"), text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("bare")).unwrap();
        let meta = json!({
            "packages": [
                package("app", "kl-app", true, false, dir.path()),
                package("core", "kl-lib", true, false, dir.path()),
                package("tokio", "tokio", false, false, dir.path()),
                package("bytes", "bytes", false, false, dir.path()),
                package("ring", "ring", false, false, dir.path()),
                package("bare", "bare", false, false, dir.path()),
                package("derive", "serde_derive", false, true, dir.path()),
                package("cc", "cc", false, false, dir.path()),
                package("mock", "wiremock", false, false, dir.path()),
            ],
            "resolve": {"nodes": [
                {"id": "app", "deps": [dep("core", Value::Null), dep("mock", json!("dev")), dep("derive", Value::Null)]},
                {"id": "core", "deps": [dep("tokio", Value::Null), dep("cc", json!("build")), dep("bare", Value::Null)]},
                {"id": "tokio", "deps": [dep("bytes", Value::Null), dep("ring", Value::Null)]},
                {"id": "bytes", "deps": []}, {"id": "ring", "deps": []}, {"id": "bare", "deps": []},
                {"id": "derive", "deps": []}, {"id": "cc", "deps": []}, {"id": "mock", "deps": [dep("tokio", Value::Null)]},
            ]},
        });
        let graph = Graph::from_metadata(&meta).unwrap();
        let linked = graph.linked(&["kl-app"]).unwrap();
        let names: Vec<&str> = linked.iter().map(|c| c.name.as_str()).collect();
        // Not our own crates, not a proc-macro, not a build or dev dependency.
        assert_eq!(names, ["bare", "bytes", "ring", "tokio"]);
        let text = render(&linked, "kl-app").unwrap();
        assert_eq!(text.matches("MIT text").count(), 1, "{text}");
        assert!(text.contains("The text below comes with: bytes 1.0.0 (LICENSE), tokio 1.0.0 (LICENSE)"), "{text}");
        assert!(text.contains("ISC text"));
        assert!(text.contains("  bare 1.0.0 (MIT)"), "a crate without a text is still named: {text}");
        assert!(graph.linked(&["kl-missing"]).is_err());
        assert!(render(&[], "kl-app").is_err());
    }
}
