//! The command-line contract: pass-through, order, field paths, auto,
//! streaming, lookup, exit statuses.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wiremock::matchers::{any, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

async fn mock_ip(server: &MockServer, ip: &str, delay_ms: u64) {
    Mock::given(path(format!("/api/ip/{ip}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"Zone": "Red", "IpGeneralInfo": {"Ip": ip, "CountryCode": "NL"}}))
                .set_delay(Duration::from_millis(delay_ms)),
        )
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn non_objects_and_objects_without_the_field_pass_through_byte_for_byte() {
    let offline = responses();
    let mut input: Vec<u8> = Vec::new();
    let passthrough: Vec<&[u8]> = vec![
        b"not json at all\n",
        b"\n",
        b"[1, 2, 3]\n",
        b"\"a string\"\n",
        b"{\"no_field\" :  true,   \"spacing\": \"kept\"}\n",
        b"{\"truncated\": \n",
        b"\xff\xfe invalid utf-8\n",
        b"42\n",
    ];
    for (i, line) in passthrough.iter().enumerate() {
        input.extend_from_slice(line);
        input.extend_from_slice(format!("{{\"indicator\":\"8.8.8.8\",\"n\":{i}}}\n").as_bytes());
    }
    input.extend_from_slice(b"last line without newline");
    let out = run(
        &[
            "enrich",
            "--function",
            "auto",
            "--field",
            "indicator",
            "--offline",
            offline.to_str().unwrap(),
            "--style",
            "kl",
        ],
        &input,
    )
    .await;
    assert!(out.status.success());
    let lines: Vec<&[u8]> = out.stdout.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), passthrough.len() * 2 + 1);
    for (i, line) in passthrough.iter().enumerate() {
        assert_eq!(lines[2 * i], *line, "line {} must pass through unchanged", 2 * i);
        let enriched: Value = serde_json::from_slice(lines[2 * i + 1]).unwrap();
        assert_eq!(enriched["n"], i);
        assert_eq!(enriched["$KLZone"], "Green");
    }
    assert_eq!(*lines.last().unwrap(), b"last line without newline");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("17 lines, 8 enriched, 0 errors, 0 skipped, 9 passed through; 1 requests, 0 cache hits, 7 reused in this run"),
        "{stderr}"
    );
}

#[tokio::test]
async fn lines_leave_in_input_order_whatever_the_answer_order() {
    let server = MockServer::start().await;
    mock_ip(&server, "1.0.0.1", 400).await;
    mock_ip(&server, "1.0.0.2", 0).await;
    mock_ip(&server, "1.0.0.3", 200).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "");
    let input = "{\"ip\":\"1.0.0.1\",\"n\":0}\n{\"x\":1,\"n\":1}\n{\"ip\":\"1.0.0.2\",\"n\":2}\n{\"ip\":\"1.0.0.3\",\"n\":3}\n{\"ip\":\"1.0.0.1\",\"n\":4}\n";
    let out =
        run(&["enrich", "--function", "get_ip_report", "--field", "ip", "--config", &cfg, "--quiet"], input.as_bytes())
            .await;
    let lines = stdout_lines(&out);
    assert!(out.stderr.is_empty(), "--quiet: {}", String::from_utf8_lossy(&out.stderr));
    let order: Vec<u64> = lines.iter().map(|l| l["n"].as_u64().unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    for l in lines.iter().filter(|l| l.get("ip").is_some()) {
        assert_eq!(l["kaspersky"]["zone"], "Red");
    }
    assert_eq!(lines[1], json!({"x": 1, "n": 1}));
}

#[tokio::test]
async fn three_forms_of_field_path() {
    let offline = responses();
    let input = r#"{"source":{"ip":"39.90.148.83"},"kept":[1,{"a":null}]}"#.to_owned() + "\n";
    for field in ["source.ip", "/source/ip"] {
        let out = run(
            &[
                "enrich",
                "--function",
                "get_ip_report",
                "--field",
                field,
                "--offline",
                offline.to_str().unwrap(),
                "--style",
                "kl",
            ],
            input.as_bytes(),
        )
        .await;
        let line = &stdout_lines(&out)[0];
        assert_eq!(line["$KLZone"], "Red", "{field}");
        assert_eq!(line["kept"], json!([1, {"a": null}]));
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(&keys[..2], ["source", "kept"], "key order kept");
    }
    let top = "{\"ip\":\"39.90.148.83\"}\n";
    let out = run(
        &["enrich", "--function", "get_ip_report", "--field", "ip", "--offline", offline.to_str().unwrap()],
        top.as_bytes(),
    )
    .await;
    assert_eq!(stdout_lines(&out)[0]["kaspersky"]["zone"], "Red");
}

#[tokio::test]
async fn auto_picks_the_report_function_for_each_type() {
    let server = MockServer::start().await;
    let cases = [
        ("8.8.8.8", "/api/ip/8.8.8.8", "get_ip_report"),
        ("Example.com", "/api/domain/example.com", "get_domain_report"),
        ("http://example.com/x?y=1", "/api/url/http%3A%2F%2Fexample.com%2Fx%3Fy%3D1", "get_url_report"),
        ("example.com/login", "/api/url/example.com%2Flogin", "get_url_report"),
        ("44d88612fea8a8f36de82e1278abb02f", "/api/hash/44D88612FEA8A8F36DE82E1278ABB02F", "get_hash_report"),
        (
            "3395856ce81f2b7382dee72602f798b642f14140",
            "/api/hash/3395856CE81F2B7382DEE72602F798B642F14140",
            "get_hash_report",
        ),
    ];
    for (_, p, f) in cases {
        let sections = f.parse::<kl_core::Function>().unwrap().sections_param();
        Mock::given(path(p))
            .and(query_param("sections", sections.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Zone": "Yellow"})))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(any()).respond_with(ResponseTemplate::new(599)).expect(0).mount(&server).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "");
    let input: String = cases.iter().map(|(i, _, _)| format!("{}\n", json!({"v": i}))).collect();
    let out =
        run(&["enrich", "--function", "auto", "--field", "v", "--config", &cfg, "--style", "kl"], input.as_bytes())
            .await;
    for line in stdout_lines(&out) {
        assert_eq!(line["$KLZone"], "Yellow", "{line}");
    }
}

#[tokio::test]
async fn an_answer_arrives_while_stdin_is_still_open() {
    let offline = responses();
    let mut child = command(&[
        "enrich",
        "--function",
        "auto",
        "--field",
        "indicator",
        "--offline",
        offline.to_str().unwrap(),
        "--quiet",
    ])
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    for (ip, zone) in [("39.90.148.83", "Red"), ("8.8.8.8", "Green")] {
        stdin.write_all(format!("{{\"indicator\":\"{ip}\"}}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("an answer while stdin is open")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kaspersky"]["zone"], zone);
    }
    drop(stdin);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn lookup_prints_one_object_and_exits_by_outcome() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let out =
        run(&["lookup", "get_hash_report", "44d88612fea8a8f36de82e1278abb02f", "--offline", off, "--style", "kl"], b"")
            .await;
    let v = &stdout_lines(&out)[0];
    assert_eq!(v["$KLZone"], "Red");
    assert_eq!(v["$KLDetectionNames"], json!(["EICAR-Test-File"]));

    let out = run(&["lookup", "auto", "never-recorded-host.com", "--offline", off], b"").await;
    assert_eq!(stdout_lines(&out)[0], json!({"kaspersky": {"zone": "Grey"}}));

    let out = run(&["lookup", "get_ip_report", "1.2.3", "--offline", off], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed["kaspersky"]["error"].as_str().unwrap().contains("invalid IPv4 address"), "{printed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"invalid IPv4 address "1.2.3""#));

    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "  KL_RETRIES: 1\n");
    let out = run(&["lookup", "get_ip_report", "8.8.8.8", "--config", &cfg], b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 503"));
}

#[tokio::test]
async fn usage_and_config_errors_exit_2_with_nothing_on_stdout() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["enrich", "--field", "ip", "--offline", off], "--function"),
        (vec!["enrich", "--function", "get_ipv6", "--field", "ip", "--offline", off], "unknown function"),
        (vec!["enrich", "--function", "auto", "--field", "ip", "--offline", off, "--style", "flat"], "unknown style"),
        (vec!["enrich", "--function", "auto", "--field", "ip", "--offline", "/nonexistent"], "offline"),
        (vec!["enrich", "--function", "auto", "--field", "ip", "--config", "/nonexistent.yml"], "does not exist"),
        (vec!["enrich", "--function", "auto", "--field", "ip"], "no credentials"),
        (
            vec!["enrich", "--function", "auto", "--field", "ip", "--config", "x.yml", "--offline", off],
            "cannot be used with",
        ),
        (vec!["lookup", "get_ip_report"], "INDICATOR"),
    ];
    for (args, needle) in cases {
        let out = run(&args, b"{\"ip\":\"8.8.8.8\"}\n").await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn the_readme_demo_runs_offline() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let demo = "cargo run -p kl-generic-json -- enrich --function auto --field indicator --offline fixtures/responses < fixtures/events/demo.ndjson";
    assert!(readme.contains(demo), "the README's first command changed");
    let input = std::fs::read(root().join("fixtures/events/demo.ndjson")).unwrap();
    let offline = responses();
    let out =
        run(&["enrich", "--function", "auto", "--field", "indicator", "--offline", offline.to_str().unwrap()], &input)
            .await;
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), input.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count());
    for l in &lines {
        let zone = l["kaspersky"]["zone"].as_str().unwrap_or_default();
        assert!(["Red", "Orange", "Yellow", "Grey", "Green"].contains(&zone), "every demo event is answered: {l}");
    }
    // Every indicator in the demo has a recorded response: Grey only where the recording says so.
    assert!(lines.iter().filter(|l| l["kaspersky"]["zone"] == "Grey").all(|l| l["indicator"] == "nodata.example.org"));
}

#[tokio::test]
async fn a_warm_cache_answers_a_second_run_with_no_request() {
    let server = MockServer::start().await;
    mock_ip(&server, "1.0.0.1", 0).await;
    let cache = tempfile::tempdir().unwrap();
    let (_d, cfg) = config(&format!("{}/api", server.uri()), &format!("  KL_CACHE_PATH: {}\n", cache.path().display()));
    let input = "{\"ip\":\"1.0.0.1\"}\n".repeat(50);
    let args = ["enrich", "--function", "get_ip_report", "--field", "ip", "--config", &cfg, "--style", "kl"];
    let first = run(&args, input.as_bytes()).await;
    let second = run(&args, input.as_bytes()).await;
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(stdout_lines(&second).len(), 50);
    let summary = String::from_utf8_lossy(&second.stderr);
    // One answer from the persistent cache, then 49 reused from memory:
    // the summary tells the two apart.
    assert!(summary.contains("0 requests, 1 cache hits, 49 reused in this run"), "{summary}");
    // mock_ip expects exactly one request over both runs.
}

#[tokio::test]
async fn events_that_already_have_our_keys_are_rebuilt_not_duplicated() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let input = concat!(
        r#"{"indicator":"8.8.8.8","$KLZone":"stale","a":1}"#,
        "\n",
        r#"{"indicator":"39.90.148.83","threat":{"enrichments":[{"from":"elsewhere"}]}}"#,
        "\n",
        r#"{"indicator":"8.8.8.8","kaspersky":"old"}"#,
        "\n"
    );
    let kl = stdout_lines(
        &run(
            &["enrich", "--function", "auto", "--field", "indicator", "--offline", off, "--style", "kl"],
            input.as_bytes(),
        )
        .await,
    );
    assert_eq!(kl[0]["$KLZone"], "Green");
    assert_eq!(kl[0].as_object().unwrap().keys().filter(|k| *k == "$KLZone").count(), 1);
    let ecs = stdout_lines(
        &run(
            &["enrich", "--function", "auto", "--field", "indicator", "--offline", off, "--style", "ecs"],
            input.as_bytes(),
        )
        .await,
    );
    let entries = ecs[1]["threat"]["enrichments"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], json!({"from": "elsewhere"}));
    assert_eq!(entries[1]["indicator"]["ip"], "39.90.148.83");
    let nested = stdout_lines(
        &run(&["enrich", "--function", "auto", "--field", "indicator", "--offline", off], input.as_bytes()).await,
    );
    assert_eq!(nested[2]["kaspersky"]["zone"], "Green");
}

/// The kernel's high-water mark of a process's resident memory, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test]
async fn a_100_mib_line_passes_through_in_bounded_memory() {
    const LINE: usize = 100 << 20;
    let offline = responses();
    let mut child = command(&[
        "enrich",
        "--function",
        "auto",
        "--field",
        "indicator",
        "--offline",
        offline.to_str().unwrap(),
        "--quiet",
    ])
    .spawn()
    .unwrap();
    let pid = child.id().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(b"{\"indicator\":\"8.8.8.8\",\"n\":1}\n").await.unwrap();
        // An object holding the field, so only its length keeps it from being parsed.
        stdin.write_all(b"{\"indicator\":\"8.8.8.8\",\"pad\":\"").await.unwrap();
        let block = vec![b'x'; 1 << 20];
        let mut written = 0;
        while written < LINE {
            stdin.write_all(&block).await.unwrap();
            written += block.len();
        }
        stdin.write_all(b"\"}\n{\"indicator\":\"8.8.8.8\",\"n\":3}\n").await.unwrap();
    });
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut total, mut head, mut tail) = (0usize, Vec::new(), Vec::new());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            if head.len() < 4096 {
                head.extend_from_slice(&buf[..n.min(4096)]);
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 8192 {
                tail.drain(..tail.len() - 4096);
            }
            total += n;
        }
        (total, head, tail)
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    writer.await.unwrap();
    let (total, head, tail) = reader.await.unwrap();
    assert!(status.success());
    let text = String::from_utf8_lossy(&head);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kaspersky"]["zone"], "Green");
    assert!(
        text.lines().nth(1).unwrap().starts_with("{\"indicator\":\"8.8.8.8\",\"pad\":\"xxxx"),
        "the long line passes as it came"
    );
    let tail = String::from_utf8_lossy(&tail);
    let last: Value = serde_json::from_str(tail.lines().last().unwrap()).unwrap();
    assert_eq!(last["n"], 3);
    assert_eq!(last["kaspersky"]["zone"], "Green");
    let long_line = "{\"indicator\":\"8.8.8.8\",\"pad\":\"".len() + LINE + 3;
    assert!(total > long_line, "{total}");
    assert!(peak > 0 && peak < 64 * 1024, "peak resident memory {peak} KiB for a 100 MiB line");
}
