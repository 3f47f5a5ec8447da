//! Causal self-attention of the training forward as one candle op with its own backward
//! (CPU, f32): `softmax(scale · q kᵀ + mask) · v` per head, grouped-query heads reading their
//! kv head in place.
//!
//! Composed from candle ops the block is about fifteen graph nodes per layer (heads-first
//! transposes and copies of q and k, `repeat_kv`'s broadcast and copy of k and v for every
//! query head, kᵀ, two batched matmuls, the softmax, the transpose back), and candle's backward
//! allocates a zero tensor and a sum for the gradient of each, the scores' and probabilities'
//! ([heads, seq, seq] per layer) included. Here the products read q, k and v through their
//! strides (`matrix::product_into`), and queries are taken in blocks of [`ROW_BLOCK`] rows
//! whose scores reach only the keys up to the block's last row: about half of the scores of
//! a full [seq, seq] product are never computed (they would get probability 0). The
//! probabilities are kept for the backward, as the composed ops keep theirs.
//!
//! A key is attended to when it is at or before the query and its mask entry is true. A query
//! with no such key (a left-padding position) gets probability 0 everywhere and output 0.

use super::fused::f32_data;
use super::matrix::{Operand, product_into};
use crate::kernels::vector_math;
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

type CandleResult<T> = candle_core::Result<T>;

/// Query rows per task. A task's scores span the keys up to its last row, so of a
/// [seq, seq] product about (1 + 1/blocks) / 2 is computed.
const ROW_BLOCK: usize = 64;

/// Causal attention of `q` [batch, seq, heads, head_dim] over `k` and `v` [batch, seq,
/// kv_heads, head_dim] (`heads` a multiple of `kv_heads`; query head `h` reads kv head
/// `h / (heads / kv_heads)`), scores scaled by `scale`, keys masked by `key_valid` [batch ·
/// seq] (false: padding). Returns [batch, seq, heads · head_dim], each token's heads side by
/// side (the output projection's input). Differentiable in q, k and v.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_valid: Arc<[bool]>,
    scale: f64,
) -> CandleResult<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        CausalAttention {
            key_valid,
            scale: scale as f32,
            probs: Mutex::new(None),
        },
    )
}

struct CausalAttention {
    key_valid: Arc<[bool]>,
    scale: f32,
    /// The forward's probabilities [batch, heads, seq, seq] (0 past each query's last key),
    /// for the backward.
    probs: Mutex<Option<Arc<Vec<f32>>>>,
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Dims {
    fn of(q: &Shape, k: &Shape, v: &Shape, mask_len: usize) -> CandleResult<Dims> {
        let (batch, seq, heads, head_dim) = q.dims4()?;
        let (kb, ks, kv_heads, kd) = k.dims4()?;
        if (kb, ks, kd) != (batch, seq, head_dim)
            || v.dims4()? != (kb, ks, kv_heads, kd)
            || kv_heads == 0
            || heads % kv_heads != 0
        {
            candle_core::bail!(
                "attention: q {q:?} does not fit k {k:?} and v {v:?} (the same batch, tokens \
                 and head size; query heads a multiple of kv heads)"
            );
        }
        if seq == 0 || head_dim == 0 {
            candle_core::bail!("attention over no tokens or empty heads: q {q:?}");
        }
        if mask_len != batch * seq {
            candle_core::bail!(
                "attention: the key mask has {mask_len} entries for {batch} × {seq} tokens"
            );
        }
        Ok(Dims {
            batch,
            seq,
            heads,
            kv_heads,
            head_dim,
        })
    }

    /// The kv head that query head `head` reads.
    fn kv_head(&self, head: usize) -> usize {
        head / (self.heads / self.kv_heads)
    }

    /// Rows `from..` of one head of a [batch, seq, heads, head_dim] tensor (`heads` its own
    /// head count), as an operand [tokens, head_dim].
    fn rows<'a>(
        &self,
        data: &'a [f32],
        heads: usize,
        batch: usize,
        head: usize,
        from: usize,
    ) -> Operand<'a> {
        Operand {
            data: &data[((batch * self.seq + from) * heads + head) * self.head_dim..],
            row_stride: heads * self.head_dim,
            column_stride: 1,
        }
    }

    /// One kv head of a [batch, seq, kv_heads, head_dim] tensor transposed: [head_dim, seq].
    fn transposed<'a>(&self, data: &'a [f32], batch: usize, head: usize) -> Operand<'a> {
        Operand {
            data: &data[(batch * self.seq * self.kv_heads + head) * self.head_dim..],
            row_stride: 1,
            column_stride: self.kv_heads * self.head_dim,
        }
    }
}

/// The transpose of a row-major block whose rows are `row_stride` apart.
fn transposed_block(data: &[f32], row_stride: usize) -> Operand<'_> {
    Operand {
        data,
        row_stride: 1,
        column_stride: row_stride,
    }
}

/// The contiguous f32 data of a tensor's storage on the CPU.
fn cpu_f32<'a>(
    storage: &'a candle_core::Storage,
    layout: &Layout,
    what: &str,
) -> CandleResult<&'a [f32]> {
    match storage {
        candle_core::Storage::Cpu(cpu) => f32_data(cpu, layout, what),
        _ => candle_core::bail!("attention runs on the CPU only"),
    }
}

/// A [rows, columns] row-major block of a buffer whose rows are `row_stride` apart.
fn block(data: &[f32], row_stride: usize) -> Operand<'_> {
    Operand {
        data,
        row_stride,
        column_stride: 1,
    }
}

/// Softmax of query `query`'s scores `row` (keys 0..row.len(), at least query + 1 of them):
/// scaled, keys after the query or masked out get probability 0.
fn causal_softmax(row: &mut [f32], query: usize, valid: &[bool], scale: f32) {
    let (live, after) = row.split_at_mut(query + 1);
    after.fill(0.0);
    for (x, &valid) in live.iter_mut().zip(valid) {
        *x = if valid { *x * scale } else { f32::NEG_INFINITY };
    }
    let max = vector_math::max(live);
    if max == f32::NEG_INFINITY {
        live.fill(0.0);
        return;
    }
    let inverse = 1.0 / vector_math::exp_in_place(live, max);
    for x in live.iter_mut() {
        *x *= inverse;
    }
}

/// Gradient of the scores from that of the probabilities, in place in `grad`:
/// `scale · p · (g − Σ g p)` over the query's keys, 0 after them.
fn softmax_backward(grad: &mut [f32], probs: &[f32], query: usize, scale: f32) {
    let (live, after) = grad.split_at_mut(query + 1);
    after.fill(0.0);
    let dot: f32 = live.iter().zip(probs).map(|(g, p)| g * p).sum();
    for (g, &p) in live.iter_mut().zip(probs) {
        *g = scale * p * (*g - dot);
    }
}

/// [batch, heads, seq, head_dim] → [batch, seq, heads, head_dim].
fn heads_to_tokens(src: &[f32], batch: usize, heads: usize, seq: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(seq * heads * d)
        .zip(src.par_chunks(heads * seq * d))
        .take(batch)
        .for_each(|(out, src)| {
            for (token, out) in out.chunks_mut(heads * d).enumerate() {
                for (head, out) in out.chunks_mut(d).enumerate() {
                    out.copy_from_slice(&src[(head * seq + token) * d..][..d]);
                }
            }
        });
    out
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
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
        let dims = Dims::of(l1.shape(), l2.shape(), l3.shape(), self.key_valid.len())?;
        let (q, k, v) = (
            f32_data(s1, l1, "attention q")?,
            f32_data(s2, l2, "attention k")?,
            f32_data(s3, l3, "attention v")?,
        );
        let Dims {
            batch,
            seq: s,
            heads,
            kv_heads,
            head_dim: d,
        } = dims;
        let mut probs = vec![0f32; batch * heads * s * s];
        let mut out = vec![0f32; batch * heads * s * d];
        probs
            .par_chunks_mut(s * s)
            .zip(out.par_chunks_mut(s * d))
            .enumerate()
            .try_for_each(|(bh, (probs, out))| {
                let (b, head) = (bh / heads, bh % heads);
                let g = dims.kv_head(head);
                let valid = &self.key_valid[b * s..][..s];
                probs
                    .par_chunks_mut(ROW_BLOCK * s)
                    .zip(out.par_chunks_mut(ROW_BLOCK * d))
                    .enumerate()
                    .try_for_each(|(index, (probs, out))| {
                        let first = index * ROW_BLOCK;
                        let rows = probs.len() / s;
                        let keys = first + rows;
                        // Scores [rows, keys] = q rows · kᵀ, then their softmax.
                        product_into(
                            rows,
                            keys,
                            d,
                            probs,
                            s,
                            dims.rows(q, heads, b, head, first),
                            dims.transposed(k, b, g),
                            false,
                            false,
                        )?;
                        for (row, scores) in probs.chunks_mut(s).enumerate() {
                            causal_softmax(&mut scores[..keys], first + row, valid, self.scale);
                        }
                        // Output rows [rows, d] = probabilities · v.
                        product_into(
                            rows,
                            d,
                            keys,
                            out,
                            d,
                            block(probs, s),
                            dims.rows(v, kv_heads, b, g, 0),
                            false,
                            false,
                        )
                    })
            })?;
        *self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention probabilities poisoned".into()))? =
            Some(Arc::new(probs));
        Ok((
            CpuStorage::F32(heads_to_tokens(&out, batch, heads, s, d)),
            Shape::from((batch, s, heads * d)),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::of(q.shape(), k.shape(), v.shape(), self.key_valid.len())?;
        let probs = self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention probabilities poisoned".into()))?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("attention backward before forward".into()))?;
        let Dims {
            batch,
            seq: s,
            heads,
            kv_heads,
            head_dim: d,
        } = dims;
        let group = heads / kv_heads;
        let (q, k, v, grad) = (
            q.contiguous()?,
            k.contiguous()?,
            v.contiguous()?,
            grad.contiguous()?,
        );
        let (q_storage, q_layout) = q.storage_and_layout();
        let (k_storage, k_layout) = k.storage_and_layout();
        let (v_storage, v_layout) = v.storage_and_layout();
        let (g_storage, g_layout) = grad.storage_and_layout();
        let q = cpu_f32(&q_storage, q_layout, "attention q")?;
        let k = cpu_f32(&k_storage, k_layout, "attention k")?;
        let v = cpu_f32(&v_storage, v_layout, "attention v")?;
        let grad = cpu_f32(&g_storage, g_layout, "attention output gradient")?;
        if grad.len() != batch * s * heads * d {
            candle_core::bail!("attention: output gradient of the wrong size");
        }

        // Per query block: the scores' gradient [rows, keys] and dq = d scores · k.
        let mut d_scores = vec![0f32; batch * heads * s * s];
        let mut dq = vec![0f32; batch * heads * s * d];
        d_scores
            .par_chunks_mut(s * s)
            .zip(dq.par_chunks_mut(s * d))
            .zip(probs.par_chunks(s * s))
            .enumerate()
            .try_for_each(|(bh, ((d_scores, dq), probs))| {
                let (b, head) = (bh / heads, bh % heads);
                let g = dims.kv_head(head);
                d_scores
                    .par_chunks_mut(ROW_BLOCK * s)
                    .zip(dq.par_chunks_mut(ROW_BLOCK * d))
                    .zip(probs.par_chunks(ROW_BLOCK * s))
                    .enumerate()
                    .try_for_each(|(index, ((d_scores, dq), probs))| {
                        let first = index * ROW_BLOCK;
                        let rows = d_scores.len() / s;
                        let keys = first + rows;
                        // d probabilities [rows, keys] = d output rows · vᵀ.
                        product_into(
                            rows,
                            keys,
                            d,
                            d_scores,
                            s,
                            dims.rows(grad, heads, b, head, first),
                            dims.transposed(v, b, g),
                            false,
                            false,
                        )?;
                        for (row, (d_row, p_row)) in
                            d_scores.chunks_mut(s).zip(probs.chunks(s)).enumerate()
                        {
                            softmax_backward(
                                &mut d_row[..keys],
                                &p_row[..keys],
                                first + row,
                                self.scale,
                            );
                        }
                        product_into(
                            rows,
                            d,
                            keys,
                            dq,
                            d,
                            block(d_scores, s),
                            dims.rows(k, kv_heads, b, g, 0),
                            false,
                            false,
                        )
                    })
            })?;

        // Per key block of each kv head: dk = Σ over its query heads of d scoresᵀ · q and
        // dv = Σ probabilitiesᵀ · d output, over the queries at or after the block's first key
        // (earlier queries give those keys probability 0).
        let mut dk = vec![0f32; batch * kv_heads * s * d];
        let mut dv = vec![0f32; batch * kv_heads * s * d];
        dk.par_chunks_mut(s * d)
            .zip(dv.par_chunks_mut(s * d))
            .enumerate()
            .try_for_each(|(bg, (dk, dv))| {
                let (b, g) = (bg / kv_heads, bg % kv_heads);
                dk.par_chunks_mut(ROW_BLOCK * d)
                    .zip(dv.par_chunks_mut(ROW_BLOCK * d))
                    .enumerate()
                    .try_for_each(|(index, (dk, dv))| {
                        let first = index * ROW_BLOCK;
                        let keys = dk.len() / d;
                        let queries = s - first;
                        for (n, head) in (g * group..(g + 1) * group).enumerate() {
                            let at = (b * heads + head) * s * s + first * s + first;
                            product_into(
                                keys,
                                d,
                                queries,
                                dk,
                                d,
                                transposed_block(&d_scores[at..], s),
                                dims.rows(q, heads, b, head, first),
                                n > 0,
                                false,
                            )?;
                            product_into(
                                keys,
                                d,
                                queries,
                                dv,
                                d,
                                transposed_block(&probs[at..], s),
                                dims.rows(grad, heads, b, head, first),
                                n > 0,
                                false,
                            )?;
                        }
                        Ok::<(), candle_core::Error>(())
                    })
            })?;
        let tensor = |heads_first: Vec<f32>, count: usize, shape: &Shape| {
            Tensor::from_vec(
                heads_to_tokens(&heads_first, batch, count, s, d),
                shape,
                &Device::Cpu,
            )
        };
        Ok((
            Some(tensor(dq, heads, q_layout.shape())?),
            Some(tensor(dk, kv_heads, k_layout.shape())?),
            Some(tensor(dv, kv_heads, v_layout.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::tests::{max_difference, random};
    use candle_core::{D, Var};

    /// The composed ops the training forward used before: heads first, kv heads repeated for
    /// their query heads, an additive −1e9 bias for later and masked keys, softmax, · v.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, valid: &[bool], scale: f64) -> Tensor {
        let (batch, seq, heads, d) = q.dims4().unwrap();
        let kv_heads = k.dim(2).unwrap();
        let repeat = |t: &Tensor| {
            t.transpose(1, 2)
                .unwrap()
                .unsqueeze(2)
                .unwrap()
                .broadcast_as((batch, kv_heads, heads / kv_heads, seq, d))
                .unwrap()
                .reshape((batch, heads, seq, d))
                .unwrap()
        };
        let q = q.transpose(1, 2).unwrap().contiguous().unwrap();
        let (k, v) = (repeat(k), repeat(v));
        let bias: Vec<f32> = (0..batch)
            .flat_map(|b| {
                (0..seq).flat_map(move |i| {
                    (0..seq).map(move |j| (j > i || !valid[b * seq + j]) as u8 as f32 * -1e9)
                })
            })
            .collect();
        let bias = Tensor::from_vec(bias, (batch, 1, seq, seq), &Device::Cpu).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let probs =
            candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
        probs
            .matmul(&v.contiguous().unwrap())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((batch, seq, heads * d))
            .unwrap()
    }

    #[test]
    fn attention_matches_the_composed_ops_and_their_gradients() {
        // 70 tokens: a full block of 64 and a short one; 6 query heads over 2 kv heads.
        let (batch, seq, heads, kv_heads, d) = (2, 70, 6, 2, 8);
        let q = Var::from_tensor(&random(&[batch, seq, heads, d], 1, 2.0)).unwrap();
        let k = Var::from_tensor(&random(&[batch, seq, kv_heads, d], 2, 2.0)).unwrap();
        let v = Var::from_tensor(&random(&[batch, seq, kv_heads, d], 3, 2.0)).unwrap();
        // The second sequence: two left-padding tokens and a padded key at 40.
        let mut valid = vec![true; batch * seq];
        for j in [0, 1, 40] {
            valid[seq + j] = false;
        }
        let valid: Arc<[bool]> = valid.into();
        let scale = 1.0 / (d as f64).sqrt();
        let fused = causal_attention(&q, &k, &v, valid.clone(), scale).unwrap();
        let plain = composed(&q, &k, &v, &valid, scale);
        assert_eq!(fused.dims(), &[batch, seq, heads * d]);
        // Queries with no key to attend to (the padding rows 0 and 1) give 0; the composed
        // ops give them a uniform mix, so compare the rest, and weight the loss likewise.
        let padding = fused.get(1).unwrap().narrow(0, 0, 2).unwrap();
        assert_eq!(
            padding
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        let mut weights = random(&[batch, seq, heads * d], 4, 2.0)
            .to_vec3::<f32>()
            .unwrap();
        for row in &mut weights[1][..2] {
            row.fill(0.0);
        }
        let weights = Tensor::new(weights, &Device::Cpu).unwrap();
        let live = |t: &Tensor| (t * &weights).unwrap();
        assert!(max_difference(&live(&fused), &live(&plain)) < 1e-5);
        let a = live(&fused).sum_all().unwrap().backward().unwrap();
        let b = live(&plain).sum_all().unwrap().backward().unwrap();
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            let (x, y) = (
                a.get(var.as_tensor()).unwrap(),
                b.get(var.as_tensor()).unwrap(),
            );
            let difference = max_difference(x, y);
            assert!(difference < 1e-5, "d{name} differs by {difference}");
            assert!(
                x.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
        }
        // The padded key gets no gradient in k or v.
        let dk = a
            .get(k.as_tensor())
            .unwrap()
            .get(1)
            .unwrap()
            .get(40)
            .unwrap();
        assert_eq!(
            dk.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let valid: Arc<[bool]> = vec![true; 4].into();
        let q = random(&[1, 4, 3, 8], 1, 1.0);
        let kv = random(&[1, 4, 2, 8], 2, 1.0);
        // 3 query heads do not share 2 kv heads evenly.
        let error = causal_attention(&q, &kv, &kv, valid.clone(), 1.0).unwrap_err();
        assert!(
            error.to_string().contains("multiple of kv heads"),
            "{error}"
        );
        // A mask for another number of tokens.
        let q = random(&[1, 4, 4, 8], 1, 1.0);
        let short: Arc<[bool]> = vec![true; 3].into();
        let error = causal_attention(&q, &kv, &kv, short, 1.0).unwrap_err();
        assert!(
            error.to_string().contains("3 entries for 1 × 4 tokens"),
            "{error}"
        );
        // v of another size than k.
        let v = random(&[1, 4, 2, 4], 3, 1.0);
        assert!(causal_attention(&q, &kv, &v, valid.clone(), 1.0).is_err());
        // No tokens.
        let empty = random(&[1, 0, 4, 8], 1, 1.0);
        let none = random(&[1, 0, 2, 8], 1, 1.0);
        let error = causal_attention(&empty, &none, &none, Arc::from(vec![]), 1.0).unwrap_err();
        assert!(error.to_string().contains("no tokens"), "{error}");
    }
}
