//! Every `kl-generic-json` command line in docs/generic-json.md runs here
//! against the replay backend, so the recipes cannot rot.

use serde_json::{Map, Value};

use crate::*;

/// The command lines in the doc: the words after `kl-generic-json` up to
/// the end of the command (a pipe, a redirection, a closing quote).
fn documented_commands() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(root().join("docs/generic-json.md")).unwrap();
    let mut commands = Vec::new();
    for line in doc.lines() {
        let Some(pos) = line.find("kl-generic-json ") else { continue };
        let mut words = Vec::new();
        for word in line[pos + "kl-generic-json ".len()..].split_whitespace() {
            if ["|", "<", ">", ">>"].contains(&word) {
                break;
            }
            let cleaned = word.trim_end_matches([',', ']']);
            let ends = cleaned.ends_with('"');
            let cleaned = cleaned.trim_matches('"');
            if !cleaned.is_empty() {
                words.push(cleaned.to_owned());
            }
            if ends {
                break;
            }
        }
        if matches!(words.first().map(String::as_str), Some("enrich" | "lookup"))
            && !words.iter().any(|w| w.contains("FUNCTION"))
        {
            commands.push(words);
        }
    }
    commands
}

fn offline_args(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "--config" {
            it.next();
            out.push("--offline".to_owned());
            out.push(responses().to_str().unwrap().to_owned());
        } else {
            out.push(w.clone());
        }
    }
    out
}

fn flag<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    words.iter().position(|w| w == name).and_then(|i| words.get(i + 1)).map(String::as_str)
}

/// An event holding `value` at `path` (dotted, pointer or plain key).
fn event_at(path: &str, value: &str) -> Value {
    let segments: Vec<&str> = match path.strip_prefix('/') {
        Some(p) => p.split('/').collect(),
        None => path.split('.').collect(),
    };
    let mut v = Value::from(value);
    for seg in segments.iter().rev() {
        let mut m = Map::new();
        m.insert((*seg).to_owned(), v);
        v = Value::Object(m);
    }
    let mut event = v.as_object().unwrap().clone();
    event.insert("other".into(), Value::from("kept"));
    Value::Object(event)
}

#[tokio::test]
async fn every_documented_command_line_works() {
    let commands = documented_commands();
    assert!(commands.len() >= 7, "found only {commands:?}");
    for words in &commands {
        let args = offline_args(words);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if words[0] == "lookup" {
            let out = run(&args, b"").await;
            assert_eq!(stdout_lines(&out).len(), 1, "{words:?}");
            continue;
        }
        let field = flag(words, "--field").unwrap();
        let indicator = match flag(words, "--function").unwrap() {
            "get_domain_report" => "secure-paypal-login.info",
            _ => "39.90.148.83",
        };
        let input = format!("{}\nnot json\n", event_at(field, indicator));
        let out = run(&args, input.as_bytes()).await;
        assert!(out.status.success(), "{words:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let first: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(lines.next(), Some("not json"), "{words:?}");
        assert_eq!(first["other"], "kept");
        match flag(words, "--style").unwrap_or("nested") {
            "kl" => assert_eq!(first["$KLZone"], "Red", "{words:?}"),
            "nested" => assert_eq!(first["kaspersky"]["zone"], "Red", "{words:?}"),
            "ecs" => {
                assert_eq!(first["threat"]["enrichments"][0]["matched"]["field"], field, "{words:?}");
                assert_eq!(first["kaspersky"]["zone"], "Red");
            }
            other => panic!("unknown style {other}"),
        }
    }
}
