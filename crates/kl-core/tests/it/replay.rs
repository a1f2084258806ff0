//! The replay backend over the committed fixtures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kl_core::backend::ReplayBackend;
use kl_core::{Engine, EngineOptions, Function, Indicator, ObjectKind, Outcome};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/responses")
}

/// Every fixture is named by its normalised, encoded indicator, so the
/// replay backend (and `--offline`) can find it.
#[test]
fn fixture_names_are_normalised_indicators() {
    for kind in [ObjectKind::Ipv4, ObjectKind::Domain, ObjectKind::Url, ObjectKind::Hash] {
        let dir = fixtures().join(kind.api_type());
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            let stem = name.strip_suffix(".json").unwrap();
            let raw = percent_encoding::percent_decode_str(stem).decode_utf8().unwrap().into_owned();
            let ind = Indicator::parse(kind, &raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ReplayBackend::path_for(&fixtures(), &ind), path, "{name} is not the normalised name");
            n += 1;
        }
        assert!(n >= 4, "{kind:?}: only {n} fixtures");
    }
}

#[tokio::test]
async fn replay_answers_with_the_function_sections_only() {
    let engine = Engine::new(Arc::new(ReplayBackend::new(fixtures()).unwrap()), EngineOptions::default());
    let Outcome::Data(v) = engine.lookup(Function::IpReportFile, "39.90.148.83").await else { panic!() };
    let v = v.value();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["FilesDownloadedFromIp", "HostedUrls"]);
    let url = "http://secure-paypal-login.info/signin?session=1&next=/account";
    assert!(matches!(engine.lookup(Function::UrlReport, url).await, Outcome::Data(_)));
    assert_eq!(engine.lookup(Function::DomainReport, "never-recorded-host.com").await, Outcome::NotFound);
    assert!(ReplayBackend::new("/nonexistent/dir").is_err());
}
