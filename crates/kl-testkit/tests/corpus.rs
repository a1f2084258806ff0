//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the same
//! checks the fuzz targets run, on every `cargo test`.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    assert!(n >= 5, "{target}: only {n} corpus entries");
}

#[test]
fn flatten_corpus() {
    replay("flatten", kl_testkit::fuzz::flatten);
}

#[test]
fn indicators_corpus() {
    replay("indicators", kl_testkit::fuzz::indicators);
}

#[test]
fn ndjson_line_corpus() {
    replay("ndjson_line", kl_testkit::fuzz::ndjson_line);
}
