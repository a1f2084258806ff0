//! Every style for every function over the fixtures, as snapshots: the
//! lines a pipeline would receive.

use kl_core::{Function, ObjectKind};

use crate::*;

/// An NDJSON stream with one event per recorded indicator of `kind`.
fn stream_for(kind: ObjectKind) -> String {
    let mut names: Vec<String> = std::fs::read_dir(responses().join(kind.api_type()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let raw = kl_testkit::percent_decode(n);
            format!("{}\n", serde_json::json!({"event": {"id": n.len()}, "indicator": raw}))
        })
        .collect()
}

async fn snapshot(function: Function, style: &str) {
    let input = stream_for(function.object());
    let offline = responses();
    let out = run(
        &[
            "enrich",
            "--function",
            function.name(),
            "--field",
            "indicator",
            "--style",
            style,
            "--offline",
            offline.to_str().unwrap(),
            "--quiet",
        ],
        input.as_bytes(),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout_lines(&out);
    assert_eq!(lines.len(), input.lines().count());
    let pretty = serde_json::to_string_pretty(&lines).unwrap();
    insta::assert_snapshot!(format!("{}__{style}", function.name()), pretty);
}

macro_rules! styles {
    ($($name:ident: $f:expr),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            for style in ["kl", "nested", "ecs"] {
                snapshot($f, style).await;
            }
        }
    )*};
}

styles! {
    get_ip_report: Function::IpReport,
    get_ip_report_file: Function::IpReportFile,
    get_url_report: Function::UrlReport,
    get_url_report_file: Function::UrlReportFile,
    get_domain_report: Function::DomainReport,
    get_domain_report_file: Function::DomainReportFile,
    get_hash_report: Function::HashReport,
}
