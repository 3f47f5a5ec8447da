//! The lines of a run folder's `metrics.jsonl`: one type per kind of line. `host train` and
//! `host sft` write these types and `host report` reads them back through the same types, so a
//! renamed or missing field is an error at the line that holds it, never a silently empty chart.
//!
//! Each line carries its kind (`"kind": "grpo_step" | "sft_step" | "validation"`). Lines
//! written before the kind was recorded are read by the fields they hold.

use crate::rollout::validation::Validation;
use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsLine {
    /// A GRPO optimiser step (`host train`), with the validation that followed it, if any.
    GrpoStep(Box<GrpoStepMetrics>),
    /// A supervised warm-start step (`host sft`), with its validation, if any.
    SftStep(SftStepMetrics),
    /// A validation before the first step.
    Validation(ValidationMetrics),
}

impl MetricsLine {
    /// The training step the line belongs to.
    pub fn step(&self) -> u64 {
        match self {
            MetricsLine::GrpoStep(m) => m.step,
            MetricsLine::SftStep(m) => m.step,
            MetricsLine::Validation(m) => m.step,
        }
    }

    /// The validation the line records, if any.
    pub fn validation(&self) -> Option<&Validation> {
        match self {
            MetricsLine::GrpoStep(m) => m.validation.as_ref(),
            MetricsLine::SftStep(m) => m.validation.as_ref(),
            MetricsLine::Validation(m) => Some(&m.validation),
        }
    }

    /// The step of a line without reading the rest of it (what truncating a run's metrics
    /// needs); `None` when the line is not a JSON object with a numeric `step`.
    pub fn step_of(line: &str) -> Option<u64> {
        #[derive(Deserialize)]
        struct StepField {
            step: u64,
        }
        serde_json::from_str::<StepField>(line).ok().map(|s| s.step)
    }

    /// The line as written to the file (one JSON object, no newline).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parses one line. The error says which kind of line it was read as and which field is
    /// missing or malformed.
    pub fn parse(line: &str) -> Result<MetricsLine> {
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not a JSON object: {e}"))?;
        if !object.contains_key("kind") {
            let kind = if object.contains_key("reward_mean") {
                "grpo_step"
            } else if object.contains_key("loss") {
                "sft_step"
            } else if object.contains_key("val_reward") {
                "validation"
            } else {
                bail!("the line has no \"kind\" and is no training step or validation");
            };
            object.insert("kind".into(), kind.into());
        }
        let kind = object
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("?")
            .to_string();
        serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| anyhow::anyhow!("a `{kind}` line: {e}"))
    }
}

/// A GRPO step: rewards, lengths, searches, the update's statistics and where the time went.
/// Means are over the step's rollouts unless said otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoStepMetrics {
    pub step: u64,
    /// Passes over the training questions so far.
    #[serde(deserialize_with = "number_or_nan")]
    pub epoch: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub reward_mean: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub reward_std: f64,
    /// Mean of each reward component, by name.
    pub reward_components: BTreeMap<String, f64>,
    /// Response tokens (generated and retrieved).
    #[serde(deserialize_with = "number_or_nan")]
    pub response_length: f64,
    /// Tokens the policy generated.
    #[serde(deserialize_with = "number_or_nan")]
    pub generated_tokens: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub searches_per_rollout: f64,
    /// Rollouts by how they ended (`stop`, `length`, `answer`, …).
    pub finish: BTreeMap<String, u64>,
    /// Rollouts lost to plugin errors.
    pub plugin_errors: usize,
    pub rollouts: usize,
    /// Token means of the update; None when no token was trained.
    pub kl: Option<f64>,
    pub entropy: Option<f64>,
    pub pg_loss: Option<f64>,
    pub clip_fraction: Option<f64>,
    pub ratio_mean: Option<f64>,
    /// Largest |ratio − 1| over trained tokens.
    #[serde(deserialize_with = "number_or_nan")]
    pub ratio_max_deviation: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub grad_norm: f64,
    /// Groups rolled out (more than the batch with dynamic sampling).
    pub groups_drawn: usize,
    /// Share of drawn groups whose rewards were all equal.
    #[serde(deserialize_with = "number_or_nan")]
    pub zero_advantage_share: f64,
    pub groups_trained: usize,
    pub sequences_trained: usize,
    pub sequences_skipped: usize,
    pub tokens_trained: usize,
    /// Generated tokens per second of generation.
    #[serde(deserialize_with = "number_or_nan")]
    pub tokens_per_s: f64,
    /// Optimiser steps the weights that sampled the step's rollouts were behind the policy
    /// being trained (server backends only: at most rollout.sync_every − 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_lag: Option<u64>,
    pub time: GrpoStepTimes,
    #[serde(flatten)]
    pub validation: Option<Validation>,
    /// Collapse-guard alarms raised by the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// Seconds per part of a GRPO step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoStepTimes {
    pub generation: f64,
    pub retrieval: f64,
    pub plugins: f64,
    pub forward_backward: f64,
    pub optimizer: f64,
    /// Writing the policy for the inference server and the server's load of it.
    #[serde(default)]
    pub weight_sync: f64,
    pub total: f64,
}

/// A supervised warm-start step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftStepMetrics {
    pub step: u64,
    /// Passes over the trajectories so far.
    #[serde(deserialize_with = "number_or_nan")]
    pub epoch: f64,
    /// Mean negative log-likelihood of the trained tokens.
    #[serde(deserialize_with = "number_or_nan")]
    pub loss: f64,
    /// Share of trained tokens that are the model's most likely token.
    #[serde(deserialize_with = "number_or_nan")]
    pub token_accuracy: f64,
    /// Trained (loss-mask 1) tokens.
    pub tokens: usize,
    /// Sequences of the batch.
    pub sequences: usize,
    /// Prompt and response tokens processed per second of the step.
    #[serde(deserialize_with = "number_or_nan")]
    pub tokens_per_s: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "number_or_nan")]
    pub grad_norm: f64,
    pub time: SftStepTimes,
    #[serde(flatten)]
    pub validation: Option<Validation>,
}

/// Seconds per part of a warm-start step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SftStepTimes {
    pub forward_backward: f64,
    pub optimizer: f64,
    pub total: f64,
}

/// The validation before the first step (step 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationMetrics {
    pub step: u64,
    #[serde(flatten)]
    pub validation: Validation,
}

/// JSON writes a non-finite number as `null`; it reads back as NaN.
fn number_or_nan<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Lines for other modules' tests.
#[cfg(test)]
pub(crate) mod examples {
    use super::*;

    pub fn validation() -> Validation {
        Validation {
            val_questions: 8,
            val_em: 0.25,
            val_f1: 0.5,
            val_reward: 0.4,
            val_searches: 1.5,
            val_plugin_errors: 0,
        }
    }

    pub fn grpo_step() -> GrpoStepMetrics {
        GrpoStepMetrics {
            step: 3,
            epoch: 0.5,
            lr: 1e-6,
            reward_mean: 0.5,
            reward_std: 0.1,
            reward_components: [("f1".to_string(), 0.4)].into(),
            response_length: 30.0,
            generated_tokens: 20.0,
            searches_per_rollout: 1.0,
            finish: [("stop".to_string(), 4)].into(),
            plugin_errors: 0,
            rollouts: 4,
            kl: None,
            entropy: Some(2.0),
            pg_loss: Some(0.1),
            clip_fraction: Some(0.0),
            ratio_mean: Some(1.0),
            ratio_max_deviation: 0.0,
            grad_norm: f64::NAN,
            groups_drawn: 1,
            zero_advantage_share: 0.0,
            groups_trained: 1,
            sequences_trained: 4,
            sequences_skipped: 0,
            tokens_trained: 80,
            tokens_per_s: 100.0,
            sampler_lag: None,
            time: GrpoStepTimes {
                total: 2.5,
                ..GrpoStepTimes::default()
            },
            validation: Some(validation()),
            alarms: vec!["entropy low".into()],
        }
    }

    pub fn sft_step() -> SftStepMetrics {
        SftStepMetrics {
            step: 2,
            epoch: 1.0,
            loss: 1.5,
            token_accuracy: 0.6,
            tokens: 100,
            sequences: 4,
            tokens_per_s: 50.0,
            lr: 1e-5,
            grad_norm: 0.3,
            time: SftStepTimes::default(),
            validation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::examples::*;
    use super::*;

    #[test]
    fn every_kind_of_line_reads_back_as_written() {
        let step = grpo_step();
        let line = MetricsLine::GrpoStep(Box::new(step.clone()))
            .to_json()
            .unwrap();
        assert!(line.contains("\"kind\":\"grpo_step\""), "{line}");
        assert!(line.contains("\"grad_norm\":null"), "{line}");
        let MetricsLine::GrpoStep(read) = MetricsLine::parse(&line).unwrap() else {
            panic!("not a GRPO step: {line}");
        };
        assert!(read.grad_norm.is_nan());
        assert_eq!(
            GrpoStepMetrics {
                grad_norm: 0.0,
                ..*read
            },
            GrpoStepMetrics {
                grad_norm: 0.0,
                ..step
            }
        );

        let sft = MetricsLine::SftStep(sft_step());
        assert_eq!(MetricsLine::parse(&sft.to_json().unwrap()).unwrap(), sft);

        let before = MetricsLine::Validation(ValidationMetrics {
            step: 0,
            validation: validation(),
        });
        let parsed = MetricsLine::parse(&before.to_json().unwrap()).unwrap();
        assert_eq!(parsed, before);
        assert_eq!(parsed.validation(), Some(&validation()));
    }

    #[test]
    fn lines_without_a_kind_are_read_by_their_fields() {
        let mut old = serde_json::to_value(grpo_step()).unwrap();
        old.as_object_mut().unwrap().remove("kind");
        let parsed = MetricsLine::parse(&old.to_string()).unwrap();
        assert!(matches!(parsed, MetricsLine::GrpoStep(_)));
        let parsed = MetricsLine::parse(
            r#"{"step":0,"val_questions":2,"val_em":0.0,"val_f1":0.1,"val_reward":0.2,"val_searches":1.0,"val_plugin_errors":0}"#,
        )
        .unwrap();
        assert_eq!(parsed.step(), 0);
        assert!(matches!(parsed, MetricsLine::Validation(_)));
    }

    #[test]
    fn a_missing_or_renamed_field_is_an_error_naming_it() {
        let mut line = serde_json::to_value(MetricsLine::GrpoStep(Box::new(grpo_step()))).unwrap();
        let object = line.as_object_mut().unwrap();
        let value = object.remove("searches_per_rollout").unwrap();
        object.insert("searches".into(), value);
        let error = MetricsLine::parse(&line.to_string())
            .unwrap_err()
            .to_string();
        assert!(error.contains("grpo_step"), "{error}");
        assert!(error.contains("searches_per_rollout"), "{error}");
        let error = MetricsLine::parse(r#"{"step":1}"#).unwrap_err().to_string();
        assert!(error.contains("no training step"), "{error}");
        let error = MetricsLine::parse(r#"{"kind":"rl_step","step":1}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("rl_step"), "{error}");
        let error = MetricsLine::parse("[1, 2]").unwrap_err().to_string();
        assert!(error.contains("not a JSON object"), "{error}");
    }
}
