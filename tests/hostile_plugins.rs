//! Hostile guests of every kind: each misbehaviour ends in a clear error naming the plugin, the
//! function and the cause, within the deadline (+100 ms, +200 ms for the other kinds), also
//! when the guest blocks inside a host call, and healthy plugins keep working in the same
//! process. Contained: loops, memory, recursion, panics, files, sockets, blocking sleeps,
//! oversized outputs, NaN rewards and scores, lists of the wrong length, empty or too many stop
//! sequences, empty prompts and unknown roles (directly, through `host plugins check`, and in
//! a training run, where a failing call costs only its rollouts). Accepted as harmless: texts
//! and component names made to break JSON lines or HTML, which the host writes escaped.

use crate::common;

use research_host::plugins::{
    Failure, Finish, LoadedPlugin, PluginError, RewardPlugin, RewardSample, discover,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn sample(question: &str) -> RewardSample {
    RewardSample {
        question: question.into(),
        golden_answers: vec!["Paris".into()],
        response: "<think> t </think> <answer> \\boxed{Paris} </answer>".into(),
        finish: Finish::Eos,
        num_searches: 0,
        metadata: None,
    }
}

/// Loads the hostile fixture as a plugin named `hostile-<behavior>` with the given limits.
fn hostile(behavior: &str, limits: &str, config: &str) -> RewardPlugin {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("hostile-{behavior}");
    common::write_prebuilt_plugin(
        dir.path(),
        &name,
        common::hostile_wasm(),
        &format!("[limits]\n{limits}\n[config]\nbehavior = \"{behavior}\"\n{config}"),
    );
    let plugins = discover(dir.path()).expect("discover");
    match common::host().load(&plugins[0], &BTreeMap::new()) {
        Ok((_, LoadedPlugin::Reward(plugin))) => plugin,
        Ok(_) => panic!("not a reward plugin"),
        Err(error) => panic!("{error:#}"),
    }
}

/// Calls `plugin`, expects an error within `deadline_ms` + 100 ms, checks that a healthy plugin
/// still works afterwards, and returns the error.
fn expect_failure(plugin: &RewardPlugin, deadline_ms: u64) -> PluginError {
    let started = Instant::now();
    let error = plugin
        .score(&sample("q"))
        .expect_err("the hostile call must fail");
    let elapsed = started.elapsed();
    assert!(
        elapsed <= Duration::from_millis(deadline_ms + 100),
        "took {elapsed:?}, deadline {deadline_ms} ms: {error}"
    );
    let text = error.to_string();
    assert!(
        text.contains(plugin.name()),
        "error does not name the plugin: {text}"
    );
    assert!(
        text.contains("reward.score"),
        "error does not name the function: {text}"
    );
    let healthy = common::reward("research-reward", &[]);
    assert_eq!(
        healthy
            .score(&sample("q"))
            .expect("healthy plugin still works")
            .total,
        1.0
    );
    error
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let plugin = hostile("loop", "timeout-ms = 300", "");
    let started = Instant::now();
    let error = expect_failure(&plugin, 300);
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "stopped too early"
    );
    assert_eq!(
        error.cause,
        Failure::Deadline {
            timeout_ms: 300,
            blocked: false
        }
    );
    assert!(
        error.to_string().contains("deadline of 300 ms exceeded"),
        "{error}"
    );
}

#[test]
fn a_guest_sleeping_in_a_host_call_is_stopped_at_its_deadline() {
    // Two minutes of `std::thread::sleep` against a 500 ms deadline: the wait happens inside
    // a host call (it blocks on a clock pollable), where epoch interruption never fires; the
    // bounded wait ends it at the deadline.
    let plugin = hostile("sleep", "timeout-ms = 500", "");
    let started = Instant::now();
    let error = expect_failure(&plugin, 500);
    assert!(
        started.elapsed() >= Duration::from_millis(490),
        "stopped too early"
    );
    assert_eq!(
        error.cause,
        Failure::Deadline {
            timeout_ms: 500,
            blocked: true
        }
    );
    assert!(
        error.to_string().contains("blocked in a host call"),
        "{error}"
    );
    // The instance was discarded: the next call starts a fresh one and is cut the same way.
    let again = expect_failure(&plugin, 500);
    assert_eq!(again.cause, error.cause);

    // A wait that ends well before the deadline is untouched.
    let nap = hostile("sleep", "timeout-ms = 2000", "ms = 20");
    let score = nap.score(&sample("q")).expect("a 20 ms nap is fine");
    assert_eq!(score.total, 1.0);
}

#[test]
fn fuel_stops_a_loop_when_configured() {
    let host = research_host::plugins::PluginHost::new(&research_host::plugins::HostOptions {
        cache_dir: Some(common::test_cache_dir()),
        fuel: true,
    })
    .expect("host with fuel");
    let dir = tempfile::tempdir().expect("temp dir");
    common::write_prebuilt_plugin(
        dir.path(),
        "hostile-fuel",
        common::hostile_wasm(),
        "[limits]\ntimeout-ms = 5000\nfuel = 5000000\n[config]\nbehavior = \"loop\"",
    );
    let plugins = discover(dir.path()).expect("discover");
    let Ok((_, LoadedPlugin::Reward(plugin))) = host.load(&plugins[0], &BTreeMap::new()) else {
        panic!("load failed");
    };
    let error = expect_failure(&plugin, 5000);
    assert_eq!(error.cause, Failure::Fuel { fuel: 5_000_000 });
}

#[test]
fn unbounded_memory_growth_hits_the_memory_cap() {
    let plugin = hostile("memory", "timeout-ms = 2000\nmemory-mb = 32", "");
    let error = expect_failure(&plugin, 2000);
    match error.cause {
        Failure::Memory {
            limit_bytes,
            requested_bytes,
        } => {
            assert_eq!(limit_bytes, 32 << 20);
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected a memory failure, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("memory limit of 32 MiB exceeded"),
        "{error}"
    );
}

#[test]
fn deep_recursion_overflows_the_stack_cleanly() {
    let plugin = hostile("recursion", "timeout-ms = 2000", "");
    let error = expect_failure(&plugin, 2000);
    assert_eq!(error.cause, Failure::StackOverflow, "{error}");
}

#[test]
fn a_panic_reports_the_guest_message_and_the_plugin_recovers() {
    let plugin = hostile("panic", "timeout-ms = 1000", "");
    let error = expect_failure(&plugin, 1000);
    match &error.cause {
        Failure::Panic(message) => assert!(
            message.contains("hostile plugin gave up on purpose"),
            "{message}"
        ),
        other => panic!("expected a panic, got {other:?}"),
    }
    // A second call gets a fresh instance (not "cannot enter component instance").
    let again = plugin.score(&sample("q")).unwrap_err();
    assert!(matches!(again.cause, Failure::Panic(_)), "{again}");

    // The same plugin works again once the input stops triggering the panic.
    let selective = hostile("panic-on-boom", "timeout-ms = 1000", "");
    assert!(selective.score(&sample("boom")).is_err());
    let fine = selective
        .score(&sample("fine"))
        .expect("a fresh instance after the trap");
    assert!(fine.total > 0.0);
}

#[test]
fn reading_etc_passwd_is_impossible() {
    let plugin = hostile("passwd", "timeout-ms = 1000", "");
    let error = expect_failure(&plugin, 1000);
    match &error.cause {
        Failure::Panic(message) => {
            assert!(message.contains("reading /etc/passwd failed"), "{message}")
        }
        other => panic!("expected the guest's own failure report, got {other:?}"),
    }
}

#[test]
fn opening_a_socket_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    let plugin = hostile(
        "socket",
        "timeout-ms = 1000",
        &format!("address = \"{address}\""),
    );
    let error = expect_failure(&plugin, 1000);
    match &error.cause {
        Failure::Panic(message) => assert!(message.contains("opening a socket"), "{message}"),
        other => panic!("expected the guest's own failure report, got {other:?}"),
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the guest reached the listener"
    );
}

#[test]
fn a_100_mb_output_is_rejected() {
    let plugin = hostile(
        "big-output",
        "timeout-ms = 5000\nmemory-mb = 512\nmax-output-kb = 1024",
        "",
    );
    let error = expect_failure(&plugin, 5000);
    match &error.cause {
        Failure::InvalidOutput(message) => {
            assert!(message.contains("max-output-kb"), "{message}")
        }
        other => panic!("expected invalid output, got {other:?}"),
    }
}

#[test]
fn a_nan_reward_is_invalid_output() {
    let plugin = hostile("nan", "timeout-ms = 1000", "");
    let error = expect_failure(&plugin, 1000);
    assert!(
        matches!(&error.cause, Failure::InvalidOutput(m) if m.contains("NaN")),
        "{error}"
    );
}

#[test]
fn a_healthy_guest_keeps_its_instance_between_calls() {
    let plugin = hostile("healthy", "timeout-ms = 1000", "");
    for _ in 0..3 {
        let score = plugin.score(&sample("q")).expect("healthy");
        assert_eq!(score.total, sample("q").response.len() as f64);
    }
}

#[test]
fn a_kind_mismatch_is_refused_at_load_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = common::write_prebuilt_plugin(dir.path(), "liar", common::hostile_wasm(), "");
    let manifest = std::fs::read_to_string(plugin_dir.join("plugin.toml")).unwrap();
    std::fs::write(
        plugin_dir.join("plugin.toml"),
        manifest.replace("kind = \"reward\"", "kind = \"parser\""),
    )
    .unwrap();
    let plugins = discover(dir.path()).expect("discover");
    let error = match common::host().load(&plugins[0], &BTreeMap::new()) {
        Ok(_) => panic!("a reward component declared as a parser must not load"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("liar") && error.contains("kind = \"parser\"") && error.contains("reward"),
        "{error}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let plugins_root = dir.path().join("plugins");
    common::write_prebuilt_plugin(&plugins_root, "junk", &junk, "");
    let plugins = discover(&plugins_root).expect("discover");
    let error = match common::host().load(&plugins[0], &BTreeMap::new()) {
        Ok(_) => panic!("junk must not load"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("junk") && error.contains("not a valid WebAssembly component"),
        "{error}"
    );
}

// ---- hostile guests of the other kinds ----------------------------------------------------

/// Text a hostile guest returns to break JSON lines, HTML pages or terminals (the fixtures'
/// `BREAKER`).
const BREAKER: &str =
    "\"}\n{\"step\": -1}\u{0}\u{1b}[2J\u{2028}</td></script><script>alert(1)</script>&amp;";

/// Loads the fixture of `kind` as `hostile-KIND-BEHAVIOR` with a 300 ms deadline.
fn hostile_of_kind(kind: &str, behavior: &str) -> (String, LoadedPlugin) {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("hostile-{kind}-{behavior}");
    common::write_prebuilt_plugin_of_kind(
        dir.path(),
        &name,
        kind,
        &common::hostile_kind_wasm(kind),
        &format!("[limits]\ntimeout-ms = 300\n[config]\nbehavior = \"{behavior}\""),
    );
    let plugins = discover(dir.path()).expect("discover");
    let (_, loaded) = common::host()
        .load(&plugins[0], &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{name} loads: {e:#}"));
    (name, loaded)
}

/// The error of a contained misbehaviour: it names the plugin and the call, says `what`, and
/// came within the 300 ms deadline + 200 ms.
fn contained<T: std::fmt::Debug>(
    name: &str,
    function: &str,
    what: &str,
    started: Instant,
    result: Result<T, PluginError>,
) {
    let elapsed = started.elapsed();
    let error = result.expect_err(&format!("{name} {function} must fail ({what})"));
    let text = error.to_string();
    assert!(
        text.contains(&format!("plugin `{name}` failed in `{function}`")) && text.contains(what),
        "{name}: expected `{what}` in: {text}"
    );
    assert!(
        elapsed < Duration::from_millis(500),
        "{name} took {elapsed:?}"
    );
}

const BLOCKED: &str = "blocked in a host call";
const TOO_BIG: &str = "more than max-output-kb";

#[test]
fn hostile_parsers_are_contained_or_harmless() {
    for (behavior, function, what) in [
        (
            "empty-stop",
            "parser.stop-sequences",
            "an empty stop sequence",
        ),
        (
            "many-stops",
            "parser.stop-sequences",
            "100 stop sequences, more than 32",
        ),
        ("sleep", "parser.parse", BLOCKED),
        ("panic", "parser.parse", "hostile parser gave up on purpose"),
        ("huge", "parser.parse", TOO_BIG),
        ("huge", "parser.format-results", TOO_BIG),
    ] {
        let (name, LoadedPlugin::Parser(parser)) = hostile_of_kind("parser", behavior) else {
            panic!("a parser");
        };
        let started = Instant::now();
        match function {
            "parser.stop-sequences" => {
                contained(&name, function, what, started, parser.stop_sequences())
            }
            "parser.parse" => contained(&name, function, what, started, parser.parse("t")),
            _ => contained(
                &name,
                function,
                what,
                started,
                parser.format_results("q", &[]),
            ),
        }
    }
    // Harmless: texts that would break JSON or HTML are data; the host escapes them where it
    // writes them (see the training run below).
    let (_, LoadedPlugin::Parser(parser)) = hostile_of_kind("parser", "breaker") else {
        panic!("a parser");
    };
    assert_eq!(
        parser.parse("t").unwrap(),
        research_host::plugins::Action::Search(BREAKER.into())
    );
}

#[test]
fn hostile_search_tools_are_contained_or_harmless() {
    let queries = vec!["q".to_string(), "r".to_string()];
    for (behavior, what) in [
        ("wrong-length", "1 result lists for 2 queries"),
        ("too-many", "4 passages for one query, more than top-k = 3"),
        ("nan", "a passage score is not a finite number"),
        ("sleep", BLOCKED),
        ("huge", TOO_BIG),
    ] {
        let (name, LoadedPlugin::Search(search)) = hostile_of_kind("search", behavior) else {
            panic!("a search plugin");
        };
        let started = Instant::now();
        contained(
            &name,
            "search.search",
            what,
            started,
            search.search(&queries, 3),
        );
    }
    let (_, LoadedPlugin::Search(search)) = hostile_of_kind("search", "breaker") else {
        panic!("a search plugin");
    };
    let lists = search.search(&queries, 3).unwrap();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0][0].title, BREAKER);
}

#[test]
fn hostile_prompts_are_contained_or_harmless() {
    for (behavior, what) in [
        ("empty", "an empty prompt"),
        ("no-messages", "a chat with no messages"),
        ("bad-role", "a message with role `wizard`"),
        ("sleep", BLOCKED),
        ("huge", TOO_BIG),
    ] {
        let (name, LoadedPlugin::Prompt(prompt)) = hostile_of_kind("prompt", behavior) else {
            panic!("a prompt plugin");
        };
        let started = Instant::now();
        contained(&name, "prompt.render", what, started, prompt.render("Q?"));
    }
    let (_, LoadedPlugin::Prompt(prompt)) = hostile_of_kind("prompt", "breaker") else {
        panic!("a prompt plugin");
    };
    assert!(matches!(
        prompt.render("Q?").unwrap(),
        research_host::plugins::Rendered::Chat(messages) if messages[0].content.starts_with(BREAKER)
    ));
}

#[test]
fn hostile_judges_are_contained_or_harmless() {
    let prompt = vec![research_host::plugins::Message {
        role: "user".into(),
        content: "Is it right?".into(),
    }];
    let prompts = vec![prompt.clone(), prompt];
    for (behavior, what) in [
        ("wrong-length", "1 completions for 2 prompts"),
        ("sleep", BLOCKED),
        ("huge", TOO_BIG),
    ] {
        let (name, LoadedPlugin::Judge(judge)) = hostile_of_kind("judge", behavior) else {
            panic!("a judge plugin");
        };
        let started = Instant::now();
        contained(
            &name,
            "judge.complete",
            what,
            started,
            judge.complete(&prompts, 8),
        );
    }
    let (_, LoadedPlugin::Judge(judge)) = hostile_of_kind("judge", "breaker") else {
        panic!("a judge plugin");
    };
    assert_eq!(judge.complete(&prompts, 8).unwrap(), [BREAKER, BREAKER]);
}

#[test]
fn plugins_check_names_every_hostile_plugin_and_its_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("parser", "empty-stop", "an empty stop sequence"),
        ("parser", "sleep", BLOCKED),
        ("search", "wrong-length", "result lists for"),
        ("search", "nan", "not a finite number"),
        ("prompt", "bad-role", "role `wizard`"),
        ("prompt", "huge", TOO_BIG),
        ("judge", "wrong-length", "completions for"),
        ("judge", "sleep", BLOCKED),
    ];
    for (kind, behavior, _) in cases {
        common::write_prebuilt_plugin_of_kind(
            dir.path(),
            &format!("hostile-{kind}-{behavior}"),
            kind,
            &common::hostile_kind_wasm(kind),
            &format!("[limits]\ntimeout-ms = 300\n[config]\nbehavior = \"{behavior}\""),
        );
    }
    let started = Instant::now();
    let output = common::host_command(&[
        "plugins",
        "check",
        "--plugins",
        &dir.path().display().to_string(),
    ])
    .output()
    .expect("host runs");
    let report = common::output_text(&output);
    assert!(!output.status.success(), "{report}");
    for (kind, behavior, what) in cases {
        let name = format!("hostile-{kind}-{behavior}");
        let section = report
            .split("\n✗ ")
            .chain(report.strip_prefix("✗ "))
            .find(|s| s.starts_with(&name))
            .unwrap_or_else(|| panic!("{name} is not marked failed:\n{report}"));
        assert!(section.contains(what), "{name}: no `{what}` in:\n{section}");
    }
    assert!(
        report.contains(&format!(
            "{} of {} plugins failed",
            cases.len(),
            cases.len()
        )),
        "{report}"
    );
    // Every blocking call was cut at its deadline: the whole check stays short.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// A plugins folder of prebuilt hostile guests, one per kind, with `behaviors` (kind →
/// behavior; the reward is the reward fixture).
fn hostile_folder(dir: &std::path::Path, behaviors: &[(&str, &str)]) -> std::path::PathBuf {
    let root = dir.join("plugins");
    for &(kind, behavior) in behaviors {
        let wasm = if kind == "reward" {
            common::hostile_wasm().clone()
        } else {
            common::hostile_kind_wasm(kind)
        };
        common::write_prebuilt_plugin_of_kind(
            &root,
            &format!("hostile-{kind}"),
            kind,
            &wasm,
            &format!("[limits]\ntimeout-ms = 300\n[config]\nbehavior = \"{behavior}\""),
        );
    }
    root
}

/// `host train` of `model` (the scripted searching model) for one step on `plugins`.
fn one_step(
    plugins: &std::path::Path,
    model: &std::path::Path,
    run: &std::path::Path,
) -> std::process::Output {
    common::host_command(&[
        "train",
        "--model",
        &model.display().to_string(),
        "--quiet",
        "--steps",
        "1",
        "--out",
        &run.display().to_string(),
        &format!("--plugins={}", plugins.display()),
        "--set",
        "sft.embedded_warm_start=false",
        "--set",
        "rollout.max_response_tokens=40",
        "--set",
        "rollout.batch_prompts=2",
        "--set",
        "rollout.group_size=2",
        "--set",
        "validation.every=0",
    ])
    .output()
    .expect("host runs")
}

#[test]
fn a_training_run_writes_hostile_texts_escaped_and_survives_blocking_plugins() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A tiny model scripted to search (its turns end at `</search>`), so every kind is called.
    let model = common::searching_model(&dir.path().join("searcher"), "Zelkavale", "1867");
    // Every kind returns texts and names made to break JSON lines and HTML: accepted as data,
    // written escaped.
    let plugins = hostile_folder(
        dir.path(),
        &[
            ("prompt", "breaker"),
            ("parser", "breaker"),
            ("search", "breaker"),
            ("reward", "breaker-name"),
        ],
    );
    let run = dir.path().join("breakers");
    let output = one_step(&plugins, &model, &run);
    assert!(output.status.success(), "{}", common::output_text(&output));
    let mut records = 0;
    for file in ["metrics.jsonl", "trajectories/step-000001.jsonl"] {
        let text = std::fs::read_to_string(run.join(file)).unwrap();
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{file}: a line is not JSON ({e}): {line}"));
            records += 1;
            if file.starts_with("trajectories") {
                // The prompt, the query and the observation hold the breaker (the texts as
                // the tokenizer reads them back: it folds U+2028, and the observation is cut
                // to the token budget).
                let json_breaker = "\"}\n{\"step\": -1}\u{0}\u{1b}";
                assert!(
                    value["prompt_text"]
                        .as_str()
                        .unwrap()
                        .contains(json_breaker)
                );
                assert!(
                    value["prompt_text"]
                        .as_str()
                        .unwrap()
                        .contains("<script>alert(1)")
                );
                assert_eq!(value["queries"][0], BREAKER, "{value}");
                assert!(
                    value["response_text"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("<result>{json_breaker}")),
                    "{value}"
                );
                assert!(value["error"].is_null(), "{value}");
            }
        }
    }
    assert!(
        records > 4,
        "a metrics line and 4 rollouts, not {records} records"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("alert(1)"),
        "the component name is kept, escaped"
    );
    let report = common::host_command(&["report", &run.display().to_string()])
        .output()
        .expect("host runs");
    assert!(report.status.success(), "{}", common::output_text(&report));
    let page = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(
        !page.contains("<script>alert(1)</script>"),
        "unescaped text in the report"
    );

    // A parser that blocks in every call: each rollout fails at the 300 ms deadline, the step
    // ends with the failures counted, and the run stays short.
    let plugins = hostile_folder(
        &dir.path().join("blocking"),
        &[
            ("prompt", "healthy"),
            ("parser", "sleep"),
            ("search", "healthy"),
            ("reward", "healthy"),
        ],
    );
    let run = dir.path().join("blocked");
    let started = Instant::now();
    let output = one_step(&plugins, &model, &run);
    let text = common::output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["plugin_errors"], 4, "{line}");
    let trajectories = std::fs::read_to_string(run.join("trajectories/step-000001.jsonl")).unwrap();
    for t in trajectories.lines() {
        let t: serde_json::Value = serde_json::from_str(t).unwrap();
        let error = t["error"].as_str().unwrap();
        assert!(
            error.contains("plugin `hostile-parser` failed in `parser.parse`")
                && error.contains(BLOCKED),
            "{error}"
        );
    }
}

/// A plugin reads its settings once, when an instance starts (contract 0.3.0's `init`): one that
/// refuses them fails to load, naming the plugin and the setting, in `host plugins check` and
/// when a run loads it. A plugin that keeps state between calls (its score counts the calls its
/// instance served) is refused by `host plugins check`: instances are pooled, so its answers
/// would depend on which instance served which call.
#[test]
fn bad_settings_fail_at_load_and_state_between_calls_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    for behavior in ["stateful", "refuse", "typo", "healthy"] {
        common::write_prebuilt_plugin(
            dir.path(),
            &format!("hostile-{behavior}"),
            common::hostile_wasm(),
            &format!("[config]\nbehavior = \"{behavior}\""),
        );
    }
    let plugins = discover(dir.path()).unwrap();
    let load_error = |name: &str| {
        let plugin = plugins.iter().find(|p| p.manifest.name == name).unwrap();
        match common::host().load(plugin, &BTreeMap::new()) {
            Ok(_) => panic!("{name} loaded"),
            Err(error) => format!("{error:#}"),
        }
    };
    let refused = load_error("hostile-refuse");
    assert!(
        refused.contains("hostile-refuse")
            && refused.contains("`init`")
            && refused.contains("refused its settings")
            && refused.contains("refuses to start, on purpose"),
        "{refused}"
    );
    let typo = load_error("hostile-typo");
    assert!(
        typo.contains("config `behavior`") && typo.contains("`typo`") && typo.contains("healthy"),
        "{typo}"
    );

    let output = common::host_command(&[
        "plugins",
        "check",
        "--plugins",
        &dir.path().display().to_string(),
    ])
    .output()
    .expect("host runs");
    let report = common::output_text(&output);
    assert!(!output.status.success(), "{report}");
    let section = |name: &str| {
        report
            .split("\n✗ ")
            .chain(report.strip_prefix("✗ "))
            .find(|s| s.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is not marked failed:\n{report}"))
            .to_string()
    };
    let stateful = section("hostile-stateful");
    assert!(
        stateful.contains("on a fresh instance as on a used one")
            && stateful.contains("keeps state between calls"),
        "{stateful}"
    );
    assert!(section("hostile-refuse").contains("failed to load"));
    assert!(section("hostile-typo").contains("failed to load"));
    assert!(report.contains("✓ hostile-healthy"), "{report}");
    assert!(report.contains("3 of 4 plugins failed"), "{report}");
}
