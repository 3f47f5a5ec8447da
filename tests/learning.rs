//! The embedded default's warm start: `host train --plugins ./plugins` without a model first
//! builds demonstrations of the world's warm-start questions and fine-tunes the embedded policy
//! on them (once: a second run finds it in the cache), records the warm-started folder as the
//! run's model, states the validation change in its closing line, and `host report --before`
//! draws both phases on one timeline.

mod common;

use common::succeed;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

/// A short run of the embedded default (one warm-start epoch, two GRPO steps).
fn short_run(run: &Path) -> String {
    succeed(&[
        "train",
        "--plugins=plugins",
        "--quiet",
        "--steps",
        "2",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "sft.epochs=1",
        "--set",
        "validation.every=2",
        "--set",
        "validation.limit=8",
        "--set",
        "rollout.batch_prompts=2",
        "--set",
        "rollout.group_size=4",
    ])
}

/// The warm-started model a run recorded in its config.toml.
fn recorded_model(run: &Path) -> PathBuf {
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let line = config
        .lines()
        .find(|l| l.starts_with("path = "))
        .expect("model.path");
    PathBuf::from(line["path = ".len()..].trim_matches('"'))
}

#[test]
fn the_embedded_default_is_warm_started_once_and_reported_with_its_warm_start() {
    let dir = tempfile::tempdir().unwrap();
    // A first run finds the warm start in the shared test cache or makes it; either way the
    // run records the warm-started policy as its model, so --resume needs nothing else.
    let cached = dir.path().join("cached");
    short_run(&cached);
    let model = recorded_model(&cached);
    assert!(
        model.join("model.safetensors").is_file(),
        "{}",
        model.display()
    );
    // …/warm-KEY/run/checkpoints/step-N/model
    let warm_run = model.ancestors().nth(3).unwrap().to_path_buf();
    let warm_dir = model.ancestors().nth(4).unwrap().to_path_buf();
    assert!(
        warm_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("warm-"),
        "{}",
        warm_dir.display()
    );

    // Without the cache entry the warm start is made again, identically.
    std::fs::remove_dir_all(&warm_dir).unwrap();
    let run = dir.path().join("made");
    let out = short_run(&run);
    let started = out
        .lines()
        .find(|l| l.starts_with("warm start: "))
        .unwrap_or_else(|| panic!("no warm start announced:\n{out}"));
    assert!(started.contains("supervised steps"), "{started}");
    assert!(started.contains("of 750 warm-start questions"), "{started}");
    let demonstrations: usize = started["warm start: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Most of the 750 warm-start questions give a grounded demonstration.
    assert!(demonstrations > 375, "{started}");
    assert_eq!(recorded_model(&run), model, "the same key, the same folder");
    let warm_metrics = lines(&warm_run.join("metrics.jsonl"));
    assert!(warm_metrics.iter().any(|m| m.get("loss").is_some()));
    // Validation before the warm start (a random policy earns nothing) and after it.
    assert_eq!(warm_metrics[0]["val_reward"], 0.0);

    // The GRPO run starts where the warm start ended, and says how validation moved.
    let metrics = lines(&run.join("metrics.jsonl"));
    let rewards =
        |m: &[Value]| -> Vec<Value> { m.iter().map(|l| l["val_reward"].clone()).collect() };
    assert_eq!(
        rewards(&metrics),
        rewards(&lines(&cached.join("metrics.jsonl"))),
        "a remade warm start trains the same policy"
    );
    let first = metrics[0]["val_reward"].as_f64().unwrap();
    let last = metrics.last().unwrap()["val_reward"].as_f64().unwrap();
    assert_eq!(
        Some(first),
        warm_metrics.last().unwrap()["val_reward"].as_f64(),
        "the warm start's last validation is GRPO's first"
    );
    assert!(
        out.contains(&format!("validation reward {first:.3} → {last:.3}")),
        "{out}"
    );
    assert!(
        out.contains("(before the warm start: reward 0.000"),
        "{out}"
    );
    let report_line = out
        .lines()
        .find(|l| l.starts_with("report: host report "))
        .expect("the report command");
    assert!(report_line.contains("--before"), "{report_line}");

    // A third run finds it in the cache and trains nothing before GRPO.
    let again = short_run(&dir.path().join("again"));
    assert!(again.contains("found in the cache"), "{again}");
    assert!(!again.contains("supervised steps"), "{again}");

    // Both phases on one timeline.
    let report = succeed(&[
        "report",
        run.to_str().unwrap(),
        "--before",
        warm_run.to_str().unwrap(),
    ]);
    assert!(run.join("report/warm_start_loss.png").is_file(), "{report}");
    assert!(run.join("report/reward.png").is_file());
    let page = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(
        page.contains("warm start: "),
        "the page names the warm start"
    );
}
