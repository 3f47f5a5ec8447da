//! The GRPO training loop: sample a batch of questions, roll out G samples each, score them,
//! turn rewards into group advantages, take old (and reference) log-probs, then for each of
//! `ppo_epochs` passes and each mini-batch accumulate the loss gradient over micro-batches,
//! clip it and take an AdamW step. Metrics, trajectories and checkpoints go to the run folder.
//!
//! Every random draw derives from (seed, step, question), the data order from (seed, epoch),
//! and checkpoints hold the exact weights and optimiser moments, so a resumed run continues
//! exactly as the uninterrupted one would have.

use super::advantages::{group_advantages, informative, overlong_penalty};
use super::config::TrainConfig;
use super::guards::{Guards, StepHealth};
use super::loss::{LossInputs, LossScale, LossSettings, LossStats, policy_loss};
use super::optim::{AdamW, LrSchedule, clip_grad_norm};
use super::run_dir::{RunDir, TrainerState};
use crate::data::qa::{QaExample, QaSet};
use crate::model::{LoadedModel, PaddedBatch, Policy, SamplingParams, load_model};
use crate::plugins::{Finish, PluginSet};
use crate::rollout::validation::{Validation, validate};
use crate::rollout::{Episodes, Generation, RolloutSettings, RolloutTimes, Trajectory};
use crate::run_metrics::{GrpoStepMetrics, GrpoStepTimes, MetricsLine, ValidationMetrics};
use anyhow::{Context, Result, bail};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run trains on, resolved from the config (or the embedded default).
pub struct RunInputs {
    /// The initial policy's folder (also the tokenizer files of every checkpoint).
    pub model_dir: PathBuf,
    pub plugins: PluginSet,
    pub train: QaSet,
    pub validation: Vec<QaExample>,
}

/// How the loop reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportOptions {
    /// No progress bar: one log line per step.
    pub quiet: bool,
}

/// A training run in progress.
pub struct Trainer {
    config: TrainConfig,
    run: RunDir,
    inputs: RunInputs,
    model: LoadedModel,
    reference: Option<Policy>,
    stop_sequences: Vec<String>,
    params: BTreeMap<String, Var>,
    optimizer: AdamW,
    schedule: LrSchedule,
    step: u64,
    /// Questions drawn so far (the data cursor; dynamic sampling may draw more than a batch).
    cursor: u64,
    plugin_errors_total: u64,
    guards: Guards,
    /// Where rollouts and validation are sampled.
    generation: Generation,
    /// The step of the policy the inference server holds (None: not loaded by this process).
    server_step: Option<u64>,
}

/// One micro-batch of the update, prepared before the first optimiser step.
struct MicroBatch {
    batch: PaddedBatch,
    mask: Vec<Vec<f32>>,
    advantages: Vec<f32>,
    /// Log-probs under the sampling weights (filled on first use for the first mini-batch).
    old: Option<Tensor>,
    reference: Option<Tensor>,
}

/// What an update did.
#[derive(Debug, Clone, Copy, Default)]
struct Update {
    /// Loss sums over the micro-batches.
    stats: LossStats,
    /// The last optimiser step's gradient norm.
    grad_norm: f64,
    /// The largest |ratio − 1| seen.
    max_ratio_dev: f64,
    /// The last learning rate.
    lr: f64,
    /// Sequences run through forward/backward.
    sequences_trained: usize,
    /// Sequences in the loss that added nothing and were not run.
    sequences_skipped: usize,
    /// Generated tokens of the sequences run.
    tokens_trained: usize,
}

/// Which groups of a step were drawn and trained.
#[derive(Debug, Clone, Copy, Default)]
struct Selection {
    groups_drawn: usize,
    /// Groups whose every advantage is 0 (nothing to learn from the reward).
    zero_advantage_groups: usize,
    groups_trained: usize,
}

/// The groups and sequences a step's loss is taken over: with dynamic sampling only the
/// first `batch` groups whose rewards differ; within a group, the rollouts that did not fail
/// and sampled something (and, with overlong filtering, were not cut by the budget).
fn trained_groups<'a>(
    trajectories: &'a [Trajectory],
    batch: usize,
    g: &super::config::GrpoSection,
) -> Vec<Vec<&'a Trajectory>> {
    let mut trained: Vec<Vec<&Trajectory>> = Vec::new();
    for group in trajectories.chunk_by(|a, b| a.group == b.group) {
        if g.dynamic_sampling && (!informative(&group_rewards(group)) || trained.len() >= batch) {
            continue;
        }
        let kept: Vec<&Trajectory> = group
            .iter()
            .filter(|t| t.error.is_none() && t.generated_tokens() > 0)
            .filter(|t| !(g.overlong_filter && t.finish == Finish::Length.to_string()))
            .collect();
        if !kept.is_empty() {
            trained.push(kept);
        }
    }
    trained
}

/// The rewards of a group, None for failed rollouts.
fn group_rewards(group: &[Trajectory]) -> Vec<Option<f64>> {
    group
        .iter()
        .map(|t| if t.error.is_some() { None } else { t.reward })
        .collect()
}

/// Seconds per part of a step.
#[derive(Debug, Clone, Copy, Default)]
struct StepTimes {
    rollout: RolloutTimes,
    forward_backward: f64,
    optimizer: f64,
    weight_sync: f64,
}

/// The rollout knobs of a config: sampled groups for training, one greedy rollout per
/// question for validation.
pub fn rollout_settings(config: &TrainConfig, greedy: bool) -> RolloutSettings {
    let r = &config.rollout;
    RolloutSettings {
        group_size: if greedy { 1 } else { r.group_size },
        sampling: SamplingParams {
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            greedy: greedy || r.temperature == 0.0,
        },
        max_response_tokens: r.max_response_tokens,
        max_turns: r.max_turns,
        max_obs_tokens: r.max_obs_tokens,
        top_k: config.retrieval.top_k,
    }
}

/// What a run starts from: the initial model, or its newest checkpoint's weights, AdamW
/// moments and state.
pub(crate) struct Restored {
    pub model: LoadedModel,
    /// The trainable variables by name.
    pub params: BTreeMap<String, Var>,
    pub optimizer: AdamW,
    /// The checkpoint's state (None for a fresh start).
    pub state: Option<TrainerState>,
}

/// Loads the model to train from `model_dir`, or, when `resume`, from the newest checkpoint of
/// `run` that verifies (its files match the checksums in its state, its weights and optimiser
/// moments load), saying which newer ones it skipped and why. Refused when the checkpoint's
/// seed is not the config's, or when the run has checkpoints and none of them verifies.
pub(crate) fn restore(
    config: &TrainConfig,
    model_dir: &Path,
    run: &RunDir,
    resume: bool,
) -> Result<Restored> {
    let device = config.model.device.open()?;
    let dtype = config.model.dtype.dtype();
    let candidates = if resume {
        run.resume_candidates()?
    } else {
        Vec::new()
    };
    let mut skipped = Vec::new();
    for (_, dir) in &candidates {
        let state = match RunDir::verify_checkpoint(dir) {
            Ok(state) => state,
            Err(e) => {
                skipped.push(format!("{}: {e:#}", dir.display()));
                continue;
            }
        };
        if state.seed != config.run.seed {
            bail!(
                "the checkpoint was made with seed {} but the config says {}",
                state.seed,
                config.run.seed
            );
        }
        let loaded = load_model(&dir.join("model"), dtype, &device).and_then(|model| {
            let params = trainable_params(&model);
            let optimizer = AdamW::load(
                config.optim.adamw(),
                &dir.join("optimizer.safetensors"),
                &params,
            )?;
            Ok((model, params, optimizer))
        });
        match loaded {
            Ok((model, params, optimizer)) => {
                for reason in &skipped {
                    eprintln!("warning: skipped the damaged checkpoint {reason}");
                }
                return Ok(Restored {
                    model,
                    params,
                    optimizer,
                    state: Some(state),
                });
            }
            Err(e) => skipped.push(format!("{}: cannot load it: {e:#}", dir.display())),
        }
    }
    if !skipped.is_empty() {
        bail!(
            "no checkpoint of {} can be resumed from:\n  {}",
            run.root.display(),
            skipped.join("\n  ")
        );
    }
    let model = load_model(model_dir, dtype, &device)?;
    let params = trainable_params(&model);
    Ok(Restored {
        model,
        params,
        optimizer: AdamW::new(config.optim.adamw()),
        state: None,
    })
}

/// The trainable variables of a loaded model, by name.
fn trainable_params(model: &LoadedModel) -> BTreeMap<String, Var> {
    let data = model
        .policy
        .vars()
        .data()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The folder the policy is written to for the inference server: `rollout.engine_weights`,
/// else RUN/engine-weights.
fn engine_weights_dir(config: &TrainConfig, run: &RunDir) -> PathBuf {
    config
        .rollout
        .engine_weights
        .clone()
        .unwrap_or_else(|| run.root.join("engine-weights"))
}

/// Refuses an engine-weights folder that is, holds or lies inside the initial model's folder
/// or the run's checkpoints: the host replaces that folder, whole, with every new policy.
fn refuse_shared_weights_folder(folder: &Path, model_dir: &Path, run: &RunDir) -> Result<()> {
    let resolve = |p: &Path| {
        p.canonicalize().unwrap_or_else(|_| {
            super::config::lexically_normal(&std::path::absolute(p).unwrap_or(p.to_path_buf()))
        })
    };
    let target = resolve(folder);
    let overlaps = |other: &Path| {
        let other = resolve(other);
        target.starts_with(&other) || other.starts_with(&target)
    };
    if overlaps(model_dir) || overlaps(&run.checkpoints()) {
        bail!(
            "rollout.engine_weights ({}) overlaps the model folder ({}) or the run's checkpoints: \
             the host replaces that folder with every new policy; give the server a folder of its \
             own (for vLLM, copy the initial model there and start vLLM on it)",
            folder.display(),
            model_dir.display()
        );
    }
    Ok(())
}

/// Derives a seed from the run seed and two counters (splitmix64 over the mix).
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Trainer {
    /// Starts a run in `run`: fresh, or from its newest checkpoint when `resume` (a run folder
    /// without a checkpoint starts over).
    pub fn start(
        config: TrainConfig,
        inputs: RunInputs,
        run: RunDir,
        resume: bool,
    ) -> Result<Trainer> {
        config.validate()?;
        let Restored {
            model,
            params,
            optimizer,
            state,
        } = restore(&config, &inputs.model_dir, &run, resume)?;
        let reference = if config.grpo.kl_coef != 0.0 {
            let device = config.model.device.open()?;
            let dtype = config.model.dtype.dtype();
            Some(load_model(&inputs.model_dir, dtype, &device)?.policy)
        } else {
            None
        };
        let updates_per_step = config.grpo.ppo_epochs as u64 * mini_batches(&config) as u64;
        let total_updates = config.run.steps * updates_per_step;
        let schedule = LrSchedule::new(
            config.optim.lr,
            config.optim.warmup_ratio,
            total_updates,
            config.optim.schedule,
        );
        let parser = inputs
            .plugins
            .parser
            .as_ref()
            .context("no parser plugin loaded")?;
        let stop_sequences = parser.stop_sequences()?;
        let step = state.as_ref().map_or(0, |s| s.step);
        let cursor = state.as_ref().map_or(0, |s| s.data_cursor);
        let config_guards = config.guards.clone();
        if resume {
            run.reset_metrics_after(state.as_ref().map(|s| s.step))?;
        }
        if config.rollout.backend.loads_weights() {
            let folder = engine_weights_dir(&config, &run);
            refuse_shared_weights_folder(&folder, &inputs.model_dir, &run)?;
        }
        let generation = config.rollout.generation()?;
        Ok(Trainer {
            config,
            run,
            inputs,
            model,
            reference,
            stop_sequences,
            params,
            optimizer,
            schedule,
            step,
            cursor,
            plugin_errors_total: 0,
            guards: Guards::new(config_guards),
            generation,
            server_step: None,
        })
    }

    /// The folder the policy is written to for the inference server.
    pub fn engine_weights_dir(&self) -> PathBuf {
        engine_weights_dir(&self.config, &self.run)
    }

    /// Brings the inference server's weights up to the current policy when they are
    /// `rollout.sync_every` or more steps behind, when this process has not loaded them yet
    /// (a fresh start or a resume: whatever the server holds is not trusted), or when `exact`
    /// and they differ at all. The policy is written to the engine-weights folder (replaced
    /// atomically) and the server loads it; an error leaves `server_step` as it was, so the
    /// next call tries again. Returns the seconds spent.
    fn sync_server(&mut self, exact: bool) -> Result<f64> {
        let Generation::Server(server) = &self.generation else {
            return Ok(0.0);
        };
        let due = match self.server_step {
            None => true,
            Some(loaded) if exact => loaded != self.step,
            Some(loaded) => self.step - loaded >= self.config.rollout.sync_every,
        };
        if !due {
            return Ok(0.0);
        }
        let started = Instant::now();
        let folder = self.engine_weights_dir();
        crate::model::save_checkpoint(&self.model.policy, &self.inputs.model_dir, &folder)
            .with_context(|| {
                format!(
                    "cannot write the policy for the server to {}",
                    folder.display()
                )
            })?;
        server.load_weights(&folder).with_context(|| {
            format!(
                "the {} server at {} did not load the policy of step {} from {}",
                server.backend(),
                server.url(),
                self.step,
                folder.display()
            )
        })?;
        self.server_step = Some(self.step);
        Ok(started.elapsed().as_secs_f64())
    }

    /// Steps completed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The policy being trained.
    pub fn policy(&self) -> &Policy {
        &self.model.policy
    }

    /// Runs until `run.steps`, with validation and checkpoints as configured. Returns the
    /// first and the last validation of this call (when it validated at least once).
    pub fn run(&mut self, report: ReportOptions) -> Result<Option<(Validation, Validation)>> {
        let total = self.config.run.steps;
        let bar = progress_bar(total, self.step, report.quiet);
        let every_val = self.config.validation.every;
        let mut first: Option<Validation> = None;
        let mut latest: Option<Validation> = None;
        if self.step == 0 && every_val > 0 && !self.inputs.validation.is_empty() {
            self.sync_server(true)?;
            let validation = self.validate()?;
            self.run
                .append_metrics(&MetricsLine::Validation(ValidationMetrics {
                    step: 0,
                    validation,
                }))?;
            log_line(&bar, &format!("step 0: validation {}", validation.brief()));
            first = Some(validation);
        }
        while self.step < total {
            let mut metrics = self.train_step()?;
            let step = self.step;
            let last = step == total;
            if every_val > 0
                && (step.is_multiple_of(every_val) || last)
                && !self.inputs.validation.is_empty()
            {
                metrics.time.weight_sync += self.sync_server(true)?;
                let validation = self.validate()?;
                first.get_or_insert(validation);
                latest = Some(validation);
                metrics.validation = Some(validation);
            }
            let alarms = self
                .guards
                .observe(&step_health(&metrics, self.reference.is_some()));
            metrics.alarms = alarms.iter().map(|a| a.to_string()).collect();
            let line = brief_step(&metrics, total);
            let reward = metrics.reward_mean;
            self.run
                .append_metrics(&MetricsLine::GrpoStep(Box::new(metrics)))?;
            let every_ckpt = self.config.checkpoint.every;
            let stop = !alarms.is_empty() && self.guards.stops();
            if last || stop || (every_ckpt > 0 && step.is_multiple_of(every_ckpt)) {
                self.save_checkpoint()?;
            }
            for alarm in &alarms {
                log_line(&bar, &format!("warning: step {step}: {alarm}"));
            }
            if stop {
                bar.finish_and_clear();
                bail!(
                    "stopped after step {step} by the collapse guards (guards.stop = true): {}; \
                     its checkpoint is {}",
                    alarms
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    self.run.checkpoint(step).display()
                );
            }
            bar.set_position(step);
            bar.set_message(format!("reward {reward:.3}"));
            if report.quiet || bar.is_hidden() {
                eprintln!("{line}");
            }
        }
        bar.finish_and_clear();
        Ok(first.zip(latest.or(first)))
    }

    /// The `count` questions after the first `cursor` drawn: the cursor walks a fresh seeded
    /// permutation every epoch.
    fn draw(&self, cursor: u64, count: usize) -> Vec<usize> {
        let n = self.inputs.train.examples.len();
        let mut order_epoch = u64::MAX;
        let mut order: Vec<usize> = Vec::new();
        (0..count as u64)
            .map(|k| {
                let global = cursor + k;
                let epoch = global / n as u64;
                if epoch != order_epoch {
                    order = (0..n).collect();
                    if self.config.data.shuffle {
                        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                            self.config.run.seed,
                            0xDA7A,
                            epoch,
                        ));
                        order.shuffle(&mut rng);
                    }
                    order_epoch = epoch;
                }
                order[(global % n as u64) as usize]
            })
            .collect()
    }

    /// The rollout machinery over the current policy.
    fn episodes(&self) -> Episodes<'_> {
        Episodes {
            model: (&self.model).into(),
            generation: &self.generation,
            plugins: &self.inputs.plugins,
            stop_sequences: &self.stop_sequences,
        }
    }

    /// Rolls out and scores `examples` (indices into `set`) as groups `first_group`, … ; group
    /// g's seed derives from (seed, `seed_step`, g).
    fn rollouts(
        &self,
        examples: &[usize],
        first_group: usize,
        seed_step: u64,
        times: &mut StepTimes,
        errors: &mut Vec<String>,
    ) -> Result<Vec<Trajectory>> {
        let seed = self.config.run.seed;
        let mut trajectories = self.episodes().run(
            &self.inputs.train.examples,
            examples,
            &self.rollout_settings(false),
            |group| derive_seed(seed, seed_step, (first_group + group) as u64),
            &mut times.rollout,
            errors,
        )?;
        for t in &mut trajectories {
            t.group += first_group;
        }
        Ok(trajectories)
    }

    fn rollout_settings(&self, greedy: bool) -> RolloutSettings {
        rollout_settings(&self.config, greedy)
    }

    /// One training step; returns its metrics.
    pub fn train_step(&mut self) -> Result<GrpoStepMetrics> {
        let started = Instant::now();
        let step = self.step + 1;
        let batch = self.config.rollout.batch_prompts;
        let g = self.config.grpo.clone();
        let max_batches = if g.dynamic_sampling {
            g.dynamic_sampling_max_batches
        } else {
            1
        };
        let mut times = StepTimes {
            weight_sync: self.sync_server(false)?,
            ..StepTimes::default()
        };
        // The samples come from the server's weights, `lag` steps behind the policy.
        let sampler_lag = self.server_step.map(|loaded| self.step - loaded);
        let mut errors = Vec::new();
        let mut trajectories: Vec<Trajectory> = Vec::new();
        let mut informative_groups = 0;
        for draw in 0..max_batches {
            let examples = self.draw(self.cursor, batch);
            self.cursor += batch as u64;
            let mut drawn =
                self.rollouts(&examples, draw * batch, step, &mut times, &mut errors)?;
            self.score_groups(&mut drawn);
            informative_groups += drawn
                .chunk_by(|a, b| a.group == b.group)
                .filter(|group| informative(&group_rewards(group)))
                .count();
            trajectories.append(&mut drawn);
            if !g.dynamic_sampling || informative_groups >= batch {
                break;
            }
        }
        for error in &errors {
            tracing::warn!("step {step}: plugin error (rollout left out of the loss): {error}");
        }
        self.plugin_errors_total += errors.len() as u64;

        let trained = trained_groups(&trajectories, batch, &g);
        let selection = Selection {
            groups_drawn: trajectories.chunk_by(|a, b| a.group == b.group).count(),
            zero_advantage_groups: trajectories
                .chunk_by(|a, b| a.group == b.group)
                .filter(|group| group.iter().all(|t| t.advantage == 0.0))
                .count(),
            groups_trained: trained.len(),
        };
        let update = self.update(&trained, &mut times)?;
        self.step = step;
        if self.config.logging.trajectories {
            self.run
                .write_jsonl(&self.run.trajectories("step", step), &trajectories)?;
        }
        let total = started.elapsed().as_secs_f64();
        let mut metrics = self.step_metrics(
            step,
            &trajectories,
            &update,
            &selection,
            errors.len(),
            &times,
            total,
        );
        metrics.sampler_lag = sampler_lag;
        Ok(metrics)
    }

    /// Applies the soft overlong penalty to the rewards and sets the group advantages.
    fn score_groups(&self, trajectories: &mut [Trajectory]) {
        let g = &self.config.grpo;
        if g.overlong_buffer > 0 {
            for t in trajectories.iter_mut() {
                if let Some(reward) = t.reward.as_mut() {
                    let penalty = overlong_penalty(
                        t.response_ids.len(),
                        self.config.rollout.max_response_tokens,
                        g.overlong_buffer,
                        g.overlong_penalty,
                    );
                    *reward += penalty;
                    t.components.push(("overlong_penalty".into(), penalty));
                }
            }
        }
        for group in trajectories.chunk_by_mut(|a, b| a.group == b.group) {
            let advantages = group_advantages(&group_rewards(group), g.advantage);
            for (t, a) in group.iter_mut().zip(advantages) {
                t.advantage = a;
            }
        }
    }

    /// The policy update on the trained groups of one step.
    fn update(&mut self, groups: &[Vec<&Trajectory>], times: &mut StepTimes) -> Result<Update> {
        // The forwards, backwards and updates run on a rayon worker (see `model::worker`).
        crate::model::on_worker(|| self.update_on_worker(groups, times))
    }

    fn update_on_worker(
        &mut self,
        groups: &[Vec<&Trajectory>],
        times: &mut StepTimes,
    ) -> Result<Update> {
        let started = Instant::now();
        let g = &self.config.grpo;
        let settings = LossSettings {
            clip_low: g.clip_low,
            clip_high: g.clip_high,
            kl_coef: g.kl_coef,
            entropy_coef: g.entropy_coef,
            aggregation: g.loss_aggregation,
            importance: g.importance_sampling,
        };
        // A sequence adds nothing to the gradient when its advantage is 0 and there is no KL
        // or entropy term; skipped, it still counts in its mini-batch's normaliser.
        let adds_nothing = |t: &Trajectory| {
            g.skip_zero_contribution
                && t.advantage == 0.0
                && g.kl_coef == 0.0
                && g.entropy_coef == 0.0
        };
        // Mini-batches of whole groups; within them, micro-batches of the sequences run.
        let per_mini = g
            .mini_batch_prompts
            .unwrap_or(self.config.rollout.batch_prompts);
        let mut update = Update::default();
        // (the mini-batch's place among the step's planned ones, its normaliser, its
        // micro-batches)
        let mut minis: Vec<(usize, LossScale, Vec<Vec<&Trajectory>>)> = Vec::new();
        for (place, chunk) in groups.chunks(per_mini.max(1)).enumerate() {
            let kept: Vec<&Trajectory> = chunk.iter().flatten().copied().collect();
            let scale = LossScale {
                tokens: kept.iter().map(|t| t.generated_tokens()).sum(),
                sequences: kept.len(),
                max_response_tokens: self.config.rollout.max_response_tokens,
            };
            let run: Vec<&Trajectory> = kept.into_iter().filter(|t| !adds_nothing(t)).collect();
            update.sequences_skipped += scale.sequences - run.len();
            update.sequences_trained += run.len();
            update.tokens_trained += run.iter().map(|t| t.generated_tokens()).sum::<usize>();
            if run.is_empty() {
                continue;
            }
            minis.push((
                place,
                scale,
                run.chunks(g.micro_batch_sequences)
                    .map(|c| c.to_vec())
                    .collect(),
            ));
        }
        let pad = self.model.tokenizer.eos_ids().first().copied().unwrap_or(0);
        // Log-probs of the policy that sampled: logits divided by the sampling temperature.
        let temperature = match self.config.rollout.temperature {
            t if t > 0.0 => t,
            _ => 1.0,
        };
        let device = self.model.policy.device().clone();
        // Old log-probs come from the weights that sampled the rollouts. The first
        // mini-batch is scored before any update of this step, so its old log-probs are its
        // first forward's, detached (exactly: the ratio is 1 there); the others are computed
        // now, before the first update. Reference log-probs (k3 KL) likewise, up front.
        let mut prepared: Vec<(usize, LossScale, Vec<MicroBatch>)> = Vec::new();
        for (m, (place, scale, mini)) in minis.iter().enumerate() {
            let mut micro_batches = Vec::new();
            for micro in mini {
                let sequences: Vec<Vec<u32>> = micro.iter().map(|t| t.full_ids()).collect();
                let batch = PaddedBatch::new(&sequences, pad, &device)?;
                let width = batch.ids.dim(1)? - 1;
                let mask: Vec<Vec<f32>> = micro
                    .iter()
                    .map(|t| {
                        let mut m = t.logprob_mask();
                        m.resize(width, 0.0);
                        m
                    })
                    .collect();
                let advantages: Vec<f32> = micro.iter().map(|t| t.advantage as f32).collect();
                let old = if m == 0 {
                    None
                } else {
                    Some(
                        self.model
                            .policy
                            .token_stats_tempered(&batch, temperature)?
                            .logprobs
                            .detach(),
                    )
                };
                let reference = match &self.reference {
                    Some(reference) => Some(
                        reference
                            .token_stats_tempered(&batch, temperature)?
                            .logprobs
                            .detach(),
                    ),
                    None => None,
                };
                micro_batches.push(MicroBatch {
                    batch,
                    mask,
                    advantages,
                    old,
                    reference,
                });
            }
            prepared.push((*place, *scale, micro_batches));
        }
        times.forward_backward += started.elapsed().as_secs_f64();

        let mut stats = LossStats::default();
        let mut grad_norm = 0.0;
        let mut max_ratio_dev = 0.0f64;
        // The rate follows the planned updates of the run (steps × epochs × mini-batches), so
        // a mini-batch without a step (nothing left to run, or fewer groups under dynamic
        // sampling) does not shift the schedule. A mini-batch with every sequence skipped
        // takes no optimiser step: AdamW's momentum and weight decay would move the weights on
        // a zero gradient.
        let planned = mini_batches(&self.config) as u64;
        let first_update = self.step * self.config.grpo.ppo_epochs as u64 * planned;
        let mut lr = self.schedule.at(first_update);
        for epoch in 0..self.config.grpo.ppo_epochs {
            for (place, scale, micro_batches) in &mut prepared {
                let started = Instant::now();
                let scale = *scale;
                let update_index = first_update + epoch as u64 * planned + *place as u64;
                let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
                for micro in micro_batches.iter_mut() {
                    let current = self
                        .model
                        .policy
                        .token_stats_tempered(&micro.batch, temperature)?;
                    let old = micro
                        .old
                        .get_or_insert_with(|| current.logprobs.detach())
                        .clone();
                    let inputs = LossInputs {
                        logprobs: &current.logprobs,
                        entropy: &current.entropy,
                        old_logprobs: &old,
                        ref_logprobs: micro.reference.as_ref(),
                        mask: &micro.mask,
                        advantages: &micro.advantages,
                    };
                    let (loss, micro_stats) = policy_loss(&inputs, &settings, &scale)?;
                    max_ratio_dev =
                        max_ratio_dev.max(max_deviation(&current.logprobs, &old, &micro.mask)?);
                    stats.add(&micro_stats);
                    let store = loss.backward()?;
                    for (name, var) in &self.params {
                        if let Some(grad) = store.get(var.as_tensor()) {
                            crate::kernels::inplace::accumulate(&mut grads, name, grad)?;
                        }
                    }
                }
                grad_norm = clip_grad_norm(&mut grads, self.config.optim.grad_clip)?;
                times.forward_backward += started.elapsed().as_secs_f64();
                let started = Instant::now();
                lr = self.schedule.at(update_index);
                if grad_norm.is_finite() {
                    self.optimizer.step(&self.params, &grads, lr)?;
                } else {
                    tracing::warn!("skipping an update: the gradient norm is {grad_norm}");
                }
                times.optimizer += started.elapsed().as_secs_f64();
            }
        }
        update.stats = stats;
        update.grad_norm = grad_norm;
        update.max_ratio_dev = max_ratio_dev;
        update.lr = lr;
        Ok(update)
    }

    /// Greedy rollouts on the held-out questions: EM, F1, mean reward.
    pub fn validate(&self) -> Result<Validation> {
        let chunk = (self.config.rollout.batch_prompts * self.config.rollout.group_size).max(1);
        let (validation, rollouts) = validate(
            &self.episodes(),
            &self.inputs.validation,
            &self.rollout_settings(true),
            self.config.validation.limit,
            chunk,
            self.config.grpo.error_reward,
        )?;
        if self.config.logging.trajectories {
            self.run
                .write_jsonl(&self.run.trajectories("validation", self.step), &rollouts)?;
        }
        Ok(validation)
    }

    /// Writes a checkpoint of the current step (atomic; the last K kept).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = TrainerState {
            step: self.step,
            data_cursor: self.cursor,
            optimizer_steps: self.optimizer.steps_taken(),
            seed: self.config.run.seed,
        };
        self.run.save_checkpoint(
            &self.model.policy,
            &self.inputs.model_dir,
            &self.optimizer,
            &state,
            self.config.checkpoint.keep_last,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn step_metrics(
        &self,
        step: u64,
        trajectories: &[Trajectory],
        update: &Update,
        selection: &Selection,
        plugin_errors: usize,
        times: &StepTimes,
        total: f64,
    ) -> GrpoStepMetrics {
        let stats = &update.stats;
        let n = trajectories.len().max(1) as f64;
        let rewards: Vec<f64> = trajectories
            .iter()
            .map(|t| t.reward.unwrap_or(self.config.grpo.error_reward))
            .collect();
        let mean = rewards.iter().sum::<f64>() / n;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        let mut components: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for t in trajectories {
            for (name, value) in &t.components {
                let entry = components.entry(name.clone()).or_default();
                entry.0 += value;
                entry.1 += 1.0;
            }
        }
        let reward_components = components
            .into_iter()
            .map(|(k, (sum, count))| (k, sum / count))
            .collect();
        let mut finishes: BTreeMap<String, u64> = BTreeMap::new();
        for t in trajectories {
            let key = if t.finish.starts_with("stop:") {
                "stop".to_string()
            } else {
                t.finish.clone()
            };
            *finishes.entry(key).or_default() += 1;
        }
        let response_tokens: usize = trajectories.iter().map(|t| t.response_ids.len()).sum();
        let generated: usize = trajectories.iter().map(Trajectory::generated_tokens).sum();
        let searches: usize = trajectories.iter().map(|t| t.queries.len()).sum();
        let epoch = self.cursor as f64 / self.inputs.train.examples.len().max(1) as f64;
        GrpoStepMetrics {
            step,
            epoch,
            lr: update.lr,
            reward_mean: mean,
            reward_std: std,
            reward_components,
            response_length: response_tokens as f64 / n,
            generated_tokens: generated as f64 / n,
            searches_per_rollout: searches as f64 / n,
            finish: finishes,
            plugin_errors,
            rollouts: trajectories.len(),
            kl: stats.mean(stats.kl),
            entropy: stats.mean(stats.entropy),
            pg_loss: stats.mean(stats.pg_loss),
            clip_fraction: stats.mean(stats.clipped),
            ratio_mean: stats.mean(stats.ratio),
            ratio_max_deviation: update.max_ratio_dev,
            grad_norm: update.grad_norm,
            groups_drawn: selection.groups_drawn,
            zero_advantage_share: selection.zero_advantage_groups as f64
                / selection.groups_drawn.max(1) as f64,
            groups_trained: selection.groups_trained,
            sequences_trained: update.sequences_trained,
            sequences_skipped: update.sequences_skipped,
            tokens_trained: update.tokens_trained,
            tokens_per_s: generated as f64 / times.rollout.generation.max(1e-9),
            sampler_lag: None,
            time: GrpoStepTimes {
                generation: times.rollout.generation,
                retrieval: times.rollout.retrieval,
                plugins: times.rollout.plugins,
                forward_backward: times.forward_backward,
                optimizer: times.optimizer,
                weight_sync: times.weight_sync,
                total,
            },
            validation: None,
            alarms: Vec::new(),
        }
    }
}

/// What the collapse guards read from a step's metrics: entropy and KL only when an update
/// ran (and KL only with a reference), the share of rollouts cut at the token budget.
fn step_health(m: &GrpoStepMetrics, has_reference: bool) -> StepHealth {
    let updated = m.sequences_trained > 0;
    let rollouts = m.rollouts.max(1) as f64;
    StepHealth {
        entropy: m.entropy.filter(|_| updated),
        kl: m.kl.filter(|_| updated && has_reference),
        truncated_share: m.finish.get("length").copied().unwrap_or(0) as f64 / rollouts,
    }
}

/// Largest |exp(logp − old) − 1| over kept tokens.
fn max_deviation(logprobs: &Tensor, old: &Tensor, mask: &[Vec<f32>]) -> Result<f64> {
    let current = logprobs.detach().to_vec2::<f32>()?;
    let old = old.to_vec2::<f32>()?;
    let mut max = 0.0f64;
    for (row, m) in mask.iter().enumerate() {
        for (col, &keep) in m.iter().enumerate() {
            if keep > 0.0 {
                let r = ((current[row][col] - old[row][col]) as f64).exp();
                max = max.max((r - 1.0).abs());
            }
        }
    }
    Ok(max)
}

/// Mini-batches per step.
fn mini_batches(config: &TrainConfig) -> usize {
    let per = config
        .grpo
        .mini_batch_prompts
        .unwrap_or(config.rollout.batch_prompts)
        .max(1);
    config.rollout.batch_prompts.div_ceil(per)
}

pub(crate) fn progress_bar(total: u64, position: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{elapsed_precise}] {wide_bar} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(position);
    bar
}

pub(crate) fn log_line(bar: &indicatif::ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn brief_step(m: &GrpoStepMetrics, total: u64) -> String {
    // Entropy and KL exist only when a sequence was trained.
    let trained = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "–".to_string(),
    };
    let t = &m.time;
    let mut line = format!(
        "step {}/{total}: reward {:.3} ± {:.3}, length {:.0}, searches {:.2}, kl {}, entropy {}, grad norm {:.3}, {:.1} s (generation {:.1}, retrieval {:.2}, plugins {:.2}, forward/backward {:.1})",
        m.step,
        m.reward_mean,
        m.reward_std,
        m.response_length,
        m.searches_per_rollout,
        trained(m.kl, 5),
        trained(m.entropy, 3),
        m.grad_norm,
        t.total,
        t.generation,
        t.retrieval,
        t.plugins,
        t.forward_backward,
    );
    if let Some(validation) = &m.validation {
        line.push_str(&format!("; validation {}", validation.brief()));
    }
    if m.plugin_errors > 0 {
        line.push_str(&format!("; {} plugin errors", m.plugin_errors));
    }
    line
}

/// A fresh output folder: runs/<prefix>-<unix seconds>.
pub fn timestamped_run_dir(prefix: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Path::new("runs").join(format!("{prefix}-{secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpo::config::GrpoSection;

    fn rollout(group: usize, reward: f64, finish: &str) -> Trajectory {
        Trajectory {
            group,
            example: group,
            id: format!("q{group}"),
            sample: 0,
            question: String::new(),
            golden_answers: vec![],
            prompt_text: String::new(),
            prompt_ids: vec![1],
            response_ids: vec![2, 3],
            loss_mask: vec![1, 1],
            segments: vec![],
            response_text: String::new(),
            queries: vec![],
            answer: None,
            finish: finish.into(),
            turns: 0,
            error: None,
            reward: Some(reward),
            components: vec![],
            advantage: 0.0,
        }
    }

    #[test]
    fn dynamic_sampling_keeps_only_informative_groups_up_to_the_batch() {
        // Groups 0 and 2 are all-equal; 1, 3 and 4 differ.
        let rewards = [[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.1], [0.2, 0.3]];
        let trajectories: Vec<Trajectory> = rewards
            .iter()
            .enumerate()
            .flat_map(|(g, r)| r.iter().map(move |&r| rollout(g, r, "eos")))
            .collect();
        let plain = GrpoSection::default();
        assert_eq!(trained_groups(&trajectories, 2, &plain).len(), 5);
        let dynamic = GrpoSection {
            dynamic_sampling: true,
            ..GrpoSection::default()
        };
        let groups: Vec<usize> = trained_groups(&trajectories, 2, &dynamic)
            .iter()
            .map(|g| g[0].group)
            .collect();
        assert_eq!(groups, vec![1, 3]);
        for group in trained_groups(&trajectories, 5, &dynamic) {
            assert!(informative(
                &group.iter().map(|t| t.reward).collect::<Vec<_>>()
            ));
        }
    }

    #[test]
    fn overlong_filtering_drops_cut_responses() {
        let trajectories = vec![rollout(0, 0.0, "length"), rollout(0, 1.0, "eos")];
        let filter = GrpoSection {
            overlong_filter: true,
            ..GrpoSection::default()
        };
        let kept = trained_groups(&trajectories, 1, &filter);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].len(), 1);
        assert_eq!(kept[0][0].finish, "eos");
        assert_eq!(
            trained_groups(&trajectories, 1, &GrpoSection::default())[0].len(),
            2
        );
    }
}
