//! `host sft`: supervised fine-tuning on trajectories, the warm start before `host train`.

use super::config_flags::ConfigFlags;
use super::train::{Environment, make_paths_absolute, prepare_environment, questions};
use crate::durable::write_atomic;
use crate::folder_lock::FolderLock;
use crate::grpo::TrainConfig;
use crate::grpo::run_dir::{RunDir, ensure_fresh};
use crate::model::loader::read_config;
use crate::sft::{SftInputs, SftTrainer, drop_held_out, load_trajectories};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `host sft`.
#[derive(Debug, Args)]
#[command(after_help = "\
Trains on trajectories (`host demos` output, or any run's trajectories/ files): cross-entropy on \
the generated tokens only — the prompt and the search results (loss mask 0) add nothing — \
token-mean over each batch of sft.batch_sequences, accumulated over micro-batches, AdamW with \
sft.lr and its schedule. The run folder is laid out as `host train`'s (config.toml, metrics.jsonl \
with loss, token accuracy, tokens/s, lr and grad norm per step, checkpoints/step-N/model/), \
validation is the same greedy rollouts on held-out questions (trajectories of those questions are \
left out of training), and `--resume` continues exactly. Settings live in the [sft] section of a \
`host train` config; [optim]'s AdamW betas, weight decay and clip apply. Examples:

  host demos --plugins ./plugins --out runs/demos/world.jsonl --set rollout.max_response_tokens=400
  host sft --plugins ./plugins --data runs/demos/world.jsonl --out runs/sft-world \\
    --set rollout.max_response_tokens=400
  host train --plugins ./plugins --model runs/sft-world/checkpoints/step-000039/model \\
    --set rollout.max_response_tokens=400
  host sft examples/research.toml --data demos.jsonl --epochs 2 --lr 1e-5 --out runs/sft
  host sft --resume runs/sft")]
pub struct SftArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Trajectory JSONL files (repeatable) [default: the config's sft.data].
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Held-out questions for validation (FlashRAG QA JSONL).
    #[arg(long, value_name = "FILE")]
    pub validation: Option<PathBuf>,
    /// Passes over the trajectories.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Run seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder [default: runs/sft-<unix time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its newest checkpoint, with its saved config.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// No progress bar: one log line per step.
    #[arg(long)]
    pub quiet: bool,
}

/// The file of an SFT run folder that identifies its trajectories (and marks the folder as
/// a warm start's).
pub const DATA_FINGERPRINT: &str = "sft-data.json";

/// What a warm start trained on: a resumed run must see the same trajectories.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct DataFingerprint {
    trajectories: usize,
    /// SHA-256 over every example's ids and mask, in order.
    sha256: String,
}

impl DataFingerprint {
    fn of(examples: &[crate::sft::SftExample]) -> DataFingerprint {
        let mut hash = Sha256::new();
        for e in examples {
            hash.update((e.ids.len() as u64).to_le_bytes());
            for id in &e.ids {
                hash.update(id.to_le_bytes());
            }
            for m in &e.mask {
                hash.update(m.to_le_bytes());
            }
        }
        DataFingerprint {
            trajectories: examples.len(),
            sha256: hex::encode(hash.finalize()),
        }
    }
}

/// Runs `host sft`.
pub fn run(args: SftArgs) -> Result<ExitCode> {
    // One writer per run folder, held until this function returns.
    let (config, run_dir, resume, _lock) = match &args.resume {
        Some(run_dir) => {
            let config = resumed_config(&args, run_dir)?;
            let lock = FolderLock::acquire(run_dir, "host sft --resume")?;
            (config, run_dir.clone(), true, lock)
        }
        None => {
            let config = fresh_config(&args)?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| crate::grpo::trainer::timestamped_run_dir("sft"));
            let lock = FolderLock::acquire(&out, "host sft")?;
            ensure_fresh(&out)?;
            (config, out, false, lock)
        }
    };
    config.validate()?;
    config.sft.validate()?;
    if config.sft.data.is_empty() {
        bail!(
            "no trajectories to train on: give --data FILE (e.g. from `host demos`) or set sft.data"
        );
    }
    let (_, validation) = questions(&config)?;
    let cache_root = args.config.cache_root();
    let Environment {
        model_dir, plugins, ..
    } = prepare_environment(&config, cache_root)?;
    let model_config = read_config(&model_dir)?;
    let mut examples = load_trajectories(
        &config.sft.data,
        model_config.vocab_size,
        model_config.max_position_embeddings,
    )?;
    let read = examples.len();
    let held_out = drop_held_out(&mut examples, &validation);
    let tokens: usize = examples.iter().map(|e| e.trained_tokens()).sum();
    eprintln!("research-host sft");
    eprintln!("  model       {}", model_dir.display());
    eprintln!(
        "  data        {} trajectories, {tokens} trained tokens{}",
        examples.len(),
        if held_out > 0 {
            format!(" ({held_out} of {read} left out: their questions are held out for validation)")
        } else {
            String::new()
        }
    );
    eprintln!("  validation  {} questions", validation.len());
    eprintln!("  run folder  {}", run_dir.display());
    let text = config.to_toml()?;
    if examples.is_empty() {
        bail!("every trajectory's question is a validation question; nothing is left to train on");
    }
    let run = RunDir::create(&run_dir)?;
    let fingerprint = DataFingerprint::of(&examples);
    let fingerprint_path = run_dir.join(DATA_FINGERPRINT);
    if resume {
        let saved: DataFingerprint = serde_json::from_str(
            &std::fs::read_to_string(&fingerprint_path)
                .with_context(|| format!("cannot read {}", fingerprint_path.display()))?,
        )
        .with_context(|| format!("invalid {}", fingerprint_path.display()))?;
        if saved != fingerprint {
            bail!(
                "the trajectories of {} changed since the run started ({} then, {} now, or                  other contents); an exact continuation needs the same data: start a new run",
                run_dir.display(),
                saved.trajectories,
                fingerprint.trajectories
            );
        }
    } else {
        write_atomic(&run.config(), text.as_bytes())?;
        write_atomic(
            &fingerprint_path,
            serde_json::to_string_pretty(&fingerprint)?.as_bytes(),
        )?;
    }
    let inputs = SftInputs {
        model_dir,
        plugins,
        examples,
        validation,
    };
    let mut trainer = SftTrainer::start(config, inputs, run, resume)?;
    if resume {
        eprintln!("resuming after step {}", trainer.step());
    }
    let quiet = args.quiet;
    let validations = trainer.run(quiet)?;
    let checkpoint = run_dir
        .join("checkpoints")
        .join(format!("step-{:06}", trainer.step()))
        .join("model");
    match validations {
        Some((first, last)) => eprintln!(
            "done: {} steps; validation reward {:.3} → {:.3}, EM {:.3} → {:.3}, F1 {:.3} → {:.3}; \
             model in {}",
            trainer.step(),
            first.val_reward,
            last.val_reward,
            first.val_em,
            last.val_em,
            first.val_f1,
            last.val_f1,
            checkpoint.display()
        ),
        None => eprintln!(
            "done: {} steps; model in {}",
            trainer.step(),
            checkpoint.display()
        ),
    }
    if let Some(change) = crate::report::held_out::run_change(&run_dir)? {
        eprintln!("{}", change.summary());
    }
    Ok(ExitCode::SUCCESS)
}

/// The config of a new warm start: file or embedded default, then flags and --set.
fn fresh_config(args: &SftArgs) -> Result<TrainConfig> {
    let mut config = args.config.base()?;
    if let Some(validation) = &args.validation {
        config.data.validation = Some(validation.clone());
    }
    if !args.data.is_empty() {
        config.sft.data = args.data.clone();
    }
    if let Some(epochs) = args.epochs {
        config.sft.epochs = epochs;
    }
    if let Some(lr) = args.lr {
        config.sft.lr = lr;
    }
    if let Some(seed) = args.seed {
        config.run.seed = seed;
    }
    args.config.finish(&mut config)?;
    make_paths_absolute(&mut config)?;
    Ok(config)
}

/// The saved config of a warm start being resumed; no other flag may change it.
fn resumed_config(args: &SftArgs, run_dir: &Path) -> Result<TrainConfig> {
    let path = run_dir.join("config.toml");
    if !path.is_file() {
        bail!(
            "{} is not a run folder (it has no config.toml)",
            run_dir.display()
        );
    }
    if !run_dir.join(DATA_FINGERPRINT).is_file() {
        bail!(
            "{} is not a `host sft` run (it has no {DATA_FINGERPRINT}); continue a GRPO run              with `host train --resume`",
            run_dir.display()
        );
    }
    let changed = args.config.any()
        || !args.data.is_empty()
        || args.validation.is_some()
        || args.epochs.is_some()
        || args.lr.is_some()
        || args.seed.is_some()
        || args.out.is_some();
    if changed {
        bail!(
            "--resume continues a run with its saved config ({}); only --quiet may be given",
            path.display()
        );
    }
    TrainConfig::load(&path).with_context(|| format!("cannot read {}", path.display()))
}
