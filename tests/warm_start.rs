//! The warm start end to end: `host demos` on the embedded world (well formed, full reward),
//! `host sft` (loss falls, its checkpoint loads in `host train` and `host eval`, resume after
//! SIGKILL is line-identical), teacher transcripts and rewarded rollouts as sources, bad input
//! named by file and line, and the loss mask of a model scripted to always search.

use crate::common;

use research_host::rollout::{SegmentKind, Trajectory};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{comparable_metrics as comparable, fail, host_command, succeed};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn read_trajectories(path: &Path) -> Vec<Trajectory> {
    std::fs::read_to_string(path)
        .expect("trajectories")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a trajectory"))
        .collect()
}

/// Demonstrations of the embedded world's first 160 warm-start questions (ReSearch
/// dialect), with budgets that hold two searches.
fn world_demos(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("demos.jsonl");
    let log = succeed(&[
        "demos",
        "--plugins=plugins",
        "--quiet",
        "--limit",
        "160",
        "--out",
        s(&out),
        "--set",
        "rollout.max_response_tokens=400",
    ]);
    assert!(log.contains("kept as demonstrations"), "{log}");
    out
}

#[test]
fn demonstrations_of_the_world_search_and_earn_the_full_reward() {
    let dir = tempfile::tempdir().unwrap();
    let out = world_demos(dir.path());
    let demos = read_trajectories(&out);
    // 160 warm-start questions; neither GRPO's training questions nor the validation
    // questions are used.
    assert!(demos.len() >= 80, "only {} demonstrations", demos.len());
    let held_apart = ["validation", "train"]
        .map(|f| {
            std::fs::read_to_string(common::repo_root().join(format!("examples/world/{f}.jsonl")))
                .unwrap()
        })
        .concat();
    let mut two_hop = 0;
    for t in &demos {
        assert!(
            !held_apart.contains(&format!("\"{}\"", t.question)),
            "{}",
            t.question
        );
        assert_eq!(t.loss_mask.len(), t.response_ids.len());
        assert!(!t.queries.is_empty());
        assert_eq!(t.finish, "eos");
        // Full format credit and the whole answer reward from research-reward.
        assert_eq!(t.reward, Some(1.0), "{}: {}", t.id, t.response_text);
        let component = |name: &str| t.components.iter().find(|(n, _)| n == name).map(|c| c.1);
        assert_eq!(component("format"), Some(1.0), "{:?}", t.components);
        assert_eq!(
            qa_scoring::metrics::f1(t.answer.as_deref().unwrap(), &t.golden_answers),
            1.0
        );
        // Observations: one per search, loss mask 0, shown as the parser formats them.
        let observations: Vec<_> = t
            .segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Observation)
            .collect();
        assert_eq!(observations.len(), t.queries.len());
        for segment in &t.segments {
            let want = u8::from(segment.kind == SegmentKind::Generated);
            assert!(
                t.loss_mask[segment.start..segment.end]
                    .iter()
                    .all(|&m| m == want)
            );
        }
        assert!(observations[0].text.starts_with(" <result>"));
        two_hop += usize::from(t.queries.len() == 2);
    }
    // The world's bridge questions ("…the founder of X…") need a second search.
    assert!(two_hop > 0, "no demonstration searched twice");
}

#[test]
fn sft_learns_the_demonstrations_and_its_checkpoint_trains_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let demos = world_demos(dir.path());
    let run = dir.path().join("sft");
    let log = succeed(&[
        "sft",
        "--plugins=plugins",
        "--quiet",
        "--data",
        s(&demos),
        "--out",
        s(&run),
        "--epochs",
        "2",
        "--lr",
        "3e-3",
        "--set",
        "sft.batch_sequences=16",
        "--set",
        "rollout.max_response_tokens=400",
        "--set",
        "validation.limit=2",
        "--set",
        "validation.every=100",
        "--set",
        "checkpoint.every=0",
    ]);
    assert!(log.contains("validation reward"), "{log}");
    let metrics = comparable(&run);
    let losses: Vec<f64> = metrics.iter().filter_map(|m| m["loss"].as_f64()).collect();
    assert!(losses.len() >= 10, "{losses:?}");
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(
        last < 0.7 * first,
        "the loss did not fall: {first:.3} → {last:.3}"
    );
    for m in metrics.iter().filter(|m| m.get("loss").is_some()) {
        let accuracy = m["token_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy));
        assert!(m["tokens"].as_u64().unwrap() > 0 && m["lr"].as_f64().unwrap() > 0.0);
        assert!(m["grad_norm"].as_f64().unwrap().is_finite());
    }
    // Validation before the first step and after the last.
    assert!(metrics[0]["val_reward"].is_number() && metrics[0].get("loss").is_none());
    assert!(metrics.last().unwrap()["val_reward"].is_number());

    let checkpoints: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(checkpoints.len(), 1);
    let model = checkpoints[0].join("model");
    let train = dir.path().join("train");
    succeed(&[
        "train",
        "--plugins=plugins",
        "--quiet",
        "--model",
        s(&model),
        "--steps",
        "1",
        "--out",
        s(&train),
        "--set",
        "validation.every=0",
        "--set",
        "rollout.batch_prompts=1",
    ]);
    assert!(
        train
            .join("checkpoints/step-000001/model/model.safetensors")
            .is_file()
    );
    let eval = dir.path().join("eval");
    let log = succeed(&[
        "eval",
        "--plugins=plugins",
        "--quiet",
        "--model",
        s(&model),
        "--limit",
        "2",
        "--max-response-tokens",
        "96",
        "--out",
        s(&eval),
    ]);
    assert!(eval.join("report.json").is_file(), "{log}");
}

#[test]
fn sft_resumes_after_sigkill_line_for_line() {
    let dir = tempfile::tempdir().unwrap();
    let demos = world_demos(dir.path());
    let args = |out: &Path| -> Vec<String> {
        [
            "sft",
            "--plugins=plugins",
            "--quiet",
            "--data",
            s(&demos),
            "--out",
            s(out),
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--set",
            "sft.batch_sequences=24",
            "--set",
            "rollout.max_response_tokens=400",
            "--set",
            "validation.limit=2",
            "--set",
            "validation.every=3",
            "--set",
            "checkpoint.every=1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let whole = dir.path().join("whole");
    let whole_args = args(&whole);
    succeed(&whole_args.iter().map(String::as_str).collect::<Vec<_>>());

    let killed = dir.path().join("killed");
    let killed_args = args(&killed);
    let mut child = host_command(&killed_args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !killed.join("checkpoints/step-000002").is_dir() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A resume needs the same trajectories.
    let saved = std::fs::read_to_string(&demos).unwrap();
    let fewer: Vec<&str> = saved.lines().skip(1).collect();
    std::fs::write(&demos, fewer.join("\n") + "\n").unwrap();
    let error = fail(&["sft", "--resume", s(&killed), "--quiet"]);
    assert!(error.contains("changed since the run started"), "{error}");
    std::fs::write(&demos, &saved).unwrap();
    let log = succeed(&["sft", "--resume", s(&killed), "--quiet"]);
    assert!(log.contains("resuming after step"), "{log}");
    assert_eq!(comparable(&whole), comparable(&killed));
    // A resume takes no other flag, and each kind of run resumes with its own command.
    let error = fail(&["sft", "--resume", s(&killed), "--lr", "1"]);
    assert!(error.contains("only --quiet"), "{error}");
    let error = fail(&["train", "--resume", s(&killed)]);
    assert!(error.contains("is a `host sft` run"), "{error}");
}

#[test]
fn transcripts_and_rewarded_rollouts_become_trajectories() {
    let dir = tempfile::tempdir().unwrap();
    let transcripts = dir.path().join("teacher.jsonl");
    // Saved with a byte-order mark, as some editors do.
    std::fs::write(
        &transcripts,
        concat!(
            "\u{feff}",
            r#"{"question": "Which river flows through Zelkavale?", "golden_answers": ["Briel River"], "response": "<think> Search. </think>\n<search> Zelkavale </search> <result>\nZelkavale lies on the Briel River.\n</result> <think> Found. </think>\n<answer> The final answer is \\[ \\boxed{Briel River} \\] </answer>"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("t.jsonl");
    succeed(&[
        "demos",
        "--plugins=plugins",
        "--quiet",
        "--transcripts",
        s(&transcripts),
        "--out",
        s(&out),
    ]);
    let t = &read_trajectories(&out)[0];
    let kinds: Vec<SegmentKind> = t.segments.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            SegmentKind::Generated,
            SegmentKind::Observation,
            SegmentKind::Generated
        ]
    );
    assert!(t.segments[1].text.starts_with("<result>"));
    assert!(
        t.loss_mask[t.segments[1].start..t.segments[1].end]
            .iter()
            .all(|&m| m == 0)
    );
    assert_eq!(t.queries, vec!["Zelkavale".to_string()]);
    assert_eq!(t.answer.as_deref(), Some("Briel River"));
    assert_eq!(t.reward, Some(1.0));

    // A transcript without answer tags, a file with nothing in it.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\": \"q\", \"golden_answers\": [\"a\"], \"response\": \"<think> a </think>\"}\n\n{\"question\": \"q\", \"golden_answers\": [\"a\"], \"response\": \"no tags at all\"}\n",
    )
    .unwrap();
    let error = fail(&[
        "demos",
        "--plugins=plugins",
        "--quiet",
        "--transcripts",
        s(&bad),
        "--out",
        s(&out),
    ]);
    assert!(
        error.contains("bad.jsonl:1") && error.contains("answer"),
        "{error}"
    );
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let error = fail(&[
        "demos",
        "--plugins=plugins",
        "--quiet",
        "--transcripts",
        s(&empty),
        "--out",
        s(&out),
    ]);
    assert!(error.contains("no transcripts"), "{error}");
    // A byte that is not UTF-8 names the file, line and column.
    let latin1 = dir.path().join("latin1.jsonl");
    std::fs::write(&latin1, b"{\"question\": \"Caf\xE9?\"}\n").unwrap();
    let error = fail(&[
        "demos",
        "--plugins=plugins",
        "--quiet",
        "--transcripts",
        s(&latin1),
        "--out",
        s(&out),
    ]);
    assert!(
        error.contains("latin1.jsonl:1:18: not valid UTF-8"),
        "{error}"
    );

    // Rejection sampling from a training run: its rollouts with reward ≥ R, never its
    // validation rollouts.
    let train = dir.path().join("train");
    succeed(&[
        "train",
        "--plugins=plugins",
        "--quiet",
        "--steps",
        "1",
        "--out",
        s(&train),
        "--set",
        "sft.embedded_warm_start=false",
        "--set",
        "rollout.batch_prompts=2",
        "--set",
        "rollout.group_size=4",
        "--set",
        "rollout.max_response_tokens=24",
        "--set",
        "validation.limit=2",
    ]);
    let rft = dir.path().join("rft.jsonl");
    let log = succeed(&[
        "demos",
        "--from-run",
        s(&train),
        "--min-reward",
        "0",
        "--out",
        s(&rft),
    ]);
    assert!(log.contains("8 rollouts read"), "{log}");
    let kept = read_trajectories(&rft);
    assert!(!kept.is_empty() && kept.len() <= 8);
    let error = fail(&[
        "demos",
        "--from-run",
        s(&train),
        "--min-reward",
        "2",
        "--out",
        s(&rft),
    ]);
    assert!(error.contains("no rollout"), "{error}");
    let error = fail(&[
        "demos",
        "--from-run",
        s(dir.path()),
        "--min-reward",
        "0",
        "--out",
        s(&rft),
    ]);
    assert!(error.contains("neither"), "{error}");
    let error = fail(&["sft", "--resume", s(&train)]);
    assert!(error.contains("not a `host sft` run"), "{error}");

    // An evaluation folder's records work too, with a warning that they are test questions.
    let eval = dir.path().join("eval");
    succeed(&[
        "eval",
        "--plugins=plugins",
        "--quiet",
        "--limit",
        "2",
        "--max-response-tokens",
        "24",
        "--out",
        s(&eval),
    ]);
    let log = succeed(&[
        "demos",
        "--from-run",
        s(&eval),
        "--min-reward",
        "0",
        "--out",
        s(&rft),
    ]);
    assert!(
        log.contains("2 rollouts read") && log.contains("test questions"),
        "{log}"
    );
}

#[test]
fn bad_trajectories_are_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let demos = world_demos(dir.path());
    let text = std::fs::read_to_string(&demos).unwrap();
    let first = text.lines().next().unwrap();
    let mut broken: Value = serde_json::from_str(first).unwrap();
    broken["loss_mask"].as_array_mut().unwrap().pop();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{first}\n{broken}\n")).unwrap();
    let error = fail(&[
        "sft",
        "--plugins=plugins",
        "--quiet",
        "--data",
        s(&bad),
        "--out",
        s(&dir.path().join("r")),
    ]);
    assert!(
        error.contains("bad.jsonl:2") && error.contains("loss mask"),
        "{error}"
    );
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let error = fail(&[
        "sft",
        "--plugins=plugins",
        "--quiet",
        "--data",
        s(&empty),
        "--out",
        s(&dir.path().join("r2")),
    ]);
    assert!(error.contains("holds no trajectories"), "{error}");
    let error = fail(&[
        "sft",
        "--plugins=plugins",
        "--quiet",
        "--out",
        s(&dir.path().join("r3")),
    ]);
    assert!(error.contains("--data"), "{error}");
}
