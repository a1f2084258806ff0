//! Input that should work, losses that must be signalled, output flags that
//! would lose data, and fields that must never be borrowed.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

fn offline_args<'a>(off: &'a str, style: &'a str) -> Vec<&'a str> {
    vec!["enrich", "--function", "auto", "--field", "indicator", "--offline", off, "--style", style]
}

#[tokio::test]
async fn a_bom_crlf_endings_and_bytes_that_are_not_utf8_are_read() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(b"\xEF\xBB\xBF{\"indicator\":\"8.8.8.8\",\"n\":1}\r\n");
    input.extend_from_slice(b"not json\r\n");
    input.extend_from_slice(b"{\"indicator\":\"8.8.8.8\",\"note\":\"caf\xe9 \xff\",\"n\":2}\n");
    input.extend_from_slice(b"{\"indicator\":\"8.8.8.8\",\"n\":3}\r\n");
    input.extend_from_slice(b"{\"indicator\":\"8.8.\xff.8\",\"n\":4}\n");
    let out = run(&offline_args(off, "kl"), &input).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&[u8]> = out.stdout.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 5);
    // The BOM is gone; the line keeps its own CRLF.
    assert!(lines[0].starts_with(b"{\"indicator\":\"8.8.8.8\",\"n\":1,\"$KLZone\":\"Green\""), "{:?}", lines[0]);
    assert!(lines[0].ends_with(b"}\r\n"));
    assert_eq!(lines[1], b"not json\r\n");
    // Bytes that are not UTF-8 elsewhere in the event: enriched, and every
    // byte of the event kept.
    assert!(
        lines[2].starts_with(b"{\"indicator\":\"8.8.8.8\",\"note\":\"caf\xe9 \xff\",\"n\":2,\"$KLZone\":\"Green\"")
    );
    assert!(lines[2].ends_with(b"}\n"));
    assert!(lines[3].ends_with(b"}\r\n") && lines[3].windows(8).any(|w| w == b"$KLZone\""));
    // Such bytes in the indicator itself: an error on that event, no lookup.
    let text = String::from_utf8_lossy(lines[4]);
    assert!(text.contains("\"$KLError\":\"the indicator is not valid UTF-8\""), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5 lines, 3 enriched, 1 errors, 0 skipped, 1 passed through"), "{stderr}");
}

#[tokio::test]
async fn a_line_that_cannot_be_read_even_leniently_is_passed_through_warned_and_counted() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    // An invalid byte right after a backslash cannot be read as JSON.
    let input = b"{\"indicator\":\"8.8.8.8\",\"a\":\"\\\xff\"}\n{\"indicator\":\"8.8.8.8\"}\n";
    let out = run(&offline_args(off, "kl"), input).await;
    assert!(out.status.success());
    let lines: Vec<&[u8]> = out.stdout.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines[0], &input[..input.iter().position(|b| *b == b'\n').unwrap() + 1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not UTF-8") && stderr.contains("line 1"), "{stderr}");
    assert!(stderr.contains("1 passed through (1 unreadable)"), "{stderr}");
}

#[tokio::test]
async fn a_closed_output_stops_the_run_with_status_3_and_says_what_was_lost() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let mut child = command(&offline_args(off, "kl")).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    let writer = tokio::spawn(async move {
        // Far more than the pipe holds: the writes must hit the closed end.
        let line = b"{\"indicator\":\"8.8.8.8\"}\n".repeat(200_000);
        let _ = stdin.write_all(&line).await;
    });
    stdout.read_exact(&mut first).await.unwrap();
    drop(stdout); // the reader goes away, as `| head -1` would
    let (status, stderr) = kl_testkit::wait_within(child, Duration::from_secs(30)).await;
    let _ = writer.await;
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the output was closed"), "{stderr}");
    assert!(stderr.contains("lines were written") && stderr.contains("were not"), "{stderr}");
    // The summary counts only lines written: never more than were written.
    let summary = stderr.lines().find(|l| l.contains(" lines, ")).unwrap();
    let enriched: u64 = summary.split(" enriched").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let written_line = stderr.lines().find(|l| l.contains("lines were written")).unwrap();
    let written: u64 =
        written_line.split(" lines were written").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(enriched <= written, "{summary} / {written_line}");
}

#[tokio::test]
async fn lines_before_a_stalled_lookup_are_written_without_waiting_for_it() {
    let server = kl_testkit::mock_with_a_stalled_ip("2.2.2.2", Duration::from_secs(60)).await;
    let (_d, cfg) = config(&format!("{}/api", server.uri()), "  KL_CACHE_PATH: off\n  KL_TIMEOUT_SECS: 120\n");
    let mut child = command(&["enrich", "--function", "get_ip_report", "--field", "ip", "--config", &cfg, "--quiet"])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    // A steady producer: one line at a time, the stalled one third.
    for ip in ["1.1.1.1", "1.0.0.1", "2.2.2.2", "9.9.9.9"] {
        stdin.write_all(format!("{}\n", json!({"ip": ip})).as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }
    // The two lines before the stalled one come out long before it answers.
    for expected in ["1.1.1.1", "1.0.0.1"] {
        let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
            .await
            .expect("a finished line waited for a later, stalled one")
            .unwrap()
            .unwrap();
        assert!(line.contains(expected), "{line}");
    }
    // The line after it waits: order is kept.
    assert!(tokio::time::timeout(Duration::from_millis(300), stdout.next_line()).await.is_err());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_event_keeps_no_kl_field_but_its_own_lookups() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let input = concat!(
        r#"{"indicator":"1.2.3","$KLZone":"Green","$KLRedMd5":["X"],"a":1}"#,
        "\n",
        r#"{"$KLZone":"Red","indicator":"8.8.8.8","$KLCategory":["planted"],"$KLError":"old"}"#,
        "\n",
        r#"{"indicator":"10.1.2.3","$KLZone":"Red"}"#,
        "\n",
        r#"{"no_indicator":true,"$KLZone":"Red"}"#,
        "\n",
    );
    let lines = stdout_lines(&run(&offline_args(off, "kl"), input.as_bytes()).await);
    let kl = |v: &Value| -> Vec<String> {
        v.as_object().unwrap().keys().filter(|k| k.starts_with("$KL")).cloned().collect()
    };
    assert_eq!(kl(&lines[0]), ["$KLError"], "{}", lines[0]);
    assert_eq!(lines[0]["a"], 1);
    assert_eq!(lines[1]["$KLZone"], "Green");
    assert!(lines[1].get("$KLCategory").is_none() && lines[1].get("$KLError").is_none(), "{}", lines[1]);
    assert_eq!(kl(&lines[2]), ["$KLSkipped"], "{}", lines[2]);
    // No lookup, nothing written: the event passes as it came.
    assert_eq!(lines[3], json!({"no_indicator": true, "$KLZone": "Red"}));
}

#[tokio::test]
async fn output_flags_that_would_lose_data_are_refused() {
    let offline = responses();
    let off = offline.to_str().unwrap();
    let base = ["enrich", "--function", "auto", "--offline", off];
    for (extra, needle) in [
        (vec!["--field", "indicator", "--target", "indicator"], "overwrite"),
        (vec!["--field", "source.ip", "--target", "source"], "overwrite"),
        (vec!["--field", "/source/ip", "--target", "source", "--style", "ecs"], "overwrite"),
        (vec!["--field", "indicator", "--target", ""], "empty"),
        (vec!["--field", "indicator="], "empty"),
        (vec!["--field", "a=x", "--field", "b=x"], "two fields"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = run(&args, b"{\"indicator\":\"8.8.8.8\"}\n").await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
}

#[tokio::test]
async fn quiet_keeps_stderr_clean_and_warnings_can_go_to_a_file() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    kl_testkit::write_client_pem(dir.path());
    // A token with Basic credentials (a warning), and a failing server.
    let extra = "  KASPERSKY_API_USERNAME: u\n  KASPERSKY_API_PASSWORD: p\n  KASPERSKY_API_CERT_PATH: client.pem\n  KL_RETRIES: 1\n  KL_CACHE_PATH: off\n";
    let (_d, cfg) = config(&format!("{}/api", server.uri()), extra);
    let args = ["enrich", "--function", "auto", "--field", "indicator", "--config", &cfg];
    let input = b"{\"indicator\":\"8.8.8.8\"}\n".repeat(3);
    let loud = run(&args, &input).await;
    assert!(String::from_utf8_lossy(&loud.stderr).contains("the token is used"));
    let quiet_args: Vec<&str> = args.iter().copied().chain(["--quiet"]).collect();
    let quiet = run(&quiet_args, &input).await;
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "", "--quiet promises a clean stderr");
    assert_eq!(stdout_lines(&quiet).len(), 3);

    let log = dir.path().join("kl.log");
    let mut cmd = command(&quiet_args);
    cmd.env("KL_LOG_FILE", &log);
    let out = kl_testkit::run_with_stdin(cmd, &input).await;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("the token is used"), "{logged}");
}
