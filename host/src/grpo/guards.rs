//! Collapse detection: the bands a healthy GRPO run stays in ([guards] in the config). A run
//! whose token entropy collapses (one answer, no exploration), whose KL to the reference
//! drifts away, or whose responses mostly hit the token budget is wasting its compute; the
//! guards say so after `patience` consecutive steps out of band, and with `stop = true` end
//! the run after a checkpoint.

use serde::{Deserialize, Serialize};

/// The bands ([guards]); a bound set to 0 is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardsSection {
    /// Mean entropy (nats per generated token) below which the policy has collapsed.
    pub entropy_min: f64,
    /// Mean entropy above which the policy has dissolved into noise (0: off).
    pub entropy_max: f64,
    /// k3 KL to the reference above which the policy has drifted (checked when
    /// grpo.kl_coef > 0, the only case the KL is measured).
    pub kl_max: f64,
    /// Share of rollouts cut at rollout.max_response_tokens above which the budget is too small
    /// or the policy rambles.
    pub truncated_max: f64,
    /// Consecutive steps out of band before an alarm (then again every `patience` steps).
    pub patience: u64,
    /// End the run (after a checkpoint) on an alarm instead of only warning.
    pub stop: bool,
}

impl Default for GuardsSection {
    fn default() -> Self {
        GuardsSection {
            entropy_min: 0.01,
            entropy_max: 0.0,
            kl_max: 0.2,
            truncated_max: 0.8,
            patience: 3,
            stop: false,
        }
    }
}

impl GuardsSection {
    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let finite_non_negative = [
            ("guards.entropy_min", self.entropy_min),
            ("guards.entropy_max", self.entropy_max),
            ("guards.kl_max", self.kl_max),
            ("guards.truncated_max", self.truncated_max),
        ];
        for (key, value) in finite_non_negative {
            if !(value.is_finite() && value >= 0.0) {
                anyhow::bail!("{key} must be a finite number ≥ 0, not {value}");
            }
        }
        if self.truncated_max > 1.0 {
            anyhow::bail!("guards.truncated_max is a share: it must be in [0, 1]");
        }
        if self.entropy_max > 0.0 && self.entropy_max <= self.entropy_min {
            anyhow::bail!("guards.entropy_max must be above guards.entropy_min (or 0: off)");
        }
        if self.patience == 0 {
            anyhow::bail!("guards.patience must be at least 1");
        }
        Ok(())
    }
}

/// What the guards look at after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepHealth {
    /// Mean entropy of the trained tokens (None: no update ran this step).
    pub entropy: Option<f64>,
    /// Mean k3 KL to the reference (None: not measured).
    pub kl: Option<f64>,
    /// Share of rollouts that stopped at the token budget.
    pub truncated_share: f64,
}

/// The band a step left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Breach {
    EntropyLow,
    EntropyHigh,
    KlHigh,
    Truncated,
}

/// An alarm: a band left for `steps` consecutive steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub breach: Breach,
    pub steps: u64,
    /// The last step's value.
    pub value: f64,
    /// The bound it crossed.
    pub bound: f64,
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.steps;
        match self.breach {
            Breach::EntropyLow => write!(
                f,
                "entropy {:.4} below guards.entropy_min = {} for {n} steps: the policy has \
                 collapsed onto few tokens (raise rollout.temperature or grpo.entropy_coef, lower \
                 optim.lr)",
                self.value, self.bound
            ),
            Breach::EntropyHigh => write!(
                f,
                "entropy {:.3} above guards.entropy_max = {} for {n} steps: the policy is \
                 dissolving into noise (lower optim.lr or grpo.entropy_coef)",
                self.value, self.bound
            ),
            Breach::KlHigh => write!(
                f,
                "KL to the reference {:.4} above guards.kl_max = {} for {n} steps: the policy is \
                 drifting (raise grpo.kl_coef, lower optim.lr; with every advantage 0, set \
                 grpo.skip_zero_contribution = true so entropy and weight decay alone do not move \
                 it)",
                self.value, self.bound
            ),
            Breach::Truncated => write!(
                f,
                "{:.0}% of the rollouts hit rollout.max_response_tokens (guards.truncated_max = \
                 {:.0}%) for {n} steps: raise the budget, or set grpo.overlong_filter / \
                 grpo.overlong_buffer",
                self.value * 100.0,
                self.bound * 100.0
            ),
        }
    }
}

/// Counts consecutive out-of-band steps per band.
#[derive(Debug, Clone)]
pub struct Guards {
    settings: GuardsSection,
    streaks: [u64; 4],
}

impl Guards {
    pub fn new(settings: GuardsSection) -> Guards {
        Guards {
            settings,
            streaks: [0; 4],
        }
    }

    /// Whether an alarm should end the run.
    pub fn stops(&self) -> bool {
        self.settings.stop
    }

    /// Records a step; returns the alarms due (a band left for `patience`, `2 × patience`, …
    /// consecutive steps).
    pub fn observe(&mut self, health: &StepHealth) -> Vec<Alarm> {
        let s = &self.settings;
        let checks = [
            (
                Breach::EntropyLow,
                health.entropy,
                s.entropy_min,
                health
                    .entropy
                    .is_some_and(|e| s.entropy_min > 0.0 && e < s.entropy_min),
            ),
            (
                Breach::EntropyHigh,
                health.entropy,
                s.entropy_max,
                health
                    .entropy
                    .is_some_and(|e| s.entropy_max > 0.0 && e > s.entropy_max),
            ),
            (
                Breach::KlHigh,
                health.kl,
                s.kl_max,
                health.kl.is_some_and(|k| s.kl_max > 0.0 && k > s.kl_max),
            ),
            (
                Breach::Truncated,
                Some(health.truncated_share),
                s.truncated_max,
                s.truncated_max > 0.0 && health.truncated_share > s.truncated_max,
            ),
        ];
        let mut alarms = Vec::new();
        for (slot, (breach, value, bound, out)) in checks.into_iter().enumerate() {
            let streak = &mut self.streaks[slot];
            // A step without a measurement (no update ran) neither extends nor breaks a streak.
            if value.is_none() {
                continue;
            }
            *streak = if out { *streak + 1 } else { 0 };
            if out && streak.is_multiple_of(s.patience) {
                alarms.push(Alarm {
                    breach,
                    steps: *streak,
                    value: value.unwrap_or(0.0),
                    bound,
                });
            }
        }
        alarms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(entropy: f64, kl: f64, truncated_share: f64) -> StepHealth {
        StepHealth {
            entropy: Some(entropy),
            kl: Some(kl),
            truncated_share,
        }
    }

    #[test]
    fn an_alarm_needs_patience_consecutive_steps_and_repeats() {
        let mut guards = Guards::new(GuardsSection::default());
        let bad = health(0.001, 0.0, 0.0);
        assert!(guards.observe(&bad).is_empty());
        assert!(guards.observe(&bad).is_empty());
        // A good step resets the streak.
        assert!(guards.observe(&health(1.0, 0.0, 0.0)).is_empty());
        assert!(guards.observe(&bad).is_empty());
        assert!(guards.observe(&bad).is_empty());
        let alarms = guards.observe(&bad);
        assert_eq!(alarms.len(), 1);
        assert_eq!(alarms[0].breach, Breach::EntropyLow);
        assert_eq!(alarms[0].steps, 3);
        assert!(alarms[0].to_string().contains("guards.entropy_min"));
        assert!(guards.observe(&bad).is_empty());
        assert!(guards.observe(&bad).is_empty());
        assert_eq!(guards.observe(&bad)[0].steps, 6);
    }

    #[test]
    fn each_band_is_checked_and_unmeasured_steps_are_neutral() {
        let settings = GuardsSection {
            entropy_max: 5.0,
            patience: 1,
            ..GuardsSection::default()
        };
        let mut guards = Guards::new(settings);
        let breaches = |alarms: Vec<Alarm>| alarms.iter().map(|a| a.breach).collect::<Vec<_>>();
        assert_eq!(
            breaches(guards.observe(&health(6.0, 0.3, 0.9))),
            vec![Breach::EntropyHigh, Breach::KlHigh, Breach::Truncated]
        );
        assert!(guards.observe(&health(1.0, 0.1, 0.5)).is_empty());
        // No update: entropy and KL unknown, only the truncation share counts.
        let idle = StepHealth {
            entropy: None,
            kl: None,
            truncated_share: 0.85,
        };
        assert_eq!(breaches(guards.observe(&idle)), vec![Breach::Truncated]);
        // A bound of 0 is off.
        let mut off = Guards::new(GuardsSection {
            entropy_min: 0.0,
            kl_max: 0.0,
            truncated_max: 0.0,
            patience: 1,
            ..GuardsSection::default()
        });
        assert!(off.observe(&health(0.0, 9.0, 1.0)).is_empty());
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let bad = |s: GuardsSection| s.validate().unwrap_err().to_string();
        assert!(
            bad(GuardsSection {
                truncated_max: 1.5,
                ..GuardsSection::default()
            })
            .contains("guards.truncated_max")
        );
        assert!(
            bad(GuardsSection {
                kl_max: f64::NAN,
                ..GuardsSection::default()
            })
            .contains("guards.kl_max")
        );
        assert!(
            bad(GuardsSection {
                patience: 0,
                ..GuardsSection::default()
            })
            .contains("guards.patience")
        );
        assert!(
            bad(GuardsSection {
                entropy_max: 0.005,
                ..GuardsSection::default()
            })
            .contains("guards.entropy_max")
        );
    }
}
