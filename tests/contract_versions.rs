//! Every released contract version keeps loading: a reward built against
//! `research:plugins@0.1.0` with wit-bindgen directly runs beside the shipped plugins, which the
//! SDK builds against the newest version (0.2.0).

mod common;

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

#[test]
fn a_plugin_built_against_0_1_0_loads_and_scores_beside_0_2_0_plugins() {
    let manifest = common::repo_root().join("tests/fixtures/contract-v0-1/Cargo.toml");
    let target = common::plugins_dir().join("target");
    let wasm = build_plugin_crate(&manifest, Some(&target)).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    common::write_prebuilt_plugin(dir.path(), "old-reward", &wasm, "[config]\nbonus = 0.5");
    let plugins = discover(dir.path()).unwrap();
    let (info, loaded) = common::host()
        .load(&plugins[0], &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(info.contract, ContractVersion::V0_1_0);
    let LoadedPlugin::Reward(old) = loaded else {
        panic!("not a reward plugin")
    };
    let score = old.score(&sample("It is Paris.")).unwrap();
    assert_eq!(
        score.total, 1.5,
        "hit + the bonus read through 0.1.0's config"
    );
    assert_eq!(score.components, vec![("searches".to_string(), 2.0)]);
    assert_eq!(old.score(&sample("Lyon")).unwrap().total, 0.5);

    // A bad setting is the plugin's own error, named.
    let (_, loaded) = common::host()
        .load(
            &plugins[0],
            &BTreeMap::from([("bonus".into(), "lots".into())]),
        )
        .unwrap();
    let LoadedPlugin::Reward(bad) = loaded else {
        panic!()
    };
    let error = bad.score(&sample("Paris")).unwrap_err().to_string();
    assert!(
        error.contains("old-reward") && error.contains("`lots`"),
        "{error}"
    );

    // The shipped plugins speak 0.2.0.
    let shipped = discover(&common::plugins_dir()).unwrap();
    let research = shipped
        .iter()
        .find(|p| p.manifest.name == "research-reward")
        .unwrap();
    let (info, _) = common::host().load(research, &BTreeMap::new()).unwrap();
    assert_eq!(info.contract, ContractVersion::V0_2_0);
}
