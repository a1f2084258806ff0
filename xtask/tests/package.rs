//! `cargo xtask package` end to end: the tarballs' contents, and two runs
//! giving identical bytes. Builds with a cheap profile in its own target
//! folder, so it does not wait on the test run's own build.

use std::collections::BTreeMap;
use std::path::Path;

use xtask::package::{Options, run};

fn listing(tarball: &Path) -> BTreeMap<String, u32> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    tar::Archive::new(gz)
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().display().to_string(), e.header().mode().unwrap())
        })
        .collect()
}

#[test]
fn two_runs_give_identical_tarballs_with_the_documented_layout() {
    let root = xtask::root();
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
    assert_eq!(first.sums.lines().count(), 2);
    for line in first.sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        assert_eq!(xtask::archive::sha256_hex(&first.dir.join(name)).unwrap(), sum);
    }

    let dnif =
        first.tarballs.iter().find(|t| t.file_name().unwrap().to_str().unwrap().starts_with("kl-dnif-")).unwrap();
    let files = listing(dnif);
    let expected = [
        ("kaspersky/", 0o755),
        ("kaspersky/LICENSE", 0o644),
        ("kaspersky/README.md", 0o644),
        ("kaspersky/__init__.py", 0o644),
        ("kaspersky/bin/", 0o755),
        ("kaspersky/bin/kl-dnif", 0o755),
        ("kaspersky/dnifconfig.yml", 0o644),
        ("kaspersky/kaspersky.py", 0o644),
    ];
    assert_eq!(files, expected.iter().map(|(p, m)| (p.to_string(), *m)).collect::<BTreeMap<_, _>>());

    let generic = first.tarballs.iter().find(|t| t != &dnif).unwrap();
    let name = generic.file_name().unwrap().to_str().unwrap().trim_end_matches(".tar.gz").to_owned();
    let version_target =
        dnif.file_name().unwrap().to_str().unwrap().trim_start_matches("kl-dnif-").trim_end_matches(".tar.gz");
    assert_eq!(name, format!("kl-generic-json-{version_target}"));
    let files = listing(generic);
    for f in ["kl-generic-json", "README.md", "LICENSE", "kl.example.yml"] {
        assert!(files.contains_key(&format!("{name}/{f}")), "{f} missing from {files:?}");
    }
    assert_eq!(files[&format!("{name}/kl-generic-json")], 0o755);
}
