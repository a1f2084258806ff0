//! Server faults between good events: every event comes back, in order,
//! with its own data or `$KLError` alone, never another event's data.

use kl_testkit::{Expect, FAULT_CONFIG, FaultServer, check, fatal_between_good_events, faults_between_good_events};
use serde_json::{Value, json};

use crate::*;

async fn run_plan(server: &FaultServer, plan: &[(&str, Expect)], extra: &str) -> usize {
    let (_dir, cfg) = config_dir(&server.api_url(), &format!("{FAULT_CONFIG}{extra}"));
    let batch: Vec<Value> = plan.iter().enumerate().map(|(i, (ip, _))| json!({"n": i, "$SrcIP": ip})).collect();
    let before = server.requests();
    let out = parse(
        &run_kl_dnif(
            &["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"],
            &serde_json::to_vec(&batch).unwrap(),
            &[],
        )
        .await,
    );
    assert_eq!(out.len(), plan.len(), "every event comes back");
    for (i, ((ip, expect), event)) in plan.iter().zip(&out).enumerate() {
        assert_eq!(event["n"], i, "order kept");
        check(event, ip, expect).unwrap();
    }
    server.requests() - before
}

#[tokio::test]
async fn eleven_kinds_of_fault_between_good_events() {
    let server = FaultServer::start().await;
    let plan = faults_between_good_events(&server);
    run_plan(&server, &plan, "").await;
}

#[tokio::test]
async fn unauthorised_and_forbidden_stop_the_run_mid_batch() {
    for status in [401, 403] {
        let server = FaultServer::start().await;
        let plan = fatal_between_good_events(&server, status);
        // One request at a time: nothing after the fatal answer is sent.
        let sent = run_plan(&server, &plan, "  KL_CONCURRENCY: 1\n").await;
        assert_eq!(sent, 2, "{status}: only the good event before it and the fatal request itself");
        assert!(server.paths().last().unwrap().contains("3.0.0.1"));
    }
}
