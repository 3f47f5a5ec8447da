//! The `openai-judge` plugin (contract 0.2.0's judge kind) against a loopback stand-in of an
//! OpenAI-compatible endpoint: refused without a network grant, one request per prompt with
//! the model, token budget, temperature 0 and API key, verdicts read by the host's judge, and
//! `host eval --judge-plugin` end to end.

use crate::common;

use research_host::eval::judge::{JudgeBackend, JudgeItem, PluginJudge, judge_all};
use research_host::plugins::{JudgePlugin, LoadedPlugin, discover};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One recorded request: the authorization header (if any) and the JSON body.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A loopback chat-completions endpoint that judges like a lenient grader: `correct` when the
/// predicted answer contains the golden one (case-insensitive).
fn fake_endpoint() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).ok();
            let (mut length, mut authorization) = (0usize, None);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                let lower = header.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    authorization = Some(header["authorization:".len()..].trim().to_string());
                }
            }
            let mut payload = vec![0u8; length];
            reader.read_exact(&mut payload).ok();
            let body: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let user = body["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let field = |name: &str| {
                user.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or("")
                    .trim()
                    .to_lowercase()
            };
            let (golden, predicted) = (field("Golden answer:"), field("Predicted answer:"));
            let verdict = if !golden.is_empty() && predicted.contains(&golden) {
                "correct"
            } else {
                "incorrect"
            };
            let verdict_json = serde_json::json!({
                "rationale": format!("compared {predicted:?} with {golden:?}"),
                "judgement": verdict,
            });
            let content = format!("```json\n{verdict_json}\n```");
            let reply = serde_json::json!({
                "id": "x", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]
            })
            .to_string();
            record.lock().unwrap().push((authorization, body));
            let mut stream = reader.into_inner();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
            stream.write_all(response.as_bytes()).ok();
        }
    });
    (address, seen)
}

/// The shipped manifest of `name` with a prebuilt component and extra lines, as `dir/new_name`.
fn copy_manifest(dir: &Path, name: &str, new_name: &str, edit: impl Fn(String) -> String) {
    let shipped = std::fs::read_to_string(common::plugins_dir().join(name).join("plugin.toml"))
        .expect("shipped manifest");
    let wasm = common::shipped_wasm(name);
    let manifest = shipped.replacen(
        &format!("name = \"{name}\""),
        &format!("name = \"{new_name}\"\nwasm = \"{}\"", wasm.display()),
        1,
    );
    let folder = dir.join(new_name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("plugin.toml"), edit(manifest)).unwrap();
}

fn granted(address: SocketAddr) -> impl Fn(String) -> String {
    move |m: String| m.replace("127.0.0.1:8080", &address.to_string())
}

fn load_judge(dir: &Path) -> Result<JudgePlugin, String> {
    let plugins = discover(dir).expect("discover");
    match common::host().load(&plugins[0], &BTreeMap::new()) {
        Ok((_, LoadedPlugin::Judge(plugin))) => Ok(plugin),
        Ok(_) => Err("not a judge plugin".into()),
        Err(error) => Err(format!("{error:#}")),
    }
}

#[test]
fn without_a_grant_for_its_endpoint_the_judge_plugin_cannot_connect_or_load() {
    // No network capability at all: refused at load time.
    let dir = tempfile::tempdir().unwrap();
    copy_manifest(dir.path(), "openai-judge", "judge-no-grant", |m| {
        m.replace("network = [\"127.0.0.1:8080\"]", "network = []")
    });
    let error = load_judge(dir.path()).err().expect("refused");
    assert!(error.contains("no network capability"), "{error}");

    // A grant for another authority: the request is denied, the error names the plugin.
    let (address, seen) = fake_endpoint();
    let dir = tempfile::tempdir().unwrap();
    copy_manifest(dir.path(), "openai-judge", "judge-other-grant", |m| {
        m.replace("http://127.0.0.1:8080/v1", &format!("http://{address}/v1"))
    });
    let plugin = load_judge(dir.path()).expect("loads with its shipped grant");
    let prompts = vec![vec![research_host::plugins::Message {
        role: "user".into(),
        content: "hi".into(),
    }]];
    let error = plugin
        .complete(&prompts, 8)
        .expect_err("denied")
        .to_string();
    assert!(error.contains("judge-other-grant"), "{error}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the endpoint"
    );
}

#[test]
fn the_judge_plugin_asks_the_endpoint_once_per_prompt_and_the_host_reads_verdicts() {
    let (address, seen) = fake_endpoint();
    let dir = tempfile::tempdir().unwrap();
    copy_manifest(dir.path(), "openai-judge", "judge-test", |m| {
        granted(address)(m)
            .replace("http://127.0.0.1:8080/v1", &format!("http://{address}/v1"))
            .replace(
                "model = \"judge\"",
                "model = \"qwen-judge\"\napi-key = \"sk-test\"",
            )
    });
    let plugin = load_judge(dir.path()).expect("loads");
    let judge = PluginJudge {
        plugin,
        max_tokens: 64,
        batch: 2,
    };
    let tolstoy = vec!["Tolstoy".to_string(), "Leo Tolstoy".to_string()];
    let year = vec!["1912".to_string()];
    let items = [
        JudgeItem {
            question: "Who wrote War and Peace?",
            golden_answers: &tolstoy,
            prediction: Some("Count Leo Tolstoy"),
        },
        JudgeItem {
            question: "When did the Titanic sink?",
            golden_answers: &year,
            prediction: Some("1915"),
        },
        JudgeItem {
            question: "When did the Titanic sink?",
            golden_answers: &year,
            prediction: None,
        },
    ];
    let outcomes = judge_all(&judge as &dyn JudgeBackend, &items).unwrap();
    assert!(outcomes[0].correct, "{outcomes:?}");
    assert_eq!(
        outcomes[0].calls[0].rationale.as_deref(),
        Some("compared \"count leo tolstoy\" with \"tolstoy\"")
    );
    assert!(!outcomes[1].correct);
    assert_eq!(outcomes[1].calls[0].judgement.as_deref(), Some("incorrect"));
    assert!(
        outcomes[1].calls[0].output.starts_with("```json"),
        "raw output kept"
    );
    assert_eq!(outcomes[2].skipped.as_deref(), Some("no answer"));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        3,
        "2 golden answers + 1; none for the missing answer"
    );
    for (authorization, body) in seen.iter() {
        assert_eq!(authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(body["model"], "qwen-judge");
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["messages"][0]["role"], "system");
    }
}

#[test]
fn host_eval_with_a_judge_plugin_keeps_its_outputs() {
    let (address, seen) = fake_endpoint();
    let dir = tempfile::tempdir().unwrap();
    // A policy that answers "Paris" to everything: every record goes to the judge.
    let policy = common::answering_model(&dir.path().join("answering"), "Paris");
    let plugins = dir.path().join("plugins");
    for name in [
        "research-reward",
        "research-prompt",
        "tag-parser",
        "local-search",
    ] {
        copy_manifest(&plugins, name, name, |m| m);
    }
    copy_manifest(&plugins, "openai-judge", "openai-judge", |m| {
        granted(address)(m).replace("http://127.0.0.1:8080/v1", &format!("http://{address}/v1"))
    });
    let out = dir.path().join("eval");
    let output = common::host_command(&[
        "eval",
        "--model",
        policy.to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
        "--limit=6",
        "--batch=3",
        "--max-response-tokens=24",
        "--quiet",
        "--judge-plugin",
        "openai-judge",
        "--judge-max-tokens=32",
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let text = common::output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("judge"), "{text}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let dataset = &report["datasets"][0];
    let acc = dataset["judge_acc"]
        .as_f64()
        .expect("judge accuracy reported");
    assert!((0.0..=1.0).contains(&acc));
    let records = std::fs::read_to_string(out.join("world-validation.jsonl")).unwrap();
    let mut judged = 0;
    for line in records.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let judge = &record["judge"];
        assert!(judge.is_object(), "{record}");
        assert_eq!(record["answer"], "Paris");
        for call in judge["calls"].as_array().unwrap() {
            assert!(call["output"].as_str().unwrap().contains("judgement"));
            assert_eq!(call["judgement"], "incorrect");
            judged += 1;
        }
    }
    assert_eq!(records.lines().count(), 6);
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["judge"]["plugin"], "openai-judge");
    assert!(judged >= 6, "{judged} judge calls");
    assert_eq!(
        seen.lock().unwrap().len(),
        judged,
        "one request per recorded call"
    );

    // Both judges at once are refused by the command line.
    let output = common::host_command(&[
        "eval",
        "--judge-plugin",
        "openai-judge",
        "--judge-model",
        "x",
    ])
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(common::output_text(&output).contains("cannot be used with"));
}
