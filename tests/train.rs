//! `host train` end to end: the embedded default, checkpoints and exact resumption (also after
//! SIGKILL), learning on a toy reward, a plugin that traps mid-rollout, and bad input.

use crate::common;

use research_host::run_metrics::MetricsLine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    comparable_metrics as comparable, host_command, output_text as text, run_metrics as metrics,
    succeed,
};

fn host(args: &[&str]) -> Output {
    host_command(args).output().expect("host runs")
}

/// Small settings so a step takes about a second (the embedded policy without its warm start:
/// these tests are about the trainer's mechanics).
const SMALL: [&str; 18] = [
    "--quiet",
    "--set",
    "sft.embedded_warm_start=false",
    "--set",
    "rollout.max_response_tokens=40",
    "--set",
    "rollout.batch_prompts=2",
    "--set",
    "rollout.group_size=3",
    "--set",
    "validation.limit=3",
    "--set",
    "validation.every=2",
    "--set",
    "checkpoint.every=1",
    "--set",
    "checkpoint.keep_last=3",
    "--plugins=plugins",
];

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn runs_checkpoints_and_resumes_exactly_even_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let out = succeed(&[&["train", "--steps", "3", "--out", s(&full)], &SMALL[..]].concat());
    assert!(out.contains("embedded tiny Qwen2"), "{out}");
    assert!(out.contains("--- config ---"), "{out}");

    // The run folder.
    for file in [
        "config.toml",
        "metrics.jsonl",
        "trajectories/step-000003.jsonl",
    ] {
        assert!(full.join(file).is_file(), "missing {file}");
    }
    assert!(full.join("trajectories/validation-000000.jsonl").is_file());
    for step in 1..=3 {
        let ckpt = full.join(format!("checkpoints/step-{step:06}"));
        for file in [
            "model/config.json",
            "model/model.safetensors",
            "model/tokenizer.json",
        ] {
            assert!(ckpt.join(file).is_file(), "{} lacks {file}", ckpt.display());
        }
        assert!(ckpt.join("optimizer.safetensors").is_file());
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).unwrap())
                .unwrap();
        assert_eq!(state["step"], step);
        assert_eq!(state["data_cursor"], step * 2);
    }
    let m = metrics(&full);
    let steps: Vec<u64> = m.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps,
        vec![0, 1, 2, 3],
        "validation line, then one per step"
    );
    assert!(m[0].get("val_em").is_some());
    assert!(m[2].get("val_f1").is_some() && m[3].get("val_reward").is_some());
    for line in &m[1..] {
        assert_eq!(line["rollouts"], 6);
        let finishes: u64 = line["finish"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(finishes, 6);
        // One epoch, one mini-batch: old log-probs are the sampling weights' (ratio exactly 1).
        assert_eq!(line["ratio_max_deviation"], 0.0);
        // The loss statistics exist exactly when a sequence was trained (null, not a 0 that
        // would read as a collapse, when every sequence was skipped).
        let trained = line["sequences_trained"].as_u64().unwrap() > 0;
        for key in ["kl", "entropy", "pg_loss", "clip_fraction", "ratio_mean"] {
            assert_eq!(line[key].is_null(), !trained, "{key}: {line}");
        }
        assert_eq!(line["clip_fraction"].as_f64().unwrap_or(0.0), 0.0);
        for key in [
            "generation",
            "retrieval",
            "plugins",
            "forward_backward",
            "total",
        ] {
            assert!(line["time"][key].as_f64().unwrap() >= 0.0);
        }
        for key in ["reward_mean", "grad_norm", "lr", "response_length"] {
            assert!(line[key].as_f64().unwrap().is_finite(), "{key}");
        }
        for key in ["kl", "entropy"] {
            assert!(line[key].as_f64().is_none_or(f64::is_finite), "{key}");
        }
    }
    // Every line reads back through the type `host report` reads it with, and the report of
    // the run shows its steps and validations.
    let kinds: Vec<&str> = std::fs::read_to_string(full.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| match MetricsLine::parse(line) {
            Ok(MetricsLine::Validation(_)) => "validation",
            Ok(MetricsLine::GrpoStep(_)) => "grpo",
            Ok(other) => panic!("unexpected line {other:?}"),
            Err(error) => panic!("{error:#}: {line}"),
        })
        .collect();
    assert_eq!(kinds, ["validation", "grpo", "grpo", "grpo"]);
    let report = succeed(&["report", s(&full)]);
    assert!(report.contains("index.html"), "{report}");
    let html = std::fs::read_to_string(full.join("report/index.html")).unwrap();
    assert!(html.contains("3 training steps"), "{html}");
    assert!(html.contains("Held-out change"), "{html}");
    for chart in ["reward", "validation_em_f1", "searches"] {
        assert!(
            full.join(format!("report/{chart}.png")).is_file(),
            "{chart}.png"
        );
    }

    // Trajectories: masks and segments agree, observations are never trained on.
    let trajectories =
        std::fs::read_to_string(full.join("trajectories/step-000001.jsonl")).unwrap();
    let mut observed = 0;
    for line in trajectories.lines() {
        let t: Value = serde_json::from_str(line).unwrap();
        let mask = t["loss_mask"].as_array().unwrap();
        assert_eq!(mask.len(), t["response_ids"].as_array().unwrap().len());
        assert!(mask.len() <= 40);
        for segment in t["segments"].as_array().unwrap() {
            let want = if segment["kind"] == "generated" { 1 } else { 0 };
            observed += usize::from(want == 0);
            let (a, b) = (
                segment["start"].as_u64().unwrap(),
                segment["end"].as_u64().unwrap(),
            );
            assert!(mask[a as usize..b as usize].iter().all(|m| m == want));
        }
    }
    eprintln!("{observed} observation segments in step 1");

    // Stopped after 2 steps, then resumed to 3: identical metrics.
    let part = dir.path().join("part");
    succeed(&[&["train", "--steps", "2", "--out", s(&part)], &SMALL[..]].concat());
    let out = succeed(&["train", "--resume", s(&part), "--steps", "3", "--quiet"]);
    assert!(out.contains("resuming after step 2"), "{out}");
    assert_eq!(comparable(&part), comparable(&full));

    // The newest checkpoint damaged (its weights truncated, as a crash of the machine could
    // leave them): the resume says so, continues from the one before, and ends as the
    // uninterrupted run did.
    let damaged = dir.path().join("damaged");
    succeed(&[&["train", "--steps", "2", "--out", s(&damaged)], &SMALL[..]].concat());
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(damaged.join("checkpoints/step-000002/state.json")).unwrap(),
    )
    .unwrap();
    for file in [
        "model/config.json",
        "model/model.safetensors",
        "optimizer.safetensors",
    ] {
        assert_eq!(
            state["sha256"][file].as_str().map(str::len),
            Some(64),
            "{file}"
        );
    }
    let weights = damaged.join("checkpoints/step-000002/model/model.safetensors");
    let size = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .and_then(|f| f.set_len(size / 2))
        .unwrap();
    let out = succeed(&["train", "--resume", s(&damaged), "--steps", "3", "--quiet"]);
    assert!(
        out.contains(&format!(
            "warning: skipped the damaged checkpoint {}: model/model.safetensors does not match \
             the checksum in state.json",
            damaged.join("checkpoints/step-000002").display()
        )),
        "{out}"
    );
    assert!(out.contains("resuming after step 1"), "{out}");
    assert_eq!(comparable(&damaged), comparable(&full));
    // With every checkpoint damaged nothing is resumed silently from scratch.
    for step in 1..=3 {
        let state = damaged.join(format!("checkpoints/step-{step:06}/state.json"));
        assert!(state.is_file(), "keep_last 3 keeps step {step}");
        std::fs::write(&state, "{").unwrap();
    }
    let none = host(&["train", "--resume", s(&damaged), "--steps", "4", "--quiet"]);
    assert!(!none.status.success());
    assert!(
        text(&none).contains("no checkpoint of") && text(&none).contains("invalid"),
        "{}",
        text(&none)
    );

    // Killed (SIGKILL) after its first checkpoint, then resumed: identical metrics.
    let killed = dir.path().join("killed");
    let mut child =
        host_command(&[&["train", "--steps", "3", "--out", s(&killed)], &SMALL[..]].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let first = killed.join("checkpoints/step-000001/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !first.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // One writer per run folder: a second process on it (a resume, or a fresh run) is refused
    // at once, naming the holder, and writes nothing.
    let metrics_before = std::fs::read(killed.join("metrics.jsonl")).unwrap();
    let holder = format!("(pid {}, `host train`)", child.id());
    for second in [
        host(&["train", "--resume", s(&killed), "--quiet"]),
        host(&[&["train", "--steps", "1", "--out", s(&killed)], &SMALL[..]].concat()),
    ] {
        assert!(!second.status.success());
        assert!(
            text(&second).contains(&format!(
                "{} is in use by another process {holder}",
                killed.display()
            )),
            "{}",
            text(&second)
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first run was still running while the second was refused"
    );
    // The kill below ends the lock with the process: the resume after it takes the folder.
    child.kill().unwrap();
    child.wait().unwrap();
    let metrics_after = std::fs::read(killed.join("metrics.jsonl")).unwrap();
    assert!(
        metrics_after.starts_with(&metrics_before),
        "the refused processes wrote nothing"
    );
    let out = succeed(&["train", "--resume", s(&killed), "--quiet"]);
    assert!(out.contains("resuming after step"), "{out}");
    assert_eq!(comparable(&killed), comparable(&full));

    // A run folder is not overwritten by a fresh run.
    let again = host(&[&["train", "--steps", "1", "--out", s(&full)], &SMALL[..]].concat());
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already holds a run"),
        "{}",
        text(&again)
    );
    // Resuming with other settings is refused.
    let changed = host(&["train", "--resume", s(&full), "--lr", "0.5"]);
    assert!(
        text(&changed).contains("only --steps, --quiet and --set of rollout.url"),
        "{}",
        text(&changed)
    );
}

/// A plugins folder of prebuilt components: the shipped prompt, parser and search, and the
/// hostile reward fixture with `behavior`.
fn plugins_with_hostile_reward(dir: &Path, behavior: &str, extra: &str) -> PathBuf {
    let root = dir.join("plugins");
    for (name, kind) in [
        ("research-prompt", "prompt"),
        ("tag-parser", "parser"),
        ("local-search", "search"),
    ] {
        common::write_prebuilt_plugin_of_kind(&root, name, kind, &common::shipped_wasm(name), "");
    }
    common::write_prebuilt_plugin(
        &root,
        "toy-reward",
        common::hostile_wasm(),
        &format!("[limits]\ntimeout-ms = 2000\n[config]\nbehavior = \"{behavior}\"\n{extra}"),
    );
    root
}

#[test]
fn a_plugin_that_traps_mid_rollout_costs_only_its_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with_hostile_reward(dir.path(), "panic-on-boom", "");
    let data = dir.path().join("train.jsonl");
    std::fs::write(
        &data,
        "{\"id\": \"ok\", \"question\": \"Which river flows through Athishmere?\", \"golden_answers\": [\"Zelpy River\"]}\n\
         {\"id\": \"b\", \"question\": \"boom\", \"golden_answers\": [\"x\"]}\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let plugins_flag = format!("--plugins={}", plugins.display());
    let mut args = vec![
        "train",
        "--steps",
        "1",
        "--out",
        s(&run),
        "--train",
        s(&data),
    ];
    args.extend_from_slice(&SMALL[..SMALL.len() - 1]);
    args.push(&plugins_flag);
    args.extend([
        "--set",
        "validation.every=0",
        "--set",
        "data.validation_size=0",
    ]);
    let out = succeed(&args);
    assert!(out.contains("plugin error"), "{out}");
    let m = metrics(&run);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["plugin_errors"], 3, "{}", m[0]);
    assert_eq!(m[0]["finish"]["error"], 3, "{}", m[0]);
    let trajectories = std::fs::read_to_string(run.join("trajectories/step-000001.jsonl")).unwrap();
    for line in trajectories.lines() {
        let t: Value = serde_json::from_str(line).unwrap();
        if t["question"] == "boom" {
            assert!(
                t["error"].as_str().unwrap().contains("boom requested"),
                "{t}"
            );
            assert_eq!(t["reward"], Value::Null);
            assert_eq!(t["advantage"], 0.0);
        } else {
            assert_eq!(t["error"], Value::Null);
            assert!(t["reward"].as_f64().is_some());
        }
    }
}

#[test]
fn grpo_raises_a_toy_reward() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with_hostile_reward(dir.path(), "char-share", "target = \"e\"");
    let run = dir.path().join("run");
    let plugins_flag = format!("--plugins={}", plugins.display());
    let mut args = vec![
        "train",
        "--steps",
        "30",
        "--out",
        s(&run),
        "--quiet",
        &plugins_flag,
    ];
    for set in [
        "sft.embedded_warm_start=false",
        "rollout.batch_prompts=2",
        "rollout.group_size=8",
        "rollout.max_response_tokens=24",
        "grpo.kl_coef=0",
        "grpo.entropy_coef=0",
        "grpo.mini_batch_prompts=1",
        "grpo.micro_batch_sequences=8",
        "optim.lr=0.01",
        "optim.weight_decay=0",
        "validation.every=0",
        "checkpoint.every=0",
        "logging.trajectories=false",
    ] {
        args.extend(["--set", set]);
    }
    succeed(&args);
    let m = metrics(&run);
    assert_eq!(m.len(), 30);
    let rewards: Vec<f64> = m
        .iter()
        .map(|l| l["reward_mean"].as_f64().unwrap())
        .collect();
    let first = rewards[..10].iter().sum::<f64>() / 10.0;
    let last = rewards[20..].iter().sum::<f64>() / 10.0;
    eprintln!("toy reward: first 10 steps {first:.3}, last 10 steps {last:.3}: {rewards:?}");
    assert!(last > first + 0.1, "no learning: {first:.3} → {last:.3}");
    // Two mini-batches per step: the second is scored by updated weights (ratio ≠ 1).
    assert!(
        m.iter()
            .any(|l| l["ratio_max_deviation"].as_f64().unwrap() > 0.0)
    );
}

#[test]
fn collapse_guards_warn_and_can_stop_the_run_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Every rollout of the tiny model runs into a 12-token budget: a truncation alarm.
    let warned = dir.path().join("warned");
    let base = [
        "--set",
        "rollout.max_response_tokens=12",
        "--set",
        "guards.patience=2",
    ];
    let out = succeed(
        &[
            &["train", "--steps", "4", "--out", s(&warned)],
            &SMALL[..],
            &base[..],
        ]
        .concat(),
    );
    let alarms: Vec<u64> = metrics(&warned)
        .iter()
        .filter(|m| m.get("alarms").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(alarms, vec![2, 4], "an alarm every `patience` steps: {out}");
    assert!(
        out.contains("warning: step 2:") && out.contains("rollout.max_response_tokens"),
        "{out}"
    );
    // With guards.stop the run ends at the first alarm, with its checkpoint and a message.
    let stopped = dir.path().join("stopped");
    let output = host(
        &[
            &["train", "--steps", "4", "--out", s(&stopped)],
            &SMALL[..],
            &base[..],
            &["--set", "guards.stop=true"],
        ]
        .concat(),
    );
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("stopped after step 2 by the collapse guards"),
        "{all}"
    );
    assert_eq!(metrics(&stopped).last().unwrap()["step"], 2);
    assert!(
        stopped
            .join("checkpoints/step-000002/model/model.safetensors")
            .is_file()
    );
    // Bad bands are refused by name before anything runs.
    let error = text(&host(&["train", "--set", "guards.truncated_max=2"]));
    assert!(error.contains("guards.truncated_max"), "{error}");
}

#[test]
fn bad_input_is_reported_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    // A dataset line without answers.
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"id\": \"1\", \"question\": \"Q\", \"golden_answers\": [\"a\"]}\n{\"id\": \"2\", \"question\": \"Q2\"}\n",
    )
    .unwrap();
    let out = host(&[
        "train",
        "--plugins=plugins",
        "--train",
        s(&data),
        "--out",
        s(&dir.path().join("r1")),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("bad.jsonl:2: question 2: no `golden_answers`"),
        "{}",
        text(&out)
    );

    // A config with a misspelt key.
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[grpo]\nkl_coef = 0.1\nclip_ratio = 0.2\n").unwrap();
    let out = host(&["train", s(&config)]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("bad.toml")
            && message.contains("clip_ratio")
            && message.contains("line 3"),
        "{message}"
    );

    // A plugins folder without a search plugin.
    let plugins = dir.path().join("plugins");
    for (name, kind) in [
        ("research-prompt", "prompt"),
        ("tag-parser", "parser"),
        ("research-reward", "reward"),
    ] {
        common::write_prebuilt_plugin_of_kind(
            &plugins,
            name,
            kind,
            &common::shipped_wasm(name),
            "",
        );
    }
    let out = host(&[
        "train",
        &format!("--plugins={}", plugins.display()),
        "--out",
        s(&dir.path().join("r2")),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has no search plugin"),
        "{}",
        text(&out)
    );

    // Not a run folder; an impossible setting.
    let out = host(&["train", "--resume", s(dir.path())]);
    assert!(text(&out).contains("is not a run folder"), "{}", text(&out));
    let out = host(&["train", "--set", "rollout.group_size=0"]);
    assert!(
        text(&out).contains("rollout.group_size must be at least 1"),
        "{}",
        text(&out)
    );
}

#[test]
fn search_r1_plugins_train_and_their_choice_is_saved_for_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec!["train", "--steps", "1", "--out", s(&run)];
    args.extend_from_slice(&SMALL);
    args.extend([
        "--use",
        "reward=searchr1-reward",
        "--use",
        "prompt=searchr1-prompt",
        "--config",
        "tag-parser.dialect=searchr1",
        "--set",
        "validation.every=0",
    ]);
    let out = succeed(&args);
    assert!(
        out.contains("searchr1-reward") && out.contains("searchr1-prompt"),
        "{out}"
    );
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("reward = \"searchr1-reward\""), "{saved}");
    assert!(saved.contains("dialect = \"searchr1\""), "{saved}");
    let trajectories = std::fs::read_to_string(run.join("trajectories/step-000001.jsonl")).unwrap();
    for line in trajectories.lines() {
        let t: Value = serde_json::from_str(line).unwrap();
        // The Search-R1 prompt (one user message in the chat template).
        assert!(
            t["prompt_text"]
                .as_str()
                .unwrap()
                .contains("Answer the given question.")
        );
    }
    assert_eq!(metrics(&run).len(), 1);
}

#[test]
fn dynamic_sampling_trains_only_on_groups_that_differ_and_skipping_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run_with = |name: &str, plugins: &str, extra: &[&str]| -> Vec<Value> {
        let run = dir.path().join(name);
        let mut args = vec![
            "train",
            "--steps",
            "2",
            "--out",
            s(&run),
            "--quiet",
            plugins,
        ];
        for set in [
            "sft.embedded_warm_start=false",
            "rollout.batch_prompts=2",
            "rollout.group_size=3",
            "rollout.max_response_tokens=24",
            "grpo.kl_coef=0",
            "grpo.entropy_coef=0",
            "validation.every=0",
            "checkpoint.every=0",
        ]
        .iter()
        .chain(extra)
        {
            args.extend(["--set", set]);
        }
        succeed(&args);
        metrics(&run)
    };
    // The random model earns the shipped reward's 0 everywhere: no group differs, so none is
    // trained, and dynamic sampling draws its three batches per step.
    let flat = run_with(
        "flat",
        "--plugins=plugins",
        &[
            "grpo.dynamic_sampling=true",
            "grpo.dynamic_sampling_max_batches=3",
        ],
    );
    for m in &flat {
        assert_eq!(m["groups_drawn"], 6, "{m}");
        assert_eq!(m["zero_advantage_share"], 1.0);
        assert_eq!(m["groups_trained"], 0);
        assert_eq!(m["sequences_trained"], 0);
        assert_eq!(m["rollouts"], 18);
    }
    // The cursor moved past every drawn question: 6 per step.
    assert!((flat[1]["epoch"].as_f64().unwrap() - 12.0 / 398.0).abs() < 1e-9);

    // A reward that differs within every group (the response's length): the first batch
    // holds enough informative groups, nothing more is drawn, all are trained.
    let hostile = plugins_with_hostile_reward(dir.path(), "healthy", "");
    let flag = format!("--plugins={}", hostile.display());
    let varied = run_with(
        "varied",
        &flag,
        &[
            "grpo.dynamic_sampling=true",
            "grpo.dynamic_sampling_max_batches=3",
        ],
    );
    for m in &varied {
        assert_eq!(m["groups_drawn"], 2, "{m}");
        assert_eq!(m["zero_advantage_share"], 0.0, "{m}");
        assert_eq!(m["groups_trained"], 2, "{m}");
        assert_eq!(m["sequences_trained"], 6, "{m}");
        assert!(m["grad_norm"].as_f64().unwrap() > 0.0, "{m}");
    }

    // The soft overlong penalty: the last 16 of 24 tokens cost up to 0.5, on top of the
    // shipped reward's 0, and the trajectories record it as a component.
    let penalised = dir.path().join("penalised");
    succeed(&[
        "train",
        "--steps",
        "1",
        "--out",
        s(&penalised),
        "--quiet",
        "--plugins=plugins",
        "--set",
        "sft.embedded_warm_start=false",
        "--set",
        "rollout.batch_prompts=2",
        "--set",
        "rollout.group_size=3",
        "--set",
        "rollout.max_response_tokens=24",
        "--set",
        "grpo.overlong_buffer=16",
        "--set",
        "grpo.overlong_penalty=0.5",
        "--set",
        "validation.every=0",
        "--set",
        "checkpoint.every=0",
    ]);
    let text = std::fs::read_to_string(penalised.join("trajectories/step-000001.jsonl")).unwrap();
    let mut punished = 0;
    for line in text.lines() {
        let t: Value = serde_json::from_str(line).unwrap();
        let length = t["response_ids"].as_array().unwrap().len() as f64;
        let want = if length <= 8.0 {
            0.0
        } else {
            -(length - 8.0) / 16.0 * 0.5
        };
        let reward = t["reward"].as_f64().unwrap();
        assert!(
            (reward - want).abs() < 1e-9,
            "{length} tokens: {reward} vs {want}"
        );
        let component = t["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == "overlong_penalty")
            .expect("the penalty component");
        assert!((component[1].as_f64().unwrap() - want).abs() < 1e-9);
        punished += usize::from(want < 0.0);
    }
    assert!(
        punished > 0,
        "no response reached the punished zone: {text}"
    );

    // Skipping sequences that add nothing: with the flat reward every sequence is skipped,
    // and the run is the same as without skipping (no gradient either way; weight decay off,
    // since a skipped mini-batch takes no AdamW step at all).
    let plain = run_with(
        "plain",
        "--plugins=plugins",
        &["optim.weight_decay=0", "grpo.skip_zero_contribution=false"],
    );
    let skipped = run_with(
        "skipped",
        "--plugins=plugins",
        &["optim.weight_decay=0", "grpo.skip_zero_contribution=true"],
    );
    for (a, b) in plain.iter().zip(&skipped) {
        assert_eq!(a["sequences_skipped"], 0);
        assert_eq!(b["sequences_trained"], 0);
        assert_eq!(b["sequences_skipped"], a["sequences_trained"]);
        // (kl and entropy are measured on the sequences run, so they differ.)
        for key in [
            "reward_mean",
            "response_length",
            "grad_norm",
            "generated_tokens",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
}
