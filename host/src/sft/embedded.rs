//! The embedded default's warm start. `host train` without a model starts from a random tiny
//! policy that never writes the answer format, so every reward is equal and GRPO has nothing
//! to push on. Before GRPO, the policy is taught on demonstrations of the embedded world's
//! warm-start questions, a set apart from GRPO's training questions (what `host demos` writes, with the run's own plugins and index) by
//! supervised fine-tuning (what `host sft` does). The result is cached under the embedded
//! assets, keyed by the demonstrations and every setting that shapes the warm start, so it
//! runs once; a warm start cut short resumes from its last checkpoint.

use super::cache_entry::CacheEntry;
use super::{SftInputs, SftTrainer, drop_held_out, load_trajectories};
use crate::data::qa::QaExample;
use crate::demos::{DemoBuilder, DemoTemplate};
use crate::durable::write_atomic;
use crate::grpo::{RunDir, TrainConfig};
use crate::model::ModelTokenizer;
use crate::model::loader::read_config;
use crate::plugins::PluginSet;
use crate::rollout::validation::Validation;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Steps between the warm start's checkpoints (a warm start cut short resumes from one).
const CHECKPOINT_EVERY: u64 = 100;

/// Entities of the first results tried as a second query (as `host demos`' default).
const MAX_ENTITIES: usize = 4;

/// A finished warm start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmStart {
    /// The warm-started policy folder.
    pub model: PathBuf,
    /// The SFT run folder (`host report GRPO_RUN --before` it).
    pub run: PathBuf,
    /// Demonstrations trained on.
    pub demonstrations: usize,
    /// Questions offered to the demonstration builder.
    pub questions: usize,
    /// Validation before the first and after the last SFT step.
    pub before: Option<Validation>,
    pub after: Option<Validation>,
}

/// The settings of the warm start: the run's, with GRPO's own left at their defaults so
/// that changing them does not retrain the warm start.
fn warm_start_config(config: &TrainConfig, demos: &Path) -> TrainConfig {
    let mut sft = config.sft.clone();
    sft.data = vec![demos.to_path_buf()];
    TrainConfig {
        model: config.model.clone(),
        plugins: config.plugins.clone(),
        retrieval: config.retrieval.clone(),
        data: config.data.clone(),
        rollout: config.rollout.clone(),
        // GRPO's own rate does not shape the warm start (sft.lr does).
        optim: crate::grpo::config::OptimSection {
            lr: config.sft.lr,
            ..config.optim.clone()
        },
        run: crate::grpo::config::RunSection {
            seed: config.run.seed,
            ..Default::default()
        },
        // Validation before the first step and after the last only (`every` never divides a
        // step number short of u64::MAX; the last step always validates).
        validation: crate::grpo::config::ValidationSection {
            every: u64::MAX,
            ..config.validation.clone()
        },
        checkpoint: crate::grpo::config::CheckpointSection {
            every: CHECKPOINT_EVERY,
            keep_last: 1,
        },
        sft,
        ..TrainConfig::default()
    }
}

/// Warm-starts `base_model` (the embedded random policy) into a folder under `cache`, or finds
/// the one made before. Takes the run's plugins (the SFT validation rollouts use them) and
/// gives them back.
pub fn warm_start_embedded(
    config: &TrainConfig,
    cache: &Path,
    base_model: &Path,
    plugins: PluginSet,
    questions: &[QaExample],
    validation: &[QaExample],
    quiet: bool,
) -> Result<(WarmStart, PluginSet)> {
    let model_config = read_config(base_model)?;
    let tokenizer = ModelTokenizer::load(base_model, model_config.extra.get("eos_token_id"))?;
    let template = DemoTemplate::load(DemoTemplate::default_name(config))?;
    let builder = DemoBuilder {
        plugins: &plugins,
        tokenizer: &tokenizer,
        context: model_config.max_position_embeddings,
        template: &template,
        top_k: config.retrieval.top_k,
        max_obs_tokens: config.rollout.max_obs_tokens,
        max_response_tokens: config.rollout.max_response_tokens,
        max_entities: MAX_ENTITIES,
    };
    let set = builder.build(questions, || {})?;
    if set.kept.is_empty() {
        bail!(
            "the warm start found no grounded demonstration among {} questions \
             (is rollout.max_response_tokens = {} too small for a search and an answer?)",
            questions.len(),
            config.rollout.max_response_tokens
        );
    }
    let mut demos = String::new();
    for t in &set.kept {
        demos.push_str(&serde_json::to_string(t)?);
        demos.push('\n');
    }

    let mut hash = Sha256::new();
    hash.update(demos.as_bytes());
    hash.update(
        warm_start_config(config, Path::new("demos.jsonl"))
            .to_toml()?
            .as_bytes(),
    );
    hash.update(base_model.to_string_lossy().as_bytes());
    for qa in validation {
        hash.update(qa.question.as_bytes());
    }
    let key = hex::encode(&hash.finalize()[..8]);
    let entry = CacheEntry::open(cache, &format!("warm-{key}"))?;
    let dir = &entry.dir;
    if let Some(found) = entry.finished(|found: &WarmStart| &found.model)? {
        eprintln!(
            "warm start: {} demonstrations, found in the cache ({})",
            found.demonstrations,
            dir.display()
        );
        return Ok((found, plugins));
    }

    let demos_path = dir.join("demos.jsonl");
    write_atomic(&demos_path, demos.as_bytes())?;
    let sft_config = warm_start_config(config, &demos_path);
    let mut examples = load_trajectories(
        &sft_config.sft.data,
        model_config.vocab_size,
        model_config.max_position_embeddings,
    )?;
    drop_held_out(&mut examples, validation);
    let demonstrations = examples.len();
    let run_dir = dir.join("run");
    let run = RunDir::create(&run_dir)?;
    let resume = !run.list_checkpoints()?.is_empty();
    write_atomic(&run.config(), sft_config.to_toml()?.as_bytes())?;
    let inputs = SftInputs {
        model_dir: base_model.to_path_buf(),
        plugins,
        examples,
        validation: validation.to_vec(),
    };
    let mut trainer = SftTrainer::start(sft_config, inputs, run, resume)?;
    eprintln!(
        "warm start: {demonstrations} demonstrations of {} warm-start questions, {} supervised \
         steps{} (once; cached in {})",
        questions.len(),
        trainer.total_steps(),
        if resume {
            format!(", resuming after step {}", trainer.step())
        } else {
            String::new()
        },
        dir.display()
    );
    let validations = trainer.run(quiet)?;
    let model = run_dir
        .join("checkpoints")
        .join(format!("step-{:06}", trainer.step()))
        .join("model");
    let plugins = trainer.into_plugins();
    let done = WarmStart {
        model,
        run: run_dir,
        demonstrations,
        questions: questions.len(),
        before: validations.map(|v| v.0),
        after: validations.map(|v| v.1),
    };
    entry.finish(&done)?;
    Ok((done, plugins))
}
