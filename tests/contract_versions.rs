//! Every released contract version keeps loading: rewards built against
//! `research:plugins@0.1.0` and `@0.2.0` with wit-bindgen directly run beside the shipped
//! plugins, which the SDK builds against the newest version (0.3.0, whose `init` reads the
//! settings once, when an instance starts).

use crate::common;

use research_host::plugins::guest_build::build_plugin_crate;
use research_host::plugins::wit::ContractVersion;
use research_host::plugins::{Finish, LoadedPlugin, RewardSample, discover};
use std::collections::BTreeMap;

fn sample(response: &str) -> RewardSample {
    RewardSample {
        question: "What is the capital of France?".into(),
        golden_answers: vec!["Paris".into()],
        response: response.into(),
        finish: Finish::Eos,
        num_searches: 2,
        metadata: None,
    }
}

/// Builds the fixture `crate_dir` and writes it as a prebuilt plugin `name` into `dir`.
fn older_plugin(crate_dir: &str, name: &str, dir: &std::path::Path) {
    let manifest = common::repo_root().join(crate_dir).join("Cargo.toml");
    let target = common::plugins_dir().join("target");
    let wasm = build_plugin_crate(&manifest, Some(&target)).unwrap_or_else(|e| panic!("{e:#}"));
    common::write_prebuilt_plugin(dir, name, &wasm, "[config]\nbonus = 0.5");
}

#[test]
fn plugins_built_against_0_1_0_and_0_2_0_load_and_score_beside_0_3_0_plugins() {
    let dir = tempfile::tempdir().unwrap();
    older_plugin("tests/fixtures/contract-v0-1", "reward-0-1", dir.path());
    older_plugin("tests/fixtures/contract-v0-2", "reward-0-2", dir.path());
    let plugins = discover(dir.path()).unwrap();
    assert_eq!(plugins.len(), 2);
    for (plugin, version) in plugins
        .iter()
        .zip([ContractVersion::V0_1_0, ContractVersion::V0_2_0])
    {
        let (info, loaded) = common::host()
            .load(plugin, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(info.contract, version, "{}", info.name);
        let LoadedPlugin::Reward(old) = loaded else {
            panic!("not a reward plugin")
        };
        let score = old.score(&sample("It is Paris.")).unwrap();
        assert_eq!(score.total, 1.5, "hit + the bonus read through its config");
        assert_eq!(score.components, vec![("searches".to_string(), 2.0)]);
        assert_eq!(old.score(&sample("Lyon")).unwrap().total, 0.5);

        // These versions have no `init`: a bad setting is the plugin's own error at the call.
        let (_, loaded) = common::host()
            .load(plugin, &BTreeMap::from([("bonus".into(), "lots".into())]))
            .unwrap();
        let LoadedPlugin::Reward(bad) = loaded else {
            panic!()
        };
        let error = bad.score(&sample("Paris")).unwrap_err().to_string();
        assert!(
            error.contains(&info.name) && error.contains("`lots`"),
            "{error}"
        );
    }

    // The shipped plugins speak 0.3.0, and a bad setting fails when they load.
    let shipped = discover(&common::plugins_dir()).unwrap();
    let find = |name: &str| shipped.iter().find(|p| p.manifest.name == name).unwrap();
    let (info, _) = common::host()
        .load(find("research-reward"), &BTreeMap::new())
        .unwrap();
    assert_eq!(info.contract, ContractVersion::V0_3_0);
    for (plugin, key, value) in [
        ("searchr1-reward", "format", "maybe"),
        ("tag-parser", "dialect", "klingon"),
        ("research-prompt", "mode", "chatty"),
        ("local-search", "max-top-k", "-3"),
        ("http-search", "url", "ftp://example.org"),
        ("openai-judge", "timeout-ms", "soon"),
    ] {
        let error = match common::host().load(
            find(plugin),
            &BTreeMap::from([(key.to_string(), value.to_string())]),
        ) {
            Ok(_) => panic!("{plugin} loaded with {key} = {value}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            error.contains(plugin)
                && error.contains("refused its settings")
                && error.contains(key)
                && error.contains(value),
            "{error}"
        );
    }
}
