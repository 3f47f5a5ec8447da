//! Reads a run's `metrics.jsonl` into the series the charts draw.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One quantity over training steps: `(step, value)` in file order.
pub type Series = Vec<(f64, f64)>;

/// Everything `host report` draws from a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics {
    /// Training steps found (lines with `reward_mean`).
    pub steps: usize,
    pub reward: Series,
    pub reward_std: Series,
    /// Each reward component by name.
    pub components: BTreeMap<String, Series>,
    pub response_length: Series,
    pub searches: Series,
    pub kl: Series,
    pub entropy: Series,
    pub val_reward: Series,
    pub val_em: Series,
    pub val_f1: Series,
    pub val_searches: Series,
    /// Seconds per step.
    pub step_seconds: Series,
    /// Warm-start steps found (`host sft` lines, with `loss`).
    pub sft_steps: usize,
    pub sft_loss: Series,
    pub sft_token_accuracy: Series,
    /// The largest step of any line.
    pub last_step: f64,
}

impl RunMetrics {
    /// Reads `path`. A malformed line is an error naming it, except a last line without its
    /// newline (a run killed while writing), which is left out.
    pub fn read(path: &Path) -> Result<RunMetrics> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (is this a run folder written by `host train`?)",
                path.display()
            )
        })?;
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut metrics = RunMetrics::default();
        for (index, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(line) {
                Ok(value) => value,
                Err(_) if !complete && index + 1 == lines.len() => break,
                Err(error) => bail!(
                    "{}:{}: not a JSON object: {error}",
                    path.display(),
                    index + 1
                ),
            };
            let Some(object) = value.as_object() else {
                bail!("{}:{}: expected a JSON object", path.display(), index + 1);
            };
            let Some(step) = object.get("step").and_then(Value::as_f64) else {
                bail!(
                    "{}:{}: the line has no numeric \"step\"",
                    path.display(),
                    index + 1
                );
            };
            metrics.add(step, &value);
        }
        if metrics.steps == 0 && metrics.sft_steps == 0 && metrics.val_reward.is_empty() {
            bail!(
                "{} holds no training step or validation yet: nothing to report",
                path.display()
            );
        }
        Ok(metrics)
    }

    fn add(&mut self, step: f64, value: &Value) {
        let get = |key: &str| value.get(key).and_then(Value::as_f64);
        self.last_step = self.last_step.max(step);
        if let (None, Some(loss)) = (get("reward_mean"), get("loss")) {
            self.sft_steps += 1;
            self.sft_loss.push((step, loss));
            if let Some(accuracy) = get("token_accuracy") {
                self.sft_token_accuracy.push((step, accuracy));
            }
        }
        if let Some(reward) = get("reward_mean") {
            self.steps += 1;
            self.reward.push((step, reward));
            let push = |series: &mut Series, v: Option<f64>| {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    series.push((step, v));
                }
            };
            push(&mut self.reward_std, get("reward_std"));
            push(&mut self.response_length, get("response_length"));
            push(&mut self.searches, get("searches_per_rollout"));
            push(&mut self.kl, get("kl"));
            push(&mut self.entropy, get("entropy"));
            push(
                &mut self.step_seconds,
                value.pointer("/time/total").and_then(Value::as_f64),
            );
            if let Some(components) = value.get("reward_components").and_then(Value::as_object) {
                for (name, v) in components {
                    if let Some(v) = v.as_f64().filter(|v| v.is_finite()) {
                        self.components
                            .entry(name.clone())
                            .or_default()
                            .push((step, v));
                    }
                }
            }
        }
        if let Some(v) = get("val_reward") {
            self.val_reward.push((step, v));
            if let Some(em) = get("val_em") {
                self.val_em.push((step, em));
            }
            if let Some(f1) = get("val_f1") {
                self.val_f1.push((step, f1));
            }
            if let Some(s) = get("val_searches") {
                self.val_searches.push((step, s));
            }
        }
    }

    /// The same run with every step moved by `offset` (a GRPO run drawn after its warm start).
    pub fn shifted(&self, offset: f64) -> RunMetrics {
        let shift = |series: &Series| series.iter().map(|&(x, y)| (x + offset, y)).collect();
        RunMetrics {
            steps: self.steps,
            reward: shift(&self.reward),
            reward_std: shift(&self.reward_std),
            components: self
                .components
                .iter()
                .map(|(name, series)| (name.clone(), shift(series)))
                .collect(),
            response_length: shift(&self.response_length),
            searches: shift(&self.searches),
            kl: shift(&self.kl),
            entropy: shift(&self.entropy),
            val_reward: shift(&self.val_reward),
            val_em: shift(&self.val_em),
            val_f1: shift(&self.val_f1),
            val_searches: shift(&self.val_searches),
            step_seconds: shift(&self.step_seconds),
            sft_steps: self.sft_steps,
            sft_loss: shift(&self.sft_loss),
            sft_token_accuracy: shift(&self.sft_token_accuracy),
            last_step: self.last_step + offset,
        }
    }

    /// The last value of a series.
    pub fn last(series: &Series) -> Option<f64> {
        series.last().map(|&(_, v)| v)
    }

    /// The mean of the first and of the last `n` values of a series.
    pub fn first_last_mean(series: &Series, n: usize) -> Option<(f64, f64)> {
        if series.is_empty() {
            return None;
        }
        let n = n.clamp(1, series.len());
        let mean = |part: &[(f64, f64)]| part.iter().map(|p| p.1).sum::<f64>() / part.len() as f64;
        Some((mean(&series[..n]), mean(&series[series.len() - n..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn training_and_validation_lines_become_series() {
        let (_dir, path) = write(concat!(
            "{\"step\":0,\"val_reward\":0.1,\"val_em\":0.0,\"val_f1\":0.2,\"val_searches\":1.0}\n",
            "{\"step\":1,\"reward_mean\":0.5,\"reward_std\":0.1,\"kl\":0.0,\"entropy\":2.0,",
            "\"response_length\":30.0,\"searches_per_rollout\":1.5,",
            "\"reward_components\":{\"f1\":0.4,\"format\":1.0},\"time\":{\"total\":2.5}}\n",
            "{\"step\":2,\"reward_mean\":0.7,\"kl\":0.01,\"entropy\":1.9,\"val_reward\":0.3,",
            "\"reward_components\":{\"f1\":0.6}}\n",
        ));
        let m = RunMetrics::read(&path).unwrap();
        assert_eq!(m.steps, 2);
        assert_eq!(m.reward, vec![(1.0, 0.5), (2.0, 0.7)]);
        assert_eq!(m.val_reward, vec![(0.0, 0.1), (2.0, 0.3)]);
        assert_eq!(m.components["f1"], vec![(1.0, 0.4), (2.0, 0.6)]);
        assert_eq!(m.components["format"], vec![(1.0, 1.0)]);
        assert_eq!(m.step_seconds, vec![(1.0, 2.5)]);
        assert_eq!(m.response_length, vec![(1.0, 30.0)]);
        assert_eq!(RunMetrics::first_last_mean(&m.reward, 1), Some((0.5, 0.7)));
    }

    #[test]
    fn warm_start_lines_become_loss_series_and_shifting_moves_every_step() {
        let (_dir, path) = write(concat!(
            "{\"step\":0,\"val_reward\":0.0}\n",
            "{\"step\":1,\"loss\":2.5,\"token_accuracy\":0.4}\n",
            "{\"step\":2,\"loss\":1.5,\"token_accuracy\":0.6,\"val_reward\":0.2}\n",
        ));
        let m = RunMetrics::read(&path).unwrap();
        assert_eq!((m.steps, m.sft_steps, m.last_step), (0, 2, 2.0));
        assert_eq!(m.sft_loss, vec![(1.0, 2.5), (2.0, 1.5)]);
        assert_eq!(m.sft_token_accuracy, vec![(1.0, 0.4), (2.0, 0.6)]);
        let moved = m.shifted(10.0);
        assert_eq!(moved.val_reward, vec![(10.0, 0.0), (12.0, 0.2)]);
        assert_eq!(moved.sft_loss[0], (11.0, 2.5));
        assert_eq!(moved.last_step, 12.0);
    }

    #[test]
    fn a_cut_last_line_is_left_out_but_a_bad_middle_line_is_an_error() {
        let (_dir, path) = write("{\"step\":1,\"reward_mean\":0.5}\n{\"step\":2,\"rew");
        assert_eq!(RunMetrics::read(&path).unwrap().steps, 1);
        let (_dir, path) = write("{\"step\":1,\"reward_mean\":0.5}\nnot json\n{\"step\":2}\n");
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("metrics.jsonl:2"), "{error}");
        let (_dir, path) = write("{\"reward_mean\":0.5}\n");
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("no numeric \"step\""), "{error}");
        let (_dir, path) = write("");
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("nothing to report"), "{error}");
    }
}
