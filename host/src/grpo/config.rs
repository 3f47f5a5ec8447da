//! The training configuration: one TOML file with every knob, sensible defaults for all of
//! them, unknown keys refused (with the file, line and column), and `SECTION.KEY=VALUE`
//! overrides from the command line.

use super::advantages::AdvantageMode;
pub use super::guards::GuardsSection;
use super::loss::{ImportanceSampling, LossAggregation};
use super::optim::{AdamWSettings, ScheduleKind};
use crate::data::corpus::OnBadRecord;
use crate::inference_server::{Backend, RetryPolicy};
use crate::model::{DeviceKind, WeightDType};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a training run needs to know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub plugins: PluginsSection,
    pub retrieval: RetrievalSection,
    pub data: DataSection,
    pub rollout: RolloutSection,
    pub grpo: GrpoSection,
    pub optim: OptimSection,
    pub run: RunSection,
    pub checkpoint: CheckpointSection,
    pub validation: ValidationSection,
    pub logging: LoggingSection,
    /// Collapse detection (entropy, KL and truncation bands).
    pub guards: GuardsSection,
    /// The supervised warm start (`host sft`); `host train` ignores it.
    pub sft: SftSection,
}

/// The policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Hugging Face model folder; unset: the embedded tiny model built on the fly.
    pub path: Option<PathBuf>,
    /// f32 (bf16 weights are loaded as f32: bf16 cannot hold AdamW's small updates).
    pub dtype: WeightDType,
    /// cpu or cuda.
    pub device: DeviceKind,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: None,
            dtype: WeightDType::F32,
            device: DeviceKind::Cpu,
        }
    }
}

/// Which plugins run, and their settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsSection {
    /// Folder of plugins.
    pub dir: PathBuf,
    /// Active plugin per kind (reward, prompt, parser, search) by name.
    pub active: BTreeMap<String, String>,
    /// Settings per plugin name, over each plugin's own `[config]`.
    pub config: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

impl Default for PluginsSection {
    fn default() -> Self {
        PluginsSection {
            dir: PathBuf::from("plugins"),
            active: BTreeMap::new(),
            config: BTreeMap::new(),
        }
    }
}

/// The index behind the host's retriever (what `local-search` queries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalSection {
    /// Index folder (`host index build`); unset: the embedded corpus indexed on the fly.
    pub index: Option<PathBuf>,
    /// Passages per search.
    pub top_k: u32,
    /// auto, exact, scan or ann.
    pub mode: String,
    /// ANN nodes inspected per query (ann mode).
    pub search_k: Option<usize>,
}

impl Default for RetrievalSection {
    fn default() -> Self {
        RetrievalSection {
            index: None,
            top_k: 5,
            mode: "auto".into(),
            search_k: None,
        }
    }
}

/// Questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// FlashRAG QA JSONL for training; unset: the embedded question set.
    pub train: Option<PathBuf>,
    /// Held-out QA JSONL for validation; unset: the last `validation_size` training questions.
    pub validation: Option<PathBuf>,
    /// Questions held out of `train` when there is no validation file.
    pub validation_size: usize,
    /// Use only the first N training questions.
    pub limit: Option<usize>,
    /// Shuffle the training questions every epoch (seeded).
    pub shuffle: bool,
    /// stop or skip on a bad dataset line.
    pub on_bad_record: OnBadRecord,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            train: None,
            validation: None,
            validation_size: 16,
            limit: None,
            shuffle: true,
            on_bad_record: OnBadRecord::Stop,
        }
    }
}

/// Rollouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// Samples per question (G).
    pub group_size: usize,
    /// Questions per step.
    pub batch_prompts: usize,
    /// Response tokens per rollout, observations included.
    pub max_response_tokens: usize,
    /// Search turns per rollout.
    pub max_turns: u32,
    /// Tokens of one observation (longer ones are cut).
    pub max_obs_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// 0: off.
    pub top_k: usize,
    /// Where rollouts (and validation) are sampled: local (the host's engine), sglang, vllm
    /// (servers that load each new policy) or llama-cpp (evaluation only).
    pub backend: Backend,
    /// The inference server's base URL, e.g. http://127.0.0.1:30000 (server backends).
    pub url: Option<String>,
    /// Optimiser steps between two weight loads of the server: the samples of a step come
    /// from a policy at most `sync_every − 1` steps older than the one being trained.
    pub sync_every: u64,
    /// The folder the host writes the policy to for the server to load (Hugging Face
    /// layout); unset: RUN/engine-weights. vLLM must have been started on this folder.
    pub engine_weights: Option<PathBuf>,
    /// Requests in flight to the server at most.
    pub engine_concurrency: usize,
    /// Seconds a failing server call (no connection, timeout, 408/429/5xx) is retried before
    /// the run stops with its error.
    pub engine_retry_s: f64,
    /// Seconds one server request may take.
    pub engine_timeout_s: f64,
}

impl RolloutSection {
    /// Refuses a backend setting that cannot work, naming the key.
    pub fn validate_backend(&self) -> Result<()> {
        match (self.backend, &self.url) {
            (Backend::Local, Some(url)) => bail!(
                "rollout.url is `{url}` but rollout.backend is local: set rollout.backend to \
                 sglang, vllm or llama-cpp, or remove rollout.url"
            ),
            (Backend::Local, None) => {}
            (backend, None) => bail!(
                "rollout.backend = \"{backend}\" needs rollout.url, the server's base URL (e.g. \
                 http://127.0.0.1:30000)"
            ),
            (_, Some(_)) => {}
        }
        // A week bounds both waits (and keeps them within what a Duration holds).
        let week = 7.0 * 86_400.0;
        if self.sync_every == 0
            || self.engine_concurrency == 0
            || !(self.engine_timeout_s > 0.0 && self.engine_timeout_s <= week)
            || !(self.engine_retry_s >= 0.0 && self.engine_retry_s <= week)
        {
            bail!(
                "rollout.sync_every and rollout.engine_concurrency must be at least 1, \
                 rollout.engine_timeout_s in (0, 604800] seconds and rollout.engine_retry_s in \
                 [0, 604800]"
            );
        }
        Ok(())
    }

    /// Where this section samples: in process, or a client of its server once the server
    /// answers.
    pub fn generation(&self) -> Result<crate::rollout::Generation> {
        crate::rollout::Generation::connect(
            self.backend,
            self.url.as_deref(),
            self.retry_policy(),
            self.engine_concurrency,
        )
    }

    /// How server calls are timed out and retried.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            request_timeout: Duration::from_secs_f64(self.engine_timeout_s),
            retry_for: Duration::from_secs_f64(self.engine_retry_s),
            ..RetryPolicy::default()
        }
    }
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            group_size: 5,
            batch_prompts: 4,
            max_response_tokens: 512,
            max_turns: 8,
            max_obs_tokens: 512,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            backend: Backend::Local,
            url: None,
            sync_every: 1,
            engine_weights: None,
            engine_concurrency: 64,
            engine_retry_s: 60.0,
            engine_timeout_s: 600.0,
        }
    }
}

/// The GRPO objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSection {
    /// grpo or dr-grpo.
    pub advantage: AdvantageMode,
    /// token-mean, seq-mean-token-mean or seq-mean-token-sum-norm (Dr.GRPO).
    pub loss_aggregation: LossAggregation,
    /// The ratio is clipped to [1 − clip_low, 1 + clip_high]. Setting clip_high above
    /// clip_low is DAPO's clip-higher (e.g. 0.2 / 0.28): low-probability tokens can rise
    /// further, which keeps entropy from collapsing.
    pub clip_low: f64,
    pub clip_high: f64,
    /// k3 KL to the initial policy; 0 skips the reference model entirely.
    pub kl_coef: f64,
    pub entropy_coef: f64,
    /// Passes over each batch of rollouts.
    pub ppo_epochs: usize,
    /// Questions per optimiser step (their G rollouts each); unset: the whole batch.
    pub mini_batch_prompts: Option<usize>,
    /// Sequences per forward/backward (gradients accumulate across them).
    pub micro_batch_sequences: usize,
    /// Reward given to a rollout whose plugin call failed, for the logged mean only: such
    /// rollouts are left out of the loss and of their group's statistics.
    pub error_reward: f64,
    /// DAPO dynamic sampling: groups whose rewards are all equal (zero advantage) are left
    /// out of the loss, and of its normaliser.
    pub dynamic_sampling: bool,
    /// With dynamic sampling, batches of `rollout.batch_prompts` questions drawn per step at
    /// most while fewer than `batch_prompts` informative groups were found (1: no refill).
    pub dynamic_sampling_max_batches: usize,
    /// Skip the forward/backward of sequences that add nothing to the gradient (advantage 0
    /// while `kl_coef` and `entropy_coef` are 0); they still count in the loss normaliser, so
    /// the gradient is the same. A mini-batch with every sequence skipped takes no AdamW step
    /// (which would move the weights by momentum and weight decay alone).
    pub skip_zero_contribution: bool,
    /// DAPO overlong filtering: responses cut by the token budget (finish `length`) are left
    /// out of the loss.
    pub overlong_filter: bool,
    /// DAPO soft overlong punishment: the last `overlong_buffer` tokens of the response budget
    /// cost up to `overlong_penalty` reward, linearly (0: off).
    pub overlong_buffer: usize,
    pub overlong_penalty: f64,
    /// token (GRPO/PPO: one ratio per token) or sequence (GSPO: the geometric mean of a
    /// sequence's token ratios, clipped as one; GSPO's paper clips at 3e-4 / 4e-4).
    pub importance_sampling: ImportanceSampling,
}

impl Default for GrpoSection {
    fn default() -> Self {
        GrpoSection {
            advantage: AdvantageMode::Grpo,
            loss_aggregation: LossAggregation::TokenMean,
            clip_low: 0.2,
            clip_high: 0.2,
            kl_coef: 0.001,
            entropy_coef: 0.001,
            ppo_epochs: 1,
            mini_batch_prompts: None,
            micro_batch_sequences: 4,
            error_reward: 0.0,
            dynamic_sampling: false,
            dynamic_sampling_max_batches: 1,
            skip_zero_contribution: false,
            overlong_filter: false,
            overlong_buffer: 0,
            overlong_penalty: 1.0,
            importance_sampling: ImportanceSampling::Token,
        }
    }
}

/// The optimiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    /// constant or cosine (after warmup).
    pub schedule: ScheduleKind,
    /// Share of the optimiser steps spent warming up linearly.
    pub warmup_ratio: f64,
    /// Global grad-norm clip (0: off).
    pub grad_clip: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        let adamw = AdamWSettings::default();
        OptimSection {
            lr: 1e-6,
            schedule: ScheduleKind::Constant,
            warmup_ratio: 0.0,
            grad_clip: 1.0,
            beta1: adamw.beta1,
            beta2: adamw.beta2,
            eps: adamw.eps,
            weight_decay: adamw.weight_decay,
        }
    }
}

impl OptimSection {
    /// AdamW's settings.
    pub fn adamw(&self) -> AdamWSettings {
        AdamWSettings {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// The run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Training steps (one batch of questions each).
    pub steps: u64,
    /// Seeds data order, sampling and the embedded assets.
    pub seed: u64,
    /// Run folder; unset: runs/train-<time>.
    pub out: Option<PathBuf>,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            steps: 20,
            seed: 0,
            out: None,
        }
    }
}

/// Checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Every N steps (0: only at the end).
    pub every: u64,
    /// Checkpoints kept (older ones are deleted).
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            every: 10,
            keep_last: 2,
        }
    }
}

/// Validation with greedy decoding on the held-out questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSection {
    /// Every N steps, and before the first (0: never).
    pub every: u64,
    /// Held-out questions used (0: all).
    pub limit: usize,
}

impl Default for ValidationSection {
    fn default() -> Self {
        ValidationSection {
            every: 10,
            limit: 16,
        }
    }
}

/// What goes to the run folder besides metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// Write every step's trajectories (JSONL).
    pub trajectories: bool,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection { trajectories: true }
    }
}

/// Supervised fine-tuning (`host sft`): the rest of its settings ([model], [optim]'s AdamW
/// and clip, [run], [checkpoint], [validation], [rollout] for validation) are shared with
/// `host train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftSection {
    /// Trajectory JSONL files (`host demos`, or a run's trajectories).
    pub data: Vec<PathBuf>,
    /// Passes over the trajectories.
    pub epochs: u64,
    /// A fresh seeded order every epoch (else the files' order).
    pub shuffle: bool,
    /// Sequences per optimiser step.
    pub batch_sequences: usize,
    /// Sequences per forward/backward (gradients accumulate across them).
    pub micro_batch_sequences: usize,
    /// The warm start's own learning rate.
    pub lr: f64,
    /// constant or cosine (after warmup).
    pub schedule: ScheduleKind,
    /// Share of the optimiser steps spent warming up linearly.
    pub warmup_ratio: f64,
    /// `host train` without a model first warm-starts the embedded tiny policy with these
    /// settings, on demonstrations of its training questions (built once, then cached).
    pub embedded_warm_start: bool,
}

impl Default for SftSection {
    fn default() -> Self {
        SftSection {
            data: Vec::new(),
            epochs: 3,
            shuffle: true,
            batch_sequences: 8,
            micro_batch_sequences: 4,
            lr: 1e-5,
            schedule: ScheduleKind::Cosine,
            warmup_ratio: 0.05,
            embedded_warm_start: true,
        }
    }
}

impl SftSection {
    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_sequences == 0 || self.micro_batch_sequences == 0 {
            bail!(
                "sft.epochs, sft.batch_sequences and sft.micro_batch_sequences must be at least 1"
            );
        }
        if !(self.lr.is_finite() && self.lr >= 0.0 && (0.0..1.0).contains(&self.warmup_ratio)) {
            bail!("sft.lr must be a finite number ≥ 0 and sft.warmup_ratio in [0, 1)");
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<TrainConfig> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
    }

    /// Reads a TOML file. Relative paths inside it are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = crate::data::text_file::read_text(path, "the training config")?;
        let mut config = TrainConfig::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Expands a leading `~/` to the home folder and makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let fix = |p: &mut PathBuf| {
            if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), &home) {
                *p = home.join(rest);
            } else if p.is_relative() {
                *p = lexically_normal(&base.join(&*p));
            }
        };
        if let Some(p) = self.model.path.as_mut() {
            fix(p);
        }
        if let Some(p) = self.retrieval.index.as_mut() {
            fix(p);
        }
        if let Some(p) = self.data.train.as_mut() {
            fix(p);
        }
        if let Some(p) = self.data.validation.as_mut() {
            fix(p);
        }
        if let Some(p) = self.run.out.as_mut() {
            fix(p);
        }
        if let Some(p) = self.rollout.engine_weights.as_mut() {
            fix(p);
        }
        for p in &mut self.sft.data {
            fix(p);
        }
        fix(&mut self.plugins.dir);
    }

    /// Applies `SECTION.KEY=VALUE` (the value in TOML syntax, or a bare string).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let Some((key, value)) = assignment.split_once('=') else {
            bail!("`--set {assignment}`: expected SECTION.KEY=VALUE, e.g. grpo.kl_coef=0");
        };
        let key = key.trim();
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut table) => table
                .remove("v")
                .unwrap_or(toml::Value::String(value.into())),
            Err(_) => toml::Value::String(value.trim().to_string()),
        };
        let mut tree = toml::Value::try_from(&*self)?;
        let mut node = &mut tree;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node
                .as_table_mut()
                .with_context(|| format!("`--set {key}`: `{part}` is not inside a section"))?;
            if i + 1 == parts.len() {
                table.insert(part.to_string(), parsed.clone());
                break;
            }
            node = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        *self = tree
            .try_into()
            .map_err(|e| anyhow::anyhow!("`--set {assignment}`: {e}"))?;
        Ok(())
    }

    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let r = &self.rollout;
        let checks: [(bool, &str); 11] = [
            (r.group_size >= 1, "rollout.group_size must be at least 1"),
            (
                r.batch_prompts >= 1,
                "rollout.batch_prompts must be at least 1",
            ),
            (
                r.max_response_tokens >= 1,
                "rollout.max_response_tokens must be at least 1",
            ),
            (
                r.temperature >= 0.0 && r.top_p > 0.0 && r.top_p <= 1.0,
                "rollout.temperature must be ≥ 0 and rollout.top_p in (0, 1]",
            ),
            (
                self.grpo.ppo_epochs >= 1,
                "grpo.ppo_epochs must be at least 1",
            ),
            (
                self.grpo.micro_batch_sequences >= 1,
                "grpo.micro_batch_sequences must be at least 1",
            ),
            (
                self.grpo.dynamic_sampling_max_batches >= 1
                    && (!self.grpo.dynamic_sampling || r.group_size >= 2),
                "grpo.dynamic_sampling needs rollout.group_size ≥ 2 (a group of one never differs) and grpo.dynamic_sampling_max_batches ≥ 1",
            ),
            (
                self.grpo.overlong_buffer <= r.max_response_tokens
                    && self.grpo.overlong_penalty.is_finite()
                    && self.grpo.overlong_penalty >= 0.0,
                "grpo.overlong_buffer must be at most rollout.max_response_tokens and grpo.overlong_penalty a finite number ≥ 0",
            ),
            (
                self.grpo.clip_low >= 0.0 && self.grpo.clip_low < 1.0 && self.grpo.clip_high >= 0.0,
                "grpo.clip_low must be in [0, 1) and grpo.clip_high ≥ 0",
            ),
            (
                self.optim.lr >= 0.0 && (0.0..1.0).contains(&self.optim.warmup_ratio),
                "optim.lr must be ≥ 0 and optim.warmup_ratio in [0, 1)",
            ),
            (
                self.grpo
                    .mini_batch_prompts
                    .is_none_or(|m| m >= 1 && m <= r.batch_prompts),
                "grpo.mini_batch_prompts must be between 1 and rollout.batch_prompts",
            ),
        ];
        for (ok, message) in checks {
            if !ok {
                bail!("{message}");
            }
        }
        self.guards.validate()?;
        self.rollout.validate_backend()?;
        if self.rollout.backend == Backend::LlamaCpp {
            bail!(
                "rollout.backend = \"llama-cpp\" cannot train: llama.cpp's server cannot load new \
                 weights, so it would keep sampling the initial policy; use sglang or vllm to \
                 train (llama-cpp serves `host eval --backend llama-cpp`)"
            );
        }
        match self.model.dtype {
            WeightDType::F32 => {}
            WeightDType::Bf16 => bail!(
                "model.dtype = \"bf16\" cannot train: AdamW updates (lr × ~1) are far below bf16's \
                 rounding step, so the weights would not change; use f32 (bf16 checkpoints are \
                 loaded as f32)"
            ),
        }
        let o = &self.optim;
        if !((0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2) && o.eps > 0.0) {
            bail!("optim.beta1 and optim.beta2 must be in [0, 1) and optim.eps positive");
        }
        let g = &self.grpo;
        let finite = [
            g.kl_coef,
            g.entropy_coef,
            g.error_reward,
            o.lr,
            o.weight_decay,
            o.grad_clip,
        ];
        if finite.iter().any(|v| !v.is_finite()) {
            bail!(
                "grpo.kl_coef, grpo.entropy_coef, grpo.error_reward, optim.lr, optim.weight_decay \
                 and optim.grad_clip must be finite numbers"
            );
        }
        Ok(())
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// `path` with `.` and `dir/..` removed, without touching the file system.
pub fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(
            lexically_normal(Path::new("/a/examples/../plugins/./x")),
            PathBuf::from("/a/plugins/x")
        );
        assert_eq!(lexically_normal(Path::new("../b")), PathBuf::from("../b"));
        assert_eq!(lexically_normal(Path::new("a/..")), PathBuf::from("."));
        let mut config = TrainConfig::default();
        config.data.train = Some(PathBuf::from("../data/t.jsonl"));
        config.run.out = Some(PathBuf::from("runs/x"));
        config.resolve_paths(Path::new("/w/examples"));
        assert_eq!(config.data.train.unwrap(), PathBuf::from("/w/data/t.jsonl"));
        assert_eq!(config.run.out.unwrap(), PathBuf::from("/w/examples/runs/x"));
        assert_eq!(config.plugins.dir, PathBuf::from("/w/examples/plugins"));
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = TrainConfig::default();
        let text = config.to_toml().unwrap();
        assert_eq!(TrainConfig::parse(&text, "t").unwrap(), config);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let error = TrainConfig::parse("[grpo]\nkl_coeff = 0.1\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("my.toml") && error.contains("kl_coeff"),
            "{error}"
        );
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn overrides_set_typed_values() {
        let mut config = TrainConfig::default();
        config.set("grpo.kl_coef=0").unwrap();
        config.set("rollout.group_size=3").unwrap();
        config
            .set("grpo.loss_aggregation=seq-mean-token-mean")
            .unwrap();
        config
            .set("plugins.config.tag-parser.dialect=searchr1")
            .unwrap();
        assert_eq!(config.grpo.kl_coef, 0.0);
        assert_eq!(config.rollout.group_size, 3);
        assert_eq!(
            config.grpo.loss_aggregation,
            LossAggregation::SeqMeanTokenMean
        );
        assert_eq!(
            config.plugins.config["tag-parser"]["dialect"],
            toml::Value::String("searchr1".into())
        );
        assert!(config.set("grpo.nope=1").is_err());
        assert!(config.set("rollout.group_size=many").is_err());
        assert!(config.set("no-equals").is_err());
    }

    #[test]
    fn shipped_example_configs_are_valid() {
        for (name, text) in [
            (
                "research.toml",
                include_str!("../../../examples/research.toml"),
            ),
            (
                "searchr1.toml",
                include_str!("../../../examples/searchr1.toml"),
            ),
        ] {
            let config = TrainConfig::parse(text, name).unwrap();
            config.validate().unwrap();
            assert!(config.model.path.is_some() && config.retrieval.index.is_some());
        }
        let research =
            TrainConfig::parse(include_str!("../../../examples/research.toml"), "r").unwrap();
        assert_eq!(research.rollout.group_size, 5);
        assert_eq!(research.plugins.active["reward"], "research-reward");
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = TrainConfig::default();
        config.rollout.group_size = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("rollout.group_size")
        );
        let mut config = TrainConfig::default();
        let message = |c: &TrainConfig| c.validate().unwrap_err().to_string();
        config.model.dtype = WeightDType::Bf16;
        assert!(message(&config).contains("cannot train"));
        let mut config = TrainConfig::default();
        config.optim.beta2 = 1.0;
        assert!(message(&config).contains("optim.beta1"));
        let mut config = TrainConfig::default();
        config.grpo.kl_coef = f64::NAN;
        assert!(message(&config).contains("finite"));
    }

    #[test]
    fn backend_settings_that_cannot_work_are_refused() {
        let message = |sets: &[&str]| {
            let mut config = TrainConfig::default();
            for set in sets {
                config.set(set).unwrap();
            }
            config.validate().map_err(|e| e.to_string())
        };
        let ok = [
            "rollout.backend=sglang",
            "rollout.url=http://127.0.0.1:30000",
        ];
        assert_eq!(message(&ok), Ok(()));
        assert!(
            message(&["rollout.backend=vllm"])
                .unwrap_err()
                .contains("needs rollout.url")
        );
        assert!(
            message(&["rollout.url=http://x:1"])
                .unwrap_err()
                .contains("rollout.backend is local")
        );
        assert!(
            message(&["rollout.backend=llama-cpp", "rollout.url=http://x:1"])
                .unwrap_err()
                .contains("cannot load new weights")
        );
        for bad in [
            "rollout.sync_every=0",
            "rollout.engine_retry_s=1e300",
            "rollout.engine_timeout_s=0",
            "rollout.engine_retry_s=nan",
        ] {
            assert!(
                message(&[ok[0], ok[1], bad])
                    .unwrap_err()
                    .contains("rollout.sync_every"),
                "{bad}"
            );
        }
        let mut config = TrainConfig::default();
        assert!(
            config
                .set("rollout.backend=tgi")
                .unwrap_err()
                .to_string()
                .contains("tgi")
        );
    }
}
