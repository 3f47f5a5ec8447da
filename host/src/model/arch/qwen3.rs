//! The Qwen3 decoder layer: Llama's, with an RMS norm on every query and key head between
//! their projections and the rotary embedding (`q_norm`, `k_norm`, [head_dim] each), a head
//! width read from config.json (128 by default, which may differ from hidden / heads: Qwen3-0.6B
//! has 16 heads of 128 in a 1,024-wide model) and biases only where `attention_bias` says.

use super::{Ops, llama, read};
use crate::model::config::ModelConfig;
use anyhow::Result;
use candle_core::Tensor;

/// The parameters of the layer at `prefix`, with their shapes.
pub fn parameters(config: &ModelConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let mut shapes = llama::parameters(config, prefix);
    let head_dim = config.head_dim();
    shapes.push((format!("{prefix}.self_attn.q_norm.weight"), vec![head_dim]));
    shapes.push((format!("{prefix}.self_attn.k_norm.weight"), vec![head_dim]));
    shapes
}

/// One layer's weights: Llama's and the two head norms.
#[derive(Clone)]
pub struct Block {
    pub base: llama::Block,
    pub q_norm: Tensor,
    pub k_norm: Tensor,
}

impl Block {
    /// Reads the layer at `prefix`.
    pub fn load(
        config: &ModelConfig,
        prefix: &str,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Block> {
        Ok(Block {
            base: llama::Block::load(config, prefix, get)?,
            q_norm: read(get, prefix, "self_attn.q_norm.weight")?,
            k_norm: read(get, prefix, "self_attn.k_norm.weight")?,
        })
    }

    /// The layer's forward.
    pub fn forward<O: Ops>(&self, ops: &mut O, layer: usize, x: O::X) -> Result<O::X> {
        let base = &self.base;
        let h = ops.rms_norm(&x, &base.input_norm)?;
        let [q, k, v] = ops.project(&h, [&base.q, &base.k, &base.v])?;
        let q = ops.rms_norm(&q, &self.q_norm)?;
        let k = ops.rms_norm(&k, &self.k_norm)?;
        let (q, k) = ops.rope(q, k)?;
        let attention = ops.attend(layer, q, k, v)?;
        let [out] = ops.project(&attention, [&base.o])?;
        let x = ops.add(x, out)?;
        let h = ops.rms_norm(&x, &base.post_norm)?;
        let mlp = ops.gated_mlp(&h, &base.mlp)?;
        ops.add(x, mlp)
    }
}
