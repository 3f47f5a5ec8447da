//! Validation: greedy rollouts of held-out questions, scored by answer EM / F1 and the reward
//! plugin. `host train` and `host sft` both validate through here, so their numbers compare.

use super::episodes::Episodes;
use super::runner::{RolloutSettings, RolloutTimes};
use super::trajectory::Trajectory;
use crate::data::qa::QaExample;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Means over the validation rollouts (one greedy rollout per question).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub val_questions: usize,
    pub val_em: f64,
    pub val_f1: f64,
    pub val_reward: f64,
    pub val_searches: f64,
    pub val_plugin_errors: usize,
}

/// The seed of validation rollouts (greedy decoding does not use it).
const VALIDATION_SEED: u64 = u64::MAX;

/// Rolls out the first `limit` questions of `set` (0: all) greedily, `chunk` questions at a
/// time, and scores them; a failed rollout counts `error_reward`. Returns the means and the
/// trajectories.
pub fn validate(
    episodes: &Episodes,
    set: &[QaExample],
    settings: &RolloutSettings,
    limit: usize,
    chunk: usize,
    error_reward: f64,
) -> Result<(Validation, Vec<Trajectory>)> {
    let limit = match limit {
        0 => set.len(),
        n => n.min(set.len()),
    };
    let greedy = RolloutSettings {
        group_size: 1,
        sampling: crate::model::SamplingParams {
            greedy: true,
            ..settings.sampling
        },
        ..settings.clone()
    };
    let mut times = RolloutTimes::default();
    let mut errors = Vec::new();
    let mut all = Vec::new();
    let indices: Vec<usize> = (0..limit).collect();
    for part in indices.chunks(chunk.max(1)) {
        let mut t = episodes.run(
            set,
            part,
            &greedy,
            |_| VALIDATION_SEED,
            &mut times,
            &mut errors,
        )?;
        all.append(&mut t);
    }
    Ok((summarise(&all, errors.len(), error_reward), all))
}

/// The means of scored rollouts.
pub fn summarise(rollouts: &[Trajectory], plugin_errors: usize, error_reward: f64) -> Validation {
    let n = rollouts.len().max(1) as f64;
    let (mut em, mut f1, mut reward, mut searches) = (0.0, 0.0, 0.0, 0.0);
    for t in rollouts {
        let answer = t.answer.clone().unwrap_or_default();
        em += qa_scoring::metrics::exact_match(&answer, &t.golden_answers);
        f1 += qa_scoring::metrics::f1(&answer, &t.golden_answers);
        reward += t.reward.unwrap_or(error_reward);
        searches += t.queries.len() as f64;
    }
    Validation {
        val_questions: rollouts.len(),
        val_em: em / n,
        val_f1: f1 / n,
        val_reward: reward / n,
        val_searches: searches / n,
        val_plugin_errors: plugin_errors,
    }
}

impl Validation {
    /// One line for logs.
    pub fn brief(&self) -> String {
        format!(
            "EM {:.3} F1 {:.3} reward {:.3} searches {:.2} over {} questions",
            self.val_em, self.val_f1, self.val_reward, self.val_searches, self.val_questions
        )
    }
}
