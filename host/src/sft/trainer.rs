//! The supervised fine-tuning loop: each step takes `sft.batch_sequences` trajectories of a
//! seeded per-epoch order, accumulates the masked cross-entropy gradient over micro-batches,
//! clips it and takes an AdamW step; validation runs the same greedy rollouts as
//! `host train`'s. Checkpoints hold the weights and AdamW moments and the order derives from
//! (seed, epoch), so a resumed run continues exactly as the uninterrupted one.

use super::data::SftExample;
use super::loss::{correct_tokens, sft_loss};
use crate::data::qa::QaExample;
use crate::grpo::TrainConfig;
use crate::grpo::optim::{AdamW, LrSchedule, clip_grad_norm};
use crate::grpo::run_dir::{RunDir, TrainerState};
use crate::grpo::trainer::{
    Restored, derive_seed, log_line, progress_bar, restore, rollout_settings,
};
use crate::model::{LoadedModel, PaddedBatch};
use crate::plugins::PluginSet;
use crate::rollout::validation::{Validation, validate};
use crate::rollout::{Episodes, Generation};
use crate::run_metrics::{MetricsLine, SftStepMetrics, SftStepTimes, ValidationMetrics};
use anyhow::{Context, Result, bail};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// What a warm start trains on.
pub struct SftInputs {
    /// The initial model's folder (also the tokenizer files of every checkpoint).
    pub model_dir: PathBuf,
    pub plugins: PluginSet,
    pub examples: Vec<SftExample>,
    /// Held-out questions for greedy validation rollouts.
    pub validation: Vec<QaExample>,
}

/// A warm start in progress.
pub struct SftTrainer {
    config: TrainConfig,
    run: RunDir,
    inputs: SftInputs,
    model: LoadedModel,
    stop_sequences: Vec<String>,
    params: BTreeMap<String, Var>,
    optimizer: AdamW,
    schedule: LrSchedule,
    step: u64,
}

impl SftTrainer {
    /// Starts in `run`: fresh, or from its newest checkpoint when `resume`.
    pub fn start(
        config: TrainConfig,
        inputs: SftInputs,
        run: RunDir,
        resume: bool,
    ) -> Result<SftTrainer> {
        config.validate()?;
        config.sft.validate()?;
        if inputs.examples.is_empty() {
            bail!("no trajectories to train on");
        }
        let Restored {
            model,
            params,
            optimizer,
            state,
        } = restore(&config, &inputs.model_dir, &run, resume)?;
        let step = state.as_ref().map_or(0, |s| s.step);
        let total = total_steps(inputs.examples.len(), &config);
        let schedule = LrSchedule::new(
            config.sft.lr,
            config.sft.warmup_ratio,
            total,
            config.sft.schedule,
        );
        let stop_sequences = inputs
            .plugins
            .parser
            .as_ref()
            .context("no parser plugin loaded")?
            .stop_sequences()?;
        if resume {
            run.reset_metrics_after(state.map(|s| s.step))?;
        }
        Ok(SftTrainer {
            config,
            run,
            inputs,
            model,
            stop_sequences,
            params,
            optimizer,
            schedule,
            step,
        })
    }

    /// Steps completed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Ends the warm start, giving back its plugins.
    pub fn into_plugins(self) -> PluginSet {
        self.inputs.plugins
    }

    /// Optimiser steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        total_steps(self.inputs.examples.len(), &self.config)
    }

    /// Runs to the last step, validating and checkpointing as configured. Returns the first
    /// and last validation (when there is any).
    pub fn run(&mut self, quiet: bool) -> Result<Option<(Validation, Validation)>> {
        let total = self.total_steps();
        let bar = progress_bar(total, self.step, quiet);
        let every_val = self.config.validation.every;
        let validates = every_val > 0 && !self.inputs.validation.is_empty();
        let mut first = None;
        let mut last = None;
        if self.step == 0 && validates {
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
            let is_last = step == total;
            if validates && (step.is_multiple_of(every_val) || is_last) {
                let validation = self.validate()?;
                metrics.validation = Some(validation);
                last = Some(validation);
            }
            let line = brief(&metrics, total);
            let message = format!(
                "loss {:.4} accuracy {:.3}",
                metrics.loss, metrics.token_accuracy
            );
            self.run.append_metrics(&MetricsLine::SftStep(metrics))?;
            let every_ckpt = self.config.checkpoint.every;
            if is_last || (every_ckpt > 0 && step.is_multiple_of(every_ckpt)) {
                self.save_checkpoint()?;
            }
            bar.set_position(step);
            bar.set_message(message);
            if quiet || bar.is_hidden() {
                eprintln!("{line}");
            }
        }
        bar.finish_and_clear();
        Ok(first.zip(last))
    }

    /// The examples of step `step` (1-based): a seeded permutation per epoch, cut into
    /// batches (the last of an epoch may be smaller).
    fn batch(&self, step: u64) -> Vec<usize> {
        let n = self.inputs.examples.len();
        let size = self.config.sft.batch_sequences;
        let per_epoch = n.div_ceil(size) as u64;
        let epoch = (step - 1) / per_epoch;
        let within = ((step - 1) % per_epoch) as usize;
        let mut order: Vec<usize> = (0..n).collect();
        if self.config.sft.shuffle {
            let mut rng =
                ChaCha8Rng::seed_from_u64(derive_seed(self.config.run.seed, 0x5F7, epoch));
            order.shuffle(&mut rng);
        }
        order[within * size..((within + 1) * size).min(n)].to_vec()
    }

    /// One optimiser step.
    pub fn train_step(&mut self) -> Result<SftStepMetrics> {
        let started = Instant::now();
        let step = self.step + 1;
        let batch = self.batch(step);
        let metrics = crate::model::on_worker(|| self.update(step, &batch))?;
        self.step = step;
        Ok(SftStepMetrics {
            time: SftStepTimes {
                total: started.elapsed().as_secs_f64(),
                ..metrics.time
            },
            tokens_per_s: metrics.tokens_per_s / started.elapsed().as_secs_f64().max(1e-9),
            ..metrics
        })
    }

    /// Forward/backward over the batch's micro-batches, clip, AdamW. `tokens_per_s` of the
    /// result holds the tokens processed; the caller divides by the step's time.
    fn update(&mut self, step: u64, batch: &[usize]) -> Result<SftStepMetrics> {
        let examples: Vec<&SftExample> = batch.iter().map(|&i| &self.inputs.examples[i]).collect();
        let batch_tokens: usize = examples.iter().map(|e| e.trained_tokens()).sum();
        let pad = self.model.tokenizer.eos_ids().first().copied().unwrap_or(0);
        let device = self.model.policy.device().clone();
        let started = Instant::now();
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let (mut loss_sum, mut correct, mut processed) = (0.0f64, 0usize, 0usize);
        for micro in examples.chunks(self.config.sft.micro_batch_sequences) {
            let sequences: Vec<Vec<u32>> = micro.iter().map(|e| e.ids.clone()).collect();
            processed += sequences.iter().map(Vec::len).sum::<usize>();
            let padded = PaddedBatch::new(&sequences, pad, &device)?;
            let width = padded.ids.dim(1)? - 1;
            let mask: Vec<Vec<f32>> = micro
                .iter()
                .map(|e| {
                    let mut m = e.mask.clone();
                    m.resize(width, 0.0);
                    m
                })
                .collect();
            let (stats, argmax) = self.model.policy.token_stats_and_argmax(&padded)?;
            correct += correct_tokens(&argmax, &padded.ids, &mask)?;
            let loss = sft_loss(&stats.logprobs, &mask, batch_tokens)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let store = loss.backward()?;
            for (name, var) in &self.params {
                if let Some(grad) = store.get(var.as_tensor()) {
                    crate::kernels::inplace::accumulate(&mut grads, name, grad)?;
                }
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, self.config.optim.grad_clip)?;
        let forward_backward = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let lr = self.schedule.at(self.optimizer.steps_taken());
        if grad_norm.is_finite() {
            self.optimizer.step(&self.params, &grads, lr)?;
        } else {
            tracing::warn!("step {step}: skipping the update, the gradient norm is {grad_norm}");
        }
        let n = self.inputs.examples.len();
        let size = self.config.sft.batch_sequences;
        let per_epoch = n.div_ceil(size) as f64;
        Ok(SftStepMetrics {
            step,
            epoch: step as f64 / per_epoch,
            loss: loss_sum,
            token_accuracy: correct as f64 / batch_tokens.max(1) as f64,
            tokens: batch_tokens,
            sequences: examples.len(),
            tokens_per_s: processed as f64,
            lr,
            grad_norm,
            time: SftStepTimes {
                forward_backward,
                optimizer: started.elapsed().as_secs_f64(),
                total: 0.0,
            },
            validation: None,
        })
    }

    /// Greedy rollouts of the held-out questions, as `host train` validates.
    pub fn validate(&self) -> Result<Validation> {
        let r = &self.config.rollout;
        let settings = rollout_settings(&self.config, true);
        // The warm start validates in process whatever rollout.backend says: its policy changes
        // every step and no server is told about it.
        let local = Generation::Local;
        let episodes = Episodes {
            model: (&self.model).into(),
            generation: &local,
            plugins: &self.inputs.plugins,
            stop_sequences: &self.stop_sequences,
        };
        let (validation, rollouts) = validate(
            &episodes,
            &self.inputs.validation,
            &settings,
            self.config.validation.limit,
            (r.batch_prompts * r.group_size).max(1),
            self.config.grpo.error_reward,
        )?;
        if self.config.logging.trajectories {
            self.run
                .write_jsonl(&self.run.trajectories("validation", self.step), &rollouts)?;
        }
        Ok(validation)
    }

    /// Trajectories trained on so far (each epoch's last batch may be smaller).
    fn examples_done(&self) -> u64 {
        let n = self.inputs.examples.len() as u64;
        let size = self.config.sft.batch_sequences as u64;
        let per_epoch = n.div_ceil(size).max(1);
        let (epochs, within) = (self.step / per_epoch, self.step % per_epoch);
        epochs * n + (within * size).min(n)
    }

    /// Writes the checkpoint of the current step; its `model/` folder is what `host train
    /// --model` and `host eval --model` take.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = TrainerState {
            step: self.step,
            data_cursor: self.examples_done(),
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
}

/// Optimiser steps of a run over `n` trajectories.
fn total_steps(n: usize, config: &TrainConfig) -> u64 {
    n.div_ceil(config.sft.batch_sequences.max(1)) as u64 * config.sft.epochs
}

fn brief(m: &SftStepMetrics, total: u64) -> String {
    let mut line = format!(
        "step {}/{total}: loss {:.4}, token accuracy {:.3}, {} tokens, lr {:.2e}, grad norm {:.3}, {:.0} tokens/s, {:.1} s",
        m.step, m.loss, m.token_accuracy, m.tokens, m.lr, m.grad_norm, m.tokens_per_s, m.time.total
    );
    if let Some(v) = &m.validation {
        line.push_str(&format!("; validation {}", v.brief()));
    }
    line
}
