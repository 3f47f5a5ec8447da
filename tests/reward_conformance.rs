//! The reference reward plugins, called through the real runtime, against table-driven cases
//! whose expected totals come from the reference Python code (tests/parity/reward_reference.py).

use crate::common;

use research_host::plugins::{Finish, RewardPlugin, RewardSample};

fn run_cases(plugin: &RewardPlugin, file: &str) -> usize {
    let cases = common::reward_cases(file);
    let mut failures = Vec::new();
    for case in &cases {
        let sample = RewardSample {
            question: case.question.clone(),
            golden_answers: case.golden_answers.clone(),
            response: case.response.clone(),
            finish: case.finish.parse::<Finish>().expect("valid finish"),
            num_searches: case.response.matches("</search>").count() as u32,
            metadata: None,
        };
        match plugin.score(&sample) {
            Ok(score) if (score.total - case.expected_total).abs() <= 1e-12 => {}
            Ok(score) => failures.push(format!(
                "{}: total {} expected {} ({:?})",
                case.id, score.total, case.expected_total, score.components
            )),
            Err(error) => failures.push(format!("{}: {error}", case.id)),
        }
    }
    assert!(failures.is_empty(), "{file}:\n{}", failures.join("\n"));
    cases.len()
}

#[test]
fn research_reward_matches_reference_on_every_case() {
    let plugin = common::reward("research-reward", &[]);
    let count = run_cases(&plugin, "research-reward");
    assert!(count >= 40, "only {count} cases");
}

#[test]
fn research_reward_reads_a_response_up_to_the_models_assistant_marker_as_the_reference_does() {
    // What the host passes when the run's model has a ChatML template.
    let chat = common::reward(
        "research-reward",
        &[("host.assistant-marker", "<|im_start|>assistant\n")],
    );
    assert_eq!(run_cases(&chat, "research-reward-marker"), 8);
    // Responses without the marker score exactly as before.
    run_cases(&chat, "research-reward");
    // Without a marker (a model without a chat template) the response is read whole: a
    // well-formed answer with the marker in its thinking earns 1 where the reference, on a
    // chat model, gives 0.
    let cases = common::reward_cases("research-reward-marker");
    let new_turn = &cases[2];
    assert_eq!(new_turn.id, "marker-inside-think");
    assert_eq!(new_turn.expected_total, 0.0);
    let plain = common::reward("research-reward", &[]);
    let whole = plain
        .score(&sample(&new_turn.response, &["Paris"], Finish::Eos))
        .unwrap();
    assert_eq!(whole.total, 1.0);
    let cut = chat
        .score(&sample(&new_turn.response, &["Paris"], Finish::Eos))
        .unwrap();
    assert_eq!(
        cut.components.iter().find(|c| c.0 == "eos").map(|c| c.1),
        Some(0.0)
    );
}

#[test]
fn searchr1_reward_matches_reference_on_every_case() {
    let plugin = common::reward("searchr1-reward", &[]);
    let plain = run_cases(&plugin, "searchr1-reward");
    let formatted = common::reward("searchr1-reward", &[("format", "true")]);
    let format = run_cases(&formatted, "searchr1-reward-format");
    assert!(plain + format >= 40, "only {} cases", plain + format);
}

fn sample(response: &str, golden: &[&str], finish: Finish) -> RewardSample {
    RewardSample {
        question: "q".into(),
        golden_answers: golden.iter().map(|g| g.to_string()).collect(),
        response: response.into(),
        finish,
        num_searches: 0,
        metadata: None,
    }
}

#[test]
fn research_reward_logs_answer_format_and_eos_components() {
    let plugin = common::reward("research-reward", &[]);
    let good = "<think> t </think> <answer> \\boxed{Paris France} </answer>";
    let score = plugin
        .score(&sample(good, &["Paris"], Finish::Eos))
        .unwrap();
    let names: Vec<&str> = score.components.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["answer", "format", "eos"]);
    assert!((score.components[0].1 - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(score.components[1].1, 1.0);
    // Over length: the total is gated to 0 but the answer's F1 is still logged.
    let cut = plugin
        .score(&sample(good, &["Paris"], Finish::Length))
        .unwrap();
    assert_eq!(cut.total, 0.0);
    assert!((cut.components[0].1 - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(cut.components[2].1, 0.0);
    // Bad format: format component 0.
    let bad = plugin
        .score(&sample(
            "<answer> \\boxed{Paris} </answer>",
            &["Paris"],
            Finish::Eos,
        ))
        .unwrap();
    assert_eq!((bad.total, bad.components[1].1), (0.0, 0.0));
}

#[test]
fn searchr1_reward_reports_em_format_and_answer_presence() {
    let plugin = common::reward("searchr1-reward", &[("format", "true")]);
    let score = plugin
        .score(&sample(
            "<answer> Lyon </answer>",
            &["Paris"],
            Finish::Stop("</answer>".into()),
        ))
        .unwrap();
    assert_eq!(score.total, 0.1);
    assert_eq!(
        score.components,
        vec![
            ("em".to_string(), 0.0),
            ("format".to_string(), 0.0),
            ("has_answer".to_string(), 1.0)
        ]
    );
}

#[test]
fn a_bad_config_value_fails_when_the_plugin_loads() {
    let shipped = research_host::plugins::discover(&common::plugins_dir()).unwrap();
    let plugin = shipped
        .iter()
        .find(|p| p.manifest.name == "searchr1-reward")
        .unwrap();
    let overrides = std::collections::BTreeMap::from([("format".into(), "maybe".into())]);
    let error = match common::host().load(plugin, &overrides) {
        Ok(_) => panic!("searchr1-reward loaded with format = maybe"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("searchr1-reward")
            && error.contains("`init`")
            && error.contains("config `format` must be true or false, not `maybe`"),
        "{error}"
    );
}
