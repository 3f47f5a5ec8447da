//! The policy model on tiny random checkpoints: both forward paths agree, every weight gets a
//! gradient, finite differences agree, padding does not change results, log-probs batch like
//! single sequences, checkpoints round-trip bit-exactly, and bad folders give clear errors.

use crate::common;

use candle_core::{D, DType, Device, Tensor};
use research_host::model::tiny::{TAG_TOKENS, TINY, init_tiny};
use research_host::model::{
    Architecture, KvCache, LoadedModel, PaddedBatch, load_model, save_checkpoint,
};
use research_host::plugins::Message;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A tiny model of `arch` (seed 7), written once per test binary.
fn tiny_dir(arch: Architecture) -> &'static PathBuf {
    static QWEN2: OnceLock<PathBuf> = OnceLock::new();
    static QWEN3: OnceLock<PathBuf> = OnceLock::new();
    static LLAMA: OnceLock<PathBuf> = OnceLock::new();
    let cell = match arch {
        Architecture::Qwen2 => &QWEN2,
        Architecture::Qwen3 => &QWEN3,
        Architecture::Llama => &LLAMA,
    };
    cell.get_or_init(|| {
        let dir = common::repo_root()
            .join("target/test-cache/models")
            .join(format!("tiny-{}-seed7", arch.model_type()));
        init_tiny(arch, TINY, 7, None, &dir).expect("tiny model");
        dir
    })
}

fn load(arch: Architecture, dtype: DType) -> LoadedModel {
    load_model(tiny_dir(arch), dtype, &Device::Cpu).unwrap_or_else(|e| panic!("{e:#}"))
}

fn ids(model: &LoadedModel, text: &str) -> Vec<u32> {
    model.tokenizer.encode(text).expect("encode")
}

const TEXT: &str = "<think> The capital of France is Paris. </think> <answer> Paris </answer>";

#[test]
fn tiny_init_is_deterministic_and_has_tag_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    init_tiny(Architecture::Qwen2, TINY, 3, None, &a).unwrap();
    init_tiny(Architecture::Qwen2, TINY, 3, None, &b).unwrap();
    init_tiny(Architecture::Qwen2, TINY, 4, None, &c).unwrap();
    let read = |p: &Path, f: &str| std::fs::read(p.join(f)).unwrap();
    assert_eq!(read(&a, "model.safetensors"), read(&b, "model.safetensors"));
    assert_eq!(read(&a, "tokenizer.json"), read(&b, "tokenizer.json"));
    assert_ne!(read(&a, "model.safetensors"), read(&c, "model.safetensors"));
    let model = load_model(&a, DType::F32, &Device::Cpu).unwrap();
    for tag in TAG_TOKENS {
        assert_eq!(
            model.tokenizer.encode(tag).unwrap().len(),
            1,
            "{tag} is not one token"
        );
    }
    let encoded = ids(&model, TEXT);
    assert_eq!(model.tokenizer.decode(&encoded).unwrap(), TEXT);
    assert_eq!(model.tokenizer.eos_ids().len(), 2);
    let chat = model
        .tokenizer
        .apply_chat_template(
            &[Message {
                role: "user".into(),
                content: "Hi?".into(),
            }],
            true,
        )
        .unwrap();
    assert_eq!(
        chat,
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    );
    let dim_leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(dim_leftovers, 3, "no temporary folders are left behind");
}

/// How far bf16 logits of the tiny models may be from f32 ones: bf16 keeps 8 bits of
/// mantissa, so each op rounds by up to 0.4 % of its values.
const BF16_LOGITS: f32 = 0.08;

fn paths_agree(arch: Architecture) {
    let model = load(arch, DType::F32);
    let tokens = ids(&model, TEXT);
    let n = tokens.len();
    let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones((1, n), DType::U8, &Device::Cpu).unwrap();
    let train = model
        .policy
        .forward_train(&input, &mask)
        .unwrap()
        .squeeze(0)
        .unwrap();
    // Prefill all at once.
    let mut cache = KvCache::default();
    let prefill = model.policy.forward_step(&tokens, &mut cache).unwrap();
    let diff = common::max_abs_diff(&train, &prefill);
    assert!(
        diff <= 1e-4,
        "{arch:?}: training vs prefill logits differ by {diff}"
    );
    // Prefill half, then decode one token at a time (through the batched decode path).
    let mut cache = KvCache::default();
    let half = n / 2;
    let mut steps = vec![
        model
            .policy
            .forward_step(&tokens[..half], &mut cache)
            .unwrap(),
    ];
    for &token in &tokens[half..] {
        steps.push(
            model
                .policy
                .forward_decode(&[token], &mut [&mut cache])
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), n);
    let incremental = Tensor::cat(&steps, 0).unwrap();
    let diff = common::max_abs_diff(&train, &incremental);
    assert!(
        diff <= 1e-4,
        "{arch:?}: training vs incremental decode differ by {diff}"
    );
    // Two sequences of different lengths decoded in one batch match decoding each alone.
    let other = ids(&model, "<search> who wrote Hamlet </search>");
    let (mut a, mut b) = (KvCache::default(), KvCache::default());
    model.policy.forward_step(&tokens[..n - 1], &mut a).unwrap();
    model
        .policy
        .forward_step(&other[..other.len() - 1], &mut b)
        .unwrap();
    let batched = model
        .policy
        .forward_decode(
            &[tokens[n - 1], other[other.len() - 1]],
            &mut [&mut a, &mut b],
        )
        .unwrap();
    let mut c = KvCache::default();
    let alone = model.policy.forward_step(&other, &mut c).unwrap();
    let diff = common::max_abs_diff(
        &batched.get(1).unwrap(),
        &alone.get(other.len() - 1).unwrap(),
    );
    assert!(
        diff <= 1e-4,
        "{arch:?}: batched decode differs from a lone sequence by {diff}"
    );
    let diff = common::max_abs_diff(&batched.get(0).unwrap(), &train.get(n - 1).unwrap());
    assert!(
        diff <= 1e-4,
        "{arch:?}: batched decode row 0 differs by {diff}"
    );
    // The same layer description through candle's composed training ops: in f64 (which does
    // not take the fused ones) to 1e-4, and in bf16 (the dtype users pick on a GPU) within
    // bf16's rounding; then bf16 prefill and the batched decode step on tensors.
    let training_in = |dtype: DType| -> (LoadedModel, Tensor) {
        let model = load(arch, dtype);
        let logits = model.policy.forward_train(&input, &mask).unwrap();
        let logits = logits.squeeze(0).unwrap().to_dtype(DType::F32).unwrap();
        (model, logits)
    };
    let (_, composed) = training_in(DType::F64);
    let diff = common::max_abs_diff(&train, &composed);
    assert!(
        diff <= 1e-4,
        "{arch:?}: fused vs composed training logits differ by {diff}"
    );
    let (half, half_train) = training_in(DType::BF16);
    let diff = common::max_abs_diff(&train, &half_train);
    assert!(
        diff <= BF16_LOGITS,
        "{arch:?}: bf16 training logits differ from f32 by {diff}"
    );
    let (mut a, mut b) = (KvCache::default(), KvCache::default());
    let prefill = half.policy.forward_step(&tokens[..n - 1], &mut a).unwrap();
    half.policy
        .forward_step(&other[..other.len() - 1], &mut b)
        .unwrap();
    let prefill = prefill.to_dtype(DType::F32).unwrap();
    let diff = common::max_abs_diff(&prefill, &train.narrow(0, 0, n - 1).unwrap());
    assert!(
        diff <= BF16_LOGITS,
        "{arch:?}: bf16 prefill differs from training by {diff}"
    );
    let decoded = half
        .policy
        .forward_decode(
            &[tokens[n - 1], other[other.len() - 1]],
            &mut [&mut a, &mut b],
        )
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let diff = common::max_abs_diff(&decoded, &batched);
    assert!(
        diff <= BF16_LOGITS,
        "{arch:?}: bf16 batched decode differs by {diff}"
    );
}

#[test]
fn training_and_generation_paths_agree_qwen2() {
    paths_agree(Architecture::Qwen2);
}

#[test]
fn training_and_generation_paths_agree_qwen3() {
    paths_agree(Architecture::Qwen3);
}

#[test]
fn training_and_generation_paths_agree_llama() {
    paths_agree(Architecture::Llama);
}

#[test]
fn our_qwen2_matches_candles_stock_qwen2() {
    let model = load(Architecture::Qwen2, DType::F32);
    let tokens = ids(&model, TEXT);
    let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones((1, tokens.len()), DType::U8, &Device::Cpu).unwrap();
    let ours = model.policy.forward_train(&input, &mask).unwrap();
    let last = ours.narrow(1, tokens.len() - 1, 1).unwrap();

    let dir = tiny_dir(Architecture::Qwen2);
    let config: candle_transformers::models::qwen2::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let mut stock = candle_transformers::models::qwen2::ModelForCausalLM::new(&config, vb).unwrap();
    let theirs = stock.forward(&input, 0).unwrap();
    let diff = common::max_abs_diff(&last, &theirs);
    assert!(diff <= 1e-4, "ours vs candle's qwen2 differ by {diff}");
}

fn every_parameter_gets_a_gradient(arch: Architecture) {
    let model = load(arch, DType::F32);
    let batch = PaddedBatch::new(
        &[
            ids(&model, TEXT),
            ids(&model, "<search> capital of France </search>"),
        ],
        0,
        &Device::Cpu,
    )
    .unwrap();
    let stats = model.policy.token_stats(&batch).unwrap();
    let loss = stats.logprobs.sum_all().unwrap().neg().unwrap();
    let grads = loss.backward().unwrap();
    let vars = model.policy.vars().data().lock().unwrap();
    let mut missing = Vec::new();
    for (name, var) in vars.iter() {
        let norm = grads.get(var.as_tensor()).map(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        });
        if !matches!(norm, Some(n) if n > 0.0 && n.is_finite()) {
            missing.push(format!("{name}: {norm:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{arch:?} parameters without a gradient:\n{}",
        missing.join("\n")
    );
    assert_eq!(
        vars.len(),
        research_host::model::transformer::parameter_shapes(model.policy.config())
            .unwrap()
            .len()
    );
}

#[test]
fn every_parameter_gets_a_gradient_qwen2() {
    every_parameter_gets_a_gradient(Architecture::Qwen2);
}

#[test]
fn every_parameter_gets_a_gradient_qwen3() {
    every_parameter_gets_a_gradient(Architecture::Qwen3);
}

#[test]
fn every_parameter_gets_a_gradient_llama() {
    every_parameter_gets_a_gradient(Architecture::Llama);
}

#[test]
fn gradients_match_finite_differences() {
    for arch in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Llama,
    ] {
        let model = load(arch, DType::F64);
        let batch = PaddedBatch::new(&[ids(&model, TEXT)], 0, &Device::Cpu).unwrap();
        let loss_of = |m: &LoadedModel| -> Tensor {
            m.policy
                .token_stats(&batch)
                .unwrap()
                .logprobs
                .sum_all()
                .unwrap()
        };
        let grads = loss_of(&model).backward().unwrap();
        let mut probes = vec![
            ("model.layers.0.self_attn.q_proj.weight", 5usize),
            ("model.layers.1.self_attn.k_proj.weight", 17),
            ("model.layers.0.mlp.gate_proj.weight", 100),
            ("model.layers.1.mlp.down_proj.weight", 33),
            ("model.layers.0.input_layernorm.weight", 3),
            ("model.norm.weight", 9),
        ];
        if arch == Architecture::Qwen3 {
            probes.push(("model.layers.0.self_attn.q_norm.weight", 4));
            probes.push(("model.layers.1.self_attn.k_norm.weight", 11));
        }
        for (name, index) in probes {
            let var = model
                .policy
                .vars()
                .data()
                .lock()
                .unwrap()
                .get(name)
                .unwrap()
                .clone();
            let analytic = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .get(index)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let original = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let eps = 1e-5;
            let at = |delta: f64| -> f64 {
                let mut values = original.clone();
                values[index] += delta;
                var.set(&Tensor::from_vec(values, var.as_tensor().shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_of(&model).to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(original, var.as_tensor().shape(), &Device::Cpu).unwrap())
                .unwrap();
            let relative = (analytic - numeric).abs() / numeric.abs().max(1e-8);
            assert!(
                relative <= 0.02,
                "{arch:?} {name}[{index}]: analytic {analytic} vs numeric {numeric} ({relative:.4} relative)"
            );
        }
    }
}

#[test]
fn padding_does_not_change_real_positions_and_logprobs_batch_like_single_sequences() {
    let model = load(Architecture::Qwen2, DType::F32);
    let sequences = vec![
        ids(&model, TEXT),
        ids(&model, "<search> who wrote Hamlet </search>"),
        ids(&model, "Paris"),
    ];
    let batch = PaddedBatch::new(&sequences, 0, &Device::Cpu).unwrap();
    let batched = model.policy.token_stats(&batch).unwrap();
    for (row, sequence) in sequences.iter().enumerate() {
        if sequence.len() < 2 {
            continue;
        }
        let single = PaddedBatch::new(std::slice::from_ref(sequence), 0, &Device::Cpu).unwrap();
        let alone = model.policy.token_stats(&single).unwrap();
        let n = sequence.len() - 1;
        for (what, batch_t, alone_t) in [
            ("logprobs", &batched.logprobs, &alone.logprobs),
            ("entropy", &batched.entropy, &alone.entropy),
        ] {
            let from_batch = batch_t.get(row).unwrap().narrow(0, 0, n).unwrap();
            let diff = common::max_abs_diff(&from_batch, &alone_t.get(0).unwrap());
            assert!(diff <= 1e-5, "row {row} {what} differ by {diff}");
        }
        // Padding positions are zero.
        let padded = batched.logprobs.get(row).unwrap();
        let tail = padded.narrow(0, n, padded.dim(0).unwrap() - n).unwrap();
        assert_eq!(
            tail.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
    // A plain per-token computation: log_softmax of the single-sequence logits.
    let tokens = &sequences[0];
    let mut cache = KvCache::default();
    let logits = model.policy.forward_step(tokens, &mut cache).unwrap();
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    for t in 0..tokens.len() - 1 {
        let expected = log_probs
            .get(t)
            .unwrap()
            .get(tokens[t + 1] as usize)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let got = batched
            .logprobs
            .get(0)
            .unwrap()
            .get(t)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (expected - got).abs() <= 1e-5,
            "position {t}: {got} vs {expected}"
        );
    }
    // Left padding gives the same logits for the real tokens as no padding.
    let short = &sequences[1];
    let pad = 4;
    let mut left = vec![0u32; pad];
    left.extend(short);
    let mut mask = vec![0u8; pad];
    mask.extend(std::iter::repeat_n(1u8, short.len()));
    let left_ids = Tensor::new(left.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let left_mask = Tensor::new(mask.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let with_pad = model
        .policy
        .forward_train(&left_ids, &left_mask)
        .unwrap()
        .narrow(1, pad, short.len())
        .unwrap();
    let plain_ids = Tensor::new(short.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let plain_mask = Tensor::ones((1, short.len()), DType::U8, &Device::Cpu).unwrap();
    let plain = model.policy.forward_train(&plain_ids, &plain_mask).unwrap();
    let diff = common::max_abs_diff(&with_pad, &plain);
    assert!(diff <= 1e-4, "left padding changed logits by {diff}");
}

#[test]
fn checkpoints_round_trip_bit_exactly_and_replace_atomically() {
    for arch in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Llama,
    ] {
        let model = load(arch, DType::F32);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("step-1");
        save_checkpoint(&model.policy, tiny_dir(arch), &out).unwrap();
        let again = load_model(&out, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(again.policy.config(), model.policy.config());
        let (a, b) = (model.policy.named_tensors(), again.policy.named_tensors());
        assert_eq!(a.len(), b.len());
        for (name, tensor) in &a {
            let x = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{name} differs"
            );
        }
        for file in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            assert!(out.join(file).is_file(), "{file} not copied");
        }
        // Saving again over the same folder replaces it and leaves nothing else behind.
        save_checkpoint(&again.policy, &out, &out).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("step-1")]);
        load_model(&out, DType::F32, &Device::Cpu).unwrap();
    }
}

#[test]
fn bad_model_folders_name_the_file_and_the_problem() {
    let error = |dir: &Path| match load_model(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} must not load", dir.display()),
        Err(e) => format!("{e:#}"),
    };
    let empty = tempfile::tempdir().unwrap();
    let text = error(empty.path());
    assert!(text.contains("config.json"), "{text}");

    let copy = |name: &str| -> PathBuf {
        let dir = empty.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(tiny_dir(Architecture::Llama)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    };
    let no_tokenizer = copy("no-tokenizer");
    std::fs::remove_file(no_tokenizer.join("tokenizer.json")).unwrap();
    let text = error(&no_tokenizer);
    assert!(
        text.contains("tokenizer.json") && text.contains("missing"),
        "{text}"
    );

    // A copy of the Llama folder whose config.json has `from` replaced by `to` (once).
    let edited = |name: &str, from: &str, to: &str| -> String {
        let dir = copy(name);
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(config.contains(from), "{from} not in config.json");
        std::fs::write(dir.join("config.json"), config.replacen(from, to, 1)).unwrap();
        error(&dir)
    };
    let text = edited(
        "wrong-shape",
        "\"intermediate_size\": 128",
        "\"intermediate_size\": 96",
    );
    assert!(
        text.contains("model.safetensors")
            && text.contains("mlp.gate_proj.weight")
            && text.contains("[96, 64]"),
        "{text}"
    );

    let text = edited(
        "unsupported",
        "\"model_type\": \"llama\"",
        "\"model_type\": \"mamba\"",
    );
    assert!(
        text.contains("config.json") && text.contains("mamba") && text.contains("not supported"),
        "{text}"
    );

    let text = edited(
        "sliding-window",
        "{",
        "{\"use_sliding_window\": true, \"sliding_window\": 64, ",
    );
    assert!(
        text.contains("config.json") && text.contains("use_sliding_window"),
        "{text}"
    );

    // A Llama folder labelled Qwen3 (with Llama's head width, as Qwen3's default is 128) lacks
    // the head norms: the first one is named.
    let text = edited(
        "qwen3-without-head-norms",
        "\"model_type\": \"llama\"",
        "\"model_type\": \"qwen3\", \"head_dim\": 16",
    );
    assert!(
        text.contains("missing tensor `model.layers.0.self_attn.q_norm.weight`"),
        "{text}"
    );

    let no_weights = copy("no-weights");
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    let text = error(&no_weights);
    assert!(text.contains("no model.safetensors"), "{text}");
}
