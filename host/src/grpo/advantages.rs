//! Group-normalised advantages (GRPO) and the Dr.GRPO variant.

use serde::{Deserialize, Serialize};

/// How a group's rewards become advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageMode {
    /// A_i = (r_i − mean) / (unbiased std + 1e-6), as both references.
    #[default]
    Grpo,
    /// Dr.GRPO: A_i = r_i − mean (no division by the standard deviation).
    DrGrpo,
}

/// The epsilon added to the standard deviation.
pub const STD_EPSILON: f64 = 1e-6;

/// Advantages of one group's rewards. Members whose reward is `None` (their rollout failed)
/// take no part in the statistics and get advantage 0. A group with fewer than two scored
/// members gets 0 everywhere.
pub fn group_advantages(rewards: &[Option<f64>], mode: AdvantageMode) -> Vec<f64> {
    let scored: Vec<f64> = rewards.iter().flatten().copied().collect();
    if scored.len() < 2 {
        return vec![0.0; rewards.len()];
    }
    if !informative(rewards) {
        // Exactly 0: a mean of equal rewards can differ from them in the last bit.
        return vec![0.0; rewards.len()];
    }
    let n = scored.len() as f64;
    let mean = scored.iter().sum::<f64>() / n;
    let var = scored.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let scale = match mode {
        AdvantageMode::Grpo => 1.0 / (var.sqrt() + STD_EPSILON),
        AdvantageMode::DrGrpo => 1.0,
    };
    rewards
        .iter()
        .map(|r| r.map_or(0.0, |r| (r - mean) * scale))
        .collect()
}

/// Whether a group can teach anything: at least two scored members whose rewards differ.
/// DAPO's dynamic sampling leaves the other groups out of the loss.
pub fn informative(rewards: &[Option<f64>]) -> bool {
    let mut scored = rewards.iter().flatten();
    match scored.next() {
        Some(first) => scored.any(|r| r != first),
        None => false,
    }
}

/// DAPO's soft overlong punishment of a response of `length` tokens under a budget of
/// `max` whose last `buffer` tokens are the punished zone: 0 up to `max − buffer`, then
/// falling linearly to −`penalty` at `max`, −`penalty` beyond. 0 when `buffer` is 0.
pub fn overlong_penalty(length: usize, max: usize, buffer: usize, penalty: f64) -> f64 {
    if buffer == 0 {
        return 0.0;
    }
    let start = max.saturating_sub(buffer);
    if length <= start {
        0.0
    } else if length <= max {
        -((length - start) as f64 / buffer as f64) * penalty
    } else {
        -penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn hand_made_group() {
        // mean 0.5, unbiased std = sqrt(((−0.5)²·2 + 0.5²·2) / 3) = sqrt(1/3)
        let rewards = [Some(0.0), Some(1.0), Some(0.0), Some(1.0)];
        let std = (1.0f64 / 3.0).sqrt();
        let a = 0.5 / (std + STD_EPSILON);
        close(
            &group_advantages(&rewards, AdvantageMode::Grpo),
            &[-a, a, -a, a],
        );
        close(
            &group_advantages(&rewards, AdvantageMode::DrGrpo),
            &[-0.5, 0.5, -0.5, 0.5],
        );
    }

    #[test]
    fn uneven_group() {
        let rewards = [Some(0.1), Some(0.1), Some(1.0)];
        let mean = 0.4;
        let std = ((0.09 + 0.09 + 0.36) / 2.0f64).sqrt();
        let expect: Vec<f64> = [0.1, 0.1, 1.0]
            .iter()
            .map(|r| (r - mean) / (std + STD_EPSILON))
            .collect();
        close(&group_advantages(&rewards, AdvantageMode::Grpo), &expect);
    }

    #[test]
    fn all_equal_rewards_give_zero() {
        for mode in [AdvantageMode::Grpo, AdvantageMode::DrGrpo] {
            close(
                &group_advantages(&[Some(0.7); 5], mode),
                &[0.0, 0.0, 0.0, 0.0, 0.0],
            );
        }
    }

    #[test]
    fn a_group_of_one_and_failed_members() {
        close(&group_advantages(&[Some(3.0)], AdvantageMode::Grpo), &[0.0]);
        close(
            &group_advantages(&[None, Some(1.0)], AdvantageMode::Grpo),
            &[0.0, 0.0],
        );
        let with_failure = group_advantages(&[Some(0.0), None, Some(1.0)], AdvantageMode::DrGrpo);
        close(&with_failure, &[-0.5, 0.0, 0.5]);
    }

    #[test]
    fn informative_groups_have_differing_scored_rewards() {
        assert!(informative(&[Some(0.0), Some(1.0)]));
        assert!(informative(&[None, Some(0.1), Some(0.2)]));
        assert!(!informative(&[Some(0.1), Some(0.1), None]));
        assert!(!informative(&[Some(1.0)]));
        assert!(!informative(&[None, None]));
        // Three equal rewards whose float mean is not exactly them still give exact zeros.
        let equal = [Some(0.1), Some(0.1), Some(0.1)];
        assert_ne!((0.1f64 + 0.1 + 0.1) / 3.0, 0.1);
        assert_eq!(group_advantages(&equal, AdvantageMode::Grpo), vec![0.0; 3]);
    }

    #[test]
    fn soft_overlong_penalty_by_hand() {
        // Budget 100, buffer 20: free up to 80, then −(L − 80)/20 · 0.5, −0.5 past 100.
        assert_eq!(overlong_penalty(80, 100, 20, 0.5), 0.0);
        assert_eq!(overlong_penalty(10, 100, 20, 0.5), 0.0);
        assert!((overlong_penalty(90, 100, 20, 0.5) + 0.25).abs() < 1e-12);
        assert!((overlong_penalty(100, 100, 20, 0.5) + 0.5).abs() < 1e-12);
        assert_eq!(overlong_penalty(130, 100, 20, 0.5), -0.5);
        assert_eq!(overlong_penalty(100, 100, 0, 0.5), 0.0);
    }
}
