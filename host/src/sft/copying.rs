//! Copy pretraining of the embedded policy. Reading search results is copying: a name from
//! the question into the query, the answer from the results into `\boxed{}`. A random tiny
//! policy learns that only after many thousands of sequences, and on the warm start's
//! demonstrations it memorises the training answers long before; real models bring the skill
//! (induction heads) from pretraining. So the embedded policy is first pretrained on synthetic
//! copying: a run of words, ` | `, the same run again. The words are the world's, drawn at
//! random, so the sequences teach copying and no fact about the world. The result is cached
//! beside the embedded policy, keyed by the policy and these settings, and runs once.

use super::cache_entry::CacheEntry;
use super::{SftExample, SftInputs, SftTrainer};
use crate::durable::write_atomic;
use crate::grpo::{RunDir, TrainConfig};
use crate::model::ModelTokenizer;
use crate::model::loader::read_config;
use crate::plugins::PluginSet;
use crate::run_metrics::MetricsLine;
use anyhow::{Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// How the copying sequences are made and trained on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CopySettings {
    /// Distinct sequences.
    pub sequences: usize,
    /// Fewest words in a run (the count is drawn uniformly up to `max_words`).
    pub min_words: usize,
    pub max_words: usize,
    /// Share of words drawn from the capitalised ones (names), the rest from all words.
    pub name_share: f64,
    /// Passes over the sequences.
    pub epochs: u64,
    /// Constant learning rate.
    pub lr: f64,
    /// Sequences per optimiser step.
    pub batch: usize,
    pub seed: u64,
}

/// The embedded default's copy pretraining: 6,000 sequences × 7 passes = 2,625 steps of 16,
/// after which the policy copies a run it has seen (its token accuracy levels off: the first
/// run is unpredictable), and the warm start then teaches it to copy question names into its
/// queries.
pub const EMBEDDED_COPYING: CopySettings = CopySettings {
    sequences: 6000,
    min_words: 4,
    max_words: 16,
    name_share: 0.6,
    epochs: 7,
    lr: 1e-3,
    batch: 16,
    seed: 0,
};

/// A finished copy pretraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyPretraining {
    /// The pretrained policy folder.
    pub model: PathBuf,
    /// Its run folder (metrics.jsonl: loss and token accuracy per step).
    pub run: PathBuf,
    pub steps: u64,
    /// Token accuracy of the last step.
    pub token_accuracy: Option<f64>,
}

/// The distinct words of `text` (letters and digits), in order of first appearance, split into
/// names (capitalised) and all words.
pub fn words_of(text: &str) -> (Vec<String>, Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if !word.is_empty() && seen.insert(word) {
            all.push(word.to_string());
        }
    }
    let names = all
        .iter()
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
        .cloned()
        .collect();
    (names, all)
}

/// The copying sequences: `w1 … wk | w1 … wk` and a newline, every token after the first
/// trained on.
pub fn copy_sequences(
    tokenizer: &ModelTokenizer,
    text: &str,
    settings: &CopySettings,
) -> Result<Vec<SftExample>> {
    let (names, all) = words_of(text);
    if names.is_empty() || all.len() < 2 {
        bail!("copy pretraining needs a text with capitalised words");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut out = Vec::with_capacity(settings.sequences);
    for i in 0..settings.sequences {
        let k = rng.random_range(settings.min_words..=settings.max_words);
        let run: Vec<&str> = (0..k)
            .map(|_| {
                let pool = if rng.random_bool(settings.name_share) {
                    &names
                } else {
                    &all
                };
                pool[rng.random_range(0..pool.len())].as_str()
            })
            .collect();
        let run = run.join(" ");
        let ids = tokenizer.encode(&format!("{run} | {run}\n"))?;
        if ids.len() < 2 {
            continue;
        }
        out.push(SftExample {
            mask: vec![1.0; ids.len() - 1],
            ids,
            question: format!("copy {i}"),
        });
    }
    Ok(out)
}

/// The SFT settings of the copy pretraining: the run's model and plugins sections (dtype,
/// device, where the plugins are), everything else fixed, without validation (the sequences
/// hold no question).
fn copy_config(config: &TrainConfig, settings: &CopySettings) -> TrainConfig {
    let defaults = TrainConfig::default();
    let sft = crate::grpo::config::SftSection {
        data: Vec::new(),
        epochs: settings.epochs,
        shuffle: true,
        batch_sequences: settings.batch,
        micro_batch_sequences: settings.batch,
        lr: settings.lr,
        schedule: crate::grpo::optim::ScheduleKind::Constant,
        warmup_ratio: 0.0,
        embedded_warm_start: true,
    };
    TrainConfig {
        model: config.model.clone(),
        plugins: config.plugins.clone(),
        optim: crate::grpo::config::OptimSection {
            lr: settings.lr,
            weight_decay: 0.0,
            ..defaults.optim.clone()
        },
        run: crate::grpo::config::RunSection {
            seed: settings.seed,
            ..Default::default()
        },
        validation: crate::grpo::config::ValidationSection {
            every: 0,
            ..defaults.validation.clone()
        },
        checkpoint: crate::grpo::config::CheckpointSection {
            every: 500,
            keep_last: 1,
        },
        sft,
        ..defaults
    }
}

/// Pretrains `base_model` (the embedded random policy) to copy, into a folder under `cache`,
/// or finds the one made before. `text` gives the words. Takes the run's plugins (the SFT
/// trainer holds them) and gives them back.
pub fn pretrain_copying(
    config: &TrainConfig,
    cache: &Path,
    base_model: &Path,
    text: &str,
    plugins: PluginSet,
    quiet: bool,
) -> Result<(CopyPretraining, PluginSet)> {
    let settings = EMBEDDED_COPYING;
    let model_config = read_config(base_model)?;
    let tokenizer = ModelTokenizer::load(base_model, model_config.extra.get("eos_token_id"))?;
    let train_config = copy_config(config, &settings);

    // The key: what shapes the weights (not where the plugins are).
    let mut hash = Sha256::new();
    hash.update(serde_json::to_string(&settings)?.as_bytes());
    hash.update(serde_json::to_string(&train_config.model)?.as_bytes());
    hash.update(base_model.to_string_lossy().as_bytes());
    hash.update(text.as_bytes());
    let key = hex::encode(&hash.finalize()[..8]);
    let entry = CacheEntry::open(cache, &format!("copying-{key}"))?;
    let dir = &entry.dir;
    if let Some(found) = entry.finished(|found: &CopyPretraining| &found.model)? {
        eprintln!(
            "copy pretraining: {} steps, found in the cache ({})",
            found.steps,
            dir.display()
        );
        return Ok((found, plugins));
    }

    let examples = copy_sequences(&tokenizer, text, &settings)?;
    let run_dir = dir.join("run");
    let run = RunDir::create(&run_dir)?;
    let resume = !run.list_checkpoints()?.is_empty();
    write_atomic(&run.config(), train_config.to_toml()?.as_bytes())?;
    let inputs = SftInputs {
        model_dir: base_model.to_path_buf(),
        plugins,
        examples,
        validation: Vec::new(),
    };
    let mut trainer = SftTrainer::start(train_config, inputs, run, resume)?;
    eprintln!(
        "copy pretraining: {} synthetic sequences of the world's words, {} steps{} (once; cached in {})",
        settings.sequences,
        trainer.total_steps(),
        if resume {
            format!(", resuming after step {}", trainer.step())
        } else {
            String::new()
        },
        dir.display()
    );
    trainer.run(quiet)?;
    let steps = trainer.step();
    let model = run_dir
        .join("checkpoints")
        .join(format!("step-{steps:06}"))
        .join("model");
    let token_accuracy = last_token_accuracy(&run_dir.join("metrics.jsonl"));
    let plugins = trainer.into_plugins();
    let done = CopyPretraining {
        model,
        run: run_dir,
        steps,
        token_accuracy,
    };
    entry.finish(&done)?;
    Ok((done, plugins))
}

/// The token accuracy of the last warm-start step in a metrics file.
fn last_token_accuracy(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .rev()
        .find_map(|line| match MetricsLine::parse(line).ok()? {
            MetricsLine::SftStep(step) => Some(step.token_accuracy),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_names_from_all() {
        let (names, all) = words_of("\"Saka Samiul\"\nSaka Samiul was born in 1871, in Sapywick.");
        assert_eq!(names, ["Saka", "Samiul", "Sapywick"]);
        assert_eq!(
            all,
            ["Saka", "Samiul", "was", "born", "in", "1871", "Sapywick"]
        );
    }
}
