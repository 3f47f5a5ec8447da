//! Where a run's model, index and questions come from: the paths of the config, or the
//! embedded default — a fictional world (`examples/world/`: 528 passages; 750 warm-start,
//! 398 training and 100 validation questions) with a small random policy, a random embedder
//! and an index built on the fly into the cache folder, so that `host train --plugins
//! ./plugins` works on a fresh clone without downloads.

use crate::data::corpus::OnBadRecord;
use crate::data::qa::{QaSet, parse_qa};
use crate::model::config::Architecture;
use crate::model::tiny::{BUILTIN_CORPUS, SMALL, TinySize, init_tiny};
use crate::retrieval::embedder::{Embedder, SettingsOverrides};
use crate::retrieval::index::{self, Index, IndexState};
use crate::retrieval::ingest::{IngestOptions, ingest};
use crate::retrieval::tiny::{TinyBertSize, WIDE_BERT, init_tiny_bert};
use anyhow::{Context, Result};
use candle_core::Device;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The embedded policy: the `small` shape with a vocabulary large enough that the world's
/// names and years are single tokens (its tokenizer is trained on the world's text), so that
/// copying a name from the question or the results is one attention step.
pub const POLICY_SIZE: TinySize = TinySize {
    vocab: 2048,
    rope_theta: Some(10_000.0),
    ..SMALL
};

/// The embedded embedder: wide random BERT whose WordPiece vocabulary holds the world's names
/// as whole words, so that mean-pooled vectors find a name's passage.
pub const EMBEDDER_SIZE: TinyBertSize = TinyBertSize {
    vocab: 4000,
    ..WIDE_BERT
};

/// The embedded world's passages (FlashRAG corpus JSONL).
pub const WORLD_CORPUS: &str = include_str!("../../../examples/world/corpus.jsonl");
/// The embedded world's questions for the warm start's demonstrations.
pub const WORLD_WARM_START: &str = include_str!("../../../examples/world/warmstart.jsonl");
/// The embedded world's training questions (FlashRAG QA JSONL): GRPO's, none of them shown
/// in a demonstration, so that what GRPO gains is not recall of the warm start.
pub const WORLD_TRAIN: &str = include_str!("../../../examples/world/train.jsonl");
/// The embedded world's held-out questions.
pub const WORLD_VALIDATION: &str = include_str!("../../../examples/world/validation.jsonl");

/// The embedded default's model and index, built once per seed into `root`.
#[derive(Debug, Clone)]
pub struct EmbeddedAssets {
    pub policy: PathBuf,
    pub embedder: PathBuf,
    pub index: PathBuf,
}

/// The embedded questions of the warm start's demonstrations.
pub fn world_warm_start_questions() -> Result<QaSet> {
    parse_qa(
        WORLD_WARM_START,
        "embedded world (warm start)",
        OnBadRecord::Stop,
    )
}

/// The embedded training and validation questions.
pub fn world_questions() -> Result<(QaSet, QaSet)> {
    Ok((
        parse_qa(WORLD_TRAIN, "embedded world (train)", OnBadRecord::Stop)?,
        parse_qa(
            WORLD_VALIDATION,
            "embedded world (validation)",
            OnBadRecord::Stop,
        )?,
    ))
}

/// Builds (or finds) the embedded assets under `cache_root`. Concurrent callers wait for one
/// another through a lock file; a build cut short is redone.
pub fn embedded_assets(cache_root: &Path, seed: u64) -> Result<EmbeddedAssets> {
    let mut hasher = Sha256::new();
    for part in [
        WORLD_CORPUS,
        WORLD_WARM_START,
        WORLD_TRAIN,
        BUILTIN_CORPUS,
        "world-v4",
    ] {
        hasher.update(part.as_bytes());
    }
    hasher.update(seed.to_le_bytes());
    let key = hex::encode(&hasher.finalize()[..8]);
    let root = cache_root.join(format!("world-{key}"));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let root = root.canonicalize()?;
    let assets = EmbeddedAssets {
        policy: root.join("policy"),
        embedder: root.join("embedder"),
        index: root.join("index"),
    };
    let ready = root.join("READY");
    let lock = std::fs::File::create(root.join(".lock"))
        .with_context(|| format!("cannot create a lock file in {}", root.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", root.display()))?;
    if ready.is_file() {
        return Ok(assets);
    }
    tracing::info!(
        "building the embedded tiny model and index in {}",
        root.display()
    );
    for dir in [&assets.policy, &assets.embedder, &assets.index] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
    }
    let text = world_text();
    init_tiny(
        Architecture::Qwen2,
        POLICY_SIZE,
        seed,
        Some(&text),
        &assets.policy,
    )?;
    init_tiny_bert(EMBEDDER_SIZE, seed, Some(&text), &assets.embedder)?;
    let corpus = root.join("corpus.jsonl");
    std::fs::write(&corpus, WORLD_CORPUS)?;
    let embedder = Embedder::load(
        &assets.embedder,
        &SettingsOverrides::default(),
        &Device::Cpu,
    )?;
    let index = Index::create(
        &assets.index,
        embedder.identity().clone(),
        assets.embedder.clone(),
        None,
        seed,
    )?;
    let options = IngestOptions {
        progress: false,
        ..IngestOptions::default()
    };
    ingest(&index, &embedder, &corpus, IndexState::Building, &options)?;
    drop(index);
    debug_assert!(index::exists(&assets.index));
    std::fs::write(&ready, "")?;
    Ok(assets)
}

/// The text of the world's passages (their `contents`), the words of the embedded policy's
/// copy pretraining.
pub fn world_passages_text() -> Result<String> {
    let mut text = String::new();
    for (index, line) in WORLD_CORPUS.lines().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("embedded world corpus line {}", index + 1))?;
        text.push_str(record["contents"].as_str().unwrap_or_default());
        text.push('\n');
    }
    Ok(text)
}

/// The reference prompts (REFERENCE.md), so that the tiny tokenizer encodes them compactly.
const PROMPT_TEXT: &str = "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia search tool. Given a question, you need to first think about the reasoning process in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search for fact information about specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags respectively, and the search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For example, <think> This is the reasoning process. </think> <search> search query here </search> <result> search result here </result> <think> This is the reasoning process. </think> <answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format.
A conversation between User and Assistant. The user asks a question, and the assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.
Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. You can search as many times as your want. If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question:
";

/// Text the tiny tokenizers are trained on: the built-in text, the prompts (three times, so
/// that their words become tokens), the world and its questions.
pub fn world_text() -> String {
    let mut text = String::from(BUILTIN_CORPUS);
    for _ in 0..3 {
        text.push_str(PROMPT_TEXT);
    }
    for source in [WORLD_CORPUS, WORLD_WARM_START, WORLD_TRAIN] {
        for line in source.lines() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
                for key in ["contents", "question"] {
                    if let Some(s) = value.get(key).and_then(|v| v.as_str()) {
                        text.push_str(s);
                        text.push('\n');
                    }
                }
            }
        }
    }
    text
}
