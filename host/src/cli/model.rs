//! `host model …`: create and inspect policy models.

use crate::model::tiny::{TINY, init_tiny};
use crate::model::{Architecture, loader::read_config};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a random-weight model with a freshly trained byte-level BPE tokenizer (tags such as
    /// <search> are single tokens). Deterministic for a given seed and corpus.
    Init {
        /// qwen2 (tied embeddings, q/k/v biases) or llama (untied head).
        #[arg(long)]
        arch: Architecture,
        /// Model size; `tiny` is 2 layers × 64 wide, vocabulary ~520.
        #[arg(long, default_value = "tiny", value_parser = ["tiny"])]
        size: String,
        /// Output folder (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Text file to train the tokenizer on [default: built-in text].
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
    /// Convert a GGUF file (F32/F16/Q4_0/Q4_1/Q4_K/Q6_K/Q8_0/…) into a model folder: weights
    /// dequantised to f32 safetensors, tokenizer rebuilt from the GGUF vocabulary.
    ImportGguf {
        /// The .gguf file.
        file: PathBuf,
        /// Output folder (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Download a model folder from the Hugging Face Hub (needs internet; HF_ENDPOINT selects a
    /// mirror, HF_TOKEN a gated model): config, tokenizer and safetensors weights only.
    #[command(after_help = "\
Example: host model fetch HuggingFaceTB/SmolLM2-135M-Instruct --out models/smollm2
Offline, bring a model folder yourself or convert a GGUF with `host model import-gguf`.")]
    Fetch {
        /// The model id, ORG/NAME.
        id: String,
        /// A branch, tag or commit [default: main].
        #[arg(long)]
        revision: Option<String>,
        /// Output folder [default: <cache>/models/ORG--NAME, the cache being
        /// $RESEARCH_HOST_CACHE or ~/.cache/research-host].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a model folder's architecture and sizes.
    Info {
        /// The model folder.
        dir: PathBuf,
    },
}

/// Runs a `model` subcommand.
pub fn run(command: ModelCommand) -> Result<ExitCode> {
    match command {
        ModelCommand::Init {
            arch,
            size: _,
            out,
            seed,
            corpus,
        } => {
            let corpus = corpus
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read corpus {}", path.display()))
                })
                .transpose()?;
            init_tiny(arch, TINY, seed, corpus.as_deref(), &out)?;
            println!(
                "wrote a tiny {} model to {}",
                arch.model_type(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::ImportGguf { file, out } => {
            let summary = crate::model::gguf::import_gguf(&file, &out)?;
            let types: Vec<String> = summary
                .types
                .iter()
                .map(|(t, n)| format!("{t} ×{n}"))
                .collect();
            println!(
                "imported {} ({} tensors: {}; vocabulary {}) to {}",
                summary.architecture.model_type(),
                summary.tensors,
                types.join(", "),
                summary.vocab,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Fetch { id, revision, out } => {
            let (org, name) = crate::model::fetch::parse_repo_id(&id)?;
            let out = match out {
                Some(out) => out,
                None => crate::plugins::engine::default_cache_dir()
                    .context("no cache folder: pass --out")?
                    .join("models")
                    .join(format!("{org}--{name}")),
            };
            let files = crate::model::fetch::fetch_model(&id, revision.as_deref(), &out)?;
            println!("fetched {id} ({} files) to {}", files.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Info { dir } => {
            let config = read_config(&dir)?;
            println!("architecture   {}", config.architecture()?.model_type());
            println!("layers         {}", config.num_hidden_layers);
            println!("hidden         {}", config.hidden_size);
            println!(
                "heads          {} (kv {})",
                config.num_attention_heads,
                config.kv_heads()
            );
            println!("vocab          {}", config.vocab_size);
            println!("tied embedding {}", config.tie_word_embeddings);
            Ok(ExitCode::SUCCESS)
        }
    }
}
