//! Tiny random-weight models for tests: a real byte-level BPE tokenizer trained with the
//! tokenizers crate (tag strings added as tokens), a ChatML template, and weights drawn from a
//! seeded generator, so the same seed gives the same folder.

use super::checkpoint::{save_checkpoint, write_json};
use super::config::{Architecture, ModelConfig};
use super::transformer::{Policy, parameter_shapes};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens of the tiny models (ChatML, as Qwen2 and SmolLM2 use).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The tags the rollout uses; each is one token.
pub const TAG_TOKENS: [&str; 10] = [
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<result>",
    "</result>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
];

/// ChatML, with the generation prompt.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Text the tokenizer is trained on when no corpus is given.
pub const BUILTIN_CORPUS: &str = include_str!("tiny_corpus.txt");

/// Sizes of a random model.
#[derive(Debug, Clone, Copy)]
pub struct TinySize {
    /// Tokens a trained tokenizer aims for (a small corpus may give fewer).
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the MLP.
    pub intermediate: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Embedding rows to pad the vocabulary to when the tokenizer has fewer tokens (as
    /// Qwen2.5's 151,936 rows hold 151,665 tokens); `None` keeps the tokenizer's count.
    pub padded_vocab: Option<usize>,
    /// RoPE base; `None` takes the architecture's (Qwen's 1,000,000, Llama's 10,000). A small
    /// model trained from scratch on short texts copies more readily with 10,000, whose
    /// rotation frequencies resolve nearby positions.
    pub rope_theta: Option<f64>,
}

/// The `tiny` size: 2 layers, 64 wide, 4 heads sharing 2 key/value heads.
pub const TINY: TinySize = TinySize {
    vocab: 512,
    hidden: 64,
    intermediate: 128,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    padded_vocab: None,
    rope_theta: None,
};

/// The `small` size: 4 layers, 128 wide, 4 heads sharing 2 key/value heads (0.9 M
/// parameters with the tiny vocabulary): the embedded default's policy, big enough to learn to
/// copy names from search results within minutes on a CPU.
pub const SMALL: TinySize = TinySize {
    vocab: 512,
    hidden: 128,
    intermediate: 384,
    layers: 4,
    heads: 4,
    kv_heads: 2,
    padded_vocab: None,
    rope_theta: None,
};

/// Qwen2.5-0.5B's shape: 24 layers × 896 wide, 14 heads sharing 2 key/value heads, MLP 4864,
/// vocabulary 151,936 (494 M parameters, 2 GB in f32). For benchmarks, not tests.
pub const QWEN25_05B: TinySize = TinySize {
    vocab: 151_936,
    hidden: 896,
    intermediate: 4864,
    layers: 24,
    heads: 14,
    kv_heads: 2,
    padded_vocab: Some(151_936),
    rope_theta: None,
};

/// The sizes `host model init --size` knows, by name.
pub const SIZES: [(&str, TinySize); 3] = [("tiny", TINY), ("small", SMALL), ("0.5b", QWEN25_05B)];

/// Where a random model's tokenizer comes from.
#[derive(Debug, Clone, Copy)]
pub enum TokenizerSource<'a> {
    /// A byte-level BPE trained on this text (the built-in text when `None`), with the special
    /// and tag tokens added.
    Train(Option<&'a str>),
    /// An existing `tokenizer.json` (for instance Qwen2.5's), used as it is; it must hold the
    /// ChatML tokens `<|endoftext|>` and `<|im_end|>`.
    File(&'a Path),
}

/// Trains a byte-level BPE tokenizer of `vocab` tokens on `text`, with the special and tag
/// tokens added.
pub fn train_tokenizer(text: &str, vocab: usize) -> Result<Tokenizer> {
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::default()));
    let lines: Vec<&str> = text.lines().collect();
    tokenizer
        .train(&mut trainer, lines.into_iter())
        .map_err(|e| anyhow::anyhow!("training the tokenizer failed: {e}"))?;
    tokenizer
        .add_special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)))
        .map_err(|e| anyhow::anyhow!("adding special tokens failed: {e}"))?;
    tokenizer
        .add_tokens(TAG_TOKENS.iter().map(|t| AddedToken::from(*t, false)))
        .map_err(|e| anyhow::anyhow!("adding tag tokens failed: {e}"))?;
    Ok(tokenizer)
}

/// Writes a tiny random model of `arch` to `out`: tokenizer trained on `corpus` (or the
/// built-in text), weights from `seed`. Qwen2 and Qwen3 get tied embeddings, Llama an untied
/// head; Qwen3's heads are twice as wide as hidden / heads (as Qwen3-0.6B's 16 heads of 128
/// in a 1,024-wide model), so that the head width comes from config.json.
pub fn init_tiny(
    arch: Architecture,
    size: TinySize,
    seed: u64,
    corpus: Option<&str>,
    out: &Path,
) -> Result<()> {
    init_random(arch, size, seed, TokenizerSource::Train(corpus), out)
}

/// Writes a random-weight model of `arch` and `size` to `out`, its tokenizer from `tokenizer`
/// and its weights from `seed`. The vocabulary is the tokenizer's, or `size.padded_vocab` if
/// that is larger (rows past the tokenizer's last id are padding).
pub fn init_random(
    arch: Architecture,
    size: TinySize,
    seed: u64,
    tokenizer: TokenizerSource,
    out: &Path,
) -> Result<()> {
    let tokenizer = match tokenizer {
        TokenizerSource::Train(corpus) => {
            train_tokenizer(corpus.unwrap_or(BUILTIN_CORPUS), size.vocab)?
        }
        TokenizerSource::File(path) => Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("cannot read tokenizer {}: {e}", path.display()))?,
    };
    // Rows for every id (a given tokenizer's ids may have gaps), padded if the size says so.
    let ids_used = tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&id| id as usize + 1);
    let vocab = ids_used
        .max(tokenizer.get_vocab_size(true))
        .max(size.padded_vocab.unwrap_or(0));
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .with_context(|| format!("the tokenizer has no {token} token (ChatML needs it)"))
    };
    let (eos, im_end) = (id("<|endoftext|>")?, id("<|im_end|>")?);
    let config = ModelConfig {
        architectures: vec![arch.class_name().to_string()],
        model_type: arch.model_type().to_string(),
        vocab_size: vocab,
        hidden_size: size.hidden,
        intermediate_size: size.intermediate,
        num_hidden_layers: size.layers,
        num_attention_heads: size.heads,
        num_key_value_heads: Some(size.kv_heads),
        head_dim: (arch == Architecture::Qwen3).then_some(2 * size.hidden / size.heads),
        max_position_embeddings: 4096,
        rms_norm_eps: 1e-6,
        rope_theta: size.rope_theta.unwrap_or(if arch != Architecture::Llama {
            1_000_000.0
        } else {
            10_000.0
        }),
        tie_word_embeddings: arch != Architecture::Llama,
        hidden_act: "silu".to_string(),
        attention_bias: (arch != Architecture::Qwen2).then_some(false),
        rope_scaling: None,
        torch_dtype: Some("float32".to_string()),
        extra: {
            let mut extra = serde_json::Map::from_iter([
                ("bos_token_id".to_string(), serde_json::json!(eos)),
                ("eos_token_id".to_string(), serde_json::json!(im_end)),
            ]);
            if arch != Architecture::Llama {
                // What real Qwen2 and Qwen3 configs carry (sliding window off).
                extra.insert("use_sliding_window".into(), serde_json::json!(false));
                extra.insert("sliding_window".into(), serde_json::json!(4096));
                extra.insert("max_window_layers".into(), serde_json::json!(size.layers));
            }
            extra
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in parameter_shapes(&config)? {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            (0..count)
                .map(|_| 1.0 + 0.1 * (rng.random::<f32>() - 0.5))
                .collect()
        } else {
            (0..count)
                .map(|_| 0.08 * (rng.random::<f32>() - 0.5) * 3.46)
                .collect()
        };
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    let policy = Policy::from_tensors(config, tensors, DType::F32, &Device::Cpu, "tiny init")?;

    let staging = tempfile::tempdir().context("cannot create a temporary folder")?;
    tokenizer
        .save(staging.path().join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("cannot save tokenizer.json: {e}"))?;
    let tokenizer_config = serde_json::json!({
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "chat_template": CHATML_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write_json(staging.path(), "tokenizer_config.json", &tokenizer_config)?;
    write_json(
        staging.path(),
        "generation_config.json",
        &serde_json::json!({"eos_token_id": [im_end, eos], "bos_token_id": eos}),
    )?;
    save_checkpoint(&policy, staging.path(), out)
}
