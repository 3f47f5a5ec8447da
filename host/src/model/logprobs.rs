//! Log-probabilities and entropy of response tokens under the policy, for padded batches.

use super::transformer::Policy;
use crate::kernels::fused;
use anyhow::{Result, bail};
use candle_core::{D, DType, Tensor};

/// Right-padded token sequences as tensors.
pub struct PaddedBatch {
    /// [batch, max_len] u32.
    pub ids: Tensor,
    /// [batch, max_len] u8: 1 for a token, 0 for padding.
    pub mask: Tensor,
    /// Length of each sequence.
    pub lengths: Vec<usize>,
}

impl PaddedBatch {
    /// Pads `sequences` on the right with `pad_id`.
    pub fn new(
        sequences: &[Vec<u32>],
        pad_id: u32,
        device: &candle_core::Device,
    ) -> Result<PaddedBatch> {
        if sequences.is_empty() || sequences.iter().any(Vec::is_empty) {
            bail!("a batch needs at least one non-empty sequence");
        }
        let max = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len() * max);
        let mut mask = Vec::with_capacity(sequences.len() * max);
        for sequence in sequences {
            ids.extend_from_slice(sequence);
            ids.extend(std::iter::repeat_n(pad_id, max - sequence.len()));
            mask.extend(std::iter::repeat_n(1u8, sequence.len()));
            mask.extend(std::iter::repeat_n(0u8, max - sequence.len()));
        }
        let shape = (sequences.len(), max);
        Ok(PaddedBatch {
            ids: Tensor::from_vec(ids, shape, device)?,
            mask: Tensor::from_vec(mask, shape, device)?,
            lengths: sequences.iter().map(Vec::len).collect(),
        })
    }
}

/// Per-token log-probability and entropy of a batch: position t holds the prediction of token
/// t + 1, so both are [batch, max_len - 1]; positions past a sequence's end are 0.
pub struct TokenStats {
    pub logprobs: Tensor,
    pub entropy: Tensor,
}

impl Policy {
    /// Log-probs and entropies of every next token of `batch`, through the training forward
    /// (so the result carries gradients to the weights). Wrap in `detach()` for none.
    pub fn token_stats(&self, batch: &PaddedBatch) -> Result<TokenStats> {
        self.token_stats_tempered(batch, 1.0)
    }

    /// [`Policy::token_stats`] of the distribution sampled at `temperature` (the logits are
    /// divided by it), as RL needs for the policy that produced the tokens.
    pub fn token_stats_tempered(
        &self,
        batch: &PaddedBatch,
        temperature: f32,
    ) -> Result<TokenStats> {
        let (_, t) = batch.ids.dims2()?;
        if t < 2 {
            bail!("sequences need at least two tokens to score a next token");
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            bail!("the temperature must be positive, not {temperature}");
        }
        let logits = self.forward_train(&batch.ids, &batch.mask)?;
        self.stats_of_logits(&logits, batch, temperature)
    }

    /// [`Policy::token_stats`] and the model's most likely token at every position ([b, t − 1]
    /// u32, no gradient), for the token accuracy of supervised training.
    pub fn token_stats_and_argmax(&self, batch: &PaddedBatch) -> Result<(TokenStats, Tensor)> {
        let (_, t) = batch.ids.dims2()?;
        if t < 2 {
            bail!("sequences need at least two tokens to score a next token");
        }
        let logits = self.forward_train(&batch.ids, &batch.mask)?;
        let argmax = logits.detach().narrow(1, 0, t - 1)?.argmax(D::Minus1)?;
        Ok((self.stats_of_logits(&logits, batch, 1.0)?, argmax))
    }

    /// Log-probs and entropies from the training forward's logits.
    fn stats_of_logits(
        &self,
        logits: &Tensor,
        batch: &PaddedBatch,
        temperature: f32,
    ) -> Result<TokenStats> {
        let (b, t) = batch.ids.dims2()?;
        let logits = logits.clone();
        let valid = batch.mask.narrow(1, 1, t - 1)?;
        if fused::applies(&logits) {
            // One pass per position over the vocabulary. Every position is scored (the last
            // against a dummy target) so that the logits need no copy, then the last dropped.
            let vocab = logits.dim(2)?;
            let mut logits = logits.reshape((b * t, vocab))?;
            if temperature != 1.0 {
                logits = (logits / temperature as f64)?;
            }
            let targets = Tensor::cat(
                &[
                    &batch.ids.narrow(1, 1, t - 1)?,
                    &Tensor::zeros((b, 1), DType::U32, batch.ids.device())?,
                ],
                1,
            )?
            .flatten_all()?;
            let stats = fused::token_logprob_entropy(&logits, &targets)?
                .reshape((b, t, 2))?
                .narrow(1, 0, t - 1)?;
            let valid = valid.to_dtype(DType::F32)?;
            return Ok(TokenStats {
                logprobs: (stats.get_on_dim(2, 0)? * &valid)?,
                entropy: (stats.get_on_dim(2, 1)? * &valid)?,
            });
        }
        let mut logits = logits.narrow(1, 0, t - 1)?.to_dtype(wide(self.dtype()))?;
        if temperature != 1.0 {
            logits = (logits / temperature as f64)?;
        }
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = batch.ids.narrow(1, 1, t - 1)?.unsqueeze(2)?;
        let chosen = log_probs.gather(&targets.contiguous()?, 2)?.squeeze(2)?;
        let entropy = (log_probs.exp()? * &log_probs)?.sum(D::Minus1)?.neg()?;
        let valid = valid.to_dtype(chosen.dtype())?;
        debug_assert_eq!(valid.dims(), &[b, t - 1]);
        Ok(TokenStats {
            logprobs: (chosen * &valid)?,
            entropy: (entropy * &valid)?,
        })
    }
}

fn wide(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}
