//! Tiny random-weight BERT embedders for tests: a WordPiece tokenizer built from a text,
//! sentence-transformers side files (mean pooling), and weights drawn from a
//! seeded generator, so the same seed gives the same folder.

use crate::model::checkpoint::write_json;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config as BertConfig, HiddenAct};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

/// The `wide` size: 1 layer, 256 wide, 4 heads, 128 positions: with mean pooling its random
/// vectors keep enough of a text's words to find the right passage among hundreds (the
/// embedded world's retriever).
pub const WIDE_BERT: TinyBertSize = TinyBertSize {
    vocab: 1000,
    hidden: 256,
    intermediate: 512,
    layers: 1,
    heads: 4,
    max_positions: 128,
};

/// Named sizes for `host embedder init --size`.
pub const BERT_SIZES: [(&str, TinyBertSize); 2] = [("tiny", TINY_BERT), ("wide", WIDE_BERT)];

/// BERT's special tokens, in id order ([PAD] is 0).
const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Sizes of a tiny embedder.
#[derive(Debug, Clone, Copy)]
pub struct TinyBertSize {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_positions: usize,
}

/// The `tiny` size: 2 layers, 32 wide, 4 heads, 128 positions.
pub const TINY_BERT: TinyBertSize = TinyBertSize {
    vocab: 1000,
    hidden: 32,
    intermediate: 64,
    layers: 2,
    heads: 4,
    max_positions: 128,
};

/// An uncased WordPiece tokenizer (BERT normaliser and pre-tokeniser, `[CLS] … [SEP]`) whose
/// vocabulary is built deterministically from `text` (the tokenizers crate's trainer breaks
/// ties in hash-map order, so the same text gave different vocabularies from run to run): the
/// special tokens, every character seen, alone and as a `##` continuation, then whole words by
/// falling count (ties in alphabetical order) up to `vocab` entries.
pub fn train_wordpiece(text: &str, vocab: usize) -> Result<Tokenizer> {
    let normalizer = BertNormalizer::new(true, true, None, true);
    let mut counts: HashMap<String, u64> = HashMap::new();
    for line in text.lines() {
        let mut normalized = NormalizedString::from(line);
        normalizer
            .normalize(&mut normalized)
            .map_err(|e| anyhow::anyhow!("normalising the tokenizer text: {e}"))?;
        let mut words = PreTokenizedString::from(normalized);
        BertPreTokenizer
            .pre_tokenize(&mut words)
            .map_err(|e| anyhow::anyhow!("splitting the tokenizer text: {e}"))?;
        for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Char) {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    let chars: BTreeSet<char> = counts.keys().flat_map(|w| w.chars()).collect();
    let mut entries: Vec<String> = SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
    entries.extend(chars.iter().map(|c| c.to_string()));
    entries.extend(chars.iter().map(|c| format!("##{c}")));
    let mut words: Vec<(&String, &u64)> = counts
        .iter()
        .filter(|(w, _)| w.chars().count() > 1)
        .collect();
    words.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let room = vocab.saturating_sub(entries.len());
    entries.extend(words.into_iter().take(room).map(|(w, _)| w.clone()));
    let table: serde_json::Map<String, serde_json::Value> = entries
        .into_iter()
        .enumerate()
        .map(|(id, token)| (token, serde_json::Value::from(id)))
        .collect();
    // (WordPiece deserialises from borrowed text, not from a `Value`.)
    let spec = serde_json::json!({
        "type": "WordPiece",
        "unk_token": "[UNK]",
        "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100,
        "vocab": table,
    })
    .to_string();
    let model: WordPiece = serde_json::from_str(&spec).context("building the WordPiece model")?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| anyhow::anyhow!("tokenizer setup: {e}"))?
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    for special in SPECIAL_TOKENS {
        tokenizer
            .add_special_tokens([AddedToken::from(special, true)])
            .map_err(|e| anyhow::anyhow!("adding {special}: {e}"))?;
    }
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .with_context(|| format!("{token} missing from the vocabulary"))
    };
    let processor = BertProcessing::new(
        ("[SEP]".to_string(), id("[SEP]")?),
        ("[CLS]".to_string(), id("[CLS]")?),
    );
    tokenizer.with_post_processor(Some(processor));
    Ok(tokenizer)
}

/// Writes a tiny random BERT embedder to `out` (replacing it): tokenizer trained on `corpus`
/// (or the built-in text), weights from `seed`, mean pooling, max length 128.
pub fn init_tiny_bert(
    size: TinyBertSize,
    seed: u64,
    corpus: Option<&str>,
    out: &Path,
) -> Result<()> {
    let tokenizer = train_wordpiece(
        corpus.unwrap_or(crate::model::tiny::BUILTIN_CORPUS),
        size.vocab,
    )?;
    let config_json = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": tokenizer.get_vocab_size(true),
        "hidden_size": size.hidden,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "intermediate_size": size.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": size.max_positions,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    });
    let config: BertConfig = serde_json::from_value(config_json.clone())?;
    debug_assert_eq!(config.hidden_act, HiddenAct::Gelu);

    // Let candle's BERT name and shape every parameter, then overwrite them from the seed.
    let varmap = VarMap::new();
    BertModel::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &config,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let var = &vars[name];
            let count = var.elem_count();
            let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
                (0..count)
                    .map(|_| 1.0 + 0.1 * (rng.random::<f32>() - 0.5))
                    .collect()
            } else if name.ends_with("LayerNorm.bias") {
                vec![0.0; count]
            } else {
                (0..count)
                    .map(|_| 0.2 * (rng.random::<f32>() - 0.5))
                    .collect()
            };
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
        }
    }

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".embedder-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let dir = staging.path();
    write_json(dir, "config.json", &config_json)?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("cannot save tokenizer.json: {e}"))?;
    varmap
        .save(dir.join("model.safetensors"))
        .context("cannot write model.safetensors")?;
    std::fs::create_dir_all(dir.join("1_Pooling"))?;
    write_json(
        dir,
        "1_Pooling/config.json",
        &serde_json::json!({
            "word_embedding_dimension": size.hidden,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
        }),
    )?;
    write_json(
        dir,
        "sentence_bert_config.json",
        &serde_json::json!({"max_seq_length": size.max_positions, "do_lower_case": false}),
    )?;
    let staged = staging.keep();
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("cannot replace {}", out.display()))?;
    }
    crate::durable::publish_dir(&staged, out)
}
