//! `host eval` end to end on the embedded tiny model and world: files, metrics, a killed
//! evaluation continued to the same records, changed settings refused, bad data reported.

use crate::common;

use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{host_command, output_text as text};

fn records(path: &Path) -> Vec<Value> {
    let mut rows: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["example"].as_u64().unwrap());
    rows
}

const ARGS: [&str; 9] = [
    "eval",
    "--plugins=plugins",
    "--limit=12",
    "--batch=1",
    "--max-response-tokens=32",
    "--top-k=2",
    "--quiet",
    "--seed=0",
    "--temperature=0",
];

#[test]
fn eval_writes_records_and_a_report_and_continues_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let out = host_command(&[&ARGS[..], &["--out", full.to_str().unwrap()]].concat())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("world-validation"), "{}", text(&out));
    let rows = records(&full.join("world-validation.jsonl"));
    assert_eq!(rows.len(), 12);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["example"], i);
        for key in ["em", "f1", "acc", "precision", "recall"] {
            let v = row["scores"][key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v));
        }
        assert!(row["response_ids"].as_array().unwrap().len() <= 32);
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("report.json")).unwrap()).unwrap();
    let d = &report["datasets"][0];
    assert_eq!(d["dataset"], "world-validation");
    assert_eq!(d["questions"], 12);
    let finishes: u64 = d["finish"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(finishes, 12);
    let mean_f1 = rows
        .iter()
        .map(|r| r["scores"]["f1"].as_f64().unwrap())
        .sum::<f64>()
        / 12.0;
    assert!((d["f1"].as_f64().unwrap() - mean_f1).abs() < 1e-9);

    // Killed after a few questions, then the same command again: the same records.
    let killed = dir.path().join("killed");
    let file = killed.join("world-validation.jsonl");
    let mut child = host_command(&[&ARGS[..], &["--out", killed.to_str().unwrap()]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let lines = std::fs::read_to_string(&file)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no records appeared");
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill: the continuation below must then be a no-op
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().ok();
    child.wait().unwrap();
    // A line cut by the kill is dropped on continuation.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"example\": 99, \"cut"))
        .unwrap();
    let out = host_command(&[&ARGS[..], &["--out", killed.to_str().unwrap()]].concat())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("continuing the evaluation"),
        "{}",
        text(&out)
    );
    let strip = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .map(|r| serde_json::json!([r["example"], r["response_ids"], r["scores"], r["finish"]]))
            .collect()
    };
    assert_eq!(strip(records(&file)), strip(rows));

    // One writer per output folder: while another process holds it, `host eval` is refused at
    // once with the holder's pid and adds no record.
    let before = std::fs::read(&file).unwrap();
    let lock = research_host::folder_lock::FolderLock::acquire(&killed, "the test").unwrap();
    let out = host_command(&[&ARGS[..], &["--out", killed.to_str().unwrap()]].concat())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "{} is in use by another process (pid {}, `the test`)",
            killed.display(),
            std::process::id()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    drop(lock);

    // Other settings in the same folder are refused.
    let out = host_command(&[
        "eval",
        "--plugins=plugins",
        "--limit=12",
        "--max-response-tokens=64",
        "--out",
        full.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("other settings"), "{}", text(&out));

    // A bad dataset line names its file and line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"1\", \"question\": \"Q\"}\n").unwrap();
    let out = host_command(&["eval", "--plugins=plugins", "--data", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("bad.jsonl:1: question 1: no `golden_answers`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_judge_model_decides_answers_and_its_raw_outputs_are_kept() {
    use research_host::eval::judge::{JudgeBackend, JudgeItem, ModelJudge, judge_all};
    use research_host::model::tiny::{TINY, init_tiny};
    use research_host::model::{Architecture, load_model};

    let dir = tempfile::tempdir().unwrap();
    let judge_dir = dir.path().join("judge");
    init_tiny(Architecture::Qwen2, TINY, 5, None, &judge_dir).unwrap();

    // The model backend: greedy, bounded, one raw output per golden answer.
    let judge = ModelJudge {
        model: load_model(
            &judge_dir,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap(),
        max_new_tokens: 12,
        batch: 2,
    };
    let golden = vec!["Paris".to_string(), "City of Paris".to_string()];
    let items = [
        JudgeItem {
            question: "What is the capital of France?",
            golden_answers: &golden,
            prediction: Some("paris"),
        },
        JudgeItem {
            question: "What is the capital of France?",
            golden_answers: &golden,
            prediction: Some(""),
        },
    ];
    let outcomes = judge_all(&judge as &dyn JudgeBackend, &items).unwrap();
    assert_eq!(outcomes[0].calls.len(), 2);
    for call in &outcomes[0].calls {
        let tokens = judge.model.tokenizer.encode(&call.output).unwrap();
        assert!(tokens.len() <= 12 + 2, "{:?}", call.output);
        // A random tiny model writes no verdict: not correct, counted as unparsed.
        assert_eq!(call.judgement, None);
    }
    assert!(!outcomes[0].correct);
    assert_eq!(outcomes[0].unparsed(), 2);
    assert_eq!(outcomes[1].skipped.as_deref(), Some("no answer"));
    // Greedy: the same outputs again.
    assert_eq!(judge_all(&judge, &items).unwrap(), outcomes);

    // End to end with a policy that always answers: every answer goes to the judge, whose raw
    // outputs are kept; a random tiny judge writes no verdict, so all are unparsed.
    let policy = common::answering_model(&dir.path().join("answering"), "Paris");
    let out = dir.path().join("judged");
    let args = [
        &ARGS[..],
        &[
            "--model",
            policy.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--judge-model",
            judge_dir.to_str().unwrap(),
            "--judge-max-tokens=8",
        ],
    ]
    .concat();
    let run = host_command(&args).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("judge"), "{}", text(&run));
    let rows = records(&out.join("world-validation.jsonl"));
    assert_eq!(rows.len(), 12);
    let mut calls = 0;
    for row in &rows {
        assert_eq!(row["answer"], "Paris", "{row}");
        let judge = &row["judge"];
        assert_eq!(judge["correct"], false, "{row}");
        let golden = row["golden_answers"].as_array().unwrap();
        let made = judge["calls"].as_array().unwrap();
        assert_eq!(
            made.len(),
            golden.len(),
            "one call per golden answer: {row}"
        );
        for (call, answer) in made.iter().zip(golden) {
            assert_eq!(&call["golden"], answer);
            assert!(call["output"].is_string());
        }
        calls += made.len();
    }
    assert!(calls >= 12);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["datasets"][0]["judge_acc"], 0.0);
    assert_eq!(report["datasets"][0]["judge_unparsed"], calls);

    // The same folder without the judge is another evaluation: refused.
    let again = host_command(
        &[
            &ARGS[..],
            &[
                "--model",
                policy.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        ]
        .concat(),
    )
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("other settings"), "{}", text(&again));

    // A judge folder that is not a model is named.
    let bad = host_command(
        &[
            &ARGS[..],
            &[
                "--out",
                dir.path().join("bad").to_str().unwrap(),
                "--judge-model",
                dir.path().to_str().unwrap(),
            ],
        ]
        .concat(),
    )
    .output()
    .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("judge model"), "{}", text(&bad));
}
