//! The decoder-only transformer shared by Qwen2 and Llama, with two forward paths over one set
//! of weights:
//!
//! - [`Policy::forward_train`]: full sequences, causal + padding mask, built only from ops
//!   with a backward, so every weight gets its gradient: on CPU f32 the fused ops of
//!   [`fused`] and [`causal_attention`](crate::kernels::causal_attention) (each one graph node with its own backward),
//!   elsewhere candle's ops (plain softmax, RMS norm and rotary embedding written out);
//! - [`Policy::forward_step`]: generation with fused ops (`softmax_last_dim`, `rms_norm`,
//!   `rope`) and a KV cache.
//!
//! The weights are [`candle_core::Var`]s in a [`VarMap`] keyed by their Hugging Face names, so
//! an optimiser can update them in place and checkpoints keep the HF layout.

use super::config::ModelConfig;
use super::worker::on_worker;
use crate::kernels::causal_attention::causal_attention;
use crate::kernels::fused;
use crate::kernels::skinny;
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::sync::Arc;

mod cpu_decode;
mod kv_cache;

pub use kv_cache::KvCache;
use kv_cache::LayerCache;

/// Added to attention scores of masked keys. Finite, so that fully masked rows (padding
/// queries) stay finite in the forward and the backward.
const MASKED: f64 = -1e9;

/// One decoder layer's weights.
#[derive(Clone)]
struct Layer {
    input_norm: Tensor,
    q: Tensor,
    q_bias: Option<Tensor>,
    k: Tensor,
    k_bias: Option<Tensor>,
    v: Tensor,
    v_bias: Option<Tensor>,
    o: Tensor,
    o_bias: Option<Tensor>,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// A causal language model whose weights are trainable variables.
pub struct Policy {
    config: ModelConfig,
    vars: VarMap,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    /// cos / sin tables, [max_positions, head_dim / 2].
    cos: Tensor,
    sin: Tensor,
    device: Device,
    dtype: DType,
}

/// The HF tensor names of a model's parameters, with their shapes.
pub fn parameter_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let hd = config.head_dim();
    let q = config.num_attention_heads * hd;
    let kv = config.kv_heads() * hd;
    let mut shapes = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![config.vocab_size, h],
    )];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![h]));
        shapes.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
        shapes.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        shapes.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        if config.qkv_bias() {
            shapes.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
            shapes.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
            shapes.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
        }
        shapes.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        if config.o_bias() {
            shapes.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        shapes.push((
            format!("{p}.mlp.gate_proj.weight"),
            vec![config.intermediate_size, h],
        ));
        shapes.push((
            format!("{p}.mlp.up_proj.weight"),
            vec![config.intermediate_size, h],
        ));
        shapes.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![h, config.intermediate_size],
        ));
    }
    shapes.push(("model.norm.weight".to_string(), vec![h]));
    if !config.tie_word_embeddings {
        shapes.push(("lm_head.weight".to_string(), vec![config.vocab_size, h]));
    }
    shapes
}

impl Policy {
    /// Builds the model from named tensors (any dtype; converted to `dtype` on `device`).
    /// Every parameter of [`parameter_shapes`] must be present with its shape; `origin` names
    /// where the tensors came from in errors.
    pub fn from_tensors(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
        origin: &str,
    ) -> Result<Policy> {
        let vars = VarMap::new();
        {
            let mut data = vars.data().lock().unwrap_or_else(|e| e.into_inner());
            for (name, shape) in parameter_shapes(&config) {
                let tensor = tensors
                    .remove(&name)
                    .with_context(|| format!("{origin}: missing tensor `{name}`"))?;
                if tensor.dims() != shape.as_slice() {
                    bail!(
                        "{origin}: tensor `{name}` has shape {:?}, config.json implies {shape:?}",
                        tensor.dims()
                    );
                }
                let tensor = tensor.to_dtype(dtype)?.to_device(device)?;
                data.insert(name, Var::from_tensor(&tensor)?);
            }
        }
        let unused: Vec<&String> = tensors
            .keys()
            .filter(|name| !name.ends_with("rotary_emb.inv_freq") && *name != "lm_head.weight")
            .collect();
        if !unused.is_empty() {
            tracing::warn!(
                "{origin}: ignoring {} unexpected tensors, e.g. {}",
                unused.len(),
                unused[0]
            );
        }
        Policy::assemble(config, vars, dtype, device)
    }

    fn assemble(
        config: ModelConfig,
        vars: VarMap,
        dtype: DType,
        device: &Device,
    ) -> Result<Policy> {
        let get = |name: &str| -> Result<Tensor> {
            let data = vars.data().lock().unwrap_or_else(|e| e.into_inner());
            data.get(name)
                .map(|v| v.as_tensor().clone())
                .with_context(|| format!("missing parameter {name}"))
        };
        let opt = |name: &str| -> Option<Tensor> { get(name).ok() };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: get(&format!("{p}.input_layernorm.weight"))?,
                q: get(&format!("{p}.self_attn.q_proj.weight"))?,
                q_bias: opt(&format!("{p}.self_attn.q_proj.bias")),
                k: get(&format!("{p}.self_attn.k_proj.weight"))?,
                k_bias: opt(&format!("{p}.self_attn.k_proj.bias")),
                v: get(&format!("{p}.self_attn.v_proj.weight"))?,
                v_bias: opt(&format!("{p}.self_attn.v_proj.bias")),
                o: get(&format!("{p}.self_attn.o_proj.weight"))?,
                o_bias: opt(&format!("{p}.self_attn.o_proj.bias")),
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: get(&format!("{p}.mlp.gate_proj.weight"))?,
                up: get(&format!("{p}.mlp.up_proj.weight"))?,
                down: get(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = if config.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight")?
        };
        let (cos, sin) = rope_tables(&config, dtype, device)?;
        Ok(Policy {
            norm: get("model.norm.weight")?,
            embed,
            lm_head,
            layers,
            cos,
            sin,
            device: device.clone(),
            dtype,
            vars,
            config,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The trainable variables, by HF name.
    pub fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Current weights by HF name (tied embeddings appear once, as `model.embed_tokens.weight`).
    pub fn named_tensors(&self) -> HashMap<String, Tensor> {
        let data = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect()
    }

    /// Training forward: logits [batch, seq, vocab] for `ids` [batch, seq] (u32) under
    /// `mask` [batch, seq] (1 = token, 0 = padding; left or right padding). Positions count
    /// only real tokens. Only differentiable ops.
    pub fn forward_train(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let hd = self.config.head_dim();
        let mask_f = mask.to_dtype(DType::F32)?;
        let positions = (mask_f.cumsum(1)? - 1.0)?.clamp(0.0, (self.cos.dim(0)? - 1) as f64)?;
        let positions = positions.to_dtype(DType::U32)?.flatten_all()?;
        // Each token's rotary angles [batch, seq, hd / 2]; the composed ops want them
        // full-width per head, [batch, 1, seq, hd].
        let rows = |table: &Tensor| -> Result<Tensor> {
            Ok(table
                .index_select(&positions, 0)?
                .reshape((batch, seq, hd / 2))?)
        };
        let (cos_rows, sin_rows) = (rows(&self.cos)?, rows(&self.sin)?);
        let fused_ops = fused::applies(&self.embed);
        let full =
            |t: &Tensor| -> Result<Tensor> { Ok(Tensor::cat(&[t, t], D::Minus1)?.unsqueeze(1)?) };
        let full_tables = if fused_ops {
            None
        } else {
            Some((full(&cos_rows)?, full(&sin_rows)?))
        };
        // The keys attention may read: the fused op takes the key mask, the composed ops an
        // additive bias [batch, 1, seq, seq] (causal and key padding).
        let (key_valid, bias): (Arc<[bool]>, Option<Tensor>) = if fused_ops {
            let valid = mask_f.flatten_all()?.to_vec1::<f32>()?;
            (valid.iter().map(|&m| m > 0.5).collect(), None)
        } else {
            let causal: Vec<f32> = (0..seq)
                .flat_map(|i| (0..seq).map(move |j| if j > i { MASKED as f32 } else { 0.0 }))
                .collect();
            let causal = Tensor::from_vec(causal, (1, 1, seq, seq), &self.device)?;
            let key_pad = ((1.0 - &mask_f)? * MASKED)?.reshape((batch, 1, 1, seq))?;
            let bias = causal.broadcast_add(&key_pad)?.to_dtype(self.dtype)?;
            (Arc::from(Vec::new()), Some(bias))
        };
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            batch,
            seq,
            self.config.hidden_size,
        ))?;
        for layer in &self.layers {
            let h = rms_norm_diff(&x, &layer.input_norm, self.config.rms_norm_eps)?;
            let attn = if let Some(bias) = &bias {
                let (cos, sin) = full_tables.as_ref().context("rotary tables")?;
                let (q, k, v) = self.qkv(layer, &h, batch, seq, Path::Train)?;
                let (q, k) = (rope_diff(&q, cos, sin)?, rope_diff(&k, cos, sin)?);
                let (k, v) = (self.repeat_kv(&k)?, self.repeat_kv(&v)?);
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let probs = candle_nn::ops::softmax(&scores.broadcast_add(bias)?, D::Minus1)?;
                self.attention_out(layer, &probs.matmul(&v)?, batch, seq, Path::Train)?
            } else {
                // Rows [batch, seq, heads, head_dim] straight into one attention op.
                let (q, k, v) = self.qkv_rows(layer, &h, batch, seq, Path::Train)?;
                let q = fused::rope(&q, &cos_rows, &sin_rows)?;
                let k = fused::rope(&k, &cos_rows, &sin_rows)?;
                let attn = causal_attention(&q, &k, &v, key_valid.clone(), scale)?;
                self.project_attention(layer, &attn, Path::Train)?
            };
            x = (x + attn)?;
            let h = rms_norm_diff(&x, &layer.post_norm, self.config.rms_norm_eps)?;
            x = (&x + self.mlp(layer, &h, Path::Train)?)?;
        }
        let x = rms_norm_diff(&x, &self.norm, self.config.rms_norm_eps)?;
        linear(&x, &self.lm_head, Path::Train)
    }

    /// Generation forward for one sequence: appends `ids` (prompt, observation or sampled
    /// tokens) to `cache` and returns the logits of every new position [new, vocab]. Fused
    /// ops, no gradient.
    pub fn forward_step(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        on_worker(|| self.forward_step_here(ids, cache))
    }

    fn forward_step_here(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let new = ids.len();
        if new == 0 {
            bail!("forward_step needs at least one token");
        }
        let offset = cache.len();
        self.check_length(offset + new)?;
        let cos = self.cos.narrow(0, offset, new)?.contiguous()?;
        let sin = self.sin.narrow(0, offset, new)?.contiguous()?;
        let total = offset + new;
        let repeat = self.config.num_attention_heads / self.config.kv_heads();
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
                Tensor::from_vec(values, (1, 1, repeat * new, total), &self.device)?
                    .to_dtype(self.dtype)?,
            )
        };
        let ids = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            1,
            new,
            self.config.hidden_size,
        ))?;
        let eps = self.config.rms_norm_eps as f32;
        for (index, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.input_norm, eps)?;
            let (q, k, v) = self.qkv(layer, &h, 1, new, Path::Generate)?;
            let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?;
            let (k, v) = cache.append(index, &k, &v)?;
            let attn = self.grouped_attention(&q, &k, &v, bias.as_ref())?;
            let attn = self.attention_out(layer, &attn, 1, new, Path::Generate)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.post_norm, eps)?;
            x = (&x + self.mlp(layer, &h, Path::Generate)?)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        Ok(linear(&x, &self.lm_head, Path::Generate)?.squeeze(0)?)
    }

    /// One decoding step for several sequences at once, each at its own length: `tokens[i]`
    /// is appended to `caches[i]`. Projections and the MLP run batched, attention per
    /// sequence against its own cache. Returns the next-token logits [batch, vocab].
    pub fn forward_decode(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        on_worker(|| self.forward_decode_here(tokens, caches))
    }

    fn forward_decode_here(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let batch = tokens.len();
        if batch == 0 || batch != caches.len() {
            bail!(
                "forward_decode needs one cache per token ({} tokens, {} caches)",
                batch,
                caches.len()
            );
        }
        for cache in caches.iter() {
            self.check_length(cache.len() + 1)?;
        }
        // CPU f32 models take the step on plain rows (`cpu_decode`), others the tensor ops.
        match self.decode_rows(tokens, caches)? {
            Some(logits) => Ok(logits),
            None => self.decode_composed(tokens, caches),
        }
    }

    /// The decode step of [`Policy::forward_decode`] through candle's tensor ops.
    fn decode_composed(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let batch = tokens.len();
        let positions: Vec<u32> = caches.iter().map(|c| c.len() as u32).collect();
        let positions = Tensor::new(positions.as_slice(), &self.device)?;
        let hd2 = self.config.head_dim() / 2;
        let cos = self
            .cos
            .index_select(&positions, 0)?
            .reshape((batch, 1, hd2))?;
        let sin = self
            .sin
            .index_select(&positions, 0)?
            .reshape((batch, 1, hd2))?;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x =
            self.embed
                .index_select(&ids, 0)?
                .reshape((batch, 1, self.config.hidden_size))?;
        let eps = self.config.rms_norm_eps as f32;
        for (index, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.input_norm, eps)?;
            let (q, k, v) = self.qkv(layer, &h, batch, 1, Path::Generate)?;
            let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?;
            for (row, cache) in caches.iter_mut().enumerate() {
                cache.append(index, &k.narrow(0, row, 1)?, &v.narrow(0, row, 1)?)?;
            }
            let attn = match batched_decode_attention(index, &q, caches)? {
                Some(attn) => attn,
                None => {
                    let mut rows = Vec::with_capacity(batch);
                    for (row, cache) in caches.iter().enumerate() {
                        let (k_all, v_all) = cache.layer_kv(index)?;
                        rows.push(self.grouped_attention(
                            &q.narrow(0, row, 1)?,
                            &k_all,
                            &v_all,
                            None,
                        )?);
                    }
                    Tensor::cat(&rows, 0)?
                }
            };
            let attn = self.attention_out(layer, &attn, batch, 1, Path::Generate)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.post_norm, eps)?;
            x = (&x + self.mlp(layer, &h, Path::Generate)?)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        Ok(linear(&x, &self.lm_head, Path::Generate)?.squeeze(1)?)
    }

    fn check_length(&self, length: usize) -> Result<()> {
        let max = self.cos.dim(0)?;
        if length > max {
            bail!("sequence of {length} tokens is longer than max_position_embeddings = {max}");
        }
        Ok(())
    }

    /// Attention of q [1, heads, new, hd] over k, v [1, kv_heads, total, hd] without copying
    /// k/v per query head: the query heads of each kv head become extra rows.
    fn grouped_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, heads, new, hd) = q.dims4()?;
        let kv = self.config.kv_heads();
        let repeat = heads / kv;
        let q = q.reshape((1, kv, repeat * new, hd))?;
        let mut scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(probs
            .matmul(&v.contiguous()?)?
            .reshape((1, heads, new, hd))?)
    }

    /// q, k, v as [batch, heads, seq, head_dim].
    fn qkv(
        &self,
        layer: &Layer,
        h: &Tensor,
        batch: usize,
        seq: usize,
        path: Path,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (q, k, v) = self.qkv_rows(layer, h, batch, seq, path)?;
        Ok((q.transpose(1, 2)?, k.transpose(1, 2)?, v.transpose(1, 2)?))
    }

    /// q, k, v as [batch, seq, heads, head_dim] (contiguous: each token's heads together).
    fn qkv_rows(
        &self,
        layer: &Layer,
        h: &Tensor,
        batch: usize,
        seq: usize,
        path: Path,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let hd = self.config.head_dim();
        let [q, k, v]: [Tensor; 3] = linears(h, &[&layer.q, &layer.k, &layer.v], path)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("three projections expected"))?;
        let shape = |out: Tensor, b: &Option<Tensor>, heads: usize| -> Result<Tensor> {
            let out = match b {
                Some(b) => out.broadcast_add(b)?,
                None => out,
            };
            Ok(out.reshape((batch, seq, heads, hd))?)
        };
        Ok((
            shape(q, &layer.q_bias, self.config.num_attention_heads)?,
            shape(k, &layer.k_bias, self.config.kv_heads())?,
            shape(v, &layer.v_bias, self.config.kv_heads())?,
        ))
    }

    /// [batch, heads, seq, head_dim] → o_proj → [batch, seq, hidden].
    fn attention_out(
        &self,
        layer: &Layer,
        attn: &Tensor,
        batch: usize,
        seq: usize,
        path: Path,
    ) -> Result<Tensor> {
        let attn = attn.transpose(1, 2)?.reshape((
            batch,
            seq,
            self.config.num_attention_heads * self.config.head_dim(),
        ))?;
        self.project_attention(layer, &attn, path)
    }

    /// [batch, seq, heads · head_dim] → o_proj (and its bias) → [batch, seq, hidden].
    fn project_attention(&self, layer: &Layer, attn: &Tensor, path: Path) -> Result<Tensor> {
        let mut out = linear(attn, &layer.o, path)?;
        if let Some(b) = &layer.o_bias {
            out = out.broadcast_add(b)?;
        }
        Ok(out)
    }

    fn mlp(&self, layer: &Layer, h: &Tensor, path: Path) -> Result<Tensor> {
        let [gate, up]: [Tensor; 2] = linears(h, &[&layer.gate, &layer.up], path)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("two projections expected"))?;
        let activated = if path == Path::Train && fused::applies(&gate) {
            fused::swiglu(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        linear(&activated, &layer.down, path)
    }

    /// Grouped-query attention: repeat each kv head for its query heads.
    fn repeat_kv(&self, x: &Tensor) -> Result<Tensor> {
        let repeat = self.config.num_attention_heads / self.config.kv_heads();
        if repeat == 1 {
            return Ok(x.clone());
        }
        let (b, kv, s, d) = x.dims4()?;
        Ok(x.unsqueeze(2)?
            .broadcast_as((b, kv, repeat, s, d))?
            .reshape((b, kv * repeat, s, d))?)
    }
}

/// Attention of the decode batch's new tokens `q` [batch, heads, 1, head_dim] over layer
/// `layer` of their caches (the new keys already appended), in one parallel pass through
/// [`crate::kernels::decode_attention`]. `None` when the tensors are not CPU f32 (the caller then runs the
/// tensor-op path).
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

/// Which forward a projection belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The training forward: differentiable ops only (candle's, and the fused ops with their
    /// own backward), so that the backward reaches every weight.
    Train,
    /// The generation forward: no gradient; few-row products take the decode kernel.
    Generate,
}

/// `x [..., k] · wᵀ` for a weight `w [n, k]`.
fn linear(x: &Tensor, w: &Tensor, path: Path) -> Result<Tensor> {
    let mut out = linears(x, &[w], path)?;
    out.pop().context("one product per weight")
}

/// `x [..., k] · wᵢᵀ` for several weights `wᵢ [nᵢ, k]`. On the generation path, CPU f32
/// products with at most [`DECODE_ROWS`] rows stream the weights once through [`skinny`]'s
/// kernel, all weights in one parallel pass (decode steps and short appends); on the training
/// path CPU f32 products are [`fused::linear`] (one graph node with its own backward);
/// everything else is a candle matmul per weight.
fn linears(x: &Tensor, weights: &[&Tensor], path: Path) -> Result<Vec<Tensor>> {
    if path == Path::Generate
        && let Some(out) = skinny_linears(x, weights)?
    {
        return Ok(out);
    }
    if path == Path::Train && fused::applies(x) && weights.iter().all(|w| fused::applies(w)) {
        return weights.iter().map(|w| Ok(fused::linear(x, w)?)).collect();
    }
    weights
        .iter()
        .map(|w| Ok(x.broadcast_matmul(&w.t()?)?))
        .collect()
}

/// Rows up to which the generation path uses the decode kernel. Measured on the output
/// projection with 2 threads (`cargo bench --bench model_speed -- --model DIR --kernel`): the
/// kernel took 2.9 ms for 1 and 5 rows, 6.6 for 8, 8.6 for 12 and 9.6 for 16 against candle's
/// matmul's 3.9, 13.0, 16.6, 16.0 and 16.0 ms, and 13.4 against 14.9 ms at 24 rows; 16 keeps
/// every row count where it clearly wins (a rollout batch of 4 prompts × 4 samples). Larger
/// batches (and longer prefills) take candle's matmul, whose sums may differ from the
/// kernel's in the last bits.
const DECODE_ROWS: usize = 16;

fn skinny_linears(x: &Tensor, weights: &[&Tensor]) -> Result<Option<Vec<Tensor>>> {
    let k = x.dim(D::Minus1)?;
    let rows = x.elem_count() / k.max(1);
    if !x.device().is_cpu() || x.dtype() != DType::F32 || rows == 0 || rows > DECODE_ROWS {
        return Ok(None);
    }
    let mut guards = Vec::with_capacity(weights.len());
    for w in weights {
        if w.dtype() != DType::F32 || w.dims2()?.1 != k {
            return Ok(None);
        }
        let (storage, layout) = w.storage_and_layout();
        let Some(offsets) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        guards.push((storage, offsets));
    }
    let mut slices = Vec::with_capacity(weights.len());
    for (storage, (start, end)) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            return Ok(None);
        };
        slices.push(&cpu.as_slice::<f32>()?[*start..*end]);
    }
    let input = x.flatten_all()?.to_vec1::<f32>()?;
    let products = skinny::matmul_transposed_many(&input, rows, &slices, k);
    let mut dims = x.dims().to_vec();
    products
        .into_iter()
        .map(|product| {
            let n = product.len() / rows;
            if let Some(last) = dims.last_mut() {
                *last = n;
            }
            Ok(Tensor::from_vec(product, dims.as_slice(), x.device())?)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// RMS norm from differentiable ops: x / sqrt(mean(x²) + eps) * w, computed in f32 or wider.
fn rms_norm_diff(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fused::applies(x) && fused::applies(weight) {
        return Ok(fused::rms_norm(x, weight, eps)?);
    }
    let dtype = x.dtype();
    let wide = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let xw = x.to_dtype(wide)?;
    let norm = (xw.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(xw
        .broadcast_div(&norm)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)?)
}

/// Rotary embedding (rotate-half form) from differentiable ops; cos/sin are
/// [batch, 1, seq, head_dim].
fn rope_diff(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// cos / sin of the rotary embedding for every position, [max_positions, head_dim / 2].
fn rope_tables(config: &ModelConfig, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let hd = config.head_dim();
    let positions = config.max_position_embeddings;
    let inv_freq: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f64 / hd as f64))
        .collect();
    let mut cos = Vec::with_capacity(positions * hd / 2);
    let mut sin = Vec::with_capacity(positions * hd / 2);
    for p in 0..positions {
        for f in &inv_freq {
            // f32 angles, as the reference implementations compute them.
            let angle = (p as f32) * (*f as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = (positions, hd / 2);
    Ok((
        Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
    ))
}
