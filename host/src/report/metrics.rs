//! Reads a run's `metrics.jsonl` (through [`MetricsLine`], the type the trainers write) into
//! the series the charts draw.

use crate::run_metrics::MetricsLine;
use anyhow::{Context, Result, bail};
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
            let parsed = match MetricsLine::parse(line) {
                Ok(parsed) => parsed,
                Err(_) if !complete && index + 1 == lines.len() => break,
                Err(error) => bail!("{}:{}: {error}", path.display(), index + 1),
            };
            metrics.add(&parsed);
        }
        if metrics.steps == 0 && metrics.sft_steps == 0 && metrics.val_reward.is_empty() {
            bail!(
                "{} holds no training step or validation yet: nothing to report",
                path.display()
            );
        }
        Ok(metrics)
    }

    fn add(&mut self, line: &MetricsLine) {
        let step = line.step() as f64;
        self.last_step = self.last_step.max(step);
        let finite = |series: &mut Series, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                series.push((step, v));
            }
        };
        match line {
            MetricsLine::SftStep(m) => {
                self.sft_steps += 1;
                finite(&mut self.sft_loss, Some(m.loss));
                finite(&mut self.sft_token_accuracy, Some(m.token_accuracy));
            }
            MetricsLine::GrpoStep(m) => {
                self.steps += 1;
                finite(&mut self.reward, Some(m.reward_mean));
                finite(&mut self.reward_std, Some(m.reward_std));
                finite(&mut self.response_length, Some(m.response_length));
                finite(&mut self.searches, Some(m.searches_per_rollout));
                finite(&mut self.kl, m.kl);
                finite(&mut self.entropy, m.entropy);
                finite(&mut self.step_seconds, Some(m.time.total));
                for (name, &v) in &m.reward_components {
                    finite(self.components.entry(name.clone()).or_default(), Some(v));
                }
            }
            MetricsLine::Validation(_) => {}
        }
        if let Some(v) = line.validation() {
            self.val_reward.push((step, v.val_reward));
            self.val_em.push((step, v.val_em));
            self.val_f1.push((step, v.val_f1));
            self.val_searches.push((step, v.val_searches));
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
    use crate::rollout::validation::Validation;
    use crate::run_metrics::examples::{grpo_step, sft_step};
    use crate::run_metrics::{GrpoStepMetrics, SftStepMetrics, ValidationMetrics};

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn lines(lines: &[MetricsLine]) -> String {
        lines.iter().map(|l| l.to_json().unwrap() + "\n").collect()
    }

    fn validation(reward: f64) -> Validation {
        Validation {
            val_questions: 4,
            val_em: reward / 2.0,
            val_f1: reward,
            val_reward: reward,
            val_searches: 1.0,
            val_plugin_errors: 0,
        }
    }

    fn grpo(step: u64, reward: f64, components: &[(&str, f64)]) -> GrpoStepMetrics {
        GrpoStepMetrics {
            step,
            reward_mean: reward,
            reward_components: components
                .iter()
                .map(|&(k, v)| (k.to_string(), v))
                .collect(),
            validation: None,
            ..grpo_step()
        }
    }

    fn sft(step: u64, loss: f64, token_accuracy: f64) -> SftStepMetrics {
        SftStepMetrics {
            step,
            loss,
            token_accuracy,
            ..sft_step()
        }
    }

    #[test]
    fn training_and_validation_lines_become_series() {
        let first = grpo(1, 0.5, &[("f1", 0.4), ("format", 1.0)]);
        let second = GrpoStepMetrics {
            kl: Some(0.01),
            entropy: None,
            validation: Some(validation(0.3)),
            ..grpo(2, 0.7, &[("f1", 0.6)])
        };
        let (_dir, path) = write(&lines(&[
            MetricsLine::Validation(ValidationMetrics {
                step: 0,
                validation: validation(0.1),
            }),
            MetricsLine::GrpoStep(Box::new(first.clone())),
            MetricsLine::GrpoStep(Box::new(second)),
        ]));
        let m = RunMetrics::read(&path).unwrap();
        assert_eq!(m.steps, 2);
        assert_eq!(m.reward, vec![(1.0, 0.5), (2.0, 0.7)]);
        assert_eq!(m.val_reward, vec![(0.0, 0.1), (2.0, 0.3)]);
        assert_eq!(m.val_em, vec![(0.0, 0.05), (2.0, 0.15)]);
        assert_eq!(m.components["f1"], vec![(1.0, 0.4), (2.0, 0.6)]);
        assert_eq!(m.components["format"], vec![(1.0, 1.0)]);
        assert_eq!(m.step_seconds, vec![(1.0, 2.5), (2.0, 2.5)]);
        assert_eq!(m.response_length, vec![(1.0, 30.0), (2.0, 30.0)]);
        // A step without a trained token has no entropy; a KL of None is left out.
        assert_eq!(m.entropy, vec![(1.0, 2.0)]);
        assert_eq!(m.kl, vec![(2.0, 0.01)]);
        assert_eq!(RunMetrics::first_last_mean(&m.reward, 1), Some((0.5, 0.7)));
    }

    #[test]
    fn warm_start_lines_become_loss_series_and_shifting_moves_every_step() {
        let (_dir, path) = write(&lines(&[
            MetricsLine::Validation(ValidationMetrics {
                step: 0,
                validation: validation(0.0),
            }),
            MetricsLine::SftStep(sft(1, 2.5, 0.4)),
            MetricsLine::SftStep(SftStepMetrics {
                validation: Some(validation(0.2)),
                ..sft(2, 1.5, 0.6)
            }),
        ]));
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
        let good = lines(&[MetricsLine::GrpoStep(Box::new(grpo(1, 0.5, &[])))]);
        let (_dir, path) = write(&format!("{good}{{\"step\":2,\"rew"));
        assert_eq!(RunMetrics::read(&path).unwrap().steps, 1);
        let (_dir, path) = write(&format!("{good}not json\n{good}"));
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("metrics.jsonl:2"), "{error}");
        // A renamed field fails at its line instead of leaving a chart empty.
        let renamed = good.replace("searches_per_rollout", "searches");
        let (_dir, path) = write(&format!("{good}{renamed}"));
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("metrics.jsonl:2"), "{error}");
        assert!(error.contains("searches_per_rollout"), "{error}");
        let (_dir, path) = write("{\"reward_mean\":0.5}\n");
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("metrics.jsonl:1"), "{error}");
        let (_dir, path) = write("");
        let error = format!("{:#}", RunMetrics::read(&path).unwrap_err());
        assert!(error.contains("nothing to report"), "{error}");
    }
}
