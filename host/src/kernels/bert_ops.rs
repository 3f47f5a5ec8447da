//! In-place f32 CPU steps of the BERT encoder's forward pass, each one pass over its tensor
//! where the composed candle ops take two or three (and allocate a tensor per step): bias +
//! GELU, bias + residual, and the attention softmax with the padding bias. The maths is in
//! [`crate::kernels::vector_math`]; [`applies`] says when these kernels can be used (other devices and
//! dtypes keep candle's ops).

use crate::kernels::inplace::{operand, slice_mut};
use crate::kernels::vector_math::{
    bias_gelu_in_place, bias_residual_in_place, softmax_with_bias_in_place,
};
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;

type CandleResult<T> = candle_core::Result<T>;

/// Elements per parallel work item (rounded to whole rows).
const CHUNK: usize = 1 << 14;

/// Whether the kernels apply to all of `tensors`: f32, on the CPU, contiguous.
pub fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

/// Whole rows of `width` per work item.
fn chunk_of(width: usize) -> usize {
    width.max(1) * (CHUNK / width.max(1)).max(1)
}

/// `x ← gelu(x + bias)` over the rows of `x` `[rows, width]`, `bias` `[width]`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> candle_core::Result<()> {
    x.inplace_op2(bias, &BiasGelu)
}

struct BiasGelu;

impl InplaceOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<()> {
        let x = slice_mut(s1, l1)?;
        let bias = operand(s2, l2)?;
        if bias.is_empty() || !x.len().is_multiple_of(bias.len()) {
            candle_core::bail!("bias-gelu: bias of {} for {} values", bias.len(), x.len());
        }
        x.par_chunks_mut(chunk_of(bias.len()))
            .for_each(|rows| bias_gelu_in_place(rows, bias));
        Ok(())
    }
}

/// `x ← (x + bias) + residual` over the rows of `x` `[rows, width]`, `bias` `[width]`,
/// `residual` shaped like `x`.
pub fn bias_residual(x: &Tensor, bias: &Tensor, residual: &Tensor) -> candle_core::Result<()> {
    if x.dims() != residual.dims() {
        candle_core::bail!(
            "bias-residual: residual {:?} for {:?}",
            residual.dims(),
            x.dims()
        );
    }
    x.inplace_op3(bias, residual, &BiasResidual)
}

struct BiasResidual;

impl InplaceOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "bias-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CandleResult<()> {
        let x = slice_mut(s1, l1)?;
        let (bias, residual) = (operand(s2, l2)?, operand(s3, l3)?);
        if bias.is_empty() || !x.len().is_multiple_of(bias.len()) {
            candle_core::bail!(
                "bias-residual: bias of {} for {} values",
                bias.len(),
                x.len()
            );
        }
        let chunk = chunk_of(bias.len());
        x.par_chunks_mut(chunk)
            .zip(residual.par_chunks(chunk))
            .for_each(|(rows, residual)| bias_residual_in_place(rows, bias, residual));
        Ok(())
    }
}

/// Attention probabilities in place: `scores` `[batch, heads, queries, keys]` become
/// softmax(scores + bias) over the keys, `bias` `[batch, keys]` (0 for real keys, −1e30 for
/// padding).
pub fn masked_softmax(scores: &Tensor, bias: &Tensor) -> candle_core::Result<()> {
    let (batch, _, _, keys) = scores.dims4()?;
    if bias.dims() != [batch, keys] {
        candle_core::bail!(
            "masked-softmax: bias {:?} for scores {:?}",
            bias.dims(),
            scores.dims()
        );
    }
    scores.inplace_op2(bias, &MaskedSoftmax { batch })
}

struct MaskedSoftmax {
    batch: usize,
}

impl InplaceOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<()> {
        let scores = slice_mut(s1, l1)?;
        let bias = operand(s2, l2)?;
        let keys = bias.len() / self.batch.max(1);
        if keys == 0 || scores.is_empty() {
            return Ok(());
        }
        // Rows of one batch entry are contiguous: [heads, queries] of them per entry.
        let rows_per_entry = scores.len() / keys / self.batch;
        scores
            .par_chunks_mut(chunk_of(keys))
            .enumerate()
            .for_each(|(chunk, rows)| {
                let first_row = chunk * (chunk_of(keys) / keys);
                for (offset, row) in rows.chunks_mut(keys).enumerate() {
                    let entry = (first_row + offset) / rows_per_entry;
                    softmax_with_bias_in_place(row, &bias[entry * keys..(entry + 1) * keys]);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(shape: &[usize], seed: u32) -> Tensor {
        let count: usize = shape.iter().product();
        let data: Vec<f32> = (0..count as u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 12) % 4001) as f32 / 1000.0
                    - 2.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("shape")
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("same shapes")
    }

    #[test]
    fn bias_and_gelu_match_candles_composed_ops() {
        let (x, bias) = (tensor(&[700, 48], 1), tensor(&[48], 2));
        let expected = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
        let fast = x.copy().unwrap();
        bias_gelu(&fast, &bias).unwrap();
        assert!(max_difference(&fast, &expected) < 1e-5);
    }

    #[test]
    fn bias_and_residual_match_candles_composed_ops() {
        let (x, bias, residual) = (
            tensor(&[700, 48], 3),
            tensor(&[48], 4),
            tensor(&[700, 48], 5),
        );
        let expected = (x.broadcast_add(&bias).unwrap() + &residual).unwrap();
        let fast = x.copy().unwrap();
        bias_residual(&fast, &bias, &residual).unwrap();
        assert_eq!(max_difference(&fast, &expected), 0.0);
        let wrong = tensor(&[699, 48], 5);
        assert!(bias_residual(&fast, &bias, &wrong).is_err());
    }

    #[test]
    fn masked_softmax_matches_candles_softmax_with_the_padding_bias() {
        let (batch, heads, tokens) = (3, 4, 37);
        let scores = tensor(&[batch, heads, tokens, tokens], 6);
        // Entry b has 37 − 10·b real tokens.
        let mask: Vec<f32> = (0..batch)
            .flat_map(|b| (0..tokens).map(move |t| if t < tokens - 10 * b { 0.0 } else { -1e30 }))
            .collect();
        let bias = Tensor::from_vec(mask, (batch, tokens), &Device::Cpu).unwrap();
        let expected = candle_nn::ops::softmax_last_dim(
            &scores
                .broadcast_add(&bias.reshape((batch, 1, 1, tokens)).unwrap())
                .unwrap(),
        )
        .unwrap();
        let fast = scores.copy().unwrap();
        masked_softmax(&fast, &bias).unwrap();
        assert!(max_difference(&fast, &expected) < 1e-6);
        // Padding keys get no weight.
        let last = fast
            .get(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for row in last.chunks(tokens) {
            assert!(row[tokens - 20..].iter().all(|&p| p < 1e-30));
        }
        let wrong = Tensor::zeros((batch, tokens + 1), DType::F32, &Device::Cpu).unwrap();
        assert!(masked_softmax(&fast, &wrong).is_err());
    }
}
