//! The loss mask end to end, with a model scripted to always search: its rollouts (through
//! the real plugins and index) hold observation tokens, and those tokens add exactly nothing
//! to the gradient of `host sft`'s loss or of `host train`'s GRPO loss, while the generated
//! tokens do.

use crate::common;

use candle_core::{DType, Device, Tensor, Var};
use research_host::cli::train::{Environment, embedded_default_config, prepare_environment};
use research_host::grpo::loss::{LossInputs, LossScale, LossSettings, policy_loss};
use research_host::model::{PaddedBatch, SamplingParams, load_model};
use research_host::rollout::{
    Episodes, Generation, RolloutSettings, RolloutTimes, SegmentKind, Trajectory,
};
use research_host::sft::{SftExample, load_trajectories, loss::sft_loss};

/// Greedy rollouts of the scripted model on two world questions.
fn scripted_rollouts(
    dir: &std::path::Path,
) -> (Vec<Trajectory>, research_host::model::LoadedModel) {
    let model_dir = common::searching_model(&dir.join("searcher"), "Zelkavale", "1867");
    let mut config = embedded_default_config();
    config.model.path = Some(model_dir.clone());
    config.plugins.dir = common::plugins_dir();
    let Environment { plugins, .. } = prepare_environment(
        &config,
        Some(common::test_cache_dir().parent().unwrap().to_path_buf()),
    )
    .expect("environment");
    let model = load_model(&model_dir, DType::F32, &Device::Cpu).expect("model");
    let stop_sequences = plugins.parser.as_ref().unwrap().stop_sequences().unwrap();
    let local = Generation::Local;
    let episodes = Episodes {
        model: (&model).into(),
        generation: &local,
        plugins: &plugins,
        stop_sequences: &stop_sequences,
    };
    let (train, _) = research_host::grpo::assets::world_questions().unwrap();
    let settings = RolloutSettings {
        group_size: 1,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: true,
        },
        max_response_tokens: 200,
        max_turns: 2,
        max_obs_tokens: 120,
        top_k: 2,
    };
    let mut times = RolloutTimes::default();
    let mut errors = Vec::new();
    let rollouts = episodes
        .run(
            &train.examples,
            &[0, 1],
            &settings,
            |_| 7,
            &mut times,
            &mut errors,
        )
        .expect("rollouts");
    assert!(errors.is_empty(), "{errors:?}");
    (rollouts, model)
}

#[test]
fn observation_tokens_add_nothing_to_either_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let (rollouts, model) = scripted_rollouts(dir.path());
    let observed: usize = rollouts
        .iter()
        .map(|t| t.loss_mask.iter().filter(|&&m| m == 0).count())
        .sum();
    assert!(
        observed > 0,
        "the scripted model did not search: {rollouts:?}"
    );
    for t in &rollouts {
        assert_eq!(
            t.queries,
            vec!["Zelkavale".to_string()],
            "{}",
            t.response_text
        );
        assert_eq!(t.answer.as_deref(), Some("1867"), "{}", t.response_text);
        assert!(
            t.segments
                .iter()
                .any(|s| s.kind == SegmentKind::Observation)
        );
    }

    // host sft reads them as trajectory files.
    let file = dir.path().join("rollouts.jsonl");
    let lines: Vec<String> = rollouts
        .iter()
        .map(|t| serde_json::to_string(t).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let examples: Vec<SftExample> = load_trajectories(&[&file], 100_000, 100_000).unwrap();
    let pad = model.tokenizer.eos_ids()[0];
    let sequences: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
    let batch = PaddedBatch::new(&sequences, pad, &Device::Cpu).unwrap();
    let width = batch.ids.dim(1).unwrap() - 1;
    let mask: Vec<Vec<f32>> = examples
        .iter()
        .map(|e| {
            let mut m = e.mask.clone();
            m.resize(width, 0.0);
            m
        })
        .collect();
    // Positions predicting an observation token (inside the response, mask 0).
    let mut observation_positions = Vec::new();
    let mut generated_positions = Vec::new();
    for (row, t) in rollouts.iter().enumerate() {
        for (j, &m) in t.loss_mask.iter().enumerate() {
            let position = t.prompt_ids.len() + j - 1;
            if m == 0 {
                observation_positions.push((row, position));
            } else {
                generated_positions.push((row, position));
            }
        }
    }
    assert_eq!(observation_positions.len(), observed);
    let tokens: usize = examples.iter().map(|e| e.trained_tokens()).sum();

    let check = |grad: &Tensor, what: &str| {
        let g = grad.to_vec2::<f32>().unwrap();
        for &(row, position) in &observation_positions {
            assert_eq!(
                g[row][position], 0.0,
                "{what}: observation position {position}"
            );
        }
        assert!(
            generated_positions.iter().all(|&(row, p)| g[row][p] != 0.0),
            "{what}: a generated token got no gradient"
        );
    };

    // The model's log-probs and entropies of the rollouts, as variables (candle keeps the
    // gradients of variables only), so that the loss gradient per position can be read.
    let stats = model.policy.token_stats(&batch).unwrap();
    let logprobs = Var::from_tensor(&stats.logprobs.detach()).unwrap();
    let entropy = Var::from_tensor(&stats.entropy.detach()).unwrap();

    // host sft's loss.
    let loss = sft_loss(logprobs.as_tensor(), &mask, tokens).unwrap();
    let grads = loss.backward().unwrap();
    check(grads.get(logprobs.as_tensor()).expect("a gradient"), "sft");

    // host train's GRPO loss, with every term on (KL and entropy too).
    let old = stats.logprobs.detach();
    let reference = (stats.logprobs.detach() - 0.1).unwrap();
    let grpo_mask: Vec<Vec<f32>> = rollouts
        .iter()
        .map(|t| {
            let mut m = t.logprob_mask();
            m.resize(width, 0.0);
            m
        })
        .collect();
    assert_eq!(
        grpo_mask, mask,
        "host sft and host train mask the same tokens"
    );
    let inputs = LossInputs {
        logprobs: logprobs.as_tensor(),
        entropy: entropy.as_tensor(),
        old_logprobs: &old,
        ref_logprobs: Some(&reference),
        mask: &grpo_mask,
        advantages: &[1.0, -0.5],
    };
    let settings = LossSettings {
        kl_coef: 0.1,
        entropy_coef: 0.01,
        ..LossSettings::default()
    };
    let scale = LossScale {
        tokens,
        sequences: 2,
        max_response_tokens: 200,
    };
    let (loss, _) = policy_loss(&inputs, &settings, &scale).unwrap();
    let grads = loss.backward().unwrap();
    check(
        grads.get(logprobs.as_tensor()).expect("a gradient"),
        "grpo log-probs",
    );
    let entropy_grad = grads
        .get(entropy.as_tensor())
        .expect("a gradient")
        .to_vec2::<f32>()
        .unwrap();
    for &(row, position) in &observation_positions {
        assert_eq!(entropy_grad[row][position], 0.0);
    }
}

#[test]
fn training_the_scripted_searcher_keeps_its_observations_in_the_trajectories() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::searching_model(&dir.path().join("searcher"), "Zelkavale", "1867");
    let run = dir.path().join("run");
    let output = common::host_command(&[
        "train",
        "--plugins=plugins",
        "--quiet",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "rollout.batch_prompts=1",
        "--set",
        "rollout.max_response_tokens=200",
        "--set",
        "validation.every=0",
    ])
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", common::output_text(&output));
    let text = std::fs::read_to_string(run.join("trajectories/step-000001.jsonl")).unwrap();
    let observed: usize = text
        .lines()
        .map(|l| serde_json::from_str::<Trajectory>(l).unwrap())
        .map(|t| t.loss_mask.iter().filter(|&&m| m == 0).count())
        .sum();
    assert!(observed > 0, "no observation tokens in {text}");
}
