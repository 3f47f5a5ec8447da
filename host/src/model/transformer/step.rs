//! The generation forward's executor on tensors: candle's fused ops (`rms_norm`, `rope`,
//! `softmax_last_dim`), the few-row products through the decode kernel, no gradient. It
//! either appends several tokens of one sequence to its KV cache (a prompt, an observation)
//! or decodes one token for each of several caches, each at its own position.

use super::{KvCache, Path, Policy, array, cpu_decode, per_run, project_tensors};
use crate::model::arch::{GatedMlp, Linear, Ops};
use anyhow::Result;
use candle_core::{DType, Tensor};

/// Where the new keys and values go and what attention reads.
enum Caches<'a, 'b> {
    /// New tokens of one sequence, appended to its cache; `bias` masks the later ones among
    /// them (none for a single token).
    Append {
        cache: &'a mut KvCache,
        bias: Option<Tensor>,
    },
    /// One token for each cache.
    Decode { caches: &'a mut [&'b mut KvCache] },
}

/// The generation executor of the layer descriptions on tensors; activations [batch, new,
/// width].
pub(super) struct StepOps<'a, 'b> {
    batch: usize,
    new: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    /// The rotary angles of the new positions: [new, head_dim / 2] when appending, [batch,
    /// 1, head_dim / 2] when decoding.
    cos: Tensor,
    sin: Tensor,
    caches: Caches<'a, 'b>,
}

impl<'a, 'b> StepOps<'a, 'b> {
    /// Appending `new` tokens to `cache`.
    pub(super) fn append(
        policy: &Policy,
        cache: &'a mut KvCache,
        new: usize,
    ) -> Result<StepOps<'a, 'b>> {
        let config = &policy.config;
        let offset = cache.len();
        let total = offset + new;
        let repeat = config.num_attention_heads / config.kv_heads();
        // Causal mask for the new rows (grouped query heads repeat it `repeat` times).
        let bias = if new == 1 {
            None
        } else {
            let row = |i: usize| {
                (0..total).map(move |j| {
                    if j > offset + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            };
            let values: Vec<f32> = (0..repeat).flat_map(|_| (0..new).flat_map(row)).collect();
            Some(
                Tensor::from_vec(values, (1, 1, repeat * new, total), &policy.device)?
                    .to_dtype(policy.dtype)?,
            )
        };
        Ok(StepOps {
            batch: 1,
            new,
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
            head_dim: config.head_dim(),
            eps: config.rms_norm_eps as f32,
            cos: policy.cos.narrow(0, offset, new)?.contiguous()?,
            sin: policy.sin.narrow(0, offset, new)?.contiguous()?,
            caches: Caches::Append { cache, bias },
        })
    }

    /// Decoding one token for each of `caches`.
    pub(super) fn decode(
        policy: &Policy,
        caches: &'a mut [&'b mut KvCache],
    ) -> Result<StepOps<'a, 'b>> {
        let config = &policy.config;
        let batch = caches.len();
        let positions: Vec<u32> = caches.iter().map(|c| c.len() as u32).collect();
        let positions = Tensor::new(positions.as_slice(), &policy.device)?;
        let hd2 = config.head_dim() / 2;
        let angles = |table: &Tensor| -> Result<Tensor> {
            Ok(table
                .index_select(&positions, 0)?
                .reshape((batch, 1, hd2))?)
        };
        Ok(StepOps {
            batch,
            new: 1,
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
            head_dim: config.head_dim(),
            eps: config.rms_norm_eps as f32,
            cos: angles(&policy.cos)?,
            sin: angles(&policy.sin)?,
            caches: Caches::Decode { caches },
        })
    }

    /// [batch, new, n · head_dim] as [batch, n, new, head_dim].
    fn heads_first(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dims3()?.2 / self.head_dim;
        Ok(x.reshape((self.batch, self.new, n, self.head_dim))?
            .transpose(1, 2)?)
    }
}

impl Ops for StepOps<'_, '_> {
    type X = Tensor;

    fn rms_norm(&mut self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let eps = self.eps;
        per_run(x, weight.dim(0)?, |x| {
            Ok(candle_nn::ops::rms_norm(x, weight, eps)?)
        })
    }

    fn project<const N: usize>(
        &mut self,
        x: &Tensor,
        linears: [&Linear; N],
    ) -> Result<[Tensor; N]> {
        project_tensors(x, linears, Path::Generate)
    }

    /// Returns q and k as [batch, heads, new, head_dim].
    fn rope(&mut self, q: Tensor, k: Tensor) -> Result<(Tensor, Tensor)> {
        let q = self.heads_first(&q)?.contiguous()?;
        let k = self.heads_first(&k)?.contiguous()?;
        Ok((
            candle_nn::rotary_emb::rope(&q, &self.cos, &self.sin)?,
            candle_nn::rotary_emb::rope(&k, &self.cos, &self.sin)?,
        ))
    }

    fn attend(&mut self, layer: usize, q: Tensor, k: Tensor, v: Tensor) -> Result<Tensor> {
        let v = self.heads_first(&v)?;
        let (heads, kv_heads) = (self.heads, self.kv_heads);
        let attention = match &mut self.caches {
            Caches::Append { cache, bias } => {
                let (k_all, v_all) = cache.append(layer, &k, &v)?;
                grouped_attention(&q, &k_all, &v_all, bias.as_ref(), kv_heads)?
            }
            Caches::Decode { caches } => {
                for (row, cache) in caches.iter_mut().enumerate() {
                    cache.append(layer, &k.narrow(0, row, 1)?, &v.narrow(0, row, 1)?)?;
                }
                match batched_decode_attention(layer, &q, caches)? {
                    Some(attention) => attention,
                    None => {
                        let mut rows = Vec::with_capacity(caches.len());
                        for (row, cache) in caches.iter().enumerate() {
                            let (k_all, v_all) = cache.layer_kv(layer)?;
                            rows.push(grouped_attention(
                                &q.narrow(0, row, 1)?,
                                &k_all,
                                &v_all,
                                None,
                                kv_heads,
                            )?);
                        }
                        Tensor::cat(&rows, 0)?
                    }
                }
            }
        };
        Ok(attention
            .transpose(1, 2)?
            .reshape((self.batch, self.new, heads * self.head_dim))?)
    }

    fn gated_mlp(&mut self, x: &Tensor, mlp: &GatedMlp) -> Result<Tensor> {
        let [gate, up] = array(super::linears(x, &[&mlp.gate, &mlp.up], Path::Generate)?)?;
        super::linear(&(gate.silu()? * up)?, &mlp.down, Path::Generate)
    }

    fn add(&mut self, x: Tensor, y: Tensor) -> Result<Tensor> {
        Ok((x + y)?)
    }
}

/// Attention of q [1, heads, new, hd] over k, v [1, kv_heads, total, hd] without copying
/// k/v per query head: the query heads of each kv head become extra rows.
fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    kv_heads: usize,
) -> Result<Tensor> {
    let (_, heads, new, hd) = q.dims4()?;
    let repeat = heads / kv_heads;
    let q = q.reshape((1, kv_heads, repeat * new, hd))?;
    let mut scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs
        .matmul(&v.contiguous()?)?
        .reshape((1, heads, new, hd))?)
}

/// Attention of the decode batch's new tokens `q` [batch, heads, 1, head_dim] over layer
/// `layer` of their caches (the new keys already appended), in one parallel pass through
/// [`crate::kernels::decode_attention`]. `None` when the tensors are not CPU f32 (the caller
/// then runs the tensor-op path).
fn batched_decode_attention(
    layer: usize,
    q: &Tensor,
    caches: &[&mut KvCache],
) -> Result<Option<Tensor>> {
    let (batch, heads, new, head_dim) = q.dims4()?;
    if !q.device().is_cpu() || q.dtype() != DType::F32 || new != 1 {
        return Ok(None);
    }
    let mut kv_heads = 0;
    for cache in caches {
        let shared_plain = cache.shared_layer(layer).is_none_or(cpu_decode::plain);
        let own = &cache.layers[layer];
        let (_, kv, _, cached_dim) = own.k.dims4()?;
        if cached_dim != head_dim || !cpu_decode::plain(own) || !shared_plain {
            return Ok(None);
        }
        kv_heads = kv;
    }
    let queries = q.flatten_all()?.to_vec1::<f32>()?;
    let out = cpu_decode::attend_caches(layer, &queries, caches, heads, kv_heads, head_dim)?;
    Ok(Some(Tensor::from_vec(
        out,
        (batch, heads, 1, head_dim),
        q.device(),
    )?))
}
