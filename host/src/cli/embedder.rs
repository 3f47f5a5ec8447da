//! `host embedder …`: create and try sentence embedders.

use crate::data::corpus::{CorpusReader, OnBadRecord};
use crate::retrieval::embedder::{Embedder, SettingsOverrides};
use crate::retrieval::tiny::{BERT_SIZES, TinyBertSize, init_tiny_bert};
use anyhow::{Context, Result};
use candle_core::Device;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Records of a JSONL corpus used to train a tiny embedder's vocabulary.
const TOKENIZER_TRAINING_RECORDS: usize = 5000;

#[derive(Debug, Subcommand)]
pub enum EmbedderCommand {
    /// Write a random-weight BERT embedder (WordPiece tokenizer trained on --corpus, mean
    /// pooling) for tests and trials. Deterministic for a given seed and corpus.
    Init {
        /// Model size; `tiny` is 2 layers × 32 wide, `wide` 1 layer × 256 (the embedded
        /// world's); both read 128 positions.
        #[arg(long, default_value = "tiny", value_parser = ["tiny", "wide"])]
        size: String,
        /// Output folder (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Text to train the tokenizer on: a plain text file, or a corpus .jsonl (its first
        /// 5000 passages) [default: built-in text].
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// WordPiece tokens the tokenizer aims for [default: the size's].
        #[arg(long)]
        vocab: Option<usize>,
    },
    /// Embed texts and print the vectors as JSON (one array per text).
    Embed {
        /// The embedder folder.
        #[arg(long)]
        embedder: PathBuf,
        /// Embed as queries (query prefix) instead of passages.
        #[arg(long)]
        query: bool,
        #[command(flatten)]
        settings: SettingsOverrides,
        /// The texts.
        #[arg(required = true)]
        texts: Vec<String>,
    },
}

/// Runs an `embedder` subcommand.
pub fn run(command: EmbedderCommand) -> Result<ExitCode> {
    match command {
        EmbedderCommand::Init {
            size,
            out,
            seed,
            corpus,
            vocab,
        } => {
            let text = corpus.as_deref().map(training_text).transpose()?;
            let (_, shape) = BERT_SIZES
                .iter()
                .find(|(name, _)| *name == size)
                .with_context(|| format!("unknown embedder size {size}"))?;
            let shape = TinyBertSize {
                vocab: vocab.unwrap_or(shape.vocab),
                ..*shape
            };
            init_tiny_bert(shape, seed, text.as_deref(), &out)?;
            println!("wrote a {size} BERT embedder to {}", out.display());
        }
        EmbedderCommand::Embed {
            embedder,
            query,
            settings,
            texts,
        } => {
            let embedder = Embedder::load(&embedder, &settings, &Device::Cpu)?;
            let vectors = if query {
                embedder.embed_queries(&texts)?
            } else {
                embedder.embed_passages(&texts)?
            };
            let rows: Vec<&[f32]> = (0..vectors.len()).map(|i| vectors.row(i)).collect();
            println!("{}", serde_json::to_string(&rows)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The tokenizer-training text of `path`: a corpus's passages, or the file itself.
fn training_text(path: &Path) -> Result<String> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        let mut text = String::new();
        for record in CorpusReader::open(path, OnBadRecord::Skip)?.take(TOKENIZER_TRAINING_RECORDS)
        {
            let (_, record) = record?;
            text.push_str(&record.title);
            text.push('\n');
            text.push_str(&record.text);
            text.push('\n');
        }
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}
