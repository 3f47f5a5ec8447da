//! The GRPO policy loss on one micro-batch: clipped surrogate, k3 KL to a frozen reference and
//! an entropy bonus, aggregated over the response tokens that the loss mask keeps.
//!
//! All inputs are aligned on the log-prob grid of [`crate::model::TokenStats`]: position t of
//! row b is the prediction of token t + 1 of sequence b. The mask is 1 on sampled response
//! tokens and 0 on prompt, observation and padding positions, so observation tokens contribute
//! exactly nothing to the loss or its gradient.

use anyhow::{Result, bail};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// How per-token losses become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LossAggregation {
    /// Mean over every kept token of the mini-batch (both references).
    #[default]
    TokenMean,
    /// Mean over a sequence's kept tokens, then mean over sequences.
    SeqMeanTokenMean,
    /// Dr.GRPO: sum over a sequence's kept tokens divided by the response budget, then mean
    /// over sequences (no length bias).
    SeqMeanTokenSumNorm,
}

/// Which probability ratio the clipped surrogate takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ImportanceSampling {
    /// One ratio per token (GRPO, PPO).
    #[default]
    Token,
    /// GSPO: one ratio per sequence, exp(mean over its kept tokens of logp − old), clipped as
    /// a whole; the surrogate is averaged over sequences.
    Sequence,
}

/// The loss coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSettings {
    /// Lower clip: the ratio is clipped to [1 − clip_low, 1 + clip_high].
    pub clip_low: f64,
    pub clip_high: f64,
    /// k3 KL coefficient; 0 skips the KL term.
    pub kl_coef: f64,
    /// Entropy bonus coefficient (subtracted from the loss).
    pub entropy_coef: f64,
    pub aggregation: LossAggregation,
    pub importance: ImportanceSampling,
}

impl Default for LossSettings {
    fn default() -> Self {
        LossSettings {
            clip_low: 0.2,
            clip_high: 0.2,
            kl_coef: 0.001,
            entropy_coef: 0.001,
            aggregation: LossAggregation::TokenMean,
            importance: ImportanceSampling::Token,
        }
    }
}

/// What the sums of a micro-batch are divided by. It describes the whole mini-batch (all
/// micro-batches of one optimiser step), so that the micro-batch losses add up to the
/// mini-batch loss and gradient accumulation is exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    /// Kept tokens in the mini-batch.
    pub tokens: usize,
    /// Sequences in the mini-batch.
    pub sequences: usize,
    /// Response token budget (Dr.GRPO's constant normaliser).
    pub max_response_tokens: usize,
}

/// One micro-batch's inputs.
pub struct LossInputs<'a> {
    /// Log-probs of the current policy, [b, t], with gradient.
    pub logprobs: &'a Tensor,
    /// Entropies of the current policy, [b, t], with gradient.
    pub entropy: &'a Tensor,
    /// Log-probs before the update, [b, t], no gradient.
    pub old_logprobs: &'a Tensor,
    /// Log-probs of the frozen reference, [b, t]; needed when `kl_coef` > 0.
    pub ref_logprobs: Option<&'a Tensor>,
    /// Loss mask, b rows of t values (1 keep, 0 drop).
    pub mask: &'a [Vec<f32>],
    /// One advantage per row.
    pub advantages: &'a [f32],
}

/// Token sums of one micro-batch, for logging (divide by `tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LossStats {
    pub tokens: f64,
    pub pg_loss: f64,
    pub kl: f64,
    pub entropy: f64,
    pub clipped: f64,
    pub ratio: f64,
}

impl LossStats {
    /// Adds another micro-batch's sums.
    pub fn add(&mut self, other: &LossStats) {
        self.tokens += other.tokens;
        self.pg_loss += other.pg_loss;
        self.kl += other.kl;
        self.entropy += other.entropy;
        self.clipped += other.clipped;
        self.ratio += other.ratio;
    }

    /// Token mean of a sum; None when no token was trained (a step whose every sequence was
    /// skipped has no entropy or KL to report, and 0 would read as a collapse).
    pub fn mean(&self, sum: f64) -> Option<f64> {
        (self.tokens > 0.0).then(|| sum / self.tokens)
    }
}

/// Per-token weights of the aggregation: the loss is Σ weight · per-token loss.
pub fn token_weights(
    mask: &[Vec<f32>],
    aggregation: LossAggregation,
    scale: &LossScale,
) -> Vec<Vec<f32>> {
    let sequences = scale.sequences.max(1) as f64;
    mask.iter()
        .map(|row| {
            let kept: f64 = row.iter().map(|&m| m as f64).sum();
            let divisor = match aggregation {
                LossAggregation::TokenMean => scale.tokens.max(1) as f64,
                LossAggregation::SeqMeanTokenMean => kept.max(1.0) * sequences,
                LossAggregation::SeqMeanTokenSumNorm => {
                    scale.max_response_tokens.max(1) as f64 * sequences
                }
            };
            row.iter().map(|&m| (m as f64 / divisor) as f32).collect()
        })
        .collect()
}

/// The loss of one micro-batch (a scalar with gradient) and its token sums.
pub fn policy_loss(
    inputs: &LossInputs,
    settings: &LossSettings,
    scale: &LossScale,
) -> Result<(Tensor, LossStats)> {
    let (b, t) = inputs.logprobs.dims2()?;
    if inputs.mask.len() != b || inputs.mask.iter().any(|row| row.len() != t) {
        bail!("the loss mask must be {b} rows of {t} values");
    }
    if inputs.advantages.len() != b {
        bail!("expected {b} advantages, got {}", inputs.advantages.len());
    }
    let device = inputs.logprobs.device();
    let weights = token_weights(inputs.mask, settings.aggregation, scale);

    let (low, high) = (1.0 - settings.clip_low, 1.0 + settings.clip_high);
    let mut stats = LossStats::default();
    let mut loss = match settings.importance {
        ImportanceSampling::Token => token_surrogate(inputs, &weights, (low, high), &mut stats)?,
        ImportanceSampling::Sequence => sequence_surrogate(inputs, scale, (low, high), &mut stats)?,
    };

    let weights = Tensor::from_vec(
        weights.into_iter().flatten().collect::<Vec<f32>>(),
        (b, t),
        device,
    )?;
    let mask = Tensor::from_vec(
        inputs.mask.iter().flatten().copied().collect::<Vec<f32>>(),
        (b, t),
        device,
    )?;

    if settings.kl_coef != 0.0 {
        let Some(reference) = inputs.ref_logprobs else {
            bail!(
                "kl_coef is {} but no reference log-probs were given",
                settings.kl_coef
            );
        };
        // k3 ("low_var_kl"): d = ref − logp clamped to ±20; kl = eᵈ − d − 1 clamped to ±10.
        let d = (reference - inputs.logprobs)?.clamp(-20f32, 20f32)?;
        let kl = ((d.exp()? - &d)? - 1.0)?.clamp(-10f32, 10f32)?;
        stats.kl = (&kl * &mask)?.sum_all()?.to_scalar::<f32>()? as f64;
        loss = (loss + ((kl * &weights)?.sum_all()? * settings.kl_coef)?)?;
    }
    stats.entropy = (inputs.entropy * &mask)?.sum_all()?.to_scalar::<f32>()? as f64;
    if settings.entropy_coef != 0.0 {
        let bonus = (inputs.entropy * &weights)?.sum_all()?;
        loss = (loss - (bonus * settings.entropy_coef)?)?;
    }
    Ok((loss, stats))
}

/// The token-level clipped surrogate Σ w·max(−A·ρ, −A·clip(ρ)). The branch is chosen from the
/// values: where the clipped branch wins, the term is a constant (no gradient), as in PyTorch.
fn token_surrogate(
    inputs: &LossInputs,
    weights: &[Vec<f32>],
    (low, high): (f64, f64),
    stats: &mut LossStats,
) -> Result<Tensor> {
    let (b, t) = inputs.logprobs.dims2()?;
    let device = inputs.logprobs.device();
    let ratio = (inputs.logprobs - inputs.old_logprobs)?.exp()?;
    let ratio_values = ratio.to_vec2::<f32>()?;
    let mut coefficient = Vec::with_capacity(b * t);
    let mut constant = Vec::with_capacity(b * t);
    for row in 0..b {
        let a = inputs.advantages[row] as f64;
        for col in 0..t {
            let m = inputs.mask[row][col] as f64;
            let w = weights[row][col] as f64;
            let r = ratio_values[row][col] as f64;
            let unclipped = -a * r;
            let clipped = -a * r.clamp(low, high);
            let clip_wins = clipped > unclipped;
            if clip_wins {
                coefficient.push(0.0f32);
                constant.push((clipped * w) as f32);
            } else {
                coefficient.push((-a * w) as f32);
                constant.push(0.0f32);
            }
            stats.tokens += m;
            stats.pg_loss += m * unclipped.max(clipped);
            stats.clipped += m * f64::from(u8::from(clip_wins));
            stats.ratio += m * r;
        }
    }
    let coefficient = Tensor::from_vec(coefficient, (b, t), device)?;
    let constant = Tensor::from_vec(constant, (b, t), device)?;
    Ok(((ratio * coefficient)? + constant)?.sum_all()?)
}

/// GSPO's sequence-level surrogate: per sequence s = exp(Σ m·(logp − old) / Σ m), the term
/// max(−A·s, −A·clip(s)) weighted 1 / sequences of the mini-batch. Token statistics count
/// each kept token with its sequence's ratio.
fn sequence_surrogate(
    inputs: &LossInputs,
    scale: &LossScale,
    (low, high): (f64, f64),
    stats: &mut LossStats,
) -> Result<Tensor> {
    let (b, t) = inputs.logprobs.dims2()?;
    let device = inputs.logprobs.device();
    let kept: Vec<f64> = inputs
        .mask
        .iter()
        .map(|row| row.iter().map(|&m| m as f64).sum())
        .collect();
    let mask = Tensor::from_vec(
        inputs.mask.iter().flatten().copied().collect::<Vec<f32>>(),
        (b, t),
        device,
    )?;
    let inverse: Vec<f32> = kept
        .iter()
        .map(|&n| if n > 0.0 { (1.0 / n) as f32 } else { 0.0 })
        .collect();
    let inverse = Tensor::from_vec(inverse, b, device)?;
    let log_ratio = (((inputs.logprobs - inputs.old_logprobs)? * mask)?.sum(1)? * inverse)?;
    let ratio = log_ratio.exp()?;
    let ratio_values = ratio.to_vec1::<f32>()?;
    let weight = 1.0 / scale.sequences.max(1) as f64;
    let mut coefficient = Vec::with_capacity(b);
    let mut constant = 0.0f64;
    for row in 0..b {
        if kept[row] == 0.0 {
            coefficient.push(0.0f32);
            continue;
        }
        let a = inputs.advantages[row] as f64;
        let r = ratio_values[row] as f64;
        let unclipped = -a * r;
        let clipped = -a * r.clamp(low, high);
        let clip_wins = clipped > unclipped;
        if clip_wins {
            coefficient.push(0.0);
            constant += clipped * weight;
        } else {
            coefficient.push((-a * weight) as f32);
        }
        stats.tokens += kept[row];
        stats.pg_loss += kept[row] * unclipped.max(clipped);
        stats.clipped += kept[row] * f64::from(u8::from(clip_wins));
        stats.ratio += kept[row] * r;
    }
    let coefficient = Tensor::from_vec(coefficient, b, device)?;
    Ok(((ratio * coefficient)?.sum_all()? + constant)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(rows: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu).unwrap()
    }

    /// Two sequences of three positions; row 0 keeps 2 tokens, row 1 keeps 3.
    struct Fixture {
        logp: Var,
        old: Tensor,
        reference: Tensor,
        entropy: Var,
        mask: Vec<Vec<f32>>,
        advantages: Vec<f32>,
    }

    fn fixture() -> Fixture {
        Fixture {
            logp: Var::from_tensor(&t(&[[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]])).unwrap(),
            old: t(&[[-1.1, -0.9, -2.0], [-0.3, -1.0, -0.2]]),
            reference: t(&[[-1.0, -0.4, -2.5], [-0.5, -1.2, -0.9]]),
            entropy: Var::from_tensor(&t(&[[1.5, 0.8, 2.0], [0.2, 1.1, 0.6]])).unwrap(),
            mask: vec![vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0]],
            advantages: vec![1.0, -0.5],
        }
    }

    /// The loss computed by hand in f64, straight from REFERENCE.md's formulas.
    fn reference_loss(f: &Fixture, s: &LossSettings, scale: &LossScale) -> f64 {
        let logp = f.logp.as_tensor().to_vec2::<f32>().unwrap();
        let old = f.old.to_vec2::<f32>().unwrap();
        let reference = f.reference.to_vec2::<f32>().unwrap();
        let ent = f.entropy.as_tensor().to_vec2::<f32>().unwrap();
        let mut per_seq = Vec::new();
        let mut all = 0.0;
        for b in 0..2 {
            let mut sum = 0.0;
            let mut n = 0.0;
            for i in 0..3 {
                if f.mask[b][i] == 0.0 {
                    continue;
                }
                let a = f.advantages[b] as f64;
                let r = ((logp[b][i] - old[b][i]) as f64).exp();
                let pg = (-a * r).max(-a * r.clamp(1.0 - s.clip_low, 1.0 + s.clip_high));
                let d = ((reference[b][i] - logp[b][i]) as f64).clamp(-20.0, 20.0);
                let kl = (d.exp() - d - 1.0).clamp(-10.0, 10.0);
                let token = pg + s.kl_coef * kl - s.entropy_coef * ent[b][i] as f64;
                sum += token;
                n += 1.0;
            }
            all += sum;
            per_seq.push((sum, n));
        }
        match s.aggregation {
            LossAggregation::TokenMean => all / scale.tokens as f64,
            LossAggregation::SeqMeanTokenMean => {
                per_seq.iter().map(|(s, n)| s / n).sum::<f64>() / 2.0
            }
            LossAggregation::SeqMeanTokenSumNorm => {
                per_seq
                    .iter()
                    .map(|(s, _)| s / scale.max_response_tokens as f64)
                    .sum::<f64>()
                    / 2.0
            }
        }
    }

    fn run(f: &Fixture, s: &LossSettings, scale: &LossScale) -> (Tensor, LossStats) {
        let inputs = LossInputs {
            logprobs: f.logp.as_tensor(),
            entropy: f.entropy.as_tensor(),
            old_logprobs: &f.old,
            ref_logprobs: Some(&f.reference),
            mask: &f.mask,
            advantages: &f.advantages,
        };
        policy_loss(&inputs, s, scale).unwrap()
    }

    const SCALE: LossScale = LossScale {
        tokens: 5,
        sequences: 2,
        max_response_tokens: 4,
    };

    #[test]
    fn loss_matches_the_hand_computed_reference_in_every_mode() {
        let f = fixture();
        for aggregation in [
            LossAggregation::TokenMean,
            LossAggregation::SeqMeanTokenMean,
            LossAggregation::SeqMeanTokenSumNorm,
        ] {
            // Large coefficients so that each term shows.
            let s = LossSettings {
                kl_coef: 0.5,
                entropy_coef: 0.1,
                aggregation,
                ..LossSettings::default()
            };
            let (loss, stats) = run(&f, &s, &SCALE);
            let got = loss.to_scalar::<f32>().unwrap() as f64;
            let want = reference_loss(&f, &s, &SCALE);
            assert!(
                (got - want).abs() < 1e-6,
                "{aggregation:?}: {got} vs {want}"
            );
            assert_eq!(stats.tokens, 5.0);
        }
    }

    #[test]
    fn clipped_tokens_get_no_gradient_and_are_counted() {
        let f = fixture();
        let s = LossSettings {
            kl_coef: 0.0,
            entropy_coef: 0.0,
            ..LossSettings::default()
        };
        let (loss, stats) = run(&f, &s, &SCALE);
        // Row 0 pos 1: ratio e^0.4 = 1.49 > 1.2 with A = 1 → clipped. Row 1 pos 2: ratio
        // e^-0.5 = 0.61 < 0.8 with A = −0.5 → clipped. Row 1 pos 1: ratio e^-0.2 = 0.82 → not.
        assert_eq!(stats.clipped, 2.0);
        let grads = loss.backward().unwrap();
        let g = grads
            .get(f.logp.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(g[0][1], 0.0);
        assert_eq!(g[1][2], 0.0);
        // Unclipped token: d/dlogp (−A·ρ / 5) = −A·ρ / 5.
        let r = (-0.2f32).exp();
        assert!((g[1][1] - 0.5 * r / 5.0).abs() < 1e-6, "{}", g[1][1]);
        // Masked position: no gradient at all.
        assert_eq!(g[0][2], 0.0);
    }

    #[test]
    fn masked_positions_do_not_change_the_gradient() {
        let s = LossSettings {
            kl_coef: 0.3,
            entropy_coef: 0.2,
            ..LossSettings::default()
        };
        let f = fixture();
        let (loss, _) = run(&f, &s, &SCALE);
        let before = loss.backward().unwrap();
        let g_before = before
            .get(f.logp.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Perturb the masked position's inputs wildly.
        let mut g = fixture();
        g.logp = Var::from_tensor(&t(&[[-1.0, -0.5, -9.0], [-0.3, -1.2, -0.7]])).unwrap();
        g.entropy = Var::from_tensor(&t(&[[1.5, 0.8, 7.0], [0.2, 1.1, 0.6]])).unwrap();
        let (loss2, _) = run(&g, &s, &SCALE);
        let after = loss2.backward().unwrap();
        let g_after = after
            .get(g.logp.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(g_before, g_after);
        assert_eq!(
            loss.to_scalar::<f32>().unwrap(),
            loss2.to_scalar::<f32>().unwrap()
        );
    }

    #[test]
    fn ratio_one_gives_the_plain_policy_gradient() {
        let f = fixture();
        let same = f.logp.as_tensor().clone();
        let s = LossSettings {
            kl_coef: 0.0,
            entropy_coef: 0.0,
            ..LossSettings::default()
        };
        let inputs = LossInputs {
            logprobs: f.logp.as_tensor(),
            entropy: f.entropy.as_tensor(),
            old_logprobs: &same,
            ref_logprobs: None,
            mask: &f.mask,
            advantages: &f.advantages,
        };
        let (loss, stats) = policy_loss(&inputs, &s, &SCALE).unwrap();
        // −(1·2 + (−0.5)·3) / 5 = −0.1
        assert!((loss.to_scalar::<f32>().unwrap() + 0.1).abs() < 1e-6);
        assert_eq!(stats.clipped, 0.0);
        assert_eq!(stats.ratio, 5.0);
    }

    #[test]
    fn bad_shapes_and_a_missing_reference_are_errors() {
        let f = fixture();
        let s = LossSettings::default();
        let inputs = LossInputs {
            logprobs: f.logp.as_tensor(),
            entropy: f.entropy.as_tensor(),
            old_logprobs: &f.old,
            ref_logprobs: None,
            mask: &f.mask,
            advantages: &f.advantages,
        };
        let error = policy_loss(&inputs, &s, &SCALE).unwrap_err();
        assert!(error.to_string().contains("reference"), "{error}");
        let short = vec![vec![1.0, 1.0, 0.0]];
        let inputs = LossInputs {
            mask: &short,
            ..inputs
        };
        assert!(policy_loss(&inputs, &s, &SCALE).is_err());
    }

    #[test]
    fn sequence_importance_matches_gspo_by_hand() {
        let f = fixture();
        let logp = f.logp.as_tensor().to_vec2::<f32>().unwrap();
        let old = f.old.to_vec2::<f32>().unwrap();
        // Sequence ratios: exp of the mean log-ratio over each row's kept tokens.
        let ratio = |row: usize| -> f64 {
            let kept: Vec<usize> = (0..3).filter(|&i| f.mask[row][i] > 0.0).collect();
            let sum: f64 = kept
                .iter()
                .map(|&i| (logp[row][i] - old[row][i]) as f64)
                .sum();
            (sum / kept.len() as f64).exp()
        };
        let (s0, s1) = (ratio(0), ratio(1));
        assert!((s0 - 0.25f64.exp()).abs() < 1e-6 && (s1 - (-0.7f64 / 3.0).exp()).abs() < 1e-6);
        let wide = LossSettings {
            clip_low: 0.5,
            clip_high: 0.5,
            kl_coef: 0.0,
            entropy_coef: 0.0,
            importance: ImportanceSampling::Sequence,
            ..LossSettings::default()
        };
        // Neither ratio is clipped at ±0.5: loss = mean over sequences of −A·s.
        let (loss, stats) = run(&f, &wide, &SCALE);
        let want = (0.5 * s1 - s0) / 2.0;
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-6);
        assert_eq!(stats.clipped, 0.0);
        // d/dlogp_t = −A·s·m_t / (n_row · sequences).
        let g = loss.backward().unwrap();
        let g = g.get(f.logp.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!((g[0][0] as f64 + s0 / 4.0).abs() < 1e-6, "{g:?}");
        assert!((g[1][1] as f64 - 0.5 * s1 / 6.0).abs() < 1e-6, "{g:?}");
        assert_eq!(g[0][2], 0.0);
        // At ±0.2 both sequences are clipped (s0 = 1.28 with A > 0, s1 = 0.79 with A < 0):
        // constants, no gradient, and every kept token counted as clipped.
        let tight = LossSettings {
            clip_low: 0.2,
            clip_high: 0.2,
            ..wide
        };
        let (loss, stats) = run(&f, &tight, &SCALE);
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - (-1.2 + 0.5 * 0.8) / 2.0).abs() < 1e-6);
        assert_eq!(stats.clipped, 5.0);
        let g = loss.backward().unwrap();
        assert!(g.get(f.logp.as_tensor()).is_none_or(|g| {
            g.to_vec2::<f32>()
                .unwrap()
                .iter()
                .flatten()
                .all(|&x| x == 0.0)
        }));
    }
}
