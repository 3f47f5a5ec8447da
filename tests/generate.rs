//! The generation engine: greedy decoding follows the model's argmax, sampling is
//! reproducible per seed and independent of the batch, stop sequences pause a sequence,
//! appended observations resume it, and finished sequences leave the batch.

use crate::common;

use candle_core::{DType, Device, Tensor};
use research_host::model::tiny::{TINY, init_tiny};
use research_host::model::{
    Architecture, Engine, LoadedModel, SamplingParams, SeqState, Stop, StopRules, load_model,
};
use std::path::PathBuf;
use std::sync::OnceLock;

fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = DIR.get_or_init(|| {
            let dir = common::repo_root().join("target/test-cache/models/generate-qwen2-seed11");
            init_tiny(Architecture::Qwen2, TINY, 11, None, &dir).expect("tiny model");
            dir
        });
        load_model(dir, DType::F32, &Device::Cpu).expect("load")
    })
}

fn prompt() -> Vec<u32> {
    model()
        .tokenizer
        .encode(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        )
        .unwrap()
}

fn rules(max_new_tokens: usize) -> StopRules {
    StopRules {
        stop_sequences: Vec::new(),
        eos_ids: Vec::new(),
        max_new_tokens,
    }
}

fn sampled(seed: u64, copies: usize, rules: StopRules) -> Vec<Vec<u32>> {
    let m = model();
    let mut engine = Engine::new(&m.policy, &m.tokenizer, SamplingParams::default(), rules);
    engine.add_prompt(&prompt(), copies, seed).unwrap();
    engine.run().unwrap();
    engine
        .sequences()
        .iter()
        .map(|s| s.response().to_vec())
        .collect()
}

#[test]
fn greedy_decoding_follows_the_argmax_of_the_training_forward() {
    let m = model();
    let params = SamplingParams {
        greedy: true,
        ..SamplingParams::default()
    };
    let mut engine = Engine::new(&m.policy, &m.tokenizer, params, rules(12));
    engine.add_prompt(&prompt(), 1, 0).unwrap();
    engine.run().unwrap();
    let sequence = &engine.sequences()[0];
    assert_eq!(sequence.state, SeqState::Finished(Stop::Length));
    assert_eq!(sequence.response().len(), 12);
    let mut context = prompt();
    for (i, &token) in sequence.response().iter().enumerate() {
        let input = Tensor::new(context.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = Tensor::ones((1, context.len()), DType::U8, &Device::Cpu).unwrap();
        let logits = m
            .policy
            .forward_train(&input, &mask)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let last = logits.get(context.len() - 1).unwrap();
        let argmax = last.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        assert_eq!(token, argmax, "step {i}");
        let log_probs = candle_nn::ops::log_softmax(&last, 0).unwrap();
        let expected = log_probs
            .get(token as usize)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (sequence.logprobs[i] - expected).abs() < 1e-4,
            "log-prob at step {i}"
        );
        context.push(token);
    }
}

#[test]
fn sampling_is_reproducible_per_seed_and_independent_of_the_batch() {
    let batch = sampled(42, 4, rules(16));
    assert_eq!(batch, sampled(42, 4, rules(16)), "same seed, same tokens");
    assert_ne!(
        batch,
        sampled(43, 4, rules(16)),
        "another seed, other tokens"
    );
    let distinct: std::collections::HashSet<_> = batch.iter().collect();
    assert!(
        distinct.len() > 1,
        "samples of one prompt differ from each other"
    );
    // Sample 0 of a batch of 4 equals a batch of 1 with the same seed.
    assert_eq!(batch[0], sampled(42, 1, rules(16))[0]);
}

#[test]
fn finished_sequences_leave_the_batch_and_the_others_go_on() {
    let free = sampled(7, 4, rules(20));
    // Make the first token sample 0 drew an end-of-sequence id: sample 0 must stop right
    // there, the others must produce exactly what they produced without it (unless they drew
    // that token too).
    let eos = free[0][0];
    let with_eos = sampled(
        7,
        4,
        StopRules {
            eos_ids: vec![eos],
            ..rules(20)
        },
    );
    for (free, cut) in free.iter().zip(&with_eos) {
        let end = free
            .iter()
            .position(|&t| t == eos)
            .map_or(free.len(), |p| p + 1);
        assert_eq!(cut, &free[..end]);
    }
    assert_eq!(with_eos[0].len(), 1);
    assert!(
        with_eos.iter().any(|s| s.len() == 20),
        "some sequences run to the budget"
    );
}

#[test]
fn a_stop_sequence_pauses_and_an_observation_resumes() {
    let m = model();
    let free = sampled(5, 2, rules(24));
    // Stop at the text of sample 0's fourth token.
    let stop_text = m.tokenizer.decode(&free[0][3..4]).unwrap();
    assert!(!stop_text.is_empty());
    let rules_of = rules;
    let rules = StopRules {
        stop_sequences: vec![stop_text.clone()],
        ..rules(24)
    };
    let mut engine = Engine::new(&m.policy, &m.tokenizer, SamplingParams::default(), rules);
    engine.add_prompt(&prompt(), 2, 5).unwrap();
    engine.run().unwrap();
    let first = &engine.sequences()[0];
    assert_eq!(
        first.state,
        SeqState::Stopped(Stop::Sequence(stop_text.clone()))
    );
    let stopped_at = first.response().len();
    assert!(stopped_at <= 4, "stopped after {stopped_at} tokens");
    assert!(
        m.tokenizer
            .decode(first.response())
            .unwrap()
            .contains(&stop_text)
    );

    let observation = m
        .tokenizer
        .encode(" <result>\nParis is the capital.\n</result>")
        .unwrap();
    engine.append(0, &observation).unwrap();
    engine.run().unwrap();
    let first = &engine.sequences()[0];
    let response = first.response();
    assert_eq!(
        &response[stopped_at..stopped_at + observation.len()],
        observation.as_slice()
    );
    assert!(
        first.sampled[stopped_at..stopped_at + observation.len()]
            .iter()
            .all(|s| !s)
    );
    assert!(
        first.logprobs[stopped_at..stopped_at + observation.len()]
            .iter()
            .all(|l| l.is_nan())
    );
    assert!(first.sampled[..stopped_at].iter().all(|s| *s));
    // Sampled tokens after the observation follow the model given the observation.
    let tail = &response[stopped_at + observation.len()..];
    assert!(!tail.is_empty());
    // The other sequence was not disturbed by sample 0's pause and observation (unless it hit
    // the stop text itself, in which case it waits).
    let second = &engine.sequences()[1];
    if second.state == SeqState::Finished(Stop::Length) {
        assert_eq!(second.response(), free[1].as_slice());
    }
    // Only a stopped sequence takes appended tokens.
    let mut fresh = Engine::new(
        &m.policy,
        &m.tokenizer,
        SamplingParams::default(),
        rules_of(24),
    );
    fresh.add_prompt(&prompt(), 1, 5).unwrap();
    let error = fresh.append(0, &observation).unwrap_err().to_string();
    assert!(error.contains("Running"), "{error}");
    assert!(fresh.append(3, &observation).is_err());
}

#[test]
fn top_k_one_is_greedy_and_temperature_changes_samples() {
    let m = model();
    let run = |params: SamplingParams| {
        let mut engine = Engine::new(&m.policy, &m.tokenizer, params, rules(10));
        engine.add_prompt(&prompt(), 1, 9).unwrap();
        engine.run().unwrap();
        engine.sequences()[0].response().to_vec()
    };
    let greedy = run(SamplingParams {
        greedy: true,
        ..SamplingParams::default()
    });
    assert_eq!(
        run(SamplingParams {
            top_k: 1,
            ..SamplingParams::default()
        }),
        greedy
    );
    assert_eq!(
        run(SamplingParams {
            top_p: 1e-6,
            ..SamplingParams::default()
        }),
        greedy
    );
    assert_ne!(
        run(SamplingParams {
            temperature: 5.0,
            ..SamplingParams::default()
        }),
        greedy
    );
}
