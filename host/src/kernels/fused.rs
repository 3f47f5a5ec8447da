//! Fused CPU operations of the training forward, each with its own backward: one pass over
//! the data where candle's composed ops write a fresh tensor per step (and keep every one of
//! them for the backward). They apply to contiguous f32 tensors on the CPU; callers keep the
//! composed ops for anything else (bf16, f64, CUDA), so results agree with those to rounding.
//!
//! - [`token_logprob_entropy`]: log-softmax over the vocabulary, the chosen token's log-prob
//!   and the entropy, for every position (the logits are read twice forward, once backward).
//! - [`rms_norm`]: `x / sqrt(mean(x²) + eps) · w`.
//! - [`rope`]: the rotary embedding (rotate-half form) of q or k rows.
//! - [`swiglu`]: the MLP's `silu(gate) · up`.
//! - [`linear`]: a projection `x · wᵀ`. Composed from candle ops it is three graph nodes (the
//!   transposed view of `w`, its broadcast over the batch, the matmul), and candle's backward
//!   materialises a weight-sized gradient at each: a zero tensor and an add per node, a sum over
//!   the broadcast and a strided add back through the transpose, for every weight matrix of
//!   every micro-batch. Here dx = g · w and dw = gᵀ · x go straight into fresh buffers, through
//!   the same `gemm` kernels as candle's matmul.

use super::matrix::{Operand, product};
use crate::kernels::vector_math;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

type CandleResult<T> = candle_core::Result<T>;

/// Whether the fused ops apply to `t`: f32 on the CPU.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The contiguous f32 data of a CPU storage.
pub(super) fn f32_data<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> CandleResult<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// Runs `work` on the contiguous f32 data of `t` (copied first if it is not contiguous).
pub(super) fn with_f32<R>(
    t: &Tensor,
    work: impl FnOnce(&[f32]) -> CandleResult<R>,
) -> CandleResult<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("fused ops run on the CPU only");
    };
    work(f32_data(cpu, layout, "tensor")?)
}

/// Per position: log-softmax of `logits` [n, vocab] at `targets` [n] (u32) and the entropy of
/// the softmax, as [n, 2] (log-prob, entropy). Differentiable in `logits`.
pub fn token_logprob_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, TokenLogprobEntropy)
}

struct TokenLogprobEntropy;

/// Log-sum-exp of a row and the softmax-weighted mean of its values (sums in f64 lanes).
fn row_lse_and_mean(row: &[f32]) -> (f64, f64) {
    let max = vector_math::max(row);
    let (sum, weighted) = exp_sums(row, max);
    (max as f64 + sum.ln(), weighted / sum)
}

/// Σ e^(z − max) and Σ e^(z − max)·z over a row.
fn exp_sums(row: &[f32], max: f32) -> (f64, f64) {
    vector_math::with_avx2!(run(row: &[f32], max: f32) -> (f64, f64) {
        const LANES: usize = 4;
        let (mut sums, mut weighted) = ([0f64; LANES], [0f64; LANES]);
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for ((s, w), &z) in sums.iter_mut().zip(&mut weighted).zip(chunk) {
                let e = vector_math::exp_nonpositive(z - max) as f64;
                *s += e;
                *w += e * z as f64;
            }
        }
        let (mut sum, mut weight) = (0f64, 0f64);
        for &z in chunks.remainder() {
            let e = vector_math::exp_nonpositive(z - max) as f64;
            sum += e;
            weight += e * z as f64;
        }
        (sums.iter().sum::<f64>() + sum, weighted.iter().sum::<f64>() + weight)
    })
}

/// Gradient of (log-prob of the target, entropy) with respect to one row of logits, without
/// the target's own +g_logp: −g_logp·p_j − g_entropy·p_j·(log p_j + H).
fn logprob_entropy_grad(
    row: &[f32],
    lse: f32,
    entropy: f32,
    g_logp: f32,
    g_entropy: f32,
    out: &mut [f32],
) {
    vector_math::with_avx2!(run(row: &[f32], lse: f32, entropy: f32, g_logp: f32, g_entropy: f32, out: &mut [f32]) {
        for (o, &z) in out.iter_mut().zip(row) {
            let logp = z - lse;
            // logp ≤ 0 up to rounding; the exponential is exact enough just above 0 too.
            let p = vector_math::exp_nonpositive(logp);
            *o = -g_logp * p - g_entropy * p * (logp + entropy);
        }
    })
}

impl CustomOp2 for TokenLogprobEntropy {
    fn name(&self) -> &'static str {
        "token-logprob-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (n, vocab) = l1.shape().dims2()?;
        if vocab == 0 {
            candle_core::bail!("logits over an empty vocabulary");
        }
        let logits = f32_data(s1, l1, "logits")?;
        let (start, end) = l2
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("targets must be contiguous".into()))?;
        let targets = &s2.as_slice::<u32>()?[start..end];
        if targets.len() != n {
            candle_core::bail!("{} targets for {n} rows of logits", targets.len());
        }
        if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("target {bad} is outside the vocabulary of {vocab}");
        }
        let mut out = vec![0f32; n * 2];
        out.par_chunks_mut(2)
            .zip(logits.par_chunks(vocab))
            .zip(targets.par_iter())
            .for_each(|((out, row), &target)| {
                let (lse, mean) = row_lse_and_mean(row);
                out[0] = (row[target as usize] as f64 - lse) as f32;
                out[1] = (lse - mean) as f32;
            });
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        // d logp_c / dz_j = [j = c] - p_j;  dH / dz_j = -p_j (log p_j + H).
        let (n, vocab) = logits.dims2()?;
        let targets = targets.to_vec1::<u32>()?;
        let res = res.to_vec2::<f32>()?;
        let grad = grad.to_vec2::<f32>()?;
        let mut out = vec![0f32; n * vocab];
        with_f32(logits, |logits| {
            out.par_chunks_mut(vocab)
                .zip(logits.par_chunks(vocab))
                .enumerate()
                .for_each(|(i, (out, row))| {
                    let target = targets[i] as usize;
                    let (logp_target, entropy) = (res[i][0], res[i][1]);
                    let (g_logp, g_entropy) = (grad[i][0], grad[i][1]);
                    let lse = row[target] - logp_target;
                    logprob_entropy_grad(row, lse, entropy, g_logp, g_entropy, out);
                    out[target] += g_logp;
                });
            Ok(())
        })?;
        let grad_logits = Tensor::from_vec(out, (n, vocab), &Device::Cpu)?;
        Ok((Some(grad_logits), None))
    }
}

/// `x [..., k] · wᵀ` for a weight `w [n, k]`, as [..., n]. Differentiable in both.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (n, k) = l2.shape().dims2()?;
        let dims = l1.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!(
                "linear: input {:?} does not fit weight {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let x = f32_data(s1, l1, "linear input")?;
        let w = f32_data(s2, l2, "linear weight")?;
        let m: usize = dims[..dims.len() - 1].iter().product();
        let x = Operand {
            data: x,
            row_stride: k,
            column_stride: 1,
        };
        // wᵀ [k, n]: element (i, j) is w[j, i].
        let wt = Operand {
            data: w,
            row_stride: 1,
            column_stride: k,
        };
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = n;
        }
        Ok((
            CpuStorage::F32(product(m, n, k, x, wt)?),
            Shape::from(out_dims),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = w.dims2()?;
        let m: usize = x.dims()[..x.rank().saturating_sub(1)].iter().product();
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(grad, |g| {
                    // dx [m, k] = g [m, n] · w [n, k].
                    let dx = product(
                        m,
                        k,
                        n,
                        Operand {
                            data: g,
                            row_stride: n,
                            column_stride: 1,
                        },
                        Operand {
                            data: w,
                            row_stride: k,
                            column_stride: 1,
                        },
                    )?;
                    // dw [n, k] = gᵀ [n, m] · x [m, k].
                    let dw = product(
                        n,
                        k,
                        m,
                        Operand {
                            data: g,
                            row_stride: 1,
                            column_stride: n,
                        },
                        Operand {
                            data: x,
                            row_stride: k,
                            column_stride: 1,
                        },
                    )?;
                    Ok((dx, dw))
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(dw, (n, k), &Device::Cpu)?),
        ))
    }
}

/// RMS norm over the last dimension: `x / sqrt(mean(x²) + eps) · weight`. Differentiable in
/// both `x` and `weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

/// 1 / sqrt(mean(x²) + eps) of a row.
fn inverse_rms(row: &[f32], eps: f64) -> f32 {
    let squares: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
    (1.0 / (squares / row.len() as f64 + eps).sqrt()) as f32
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let hidden = l1.shape().dims().last().copied().unwrap_or(0);
        if l2.shape().dims() != [hidden] {
            candle_core::bail!(
                "norm weight {:?} does not fit input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        if hidden == 0 {
            candle_core::bail!("RMS norm over an empty dimension");
        }
        let x = f32_data(s1, l1, "input")?;
        let weight = f32_data(s2, l2, "weight")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(hidden)
            .zip(x.par_chunks(hidden))
            .for_each(|(out, row)| {
                let r = inverse_rms(row, self.eps);
                for ((o, &x), &w) in out.iter_mut().zip(row).zip(weight) {
                    *o = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        // y = x r w, r = (mean x² + eps)^-½:
        // dx = r (g w) − x r³ mean(g w x);  dw = Σ_rows g x r.
        let hidden = weight.elem_count();
        let eps = self.eps;
        let mut dx = vec![0f32; x.elem_count()];
        let dw = with_f32(x, |x| {
            with_f32(weight, |w| {
                with_f32(grad, |g| {
                    Ok(dx
                        .par_chunks_mut(hidden)
                        .zip(x.par_chunks(hidden).zip(g.par_chunks(hidden)))
                        .fold(
                            || vec![0f64; hidden],
                            |mut dw, (dx, (x, g))| {
                                let r = inverse_rms(x, eps);
                                let projected: f64 = x
                                    .iter()
                                    .zip(g)
                                    .zip(w)
                                    .map(|((&x, &g), &w)| (g * w * x) as f64)
                                    .sum();
                                let correction = r * r * r * (projected / hidden as f64) as f32;
                                for i in 0..hidden {
                                    dx[i] = r * g[i] * w[i] - x[i] * correction;
                                    dw[i] += (g[i] * x[i] * r) as f64;
                                }
                                dw
                            },
                        )
                        .reduce(
                            || vec![0f64; hidden],
                            |mut a, b| {
                                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                                a
                            },
                        ))
                })
            })
        })?;
        let dw: Vec<f32> = dw.into_iter().map(|v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(dw, hidden, &Device::Cpu)?),
        ))
    }
}

/// Rotary embedding (rotate-half form, as Qwen2 and Llama use) of `x` [batch, seq, heads,
/// head_dim] with the angles of each token, `cos` and `sin` [batch, seq, head_dim / 2]:
/// `(x₁, x₂) → (x₁ cos − x₂ sin, x₂ cos + x₁ sin)`. Differentiable in `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}

struct Rope;

/// Rotates every head of every token: `sign` +1 forward, −1 for the transpose (backward).
fn rotate(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], half: usize, sign: f32) {
    // One token: `heads` rows of 2·half values, one angle table row.
    let rows = x.len() / (2 * half);
    for row in 0..rows {
        let (x1, x2) = x[row * 2 * half..][..2 * half].split_at(half);
        let (o1, o2) = out[row * 2 * half..][..2 * half].split_at_mut(half);
        for i in 0..half {
            let (c, s) = (cos[i], sign * sin[i]);
            o1[i] = x1[i] * c - x2[i] * s;
            o2[i] = x2[i] * c + x1[i] * s;
        }
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (batch, seq, heads, hd) = l1.shape().dims4()?;
        let half = hd / 2;
        if hd % 2 != 0
            || heads * hd == 0
            || l2.shape().dims3()? != (batch, seq, half)
            || l3.shape().dims3()? != (batch, seq, half)
        {
            candle_core::bail!(
                "rope tables {:?} / {:?} do not fit {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            );
        }
        let x = f32_data(s1, l1, "input")?;
        let (cos, sin) = (f32_data(s2, l2, "cos")?, f32_data(s3, l3, "sin")?);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(heads * hd)
            .zip(x.par_chunks(heads * hd))
            .enumerate()
            .for_each(|(token, (out, x))| {
                let table = token * half..(token + 1) * half;
                rotate(out, x, &cos[table.clone()], &sin[table], half, 1.0);
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation's transpose is the rotation by the opposite angle.
        let (_, _, heads, hd) = grad.dims4()?;
        let half = hd / 2;
        let mut out = vec![0f32; grad.elem_count()];
        with_f32(grad, |grad| {
            with_f32(cos, |cos| {
                with_f32(sin, |sin| {
                    out.par_chunks_mut(heads * hd)
                        .zip(grad.par_chunks(heads * hd))
                        .enumerate()
                        .for_each(|(token, (out, g))| {
                            let table = token * half..(token + 1) * half;
                            rotate(out, g, &cos[table.clone()], &sin[table], half, -1.0);
                        });
                    Ok(())
                })
            })
        })?;
        let dx = Tensor::from_vec(out, grad.shape(), &Device::Cpu)?;
        Ok((Some(dx), None, None))
    }
}

/// The gated MLP activation `silu(gate) · up`, differentiable in both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} and up {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let (gate, up) = (f32_data(s1, l1, "gate")?, f32_data(s2, l2, "up")?);
        let mut out = vec![0f32; gate.len()];
        out.par_chunks_mut(1 << 14)
            .zip(gate.par_chunks(1 << 14).zip(up.par_chunks(1 << 14)))
            .for_each(|(out, (gate, up))| {
                for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                    *o = g * sigmoid(g) * u;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        // d gate = grad · up · σ(g)(1 + g(1 − σ(g)));  d up = grad · silu(g).
        let mut d_gate = vec![0f32; gate.elem_count()];
        let mut d_up = vec![0f32; gate.elem_count()];
        with_f32(gate, |gate| {
            with_f32(up, |up| {
                with_f32(grad, |grad| {
                    d_gate
                        .par_chunks_mut(1 << 14)
                        .zip(d_up.par_chunks_mut(1 << 14))
                        .zip(gate.par_chunks(1 << 14))
                        .zip(up.par_chunks(1 << 14).zip(grad.par_chunks(1 << 14)))
                        .for_each(|(((d_gate, d_up), gate), (up, grad))| {
                            for i in 0..gate.len() {
                                let (g, s) = (gate[i], sigmoid(gate[i]));
                                d_gate[i] = grad[i] * up[i] * s * (1.0 + g * (1.0 - s));
                                d_up[i] = grad[i] * g * s;
                            }
                        });
                    Ok(())
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(d_gate, gate.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(d_up, gate.shape(), &Device::Cpu)?),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{D, Var};

    pub(crate) fn random(shape: &[usize], seed: u64, spread: f32) -> Tensor {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    pub(crate) fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A weighting of the outputs, so that the loss's gradient reaches every output differently.
    fn weighted_sum(t: &Tensor, seed: u64) -> Tensor {
        (t * random(t.dims(), seed, 2.0))
            .unwrap()
            .sum_all()
            .unwrap()
    }

    /// Asserts that the same weighted loss of `fused` and `composed` gives every one of `vars`
    /// the same gradient, within `tolerance`; returns the fused path's gradients.
    fn assert_same_gradients(
        fused: &Tensor,
        composed: &Tensor,
        vars: &[&Var],
        seed: u64,
        tolerance: f32,
    ) -> Vec<Tensor> {
        let a = weighted_sum(fused, seed).backward().unwrap();
        let b = weighted_sum(composed, seed).backward().unwrap();
        vars.iter()
            .map(|var| {
                let (x, y) = (
                    a.get(var.as_tensor()).unwrap(),
                    b.get(var.as_tensor()).unwrap(),
                );
                let difference = max_difference(x, y);
                assert!(difference < tolerance, "{difference}");
                x.clone()
            })
            .collect()
    }

    #[test]
    fn token_stats_match_the_composed_ops_and_their_gradients() {
        let logits = Var::from_tensor(&random(&[7, 300], 1, 12.0)).unwrap();
        let targets = Tensor::new(&[0u32, 5, 299, 17, 17, 100, 42], &Device::Cpu).unwrap();

        let fused = token_logprob_entropy(logits.as_tensor(), &targets).unwrap();
        let log_probs = candle_nn::ops::log_softmax(logits.as_tensor(), D::Minus1).unwrap();
        let chosen = log_probs
            .gather(&targets.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let entropy = (log_probs.exp().unwrap() * &log_probs)
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .neg()
            .unwrap();
        let composed = Tensor::stack(&[&chosen, &entropy], 1).unwrap();
        assert!(max_difference(&fused, &composed) < 1e-5);
        assert!(entropy.min(0).unwrap().to_scalar::<f32>().unwrap() > 0.0);

        let a = &assert_same_gradients(&fused, &composed, &[&logits], 9, 1e-5)[0];
        assert!(
            a.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.1
        );
    }

    #[test]
    fn linear_matches_the_matmul_and_its_gradients() {
        // Batch dimensions, a width that is not a multiple of the kernels' tiles, and an input
        // that arrives as a transposed (non-contiguous) view.
        let x = Var::from_tensor(&random(&[2, 3, 37], 4, 2.0)).unwrap();
        let w = Var::from_tensor(&random(&[19, 37], 5, 2.0)).unwrap();
        let fused = linear(x.as_tensor(), w.as_tensor()).unwrap();
        let composed = x
            .as_tensor()
            .broadcast_matmul(&w.as_tensor().t().unwrap())
            .unwrap();
        assert_eq!(fused.dims(), &[2, 3, 19]);
        assert!(max_difference(&fused, &composed) < 1e-5);
        let grads = assert_same_gradients(&fused, &composed, &[&x, &w], 6, 1e-4);
        assert_eq!(grads[0].dims(), x.dims());
        assert_eq!(grads[1].dims(), w.dims());

        let xt = random(&[37, 6], 7, 1.0);
        let wt = random(&[4, 37], 8, 1.0);
        let from_view = linear(&xt.t().unwrap(), &wt).unwrap();
        let reference = xt.t().unwrap().matmul(&wt.t().unwrap()).unwrap();
        assert!(max_difference(&from_view, &reference) < 1e-5);
    }

    #[test]
    fn linear_refuses_mismatched_shapes_and_handles_empty_ones() {
        let error = linear(&random(&[2, 6], 1, 1.0), &random(&[5, 7], 2, 1.0)).unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
        let error = linear(&random(&[2, 7], 1, 1.0), &random(&[35], 2, 1.0)).unwrap_err();
        assert!(error.to_string().contains("rank"), "{error}");
        // No rows, and a zero-width product (all zeros).
        let none = linear(&random(&[0, 7], 1, 1.0), &random(&[5, 7], 2, 1.0)).unwrap();
        assert_eq!(none.dims(), &[0, 5]);
        let zero_width = linear(&random(&[2, 0], 1, 1.0), &random(&[3, 0], 2, 1.0)).unwrap();
        assert_eq!(zero_width.to_vec2::<f32>().unwrap(), vec![vec![0.0; 3]; 2]);
    }

    #[test]
    fn token_stats_refuse_a_target_outside_the_vocabulary() {
        let logits = random(&[2, 10], 1, 1.0);
        let targets = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
        let error = token_logprob_entropy(&logits, &targets).unwrap_err();
        assert!(
            error.to_string().contains("outside the vocabulary"),
            "{error}"
        );
    }

    #[test]
    fn rms_norm_matches_the_composed_ops_and_their_gradients() {
        let x = Var::from_tensor(&random(&[2, 3, 16], 4, 3.0)).unwrap();
        let w = Var::from_tensor(&(random(&[16], 5, 0.4) + 1.0).unwrap()).unwrap();
        let eps = 1e-6;
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), eps).unwrap();
        let norm = ((x
            .as_tensor()
            .sqr()
            .unwrap()
            .mean_keepdim(D::Minus1)
            .unwrap()
            + eps)
            .unwrap())
        .sqrt()
        .unwrap();
        let composed = x
            .as_tensor()
            .broadcast_div(&norm)
            .unwrap()
            .broadcast_mul(w.as_tensor())
            .unwrap();
        assert!(max_difference(&fused, &composed) < 1e-5);
        assert_same_gradients(&fused, &composed, &[&x, &w], 6, 1e-4);
    }

    #[test]
    fn rope_matches_the_rotate_half_ops_and_their_gradient() {
        let (batch, seq, heads, hd) = (2, 5, 3, 8);
        let x = Var::from_tensor(&random(&[batch, seq, heads, hd], 7, 2.0)).unwrap();
        let cos = random(&[batch, seq, hd / 2], 8, 2.0);
        let sin = random(&[batch, seq, hd / 2], 9, 2.0);
        let fused = rope(x.as_tensor(), &cos, &sin).unwrap();
        // The composed form on [batch, heads, seq, hd] with full-width tables.
        let full = |t: &Tensor| {
            Tensor::cat(&[t, t], D::Minus1)
                .unwrap()
                .unsqueeze(1)
                .unwrap()
        };
        let xt = x.as_tensor().transpose(1, 2).unwrap();
        let x1 = xt.narrow(D::Minus1, 0, hd / 2).unwrap();
        let x2 = xt.narrow(D::Minus1, hd / 2, hd / 2).unwrap();
        let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        let composed = (xt.broadcast_mul(&full(&cos)).unwrap()
            + rotated.broadcast_mul(&full(&sin)).unwrap())
        .unwrap()
        .transpose(1, 2)
        .unwrap();
        assert!(max_difference(&fused, &composed) < 1e-6);
        assert_same_gradients(&fused, &composed, &[&x], 10, 1e-5);
    }

    #[test]
    fn swiglu_matches_the_composed_ops_and_their_gradients() {
        let gate = Var::from_tensor(&random(&[4, 33], 11, 8.0)).unwrap();
        let up = Var::from_tensor(&random(&[4, 33], 12, 3.0)).unwrap();
        let fused = swiglu(gate.as_tensor(), up.as_tensor()).unwrap();
        let composed = (gate.as_tensor().silu().unwrap() * up.as_tensor()).unwrap();
        assert!(max_difference(&fused, &composed) < 1e-5);
        assert_same_gradients(&fused, &composed, &[&gate, &up], 13, 1e-5);
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let x = random(&[2, 8], 1, 1.0);
        let w = random(&[7], 1, 1.0);
        assert!(rms_norm(&x, &w, 1e-6).is_err());
        let x = random(&[1, 3, 2, 8], 1, 1.0);
        let table = random(&[1, 3, 3], 1, 1.0);
        assert!(rope(&x, &table, &table).is_err());
        assert!(swiglu(&x, &random(&[1, 3, 2, 4], 1, 1.0)).is_err());
        // Empty dimensions are errors, not panics.
        let empty = Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap();
        let no_weight = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        assert!(rms_norm(&empty, &no_weight, 1e-6).is_err());
        let targets = Tensor::new(&[0u32, 0], &Device::Cpu).unwrap();
        assert!(token_logprob_entropy(&empty, &targets).is_err());
    }
}
