//! `host model …`: create and inspect policy models.

use crate::model::tiny::{SIZES, TinySize, TokenizerSource, init_random};
use crate::model::{Architecture, loader::read_config};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a random-weight model with a freshly trained byte-level BPE tokenizer (tags such as
    /// <search> are single tokens) or a tokenizer.json you give. Deterministic for a given seed
    /// and corpus.
    #[command(after_help = "\
Example: host model init --arch qwen2 --size 0.5b --out /tmp/qwen-shaped
writes a 494 M-parameter random model shaped like Qwen2.5-0.5B (2 GB) for benchmarks.")]
    Init {
        /// qwen2 (tied embeddings, q/k/v biases), qwen3 (tied embeddings, an RMS norm on each
        /// query and key head, heads twice hidden / heads wide) or llama (untied head).
        #[arg(long)]
        arch: Architecture,
        /// Model size: `tiny` is 2 layers × 64 wide, vocabulary ~520 (for tests); `small` 4
        /// layers × 128 (the embedded default's policy); `0.5b` is Qwen2.5-0.5B's shape, 24
        /// layers × 896, 14/2 heads, vocabulary 151,936.
        #[arg(long, default_value = "tiny", value_parser = ["tiny", "small", "0.5b"])]
        size: String,
        /// Output folder (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Text file to train the tokenizer on [default: built-in text].
        #[arg(long, conflicts_with = "tokenizer")]
        corpus: Option<PathBuf>,
        /// Use this tokenizer.json instead of training one (it must have ChatML's
        /// <|endoftext|> and <|im_end|>), e.g. Qwen2.5's.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Tokens the trained tokenizer aims for [default: the size's].
        #[arg(long, conflicts_with = "tokenizer")]
        vocab: Option<usize>,
        /// RoPE base [default: the architecture's: Qwen2 and Qwen3 1000000, Llama 10000].
        #[arg(long)]
        rope_theta: Option<f64>,
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
            size,
            out,
            seed,
            corpus,
            tokenizer,
            vocab,
            rope_theta,
        } => {
            let (_, shape) = SIZES
                .iter()
                .find(|(name, _)| *name == size)
                .with_context(|| format!("unknown model size {size}"))?;
            let corpus = corpus
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read corpus {}", path.display()))
                })
                .transpose()?;
            let source = match &tokenizer {
                Some(path) => TokenizerSource::File(path),
                None => TokenizerSource::Train(corpus.as_deref()),
            };
            if let Some(theta) = rope_theta.filter(|t| !(t.is_finite() && *t > 1.0)) {
                anyhow::bail!("--rope-theta must be a finite number above 1, got {theta}");
            }
            let shape = TinySize {
                vocab: vocab.unwrap_or(shape.vocab),
                rope_theta: rope_theta.or(shape.rope_theta),
                ..*shape
            };
            init_random(arch, shape, seed, source, &out)?;
            let config = read_config(&out)?;
            let params: usize = crate::model::transformer::parameter_shapes(&config)?
                .iter()
                .map(|(_, shape)| shape.iter().product::<usize>())
                .sum();
            println!(
                "wrote a {size} {} model ({:.1} M parameters, vocabulary {}) to {}",
                arch.model_type(),
                params as f64 / 1e6,
                config.vocab_size,
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
