//! Hostile guests: each misbehaviour ends in a clear error naming the plugin, the function and
//! the cause, within the deadline (+100 ms), and healthy plugins keep working in the same
//! process.

mod common;

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
    // a WASI clock call, where epoch interruption never fires; the bounded clock cuts it.
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
