//! Parity with Hugging Face transformers: our logits for the tiny checkpoints of every
//! architecture, through the training forward and through the generation paths (prefill,
//! then the decode step), against the reference values recorded by
//! tests/parity/make_fixture.py (tests/data/parity.json).

use crate::common;

use candle_core::{D, DType, Device, Tensor};
use research_host::model::tiny::{TINY, init_tiny};
use research_host::model::{Architecture, KvCache, load_model};
use sha2::{Digest, Sha256};

#[derive(serde::Deserialize)]
struct Fixture {
    transformers: String,
    models: Vec<ModelCase>,
}

#[derive(serde::Deserialize)]
struct ModelCase {
    arch: String,
    seed: u64,
    tokenizer_sha256: String,
    weights_sha256: String,
    inputs: Vec<Input>,
}

#[derive(serde::Deserialize)]
struct Input {
    text: String,
    ids: Vec<u32>,
    next_logprobs: Vec<f64>,
    last_logits: Vec<f64>,
}

fn sha256(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn our_logits_match_hf_transformers() {
    let text = std::fs::read_to_string(common::repo_root().join("tests/data/parity.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let archs: Vec<&str> = fixture.models.iter().map(|m| m.arch.as_str()).collect();
    assert_eq!(archs, ["qwen2", "llama", "qwen3"]);
    for case in &fixture.models {
        let arch: Architecture = case.arch.parse().unwrap();
        let dir = common::repo_root()
            .join("target/test-cache/models")
            .join(format!("parity-{}-seed{}", case.arch, case.seed));
        init_tiny(arch, TINY, case.seed, None, &dir).unwrap();
        assert_eq!(
            (
                sha256(&dir.join("tokenizer.json")),
                sha256(&dir.join("model.safetensors"))
            ),
            (case.tokenizer_sha256.clone(), case.weights_sha256.clone()),
            "the tiny {arch:?} checkpoint changed since the fixture was made: rerun tests/parity/make_fixture.py"
        );
        let model = load_model(&dir, DType::F32, &Device::Cpu).unwrap();
        for input in &case.inputs {
            assert_eq!(
                model.tokenizer.encode(&input.text).unwrap(),
                input.ids,
                "{arch:?} tokenization of {:?}",
                input.text
            );
            let n = input.ids.len();
            let ids = Tensor::new(input.ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let mask = Tensor::ones((1, n), DType::U8, &Device::Cpu).unwrap();
            let training = model
                .policy
                .forward_train(&ids, &mask)
                .unwrap()
                .squeeze(0)
                .unwrap();
            // The generation paths: half the text as a prefill, then one token at a time
            // through the decode step.
            let half = n / 2;
            let mut cache = KvCache::default();
            let mut steps = vec![
                model
                    .policy
                    .forward_step(&input.ids[..half], &mut cache)
                    .unwrap(),
            ];
            for &token in &input.ids[half..] {
                steps.push(
                    model
                        .policy
                        .forward_decode(&[token], &mut [&mut cache])
                        .unwrap(),
                );
            }
            let generation = Tensor::cat(&steps, 0).unwrap();
            for (path, logits) in [("training", training), ("generation", generation)] {
                let last: Vec<f32> = logits.get(n - 1).unwrap().to_vec1().unwrap();
                let worst = last
                    .iter()
                    .zip(&input.last_logits)
                    .map(|(ours, theirs)| (*ours as f64 - theirs).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst <= 1e-4,
                    "{arch:?} {path} last-position logits differ from transformers {} by {worst}",
                    fixture.transformers
                );
                let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
                for t in 0..n - 1 {
                    let ours = log_probs
                        .get(t)
                        .unwrap()
                        .get(input.ids[t + 1] as usize)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap() as f64;
                    let diff = (ours - input.next_logprobs[t]).abs();
                    assert!(
                        diff <= 1e-4,
                        "{arch:?} {path} log-prob at position {t} differs by {diff}"
                    );
                }
            }
        }
    }
}
