//! The decoder-only transformer: the weights of a Qwen2, Qwen3 or Llama model and its three
//! forwards, each an executor of the layer descriptions in [`crate::model::arch`]:
//!
//! - [`Policy::forward_train`] (the `train` executor): full sequences, causal + padding mask, built only
//!   from ops with a backward, so every weight gets its gradient: on CPU f32 the fused ops of
//!   [`crate::kernels::fused`] and [`crate::kernels::causal_attention`] (each one graph node
//!   with its own backward), elsewhere candle's ops (plain softmax, RMS norm and rotary
//!   embedding written out);
//! - [`Policy::forward_step`] (the `step` executor): generation with candle's fused ops and a KV
//!   cache, the few-row products through [`skinny`];
//! - [`Policy::forward_decode`]: one token for each of several caches, on plain rows of floats
//!   for CPU f32 models (the `cpu_decode` executor), else through `step`'s tensor ops.
//!
//! The weights are [`candle_core::Var`]s in a [`VarMap`] keyed by their Hugging Face names, so
//! an optimiser can update them in place and checkpoints keep the HF layout.

use super::arch::{Block, Linear, Ops};
use super::config::ModelConfig;
use super::worker::on_worker;
use crate::kernels::fused;
use crate::kernels::skinny;
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

mod cpu_decode;
mod kv_cache;
mod step;
mod train;

pub use kv_cache::KvCache;
use kv_cache::LayerCache;

/// A causal language model whose weights are trainable variables.
pub struct Policy {
    config: ModelConfig,
    vars: VarMap,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    /// cos / sin tables, [max_positions, head_dim / 2].
    cos: Tensor,
    sin: Tensor,
    device: Device,
    dtype: DType,
}

/// The HF tensor names of a model's parameters, with their shapes.
pub fn parameter_shapes(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let h = config.hidden_size;
    let mut shapes = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![config.vocab_size, h],
    )];
    for i in 0..config.num_hidden_layers {
        shapes.extend(Block::parameters(config, &format!("model.layers.{i}"))?);
    }
    shapes.push(("model.norm.weight".to_string(), vec![h]));
    if !config.tie_word_embeddings {
        shapes.push(("lm_head.weight".to_string(), vec![config.vocab_size, h]));
    }
    Ok(shapes)
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
            for (name, shape) in parameter_shapes(&config)? {
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
        let blocks = (0..config.num_hidden_layers)
            .map(|i| Block::load(&config, &format!("model.layers.{i}"), &get))
            .collect::<Result<Vec<_>>>()?;
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = Linear {
            weight: if config.tie_word_embeddings {
                embed.clone()
            } else {
                get("lm_head.weight")?
            },
            bias: None,
        };
        let (cos, sin) = rope_tables(&config, dtype, device)?;
        Ok(Policy {
            norm: get("model.norm.weight")?,
            embed,
            lm_head,
            blocks,
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
        let mut ops = train::TrainOps::new(self, mask, batch, seq)?;
        let x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            batch,
            seq,
            self.config.hidden_size,
        ))?;
        self.run(&mut ops, x)
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
        self.check_length(cache.len() + new)?;
        let mut ops = step::StepOps::append(self, cache, new)?;
        let ids = Tensor::new(ids, &self.device)?;
        let x = self
            .embed
            .index_select(&ids, 0)?
            .reshape((1, new, self.config.hidden_size))?;
        Ok(self.run(&mut ops, x)?.squeeze(0)?)
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
        let ids = Tensor::new(tokens, &self.device)?;
        let x = self
            .embed
            .index_select(&ids, 0)?
            .reshape((batch, 1, self.config.hidden_size))?;
        let mut ops = step::StepOps::decode(self, caches)?;
        Ok(self.run(&mut ops, x)?.squeeze(1)?)
    }

    /// Every layer of the architecture, the final norm and the output projection, through
    /// `ops`: the one forward all executors share.
    fn run<O: Ops>(&self, ops: &mut O, mut x: O::X) -> Result<O::X> {
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(ops, layer, x)?;
        }
        let x = ops.rms_norm(&x, &self.norm)?;
        let [logits] = ops.project(&x, [&self.lm_head])?;
        Ok(logits)
    }

    fn check_length(&self, length: usize) -> Result<()> {
        let max = self.cos.dim(0)?;
        if length > max {
            bail!("sequence of {length} tokens is longer than max_position_embeddings = {max}");
        }
        Ok(())
    }
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

/// Several projections of `x` [..., k] on tensors, each with its bias: [`linears`] then the
/// bias added to every row.
fn project_tensors<const N: usize>(
    x: &Tensor,
    projections: [&Linear; N],
    path: Path,
) -> Result<[Tensor; N]> {
    let weights: Vec<&Tensor> = projections.iter().map(|l| &l.weight).collect();
    let outputs = linears(x, &weights, path)?
        .into_iter()
        .zip(projections)
        .map(|(out, linear)| match &linear.bias {
            Some(bias) => Ok(out.broadcast_add(bias)?),
            None => Ok(out),
        })
        .collect::<Result<Vec<_>>>()?;
    array(outputs)
}

/// A vector of exactly `N` items as an array.
fn array<T, const N: usize>(items: Vec<T>) -> Result<[T; N]> {
    let count = items.len();
    items
        .try_into()
        .map_err(|_| anyhow::anyhow!("{N} results expected, got {count}"))
}

/// Applies a norm over the last dimension to each run of `width` values of `x`'s rows
/// ([..., n · width] seen as [..., n, width]), then gives `x`'s shape back.
fn per_run(x: &Tensor, width: usize, norm: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let last = x.dim(D::Minus1)?;
    if last == width {
        return norm(x);
    }
    if width == 0 || !last.is_multiple_of(width) {
        bail!("a norm of width {width} does not divide rows of {last}");
    }
    let mut runs = x.dims().to_vec();
    if let Some(l) = runs.last_mut() {
        *l = last / width;
    }
    runs.push(width);
    Ok(norm(&x.reshape(runs)?)?.reshape(x.dims())?)
}
