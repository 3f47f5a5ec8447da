//! The decode step of CPU f32 models on plain rows of floats.
//!
//! A decode step multiplies a handful of rows (one per sequence) with every weight matrix; the
//! products stream the weights through [`skinny`]'s kernel and are bound by memory. Between
//! them, the step used to run a dozen small candle ops per layer (norms, rotary embedding,
//! residual adds, the SwiGLU activation, reshapes, the KV-cache writes), each with its own
//! allocation and, above a size, its own hand-off to the thread pool — a fixed cost per op that
//! grew with the batch. Here those steps are loops over the rows, written in the order candle's
//! fused generation ops compute them, and the new keys and values are written straight into
//! the cache buffers. Every sequence's row is computed on its own, so its logits do not depend
//! on what else is in the batch.

use super::{KvCache, LayerCache, Policy};
use crate::kernels::decode_attention::{CacheView, Segment, decode_attention};
use crate::kernels::skinny;
use crate::model::arch::{GatedMlp, Linear, Ops};
use anyhow::{Context, Result, bail};
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};
use parking_lot::RwLockReadGuard;

/// The contiguous f32 CPU data of a tensor, held through its storage guard.
struct Data<'a> {
    guard: RwLockReadGuard<'a, Storage>,
    start: usize,
    end: usize,
}

impl<'a> Data<'a> {
    /// `None` unless the tensor is contiguous f32 on the CPU.
    fn of(tensor: &'a Tensor) -> Option<Data<'a>> {
        if tensor.dtype() != DType::F32 {
            return None;
        }
        let (guard, layout) = tensor.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*guard, Storage::Cpu(_)).then_some(Data { guard, start, end })
    }

    fn slice(&self) -> Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(cpu) => Ok(&cpu.as_slice::<f32>()?[self.start..self.end]),
            _ => bail!("tensor is not on the CPU"),
        }
    }
}

impl Policy {
    /// The decode step on plain rows: `tokens[i]` is appended to `caches[i]`; returns the
    /// next-token logits [batch, vocab]. `None` where it does not apply (not a CPU f32 model,
    /// more rows than the decode kernel takes, or a cache that lacks a layer or holds other
    /// buffers): the caller then runs the tensor-op step. Checked before any cache is written.
    pub(super) fn decode_rows(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Option<Tensor>> {
        let batch = tokens.len();
        if !self.device.is_cpu()
            || self.dtype != DType::F32
            || batch > super::DECODE_ROWS
            || !caches.iter().all(|c| self.takes_plain(c))
            || !self.weights_plain()
        {
            return Ok(None);
        }
        let config = &self.config;
        let hidden = config.hidden_size;
        let half = config.head_dim() / 2;
        let (Some(embed), Some(cos), Some(sin)) = (
            Data::of(&self.embed),
            Data::of(&self.cos),
            Data::of(&self.sin),
        ) else {
            return Ok(None);
        };
        let (embed, cos, sin) = (embed.slice()?, cos.slice()?, sin.slice()?);
        // Each row's rotary table at its position.
        let rotations: Vec<(&[f32], &[f32])> = caches
            .iter()
            .map(|c| {
                let at = c.len() * half;
                Ok((
                    cos.get(at..at + half)
                        .context("position past the rotary table")?,
                    sin.get(at..at + half)
                        .context("position past the rotary table")?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut x = Vec::with_capacity(batch * hidden);
        for &token in tokens {
            let at = token as usize * hidden;
            let row = embed
                .get(at..at + hidden)
                .with_context(|| format!("token id {token} is outside the vocabulary"))?;
            x.extend_from_slice(row);
        }
        let mut ops = RowOps {
            batch,
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
            head_dim: config.head_dim(),
            eps: config.rms_norm_eps as f32,
            rotations,
            caches,
        };
        let logits = self.run(&mut ops, x)?;
        let vocab = logits.len() / batch;
        Ok(Some(Tensor::from_vec(
            logits,
            (batch, vocab),
            &self.device,
        )?))
    }

    /// Whether every weight is contiguous f32 on the CPU.
    fn weights_plain(&self) -> bool {
        let data = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
        data.values().all(|var| Data::of(var.as_tensor()).is_some())
    }
}

/// The decode step's executor of the layer descriptions: activations are plain rows, one per
/// sequence ([batch × width] floats).
struct RowOps<'r, 'c, 'k> {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    /// Each row's rotary cos and sin at its position.
    rotations: Vec<(&'r [f32], &'r [f32])>,
    caches: &'c mut [&'k mut KvCache],
}

/// A weight's data; the plain-rows step checked every weight before it began.
fn data(tensor: &Tensor) -> Result<Data<'_>> {
    Data::of(tensor).context("a weight is not contiguous f32 on the CPU")
}

impl Ops for RowOps<'_, '_, '_> {
    type X = Vec<f32>;

    fn rms_norm(&mut self, x: &Vec<f32>, weight: &Tensor) -> Result<Vec<f32>> {
        let weight = data(weight)?;
        let weight = weight.slice()?;
        if weight.is_empty() || !x.len().is_multiple_of(weight.len()) {
            bail!(
                "a norm of width {} does not divide rows of {} values",
                weight.len(),
                x.len()
            );
        }
        Ok(rms_norm_rows(x, weight, self.eps))
    }

    fn project<const N: usize>(
        &mut self,
        x: &Vec<f32>,
        linears: [&Linear; N],
    ) -> Result<[Vec<f32>; N]> {
        let k = x.len() / self.batch;
        let held = linears
            .iter()
            .map(|l| data(&l.weight))
            .collect::<Result<Vec<_>>>()?;
        let weights = held.iter().map(Data::slice).collect::<Result<Vec<_>>>()?;
        let mut products = skinny::matmul_transposed_many(x, self.batch, &weights, k);
        for (product, linear) in products.iter_mut().zip(linears) {
            if let Some(bias) = &linear.bias {
                add_bias(product, data(bias)?.slice()?);
            }
        }
        super::array(products)
    }

    fn rope(&mut self, mut q: Vec<f32>, mut k: Vec<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        let (q_width, k_width) = (q.len() / self.batch, k.len() / self.batch);
        for (row, (cos, sin)) in self.rotations.iter().enumerate() {
            rotate_heads(
                &mut q[row * q_width..(row + 1) * q_width],
                self.head_dim,
                cos,
                sin,
            );
            rotate_heads(
                &mut k[row * k_width..(row + 1) * k_width],
                self.head_dim,
                cos,
                sin,
            );
        }
        Ok((q, k))
    }

    fn attend(&mut self, layer: usize, q: Vec<f32>, k: Vec<f32>, v: Vec<f32>) -> Result<Vec<f32>> {
        let width = self.kv_heads * self.head_dim;
        for (row, cache) in self.caches.iter_mut().enumerate() {
            cache.layers[layer].append_token(
                &k[row * width..(row + 1) * width],
                &v[row * width..(row + 1) * width],
            )?;
        }
        attend_caches(
            layer,
            &q,
            &*self.caches,
            self.heads,
            self.kv_heads,
            self.head_dim,
        )
    }

    fn gated_mlp(&mut self, x: &Vec<f32>, mlp: &GatedMlp) -> Result<Vec<f32>> {
        let k = x.len() / self.batch;
        let (gate, up, down) = (data(&mlp.gate)?, data(&mlp.up)?, data(&mlp.down)?);
        let activated = skinny::matmul_swiglu(x, self.batch, gate.slice()?, up.slice()?, k);
        let intermediate = activated.len() / self.batch;
        let down = down.slice()?;
        Ok(skinny::matmul_transposed(
            &activated,
            self.batch,
            down,
            down.len() / intermediate,
            intermediate,
        ))
    }

    fn add(&mut self, mut x: Vec<f32>, y: Vec<f32>) -> Result<Vec<f32>> {
        add_in_place(&mut x, &y);
        Ok(x)
    }
}

/// Whether a layer cache holds contiguous f32 CPU buffers (those `append_token` writes).
pub(super) fn plain(layer: &LayerCache) -> bool {
    Data::of(&layer.k).is_some() && Data::of(&layer.v).is_some()
}

impl Policy {
    /// Whether the plain-rows step can take `cache`: buffers for every layer, all of them
    /// (shared ones too) contiguous f32 on the CPU.
    fn takes_plain(&self, cache: &KvCache) -> bool {
        cache.layers.len() == self.blocks.len()
            && cache.layers.iter().all(plain)
            && (0..self.blocks.len()).all(|l| cache.shared_layer(l).is_none_or(plain))
    }
}

/// A layer's buffers, held: keys, values, capacity, filled length.
struct HeldLayer<'a> {
    keys: Data<'a>,
    values: Data<'a>,
    capacity: usize,
    len: usize,
}

impl<'a> HeldLayer<'a> {
    fn of(layer: &'a LayerCache) -> Result<HeldLayer<'a>> {
        match (Data::of(&layer.k), Data::of(&layer.v)) {
            (Some(keys), Some(values)) => Ok(HeldLayer {
                keys,
                values,
                capacity: layer.k.dim(2)?,
                len: layer.len,
            }),
            _ => bail!("the KV cache does not hold contiguous f32 CPU buffers"),
        }
    }

    fn segment(&self) -> Result<Segment<'_>> {
        Ok(Segment {
            keys: self.keys.slice()?,
            values: self.values.slice()?,
            capacity: self.capacity,
            len: self.len,
        })
    }
}

/// Attention of one new query per sequence (`queries` [batch, heads, head_dim], rotated) over
/// layer `layer` of its cache (shared positions, then its own, the new keys already written);
/// [batch, heads · head_dim].
pub(super) fn attend_caches(
    layer: usize,
    queries: &[f32],
    caches: &[&mut KvCache],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<Vec<f32>> {
    let held = caches
        .iter()
        .map(|cache| {
            let shared = cache.shared_layer(layer).map(HeldLayer::of).transpose()?;
            let own = cache
                .layers
                .get(layer)
                .with_context(|| format!("the KV cache has no layer {layer}"))?;
            Ok((shared, HeldLayer::of(own)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let views = held
        .iter()
        .map(|(shared, own)| {
            Ok(CacheView {
                shared: shared.as_ref().map(HeldLayer::segment).transpose()?,
                own: own.segment()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(decode_attention(queries, &views, heads, kv_heads, head_dim))
}

impl LayerCache {
    /// Writes one token's keys and values ([kv_heads · head_dim] each, rotated keys) at the
    /// end of the cache, growing it first when it is full.
    fn append_token(&mut self, keys: &[f32], values: &[f32]) -> Result<()> {
        self.reserve(1)?;
        let (_, kv_heads, capacity, head_dim) = self.k.dims4()?;
        if keys.len() != kv_heads * head_dim || values.len() != keys.len() {
            bail!(
                "a token's keys and values must hold {kv_heads} × {head_dim} floats, not {} and {}",
                keys.len(),
                values.len()
            );
        }
        for (buffer, rows) in [(&self.k, keys), (&self.v, values)] {
            buffer.inplace_op1(&WriteToken {
                rows,
                position: self.len,
                capacity,
                head_dim,
            })?;
        }
        self.len += 1;
        Ok(())
    }
}

/// Writes one token's rows (one per kv head) into a cache buffer [1, kv_heads, capacity,
/// head_dim] at `position`.
struct WriteToken<'a> {
    rows: &'a [f32],
    position: usize,
    capacity: usize,
    head_dim: usize,
}

impl InplaceOp1 for WriteToken<'_> {
    fn name(&self) -> &'static str {
        "kv-cache-write-token"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let data = crate::kernels::inplace::slice_mut(storage, layout)?;
        for (head, row) in self.rows.chunks_exact(self.head_dim).enumerate() {
            let at = (head * self.capacity + self.position) * self.head_dim;
            data.get_mut(at..at + self.head_dim)
                .ok_or_else(|| candle_core::Error::Msg("KV cache write out of bounds".into()))?
                .copy_from_slice(row);
        }
        Ok(())
    }
}

/// RMS norm of every row of `x` (rows of `weight.len()`), as candle's fused `rms_norm`
/// computes it: x / √(mean(x²) + eps) · weight.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let dim = weight.len();
    let mut out = vec![0f32; x.len()];
    for (row, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let sum2: f32 = row.iter().map(|v| v * v).sum();
        let scale = (sum2 / dim as f32 + eps).sqrt();
        for ((o, v), w) in out.iter_mut().zip(row).zip(weight) {
            *o = v / scale * w;
        }
    }
    out
}

/// Adds a bias (one value per column) to every row.
fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

fn add_in_place(into: &mut [f32], other: &[f32]) {
    for (a, b) in into.iter_mut().zip(other) {
        *a += b;
    }
}

/// Rotary embedding of every head in `row` (heads of `head_dim`, halves rotated together as
/// in candle's `rope`): (x₁, x₂) → (x₁·cos − x₂·sin, x₁·sin + x₂·cos).
fn rotate_heads(row: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in row.chunks_exact_mut(head_dim) {
        let (first, second) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (first[i], second[i]);
            first[i] = a * cos[i] - b * sin[i];
            second[i] = a * sin[i] + b * cos[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::Architecture;
    use crate::model::tiny::{TINY, init_tiny};
    use crate::model::{KvCache, load_model};
    use candle_core::{DType, Device, Tensor};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap()
    }

    #[test]
    fn plain_rows_match_the_tensor_op_step_through_cache_growth() {
        for arch in [
            Architecture::Qwen2,
            Architecture::Qwen3,
            Architecture::Llama,
        ] {
            let dir = tempfile::tempdir().unwrap();
            init_tiny(arch, TINY, 3, None, dir.path()).unwrap();
            let model = load_model(dir.path(), DType::F32, &Device::Cpu).unwrap();
            let policy = &model.policy;
            // Three sequences of different lengths (different positions and cache sizes).
            let prompts: [&[u32]; 3] = [&[5, 9, 11], &[7; 20], &[3, 4, 5, 6, 7, 8, 9, 10, 11]];
            let mut plain: Vec<KvCache> = Vec::new();
            let mut composed: Vec<KvCache> = Vec::new();
            for prompt in prompts {
                let mut cache = KvCache::default();
                policy.forward_step(prompt, &mut cache).unwrap();
                composed.push(cache.fork().unwrap());
                plain.push(cache);
            }
            // 70 steps: every cache outgrows its first 64 positions.
            let mut tokens = vec![1u32, 2, 3];
            for step in 0..70 {
                let mut a: Vec<&mut KvCache> = plain.iter_mut().collect();
                let rows = policy
                    .decode_rows(&tokens, &mut a)
                    .unwrap()
                    .expect("CPU f32");
                let mut b: Vec<&mut KvCache> = composed.iter_mut().collect();
                let reference = policy.decode_composed(&tokens, &mut b).unwrap();
                let diff = max_abs_diff(&rows, &reference);
                assert!(
                    diff <= 1e-5,
                    "{arch:?} step {step}: logits differ by {diff}"
                );
                // Greedy next tokens keep both paths on the same sequence.
                tokens = rows.argmax(1).unwrap().to_vec1::<u32>().unwrap();
            }
            for (a, b) in plain.iter().zip(&composed) {
                assert_eq!(a.len(), b.len());
                assert!(a.len() > 64);
            }
        }
    }

    #[test]
    fn samples_sharing_a_prompt_decode_as_if_each_had_a_copy() {
        for arch in [
            Architecture::Qwen2,
            Architecture::Qwen3,
            Architecture::Llama,
        ] {
            let dir = tempfile::tempdir().unwrap();
            init_tiny(arch, TINY, 5, None, dir.path()).unwrap();
            let model = load_model(dir.path(), DType::F32, &Device::Cpu).unwrap();
            let policy = &model.policy;
            let mut prompt = KvCache::default();
            let prompt_ids: Vec<u32> = (1..30).collect();
            policy.forward_step(&prompt_ids, &mut prompt).unwrap();
            let mut copies: Vec<KvCache> = (0..3).map(|_| prompt.fork().unwrap()).collect();
            let mut shared = prompt.fork().unwrap().branch(3).unwrap();
            let mut composed = prompt.branch(3).unwrap();
            assert_eq!(shared[0].shared_len(), 29);
            let mut tokens = vec![4u32, 8, 15];
            // Past 64 own positions, so the branches' buffers grow too.
            for step in 0..70 {
                let mut a: Vec<&mut KvCache> = copies.iter_mut().collect();
                let flat = policy
                    .decode_rows(&tokens, &mut a)
                    .unwrap()
                    .expect("CPU f32");
                let mut b: Vec<&mut KvCache> = shared.iter_mut().collect();
                let branched = policy
                    .decode_rows(&tokens, &mut b)
                    .unwrap()
                    .expect("CPU f32");
                let flat_values = flat.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let branched_values = branched.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(flat_values, branched_values, "{arch:?} step {step}");
                let mut c: Vec<&mut KvCache> = composed.iter_mut().collect();
                let reference = policy.decode_composed(&tokens, &mut c).unwrap();
                let diff = max_abs_diff(&branched, &reference);
                assert!(
                    diff <= 1e-5,
                    "{arch:?} step {step}: tensor ops differ by {diff}"
                );
                tokens = flat.argmax(1).unwrap().to_vec1::<u32>().unwrap();
            }
            assert_eq!((shared[2].len(), shared[2].shared_len()), (99, 29));
            // An observation appended to one sample (the prefill path) sees the shared prompt.
            let observation = [7u32, 7, 9];
            let through_copy = policy.forward_step(&observation, &mut copies[1]).unwrap();
            let through_share = policy.forward_step(&observation, &mut shared[1]).unwrap();
            let diff = max_abs_diff(&through_copy, &through_share);
            assert!(diff <= 1e-6, "{arch:?}: appends differ by {diff}");
        }
    }

    #[test]
    fn an_unknown_token_id_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        init_tiny(Architecture::Llama, TINY, 3, None, dir.path()).unwrap();
        let model = load_model(dir.path(), DType::F32, &Device::Cpu).unwrap();
        let mut cache = KvCache::default();
        model.policy.forward_step(&[1, 2], &mut cache).unwrap();
        let error = model
            .policy
            .forward_decode(&[u32::MAX], &mut [&mut cache])
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("outside the vocabulary"),
            "{error:#}"
        );
        // The failed step wrote nothing into the cache.
        assert_eq!(cache.len(), 2);
    }
}
