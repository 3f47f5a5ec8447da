//! A BERT encoder for inference only, on the same weights and names as candle's
//! `models::bert` (and Hugging Face's `BertModel`), arranged for CPU speed:
//! - each projection is one 2-D matrix product over all tokens of the batch (weights stored
//!   transposed and contiguous; query, key and value fused into one product);
//! - fused softmax and layer norm kernels;
//! - GELU with a vectorisable erf (Abramowitz–Stegun 7.1.26, |error| < 1e-6) applied in place.
//!
//! `tests/retrieval.rs` checks it against candle's stock BERT.

use anyhow::{Context, Result};
use candle_core::{CpuStorage, D, DType, Layout, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};

/// One dense layer with its weight transposed to `[in, out]`.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> Result<Dense> {
        Ok(Dense {
            weight_t: vb.get((outputs, inputs), "weight")?.t()?.contiguous()?,
            bias: vb.get(outputs, "bias")?,
        })
    }

    /// `[rows, in]` → `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?)
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, size: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// The encoder: embeddings and layers.
pub struct BertEncoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embedding: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    activation: HiddenAct,
}

impl BertEncoder {
    /// Loads the weights (with or without a `bert.` / model-type prefix, as candle does).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<BertEncoder> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else if let Some(prefix) = config
            .model_type
            .as_deref()
            .filter(|t| vb.contains_tensor(&format!("{t}.embeddings.word_embeddings.weight")))
        {
            vb.pp(prefix)
        } else {
            anyhow::bail!("no embeddings.word_embeddings.weight in the weights: not a BERT model");
        };
        let hidden = config.hidden_size;
        if config.num_attention_heads == 0 || !hidden.is_multiple_of(config.num_attention_heads) {
            anyhow::bail!(
                "hidden size {hidden} is not a multiple of {} heads",
                config.num_attention_heads
            );
        }
        let embeddings = vb.pp("embeddings");
        let token_types = embeddings.get(
            (config.type_vocab_size, hidden),
            "token_type_embeddings.weight",
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let layer = vb.pp(format!("encoder.layer.{i}"));
            let attention = layer.pp("attention");
            let part = |name: &str| Dense::load(&attention.pp("self").pp(name), hidden, hidden);
            let (q, k, v) = (part("query")?, part("key")?, part("value")?);
            // The 1/√head_dim of the attention scores is folded into the query projection.
            let scale = 1.0 / ((hidden / config.num_attention_heads) as f64).sqrt();
            let qkv = Dense {
                weight_t: Tensor::cat(&[&(q.weight_t * scale)?, &k.weight_t, &v.weight_t], 1)?,
                bias: Tensor::cat(&[&(q.bias * scale)?, &k.bias, &v.bias], 0)?,
            };
            layers.push(Layer {
                qkv,
                attention_out: Dense::load(&attention.pp("output").pp("dense"), hidden, hidden)?,
                attention_norm: Norm::load(
                    &attention.pp("output").pp("LayerNorm"),
                    hidden,
                    config.layer_norm_eps,
                )?,
                intermediate: Dense::load(
                    &layer.pp("intermediate").pp("dense"),
                    hidden,
                    config.intermediate_size,
                )?,
                output: Dense::load(
                    &layer.pp("output").pp("dense"),
                    config.intermediate_size,
                    hidden,
                )?,
                output_norm: Norm::load(
                    &layer.pp("output").pp("LayerNorm"),
                    hidden,
                    config.layer_norm_eps,
                )?,
            });
        }
        Ok(BertEncoder {
            word_embeddings: embeddings
                .get((config.vocab_size, hidden), "word_embeddings.weight")?,
            position_embeddings: embeddings.get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?,
            token_type_embedding: token_types.narrow(0, 0, 1)?,
            embedding_norm: Norm::load(&embeddings.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            layers,
            heads: config.num_attention_heads,
            hidden,
            activation: config.hidden_act,
        })
    }

    /// Hidden states `[batch, tokens, hidden]` of a padded batch: `ids` `[batch, tokens]` (u32),
    /// `mask` `[batch, tokens]` (f32, 1 for real tokens). Token type 0 throughout.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        let rows = batch * tokens;
        let (hidden, heads) = (self.hidden, self.heads);
        let head_dim = hidden / heads;
        let words = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)
            .context("a token id is outside the vocabulary")?
            .reshape((batch, tokens, hidden))?;
        let positions = self
            .position_embeddings
            .narrow(0, 0, tokens)?
            .unsqueeze(0)?;
        let embedded = words
            .broadcast_add(&positions)?
            .broadcast_add(&self.token_type_embedding)?;
        let mut x = self
            .embedding_norm
            .forward(&embedded.reshape((rows, hidden))?)?;
        // Additive attention bias: 0 for real keys, a large negative number for padding.
        let bias = ((mask.ones_like()? - mask)? * -1e30f64)?
            .reshape((batch, 1, 1, tokens))?
            .contiguous()?;
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((batch, tokens, 3, heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?; // [3, batch, heads, tokens, head_dim]
            let q = qkv.get(0)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probabilities
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((rows, hidden))?;
            let attended = (layer.attention_out.forward(&context)? + &x)?;
            let attended = layer.attention_norm.forward(&attended)?;
            let inner = layer.intermediate.forward(&attended)?;
            let inner = activate(inner, self.activation)?;
            let out = (layer.output.forward(&inner)? + &attended)?;
            x = layer.output_norm.forward(&out)?;
        }
        Ok(x.reshape((batch, tokens, hidden))?)
    }
}

/// The configured activation; exact GELU runs in place on CPU with the fast erf.
fn activate(x: Tensor, activation: HiddenAct) -> Result<Tensor> {
    match activation {
        HiddenAct::Gelu if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() => {
            x.inplace_op1(&GeluErf)?;
            Ok(x)
        }
        HiddenAct::Gelu => Ok(x.gelu_erf()?),
        HiddenAct::GeluApproximate => Ok(x.gelu()?),
        HiddenAct::Relu => Ok(x.relu()?),
    }
}

/// GELU(x) = x/2 · (1 + erf(x/√2)), in place.
struct GeluErf;

impl candle_core::InplaceOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-fast"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("gelu-erf-fast: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu-erf-fast: contiguous tensors only");
        };
        for x in &mut values[start..end] {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
        Ok(())
    }
}

/// erf with |error| < 1e-6 in f32 (Abramowitz and Stegun 7.1.26: 1.5e-7, plus f32 rounding);
/// branch-free so it vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let sign = x.signum();
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let polynomial = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    sign * (1.0 - polynomial * exp_negative(-a * a))
}

/// e^x for x ≤ 0 (relative error < 2e-7): x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor
/// polynomial of degree 6, 2^n through the exponent bits. Branch-free, so loops vectorise.
#[inline(always)]
fn exp_negative(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    // ln 2 in two parts (Cody–Waite) so n·ln2 is exact enough in f32.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

/// Mean of `hidden` over the real tokens of each row (`mask` 1/0), `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    let counts = mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?;
    Ok(summed.broadcast_div(&counts)?)
}

/// Rows scaled to unit length.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norms = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norms)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fast_erf_is_within_1e_6_of_an_f64_erf() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((super::erf(x) - libm_erf(x)).abs());
        }
        assert!(worst < 1e-6, "{worst}");
    }

    #[test]
    fn the_fast_exponential_is_within_3e_7_relative() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (fast, exact) = (super::exp_negative(x), (x as f64).exp());
            assert!(
                ((fast as f64 - exact) / exact).abs() < 3e-7,
                "{x}: {fast} vs {exact}"
            );
        }
    }

    fn libm_erf(x: f32) -> f32 {
        candle_core::cpu::erf::erf_f64(x as f64) as f32
    }
}
