//! The held-out change between two validations of a run: per-question paired differences of
//! reward, EM and F1 with bootstrap intervals, so that a gain can be told from noise.
//!
//! Validation rolls out the same questions greedily at every validation step, so the two
//! files pair question by question; the paired difference has a much smaller spread than the
//! two means compared on their own.

use crate::rollout::trajectory::Trajectory;
use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Bootstrap resamples per interval.
const RESAMPLES: usize = 10_000;
/// The bootstrap's seed: the same files give the same interval.
const SEED: u64 = 0;

/// A mean over questions with its 95 % percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// One quantity before and after, and the paired difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedChange {
    pub before: Estimate,
    pub after: Estimate,
    /// Mean of after − before over the paired questions, with its interval.
    pub gain: Estimate,
    /// Standard error of the mean paired difference.
    pub std_err: f64,
}

impl PairedChange {
    /// Whether the 95 % interval of the gain excludes 0.
    pub fn beyond_noise(&self) -> bool {
        self.gain.low > 0.0 || self.gain.high < 0.0
    }
}

/// Reward, EM and F1 of the questions two validations share.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOutChange {
    pub before_step: u64,
    pub after_step: u64,
    pub questions: usize,
    pub reward: PairedChange,
    pub em: PairedChange,
    pub f1: PairedChange,
}

/// Per-question scores of one validation: reward (a failed rollout counts 0), EM and F1.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scores {
    reward: f64,
    em: f64,
    f1: f64,
}

impl Scores {
    fn of(t: &Trajectory) -> Scores {
        let answer = t.answer.clone().unwrap_or_default();
        Scores {
            reward: t.reward.unwrap_or(0.0),
            em: qa_scoring::metrics::exact_match(&answer, &t.golden_answers),
            f1: qa_scoring::metrics::f1(&answer, &t.golden_answers),
        }
    }
}

/// The validation trajectory files of a run folder (`trajectories/validation-STEP.jsonl`),
/// by step.
pub fn validation_files(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run_dir.join("trajectories");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let step = name
            .strip_prefix("validation-")
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(step) = step {
            files.push((step, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The change from a run's first validation to its last; `None` with fewer than two.
pub fn run_change(run_dir: &Path) -> Result<Option<HeldOutChange>> {
    let files = validation_files(run_dir)?;
    let (Some(first), Some(last)) = (files.first(), files.last()) else {
        return Ok(None);
    };
    if first.0 == last.0 {
        return Ok(None);
    }
    let before = read_validation(&first.1)?;
    let after = read_validation(&last.1)?;
    change(first.0, &before, last.0, &after).map(Some)
}

/// Reads one validation file. A line cut by a kill at the end is skipped; any other bad line
/// is an error naming the file and line.
pub fn read_validation(path: &Path) -> Result<Vec<Trajectory>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the validation rollouts {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Trajectory>(line) {
            Ok(t) => out.push(t),
            Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => bail!(
                "{}:{}: not a rollout record: {e}",
                path.display(),
                index + 1
            ),
        }
    }
    Ok(out)
}

/// Pairs two validations by question id and measures the change of each quantity.
pub fn change(
    before_step: u64,
    before: &[Trajectory],
    after_step: u64,
    after: &[Trajectory],
) -> Result<HeldOutChange> {
    let first: HashMap<&str, Scores> = before
        .iter()
        .map(|t| (t.id.as_str(), Scores::of(t)))
        .collect();
    let pairs: Vec<(Scores, Scores)> = after
        .iter()
        .filter_map(|t| first.get(t.id.as_str()).map(|b| (*b, Scores::of(t))))
        .collect();
    if pairs.is_empty() {
        bail!("the validations at steps {before_step} and {after_step} share no question");
    }
    let quantity = |pick: fn(&Scores) -> f64| {
        let values: Vec<(f64, f64)> = pairs.iter().map(|(b, a)| (pick(b), pick(a))).collect();
        paired(&values)
    };
    Ok(HeldOutChange {
        before_step,
        after_step,
        questions: pairs.len(),
        reward: quantity(|s| s.reward),
        em: quantity(|s| s.em),
        f1: quantity(|s| s.f1),
    })
}

/// Before, after and gain of paired values, each with a bootstrap interval drawn from the same
/// resampled questions.
pub fn paired(values: &[(f64, f64)]) -> PairedChange {
    let n = values.len();
    let mean = |f: &dyn Fn(&(f64, f64)) -> f64| values.iter().map(f).sum::<f64>() / n as f64;
    let (before, after) = (mean(&|v| v.0), mean(&|v| v.1));
    let gain = after - before;
    let variance = values
        .iter()
        .map(|v| (v.1 - v.0 - gain).powi(2))
        .sum::<f64>()
        / (n.max(2) - 1) as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let mut samples: [Vec<f64>; 3] = Default::default();
    for _ in 0..RESAMPLES {
        let (mut b, mut a) = (0.0, 0.0);
        for _ in 0..n {
            let v = values[rng.random_range(0..n)];
            b += v.0;
            a += v.1;
        }
        samples[0].push(b / n as f64);
        samples[1].push(a / n as f64);
        samples[2].push((a - b) / n as f64);
    }
    let [b, a, g] = samples.map(percentiles);
    PairedChange {
        before: Estimate { mean: before, ..b },
        after: Estimate { mean: after, ..a },
        gain: Estimate { mean: gain, ..g },
        std_err: (variance / n as f64).sqrt(),
    }
}

/// The 2.5th and 97.5th percentiles of bootstrap means (the mean itself is filled in by the
/// caller).
fn percentiles(mut means: Vec<f64>) -> Estimate {
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Estimate {
        mean: f64::NAN,
        low: at(0.025),
        high: at(0.975),
    }
}

impl fmt::Display for PairedChange {
    /// `0.267 → 0.316, gain +0.049 (95 % interval −0.018 … +0.117)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} → {:.3}, gain {:+.3} (95 % interval {:+.3} … {:+.3})",
            self.before.mean, self.after.mean, self.gain.mean, self.gain.low, self.gain.high
        )
    }
}

impl HeldOutChange {
    /// One line for a run's closing summary.
    pub fn summary(&self) -> String {
        let verdict = if self.reward.beyond_noise() {
            "beyond noise"
        } else {
            "within noise"
        };
        format!(
            "held-out change, steps {} → {}, {} questions paired: reward {} ({verdict}); EM {}; \
             F1 {}",
            self.before_step, self.after_step, self.questions, self.reward, self.em, self.f1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_gain_has_a_point_interval_and_is_beyond_noise() {
        let values: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64 / 50.0, i as f64 / 50.0 + 0.1))
            .collect();
        let change = paired(&values);
        assert!((change.gain.mean - 0.1).abs() < 1e-12);
        assert!((change.gain.low - 0.1).abs() < 1e-9 && (change.gain.high - 0.1).abs() < 1e-9);
        assert!(change.std_err < 1e-9);
        assert!(change.beyond_noise());
        assert!(change.before.low < change.before.mean && change.before.mean < change.before.high);
    }

    #[test]
    fn a_gain_from_one_question_of_forty_is_within_noise() {
        let mut values = vec![(0.5, 0.5); 40];
        values[3] = (0.0, 1.0);
        let change = paired(&values);
        assert!((change.gain.mean - 1.0 / 40.0).abs() < 1e-12);
        assert_eq!(
            change.gain.low, 0.0,
            "most resamples miss the one changed question"
        );
        assert!(!change.beyond_noise());
        // The standard error of a single 1 among 40 differences: sqrt(p(1-p)·n/(n-1)/n).
        let p = 1.0 / 40.0;
        let expected = (p * (1.0 - p) * 40.0 / 39.0 / 40.0_f64).sqrt();
        assert!((change.std_err - expected).abs() < 1e-12);
    }

    #[test]
    fn the_bootstrap_interval_of_a_binary_mean_matches_the_normal_one() {
        // 30 of 100 correct: the normal 95 % interval is 0.3 ± 1.96·sqrt(0.21/100) = ±0.09.
        let values: Vec<(f64, f64)> = (0..100).map(|i| (0.0, f64::from(i < 30))).collect();
        let change = paired(&values);
        assert!(
            (change.after.low - 0.21).abs() <= 0.02,
            "{:?}",
            change.after
        );
        assert!(
            (change.after.high - 0.39).abs() <= 0.02,
            "{:?}",
            change.after
        );
        assert_eq!(change.before.low, 0.0);
        assert_eq!(
            paired(&values),
            change,
            "seeded: the same values give the same interval"
        );
    }

    fn rollout(id: &str, answer: Option<&str>, reward: Option<f64>) -> Trajectory {
        Trajectory {
            id: id.to_string(),
            golden_answers: vec!["Paris".to_string()],
            answer: answer.map(str::to_string),
            reward,
            ..Trajectory::default()
        }
    }

    #[test]
    fn validations_pair_by_question_id_and_a_failed_rollout_counts_zero() {
        let before = vec![
            rollout("q1", Some("London"), Some(0.1)),
            rollout("q2", None, None),
            rollout("q3", Some("Paris"), Some(1.0)),
        ];
        let after = vec![
            rollout("q2", Some("Paris"), Some(1.0)),
            rollout("q1", Some("Paris"), Some(1.0)),
            rollout("q9", Some("Paris"), Some(1.0)),
        ];
        let change = change(0, &before, 40, &after).unwrap();
        assert_eq!(change.questions, 2);
        assert!((change.reward.before.mean - 0.05).abs() < 1e-12);
        assert!((change.reward.after.mean - 1.0).abs() < 1e-12);
        assert!((change.em.gain.mean - 1.0).abs() < 1e-12);
        let other = vec![rollout("z", Some("Paris"), Some(1.0))];
        let err = super::change(0, &before, 10, &other).unwrap_err();
        assert!(err.to_string().contains("share no question"), "{err}");
    }

    #[test]
    fn a_run_folder_gives_the_change_from_its_first_validation_to_its_last() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            run_change(dir.path()).unwrap(),
            None,
            "no trajectories folder"
        );
        let traj = dir.path().join("trajectories");
        std::fs::create_dir_all(&traj).unwrap();
        let write = |name: &str, rows: &[Trajectory]| {
            let text: String = rows
                .iter()
                .map(|t| serde_json::to_string(t).unwrap() + "\n")
                .collect();
            std::fs::write(traj.join(name), text).unwrap();
        };
        write(
            "validation-000000.jsonl",
            &[rollout("q1", Some("Rome"), Some(0.1))],
        );
        write(
            "step-000001.jsonl",
            &[rollout("q1", Some("Paris"), Some(1.0))],
        );
        assert_eq!(run_change(dir.path()).unwrap(), None, "one validation only");
        write(
            "validation-000010.jsonl",
            &[rollout("q1", Some("Lyon"), Some(0.1))],
        );
        write(
            "validation-000020.jsonl",
            &[rollout("q1", Some("Paris"), Some(1.0))],
        );
        let change = run_change(dir.path()).unwrap().unwrap();
        assert_eq!((change.before_step, change.after_step), (0, 20));
        assert!((change.reward.gain.mean - 0.9).abs() < 1e-12);
        assert!(
            change
                .summary()
                .contains("steps 0 → 20, 1 questions paired")
        );
        std::fs::write(traj.join("validation-000030.jsonl"), "{\"id\": 1}\n{").unwrap();
        let err = run_change(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("validation-000030.jsonl:1: not a rollout record"),
            "{err:#}"
        );
    }
}
