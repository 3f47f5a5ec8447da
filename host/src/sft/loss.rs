//! The supervised loss: the mean negative log-likelihood of the generated tokens of a batch.
//! Prompt, observation and padding positions carry mask 0 and contribute exactly nothing to
//! the loss or its gradient.

use anyhow::{Result, bail};
use candle_core::Tensor;

/// The loss of one micro-batch: −Σ mask·logp / `batch_tokens`, where `batch_tokens` counts the
/// masked-in tokens of the whole optimiser batch, so that micro-batch losses add up to the
/// batch's token mean and gradient accumulation is exact.
pub fn sft_loss(logprobs: &Tensor, mask: &[Vec<f32>], batch_tokens: usize) -> Result<Tensor> {
    let (b, t) = logprobs.dims2()?;
    if mask.len() != b || mask.iter().any(|row| row.len() != t) {
        bail!("the loss mask must be {b} rows of {t} values");
    }
    if batch_tokens == 0 {
        bail!("a batch without trained tokens has no loss");
    }
    let scale = -1.0 / batch_tokens as f64;
    let weights: Vec<f32> = mask
        .iter()
        .flatten()
        .map(|&m| (m as f64 * scale) as f32)
        .collect();
    let weights = Tensor::from_vec(weights, (b, t), logprobs.device())?;
    Ok((logprobs * weights)?.sum_all()?)
}

/// Masked-in positions whose target is the model's most likely token.
pub fn correct_tokens(argmax: &Tensor, ids: &Tensor, mask: &[Vec<f32>]) -> Result<usize> {
    let predicted = argmax.to_vec2::<u32>()?;
    let (_, t) = ids.dims2()?;
    let targets = ids.narrow(1, 1, t - 1)?.to_vec2::<u32>()?;
    let mut correct = 0;
    for ((p, target), m) in predicted.iter().zip(&targets).zip(mask) {
        for ((p, target), &m) in p.iter().zip(target).zip(m) {
            if m > 0.0 && p == target {
                correct += 1;
            }
        }
    }
    Ok(correct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn loss_and_gradient_match_a_hand_computation() {
        let logp = Var::from_tensor(
            &Tensor::new(&[[-1.0f32, -2.0, -0.5], [-0.1, -3.0, -1.5]], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let mask = vec![vec![1.0, 0.0, 1.0], vec![0.0, 1.0, 0.0]];
        // Three kept tokens in this micro-batch, five in the whole batch.
        let loss = sft_loss(logp.as_tensor(), &mask, 5).unwrap();
        let want = (1.0 + 0.5 + 3.0) / 5.0;
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-6);
        let grads = loss.backward().unwrap();
        let g = grads
            .get(logp.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(g, vec![vec![-0.2, 0.0, -0.2], vec![0.0, -0.2, 0.0]]);
        assert!(sft_loss(logp.as_tensor(), &mask[..1], 5).is_err());
        assert!(sft_loss(logp.as_tensor(), &mask, 0).is_err());
    }

    #[test]
    fn accuracy_counts_masked_in_hits_only() {
        let ids = Tensor::new(&[[7u32, 1, 2, 3]], &Device::Cpu).unwrap();
        let argmax = Tensor::new(&[[1u32, 9, 3]], &Device::Cpu).unwrap();
        assert_eq!(
            correct_tokens(&argmax, &ids, &[vec![1.0, 1.0, 1.0]]).unwrap(),
            2
        );
        assert_eq!(
            correct_tokens(&argmax, &ids, &[vec![0.0, 1.0, 1.0]]).unwrap(),
            1
        );
    }
}
