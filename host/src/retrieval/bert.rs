//! A BERT encoder for inference only, on the same weights and names as candle's
//! `models::bert` (and Hugging Face's `BertModel`), arranged for CPU speed:
//! - each projection is one 2-D matrix product over all tokens of the batch (weights stored
//!   transposed and contiguous; query, key and value fused into one product);
//! - candle's fused layer norm; biases added in place together with the GELU or the residual
//!   connection, and the attention softmax with the padding bias in one pass ([`crate::kernels::bert_ops`],
//!   on CPU f32; GELU with a vectorised erf, |error| < 1e-6).
//!
//! `tests/retrieval.rs` checks it against candle's stock BERT.

use crate::kernels::bert_ops;
use anyhow::{Context, Result};
use candle_core::{D, Tensor};
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
        Ok(self.product(x)?.broadcast_add(&self.bias)?)
    }

    /// `[rows, in]` → `[rows, out]` without the bias.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?)
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
        let bias = ((mask.ones_like()? - mask)? * -1e30f64)?.contiguous()?;
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((batch, tokens, 3, heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?; // [3, batch, heads, tokens, head_dim]
            let q = qkv.get(0)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let probabilities = attention_probabilities(q.matmul(&k.t()?)?, &bias)?;
            let context = probabilities
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((rows, hidden))?;
            let attended = bias_residual(
                layer.attention_out.product(&context)?,
                &layer.attention_out.bias,
                &x,
            )?;
            let attended = layer.attention_norm.forward(&attended)?;
            let inner = bias_activate(
                layer.intermediate.product(&attended)?,
                &layer.intermediate.bias,
                self.activation,
            )?;
            let out = bias_residual(layer.output.product(&inner)?, &layer.output.bias, &attended)?;
            x = layer.output_norm.forward(&out)?;
        }
        Ok(x.reshape((batch, tokens, hidden))?)
    }
}

/// The configured activation, after adding `bias` to every row of `x` `[rows, width]`; exact
/// GELU runs fused with the bias and in place on CPU.
fn bias_activate(x: Tensor, bias: &Tensor, activation: HiddenAct) -> Result<Tensor> {
    if activation == HiddenAct::Gelu && bert_ops::applies(&[&x, bias]) {
        bert_ops::bias_gelu(&x, bias)?;
        return Ok(x);
    }
    let x = x.broadcast_add(bias)?;
    Ok(match activation {
        HiddenAct::Gelu => x.gelu_erf()?,
        HiddenAct::GeluApproximate => x.gelu()?,
        HiddenAct::Relu => x.relu()?,
    })
}

/// `product + bias + residual` (a dense layer's output and the residual connection), in place
/// on CPU.
fn bias_residual(product: Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    if bert_ops::applies(&[&product, bias, residual]) {
        bert_ops::bias_residual(&product, bias, residual)?;
        return Ok(product);
    }
    Ok((product.broadcast_add(bias)? + residual)?)
}

/// Attention probabilities: softmax over the keys of `scores` `[batch, heads, queries, keys]`
/// plus `bias` `[batch, keys]`, in place on CPU.
fn attention_probabilities(scores: Tensor, bias: &Tensor) -> Result<Tensor> {
    if bert_ops::applies(&[&scores, bias]) {
        bert_ops::masked_softmax(&scores, bias)?;
        return Ok(scores);
    }
    let (batch, keys) = bias.dims2()?;
    let scores = scores.broadcast_add(&bias.reshape((batch, 1, 1, keys))?)?;
    Ok(candle_nn::ops::softmax_last_dim(&scores)?)
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
