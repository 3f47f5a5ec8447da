//! The `host` binary end to end: plugins list / check, reward (one response and case files),
//! the custom reward example, and bad input.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

fn host(args: &[&str]) -> Output {
    common::host_command(args).output().expect("host runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn plugins_list_shows_every_shipped_plugin() {
    let output = host(&["plugins", "list", "--plugins", "plugins"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    for name in [
        "research-reward",
        "searchr1-reward",
        "research-prompt",
        "searchr1-prompt",
        "tag-parser",
        "local-search",
        "http-search",
        "openai-judge",
    ] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
    assert!(out.contains("network: 127.0.0.1:8000"), "{out}");
    assert!(out.contains("network: 127.0.0.1:8080"), "{out}");
    assert!(out.contains("8 plugins"), "{out}");
    let json = host(&["plugins", "list", "--plugins", "plugins", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    let active: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["active"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        active,
        [
            "local-search",
            "openai-judge",
            "research-prompt",
            "research-reward",
            "tag-parser"
        ]
    );
}

#[test]
fn plugins_check_passes_on_the_shipped_plugins() {
    let output = host(&["plugins", "check", "--plugins", "plugins"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("all 8 plugins passed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn plugins_check_fails_and_names_a_broken_plugin() {
    let dir = tempfile::tempdir().unwrap();
    common::write_prebuilt_plugin(dir.path(), "good-one", common::hostile_wasm(), "");
    common::write_prebuilt_plugin(
        dir.path(),
        "broken-one",
        common::hostile_wasm(),
        "[limits]\ntimeout-ms = 200\n[config]\nbehavior = \"loop\"",
    );
    let output = host(&[
        "plugins",
        "check",
        "--plugins",
        dir.path().to_str().unwrap(),
    ]);
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("✗ broken-one"), "{out}");
    assert!(out.contains("deadline of 200 ms exceeded"), "{out}");
    assert!(out.contains("✓ good-one"), "{out}");
    assert!(out.contains("1 of 2 plugins failed: broken-one"), "{out}");
}

#[test]
fn a_malformed_manifest_is_reported_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("typo");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(
        plugin.join("plugin.toml"),
        "name = \"typo\"\nkind = \"reward\"\nversion = \"1\"\n[limits]\ntimeout-ms = \"fast\"\n",
    )
    .unwrap();
    let output = host(&["plugins", "list", "--plugins", dir.path().to_str().unwrap()]);
    let out = text(&output);
    assert!(!output.status.success());
    assert!(out.contains("typo/plugin.toml"), "{out}");
    assert!(out.contains("line 5"), "{out}");
    let missing = host(&["plugins", "list", "--plugins", "/nonexistent/plugins"]);
    assert!(
        text(&missing).contains("/nonexistent/plugins does not exist"),
        "{}",
        text(&missing)
    );
}

#[test]
fn reward_scores_one_response_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let response = dir.path().join("response.txt");
    std::fs::write(
        &response,
        "<think> t </think> <answer> The final answer is \\[ \\boxed{Paris France} \\] </answer>",
    )
    .unwrap();
    let output = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--golden",
        "Paris",
        "--golden",
        "City of Light",
        "--response-file",
        response.to_str().unwrap(),
        "--json",
    ]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(value["plugin"], "research-reward");
    assert!(
        (value["total"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12,
        "{out}"
    );
    assert_eq!(value["components"]["format"], 1.0);

    let cut = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--golden",
        "Paris",
        "--response-file",
        response.to_str().unwrap(),
        "--finish",
        "length",
    ]);
    let out = text(&cut);
    assert!(out.contains("total        0\n"), "{out}");

    let searchr1 = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--use",
        "reward=searchr1-reward",
        "--config",
        "searchr1-reward.format=true",
        "--golden",
        "Paris",
        "--response",
        "<answer> Paris </answer>",
    ]);
    assert!(
        text(&searchr1).contains("total        0.8"),
        "{}",
        text(&searchr1)
    );
}

#[test]
fn reward_takes_the_assistant_marker_from_a_models_chat_template_and_users_cannot_set_it() {
    use research_host::model::Architecture;
    use research_host::model::tiny::{TINY, init_tiny};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chatml");
    init_tiny(Architecture::Qwen2, TINY, 0, None, &model).unwrap();
    // A well-formed answer whose thinking holds the assistant marker.
    let response = "<think> I will answer <|im_start|>assistant\n now </think> <answer> \\boxed{Paris} </answer>";
    let score = |extra: &[&str]| {
        let mut args = vec![
            "reward",
            "--plugins",
            "plugins",
            "--golden",
            "Paris",
            "--response",
            response,
            "--json",
        ];
        args.extend_from_slice(extra);
        let output = host(&args);
        assert!(output.status.success(), "{}", text(&output));
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        value["total"].as_f64().unwrap()
    };
    assert_eq!(score(&[]), 1.0, "read whole without a model");
    assert_eq!(
        score(&["--model", model.to_str().unwrap()]),
        0.0,
        "cut at the ChatML marker, as the ReSearch reference reads it"
    );
    let refused = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--golden",
        "Paris",
        "--response",
        "x",
        "--config",
        "research-reward.host.assistant-marker=X",
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("are set by the host"),
        "{}",
        text(&refused)
    );
}

#[test]
fn reward_scores_a_case_file_and_keeps_going_past_bad_lines() {
    let cases = Path::new("tests/data/research-reward.cases.jsonl");
    let output = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--cases",
        cases.to_str().unwrap(),
    ]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), common::reward_cases("research-reward").len());
    assert!(lines.iter().all(|l| l["matches_expected"] == true));

    let dir = tempfile::tempdir().unwrap();
    // A cases file saved with a byte-order mark scores; one with a byte that is not UTF-8
    // names the file, line and column.
    let bom = dir.path().join("bom.jsonl");
    let case = "{\"golden_answers\": [\"Paris\"], \"response\": \"<think>a</think><answer>\\\\boxed{Paris}</answer>\", \"expected_total\": 1.0}\n";
    std::fs::write(&bom, format!("\u{feff}{case}{case}")).unwrap();
    let output = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--cases",
        bom.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 2);
    let latin1 = dir.path().join("latin1.jsonl");
    let mut bytes = case.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"golden_answers\": [\"Montr\xE9al\"], \"response\": \"x\"}\n");
    std::fs::write(&latin1, bytes).unwrap();
    let output = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--cases",
        latin1.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains(&format!("{}:2:27: not valid UTF-8", latin1.display())),
        "{}",
        text(&output)
    );

    let file = dir.path().join("cases.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"golden_answers\": [\"Paris\"], \"response\": \"<think>a</think><answer>\\\\boxed{Paris}</answer>\", \"expected_total\": 1.0}\n",
            "{not json\n",
            "{\"golden_answers\": [\"Paris\"], \"response\": \"x\", \"finish\": \"sideways\"}\n",
            "\n",
            "{\"golden_answers\": [\"Paris\"], \"response\": \"<think>a</think><answer>\\\\boxed{Lyon}</answer>\", \"expected_total\": 1.0}\n",
        ),
    )
    .unwrap();
    let out_file = dir.path().join("scores.jsonl");
    let output = host(&[
        "reward",
        "--plugins",
        "plugins",
        "--cases",
        file.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let stderr = text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("cases.jsonl:2"), "{stderr}");
    assert!(
        stderr.contains("cases.jsonl:3") && stderr.contains("sideways"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 cases scored")
            && stderr.contains("2 errors")
            && stderr.contains("1 differ"),
        "{stderr}"
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["total"], 1.0);
    assert_eq!(records[1]["line"], 2);
    assert!(records[1]["error"].is_string());
    assert_eq!(records[3]["line"], 5);
    assert_eq!(records[3]["total"], 0.1);
    assert_eq!(records[3]["matches_expected"], false);
}

#[test]
fn several_plugins_of_a_kind_need_a_choice() {
    let dir = tempfile::tempdir().unwrap();
    common::write_prebuilt_plugin(dir.path(), "first", common::hostile_wasm(), "");
    common::write_prebuilt_plugin(dir.path(), "second", common::hostile_wasm(), "");
    let root = dir.path().to_str().unwrap();
    let output = host(&[
        "reward",
        "--plugins",
        root,
        "--golden",
        "x",
        "--response",
        "abc",
    ]);
    let out = text(&output);
    assert!(!output.status.success());
    assert!(
        out.contains("several reward plugins (first, second)") && out.contains("--use reward=NAME"),
        "{out}"
    );
    let chosen = host(&[
        "reward",
        "--plugins",
        root,
        "--use",
        "reward=second",
        "--golden",
        "x",
        "--response",
        "abc",
    ]);
    assert!(
        text(&chosen).contains("reward plugin: second"),
        "{}",
        text(&chosen)
    );
    assert!(
        text(&chosen).contains("total        3"),
        "{}",
        text(&chosen)
    );
    let wrong = host(&[
        "reward",
        "--plugins",
        root,
        "--use",
        "reward=third",
        "--golden",
        "x",
        "--response",
        "abc",
    ]);
    assert!(
        text(&wrong).contains("no plugin of that name (it has: first, second)"),
        "{}",
        text(&wrong)
    );
}

#[test]
fn a_plugin_with_a_build_script_is_refused_until_built_explicitly_and_then_runs_sandboxed() {
    let fixture = common::repo_root().join("tests/fixtures/build-script-reward");
    let fixture_arg = fixture.display().to_string();
    std::fs::remove_dir_all(fixture.join("built")).ok();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("build-script-ran");
    let escape = dir.path().join("guest-wrote-this");
    let with_marker = |args: &[&str]| {
        common::host_command(args)
            .env("BUILD_SCRIPT_MARKER", &marker)
            .output()
            .expect("host runs")
    };
    let score = [
        "reward",
        "--plugins",
        &fixture_arg,
        "--golden",
        "Paris",
        "--response",
        "<answer> Paris </answer>",
        "--json",
        "--config",
        &format!("build-script-reward.path={}", escape.display()),
    ];

    // Loading refuses the sources and runs nothing: no cargo, so no build script.
    let refused = with_marker(&score);
    assert!(!refused.status.success());
    let message = text(&refused);
    assert!(
        message.contains("build-script-reward")
            && message.contains("has not been built")
            && message.contains(&format!("host plugins build {fixture_arg}")),
        "{message}"
    );
    assert!(!marker.exists(), "a build script ran while loading");
    let list = host(&["plugins", "list", "--plugins", &fixture_arg]);
    assert!(text(&list).contains("not built"), "{}", text(&list));

    // The explicit step builds it (sharing the shipped plugins' cargo target folder), says
    // that build scripts run natively, and its build script did.
    let target = common::plugins_dir().join("target");
    let built = with_marker(&[
        "plugins",
        "build",
        &fixture_arg,
        "--target-dir",
        &target.display().to_string(),
    ]);
    assert!(built.status.success(), "{}", text(&built));
    assert!(
        text(&built).contains("natively on this machine, outside the sandbox"),
        "{}",
        text(&built)
    );
    assert!(marker.is_file(), "the explicit build ran the build script");
    let component = fixture.join("built/build-script-reward.wasm");
    let sha256 = research_host::durable::sha256_file(&component).unwrap();
    let list = host(&["plugins", "list", "--plugins", &fixture_arg]);
    assert!(text(&list).contains(&sha256[..12]), "{}", text(&list));

    // Loading now runs the built component in the sandbox: its attempt to write a file fails.
    let scored = with_marker(&score);
    assert!(scored.status.success(), "{}", text(&scored));
    let value: serde_json::Value = serde_json::from_slice(&scored.stdout).expect("JSON");
    assert_eq!(value["total"], 1.0);
    assert_eq!(value["components"]["escaped"], 0.0);
    assert!(!escape.exists());
}

#[test]
fn the_custom_reward_example_builds_checks_and_scores() {
    let build = host(&["plugins", "build", "examples/custom-reward"]);
    assert!(build.status.success(), "{}", text(&build));
    let check = host(&["plugins", "check", "--plugins", "examples/custom-reward"]);
    let out = text(&check);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("✓ f1-length-penalty"), "{out}");
    let long_thought = "word ".repeat(400);
    let response =
        format!("<think> {long_thought}</think> <answer> \\boxed{{Paris France}} </answer>");
    let output = host(&[
        "reward",
        "--plugins",
        "examples/custom-reward",
        "--golden",
        "Paris",
        "--response",
        &response,
        "--json",
    ]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    // 406 words: 106 past the free 300, penalty 0.05 per 100 words = 0.053; F1 = 2/3.
    assert_eq!(value["components"]["words"], 406.0);
    assert!(
        (value["components"]["length_penalty"].as_f64().unwrap() - 0.053).abs() < 1e-12,
        "{out}"
    );
    assert!(
        (value["total"].as_f64().unwrap() - (2.0 / 3.0 - 0.053)).abs() < 1e-12,
        "{out}"
    );
}

#[test]
fn model_init_and_generate_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let model_arg = model.to_str().unwrap();
    let init = host(&[
        "model", "init", "--arch", "llama", "--out", model_arg, "--seed", "5",
    ]);
    assert!(init.status.success(), "{}", text(&init));
    let info = host(&["model", "info", model_arg]);
    assert!(
        text(&info).contains("architecture   llama"),
        "{}",
        text(&info)
    );
    let run = || {
        let output = host(&[
            "generate",
            "--model",
            model_arg,
            "--prompt",
            "Who wrote Hamlet?",
            "--chat",
            "--seed",
            "1",
            "--max-new-tokens",
            "6",
            "--json",
        ]);
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second, "same seed, same output");
    assert_eq!(first["ids"].as_array().unwrap().len(), 6);
    assert_eq!(first["finish"], "length");
    assert!(
        first["prompt"]
            .as_str()
            .unwrap()
            .starts_with("<|im_start|>user\nWho wrote Hamlet?<|im_end|>")
    );
    assert!(
        first["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l.as_f64().unwrap() < 0.0)
    );

    let bad = host(&["model", "init", "--arch", "gpt2", "--out", model_arg]);
    assert!(
        !bad.status.success() && text(&bad).contains("unknown architecture `gpt2`"),
        "{}",
        text(&bad)
    );
    let missing = host(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    assert!(
        text(&missing).contains("/nonexistent/model/config.json"),
        "{}",
        text(&missing)
    );
}

#[test]
fn model_init_takes_a_given_tokenizer_and_names_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let first = host(&["model", "init", "--arch", "qwen2", "--out", &path("a")]);
    assert!(first.status.success(), "{}", text(&first));
    // A second model from the first one's tokenizer: same tokenizer, vocabulary and ids.
    let tokenizer = path("a/tokenizer.json");
    let second = host(&[
        "model",
        "init",
        "--arch",
        "llama",
        "--out",
        &path("b"),
        "--tokenizer",
        &tokenizer,
    ]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("wrote a tiny llama model"),
        "{}",
        text(&second)
    );
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        read(&path("a/tokenizer.json")),
        read(&path("b/tokenizer.json"))
    );
    let config = |p: &str| -> serde_json::Value { serde_json::from_str(&read(p)).unwrap() };
    assert_eq!(
        config(&path("a/config.json"))["vocab_size"],
        config(&path("b/config.json"))["vocab_size"]
    );

    // A tokenizer without ChatML's tokens is refused with the token named; a missing file
    // with its path; a tokenizer together with a corpus by clap; an unknown size too.
    let mut plain: serde_json::Value = serde_json::from_str(&read(&tokenizer)).unwrap();
    plain["added_tokens"] = serde_json::json!([]);
    if let Some(vocab) = plain["model"]["vocab"].as_object_mut() {
        vocab.remove("<|im_end|>");
    }
    std::fs::write(path("plain.json"), plain.to_string()).unwrap();
    let refused = host(&[
        "model",
        "init",
        "--arch",
        "qwen2",
        "--out",
        &path("c"),
        "--tokenizer",
        &path("plain.json"),
    ]);
    assert!(
        !refused.status.success() && text(&refused).contains("<|im_end|>"),
        "{}",
        text(&refused)
    );
    assert!(!dir.path().join("c").exists());
    let missing = host(&[
        "model",
        "init",
        "--arch",
        "qwen2",
        "--out",
        &path("d"),
        "--tokenizer",
        &path("none.json"),
    ]);
    assert!(text(&missing).contains("none.json"), "{}", text(&missing));
    let both = host(&[
        "model",
        "init",
        "--arch",
        "qwen2",
        "--out",
        &path("e"),
        "--tokenizer",
        &tokenizer,
        "--corpus",
        &tokenizer,
    ]);
    assert!(!both.status.success(), "{}", text(&both));
    let size = host(&[
        "model",
        "init",
        "--arch",
        "qwen2",
        "--size",
        "7b",
        "--out",
        &path("f"),
    ]);
    assert!(
        !size.status.success() && text(&size).contains("0.5b"),
        "{}",
        text(&size)
    );
}

#[test]
fn embedder_index_and_search_commands_work_together_and_explain_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let corpus = common::write_test_corpus(dir.path(), "corpus.jsonl", 40);
    let output = host(&[
        "embedder",
        "init",
        "--out",
        &path("emb"),
        "--corpus",
        corpus.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let output = host(&[
        "index",
        "build",
        "--quiet",
        "--corpus",
        corpus.to_str().unwrap(),
        "--embedder",
        &path("emb"),
        "--out",
        &path("index"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("added 40 passages"),
        "{}",
        text(&output)
    );

    // One writer per index folder: while another process holds it, `host index add` and
    // `host index build` are refused at once with the holder's pid.
    let lock =
        research_host::folder_lock::FolderLock::acquire(&dir.path().join("index"), "the test")
            .unwrap();
    let corpus_arg = corpus.display().to_string();
    for args in [
        vec![
            "index",
            "add",
            "--quiet",
            "--corpus",
            &corpus_arg,
            "--index",
            &path("index"),
        ],
        vec![
            "index",
            "build",
            "--quiet",
            "--corpus",
            &corpus_arg,
            "--embedder",
            &path("emb"),
            "--out",
            &path("index"),
        ],
    ] {
        let output = host(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output).contains(&format!(
                "{} is in use by another process (pid {}, `the test`)",
                path("index"),
                std::process::id()
            )),
            "{args:?}: {}",
            text(&output)
        );
    }
    drop(lock);

    let output = host(&["index", "info", "--index", &path("index"), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["state"], "complete");
    assert_eq!(info["passages"], 40);
    assert_eq!(info["embedder"]["settings"]["pooling"], "mean");
    assert!(info["disk_bytes"].as_u64().unwrap() > 0);

    let record = std::fs::read_to_string(&corpus).unwrap();
    let first = research_host::data::corpus::parse_record(record.lines().next().unwrap()).unwrap();
    let output = host(&[
        "search",
        "--index",
        &path("index"),
        "-k",
        "2",
        "--json",
        &first.contents(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let hits: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(hits[0][0]["id"], serde_json::json!(first.id));
    assert_eq!(hits[0].as_array().unwrap().len(), 2);
    let table = host(&["search", "--index", &path("index"), &first.contents()]);
    assert!(text(&table).contains(&first.title), "{}", text(&table));

    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"id\": \"1\", \"contents\": \"fine\"}\n{oops\n",
    )
    .unwrap();
    let output = host(&[
        "index",
        "build",
        "--quiet",
        "--corpus",
        &path("bad.jsonl"),
        "--embedder",
        &path("emb"),
        "--out",
        &path("bad-index"),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("bad.jsonl:2: not valid JSON"),
        "{}",
        text(&output)
    );

    let output = host(&["search", "--index", &path("emb"), "anything"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("not an index"), "{}", text(&output));
}

#[test]
fn embedder_settings_follow_the_folder_e5_prefixes_and_cls_pooling() {
    use research_host::retrieval::embedder::{Embedder, Pooling, SettingsOverrides};
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(to.join("1_Pooling")).unwrap();
        let from = common::tiny_embedder(0);
        for file in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
        ] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
        to
    };
    let load = |dir: &Path| {
        Embedder::load(
            dir,
            &SettingsOverrides::default(),
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    let e5 = load(&copy("multilingual-e5-tiny"));
    let settings = &e5.identity().settings;
    assert_eq!(
        (
            settings.query_prefix.as_str(),
            settings.passage_prefix.as_str()
        ),
        ("query: ", "passage: ")
    );
    assert_eq!(settings.pooling, Pooling::Mean);

    let bge = copy("bge-small-en-tiny");
    std::fs::write(
        bge.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    let bge = load(&bge);
    assert_eq!(bge.identity().settings.pooling, Pooling::Cls);
    assert!(
        bge.identity()
            .settings
            .query_prefix
            .starts_with("Represent this sentence")
    );
    let plain = load(&common::tiny_embedder(0));
    assert_ne!(
        bge.embed_passages(&["a river"]).unwrap(),
        plain.embed_passages(&["a river"]).unwrap(),
        "CLS pooling gives other vectors than mean pooling"
    );
    assert_eq!(
        e5.identity().fingerprint,
        plain.identity().fingerprint,
        "same files, same fingerprint"
    );
    assert!(
        e5.identity()
            .mismatch(plain.identity())
            .unwrap()
            .contains("query prefix")
    );

    let broken = copy("broken");
    std::fs::write(broken.join("config.json"), "{}").unwrap();
    let error = Embedder::load(
        &broken,
        &SettingsOverrides::default(),
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(
        format!("{error:#}").contains("config.json: not a BERT config"),
        "{error:#}"
    );
}

#[test]
fn corpus_split_writes_flashrag_passages_and_names_bad_articles() {
    let dir = tempfile::tempdir().unwrap();
    let articles = dir.path().join("articles.jsonl");
    let long = (0..210)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &articles,
        format!(
            "{{\"title\":\"Ada\",\"text\":\"Ada wrote the first program.\"}}\n\
             {{\"title\":\"Long\",\"extract\":\"{long}\"}}\n"
        ),
    )
    .unwrap();
    let corpus = dir.path().join("out/corpus.jsonl");
    let a = articles.to_str().unwrap();
    let c = corpus.to_str().unwrap();
    let output = host(&["corpus", "split", a, "--out", c, "--max-words", "100"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("2 articles → 4 passages"),
        "{}",
        text(&output)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["id"], "0");
    assert_eq!(
        lines[0]["contents"],
        "\"Ada\"\nAda wrote the first program."
    );
    assert_eq!(
        lines[3]["contents"],
        "\"Long\"\nw200 w201 w202 w203 w204 w205 w206 w207 w208 w209"
    );

    // A bad article stops the split with its line, and the old corpus stays as it was.
    std::fs::write(
        &articles,
        "{\"title\":\"Ada\",\"text\":\"x\"}\n{\"title\":\"B\"}\n",
    )
    .unwrap();
    let output = host(&["corpus", "split", a, "--out", c]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("articles.jsonl:2"),
        "{}",
        text(&output)
    );
    assert_eq!(std::fs::read_to_string(&corpus).unwrap().lines().count(), 4);
    let output = host(&["corpus", "split", a, "--out", c, "--max-words", "0"]);
    assert!(!output.status.success());
}

#[test]
fn model_fetch_offline_says_what_to_do_instead() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "model",
            "fetch",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "--out",
        ])
        .arg(&out)
        // A closed loopback port stands in for "no internet".
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", dir.path().join("hf"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = text(&output);
    assert!(
        message
            .contains("cannot fetch HuggingFaceTB/SmolLM2-135M-Instruct from http://127.0.0.1:9")
            && message.contains("import-gguf"),
        "{message}"
    );
    assert!(!out.exists(), "nothing is left behind");
    let output = host(&["model", "fetch", "not-an-id"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("ORG/NAME"), "{}", text(&output));
}
