//! `cargo xtask package` end to end: the portable build (cargo-zigbuild for
//! glibc 2.17), every tarball's layout, its binaries' glibc needs and
//! `--version`, its third-party licences, and two runs giving identical
//! bytes. Builds with a cheap profile in its own target folder, so it does
//! not wait on the test run's own build.
//!
//! The pinned zigbuild tools come from the Python package index on first
//! use (`.ci/run` installs them first). Where they cannot be installed, the
//! test says so and passes, except under `CI=true`, where that fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use xtask::glibc::{self, GlibcVersion};
use xtask::licenses;
use xtask::package::{Options, run};

struct File {
    mode: u32,
    contents: Vec<u8>,
}

fn unpack(tarball: &Path) -> BTreeMap<String, File> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    tar::Archive::new(gz)
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut contents = Vec::new();
            e.read_to_end(&mut contents).unwrap();
            (path, File { mode, contents })
        })
        .collect()
}

fn tools_available(root: &Path) -> bool {
    match xtask::zigbuild::ensure_installed(root) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and the zigbuild tools: {e:#}"),
        Err(e) => {
            eprintln!("skipped: the pinned zigbuild tools cannot be installed here: {e:#}");
            false
        }
    }
}

#[test]
fn two_portable_runs_give_identical_tarballs_with_the_documented_layout() {
    let root = xtask::root();
    if !tools_available(&root) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let opts = |out: &str| Options {
        profile: "package-test".to_owned(),
        out: Some(scratch.path().join(out)),
        target_dir: Some(root.join("target/package-test")),
        ..Options::default()
    };
    let first = run(&root, &opts("one")).unwrap();
    let second = run(&root, &opts("two")).unwrap();
    assert_eq!(first.sums, second.sums, "SHA256SUMS differ between two runs");
    assert_eq!(std::fs::read_to_string(first.dir.join("SHA256SUMS")).unwrap(), first.sums);
    assert_eq!(first.sums.lines().count(), 4, "{}", first.sums);
    for line in first.sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        assert_eq!(xtask::archive::sha256_hex(&first.dir.join(name)).unwrap(), sum);
    }

    let version_target = |t: &Path| {
        let name = t.file_name().unwrap().to_str().unwrap().trim_end_matches(".tar.gz").to_owned();
        let package = xtask::package::BINARIES.iter().find(|b| name.starts_with(&format!("{b}-0"))).unwrap();
        (package.to_string(), name[package.len() + 1..].to_owned())
    };
    let unpacked = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for tarball in &first.tarballs {
        let (package, vt) = version_target(tarball);
        assert!(vt.ends_with("-x86_64-unknown-linux-gnu"), "{vt}: the name keeps the target");
        let files = unpack(tarball);
        let top = match package.as_str() {
            "kl-dnif" => "kaspersky".to_owned(),
            "kl-splunk" => xtask::package::SPLUNK_APP.to_owned(),
            _ => format!("{package}-{vt}"),
        };
        assert!(files.keys().all(|p| p.starts_with(&format!("{top}/"))), "{package}: one top folder {top}");

        // Every ELF: at most GLIBC_2.17, and it runs here.
        let elves: Vec<(&String, &File)> = files.iter().filter(|(_, f)| f.contents.starts_with(b"\x7fELF")).collect();
        assert_eq!(elves.len(), 1, "{package}: one binary");
        for (path, file) in elves {
            assert_eq!(file.mode, 0o755, "{path}");
            let on_disk = unpacked.path().join(path.replace('/', "_"));
            std::fs::write(&on_disk, &file.contents).unwrap();
            std::fs::set_permissions(&on_disk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            let newest = glibc::newest_needed(&on_disk).unwrap().unwrap();
            assert!(newest <= GlibcVersion(2, 17, 0), "{path} needs {newest}");
            let out = Command::new(&on_disk).arg("--version").output().unwrap();
            assert!(out.status.success(), "{path} --version");
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(&package), "{path}");
        }

        // The third-party licences of what the binary bundles.
        let third = &files[&format!("{top}/{}", licenses::FILE_NAME)];
        let text = String::from_utf8(third.contents.clone()).unwrap();
        for krate in ["tokio ", "rustls ", "serde_json ", "reqwest "] {
            assert!(text.contains(&format!("\n  {krate}")), "{package}: {krate}missing from the list");
        }
        assert!(text.contains("Permission is hereby granted") && text.contains("Apache License"), "{package}");
        assert!(files.contains_key(&format!("{top}/LICENSE")), "{package}: kl's own LICENSE");
        seen.push(package.clone());

        match package.as_str() {
            "kl-dnif" => {
                let listing: BTreeMap<&str, u32> = files.iter().map(|(p, f)| (p.as_str(), f.mode)).collect();
                let expected = BTreeMap::from([
                    ("kaspersky/", 0o755),
                    ("kaspersky/LICENSE", 0o644),
                    ("kaspersky/README.md", 0o644),
                    ("kaspersky/THIRD-PARTY-LICENSES.txt", 0o644),
                    ("kaspersky/__init__.py", 0o644),
                    ("kaspersky/bin/", 0o755),
                    ("kaspersky/bin/kl-dnif", 0o755),
                    ("kaspersky/dnifconfig.yml", 0o644),
                    ("kaspersky/kaspersky.py", 0o644),
                ]);
                assert_eq!(listing, expected);
            }
            "kl-splunk" => {
                for f in [
                    "default/app.conf",
                    "default/transforms.conf",
                    "metadata/default.meta",
                    "bin/kaspersky_lookup.py",
                    "bin/kl-splunk",
                    "README.md",
                ] {
                    assert!(files.contains_key(&format!("{top}/{f}")), "kl-splunk: {f} missing");
                }
                let transforms =
                    String::from_utf8_lossy(&files[&format!("{top}/default/transforms.conf")].contents).into_owned();
                for stanza in ["kaspersky_auto", "kaspersky_ip", "kaspersky_domain", "kaspersky_url", "kaspersky_hash"]
                {
                    assert!(transforms.contains(&format!("[{stanza}]")), "{stanza}");
                }
            }
            _ => {
                for f in [package.as_str(), "README.md", "kl.example.yml", "doc/fields.md"] {
                    assert!(files.contains_key(&format!("{top}/{f}")), "{package}: {f} missing");
                }
            }
        }
    }
    seen.sort();
    assert_eq!(seen, ["kl-dnif", "kl-generic-json", "kl-http", "kl-splunk"]);
}
