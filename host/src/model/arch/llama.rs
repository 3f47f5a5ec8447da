//! The Llama decoder layer, which Qwen2 (biases on q/k/v) and SmolLM2 share: a pre-norm
//! grouped-query attention with rotary positions and a pre-norm SwiGLU MLP, each added back
//! to the residual stream.

use super::{GatedMlp, Linear, Ops, read, read_linear};
use crate::model::config::ModelConfig;
use anyhow::Result;
use candle_core::Tensor;

/// The parameters of the layer at `prefix`, with their shapes.
pub fn parameters(config: &ModelConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.kv_heads() * config.head_dim();
    let i = config.intermediate_size;
    let mut shapes = vec![
        (format!("{prefix}.input_layernorm.weight"), vec![h]),
        (format!("{prefix}.self_attn.q_proj.weight"), vec![q, h]),
        (format!("{prefix}.self_attn.k_proj.weight"), vec![kv, h]),
        (format!("{prefix}.self_attn.v_proj.weight"), vec![kv, h]),
    ];
    if config.qkv_bias() {
        shapes.push((format!("{prefix}.self_attn.q_proj.bias"), vec![q]));
        shapes.push((format!("{prefix}.self_attn.k_proj.bias"), vec![kv]));
        shapes.push((format!("{prefix}.self_attn.v_proj.bias"), vec![kv]));
    }
    shapes.push((format!("{prefix}.self_attn.o_proj.weight"), vec![h, q]));
    if config.o_bias() {
        shapes.push((format!("{prefix}.self_attn.o_proj.bias"), vec![h]));
    }
    shapes.extend([
        (format!("{prefix}.post_attention_layernorm.weight"), vec![h]),
        (format!("{prefix}.mlp.gate_proj.weight"), vec![i, h]),
        (format!("{prefix}.mlp.up_proj.weight"), vec![i, h]),
        (format!("{prefix}.mlp.down_proj.weight"), vec![h, i]),
    ]);
    shapes
}

/// One layer's weights.
#[derive(Clone)]
pub struct Block {
    pub input_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub post_norm: Tensor,
    pub mlp: GatedMlp,
}

impl Block {
    /// Reads the layer at `prefix`.
    pub fn load(
        config: &ModelConfig,
        prefix: &str,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Block> {
        let (qkv_bias, o_bias) = (config.qkv_bias(), config.o_bias());
        Ok(Block {
            input_norm: read(get, prefix, "input_layernorm.weight")?,
            q: read_linear(get, prefix, "self_attn.q_proj", qkv_bias)?,
            k: read_linear(get, prefix, "self_attn.k_proj", qkv_bias)?,
            v: read_linear(get, prefix, "self_attn.v_proj", qkv_bias)?,
            o: read_linear(get, prefix, "self_attn.o_proj", o_bias)?,
            post_norm: read(get, prefix, "post_attention_layernorm.weight")?,
            mlp: GatedMlp {
                gate: read(get, prefix, "mlp.gate_proj.weight")?,
                up: read(get, prefix, "mlp.up_proj.weight")?,
                down: read(get, prefix, "mlp.down_proj.weight")?,
            },
        })
    }

    /// The layer's forward.
    pub fn forward<O: Ops>(&self, ops: &mut O, layer: usize, x: O::X) -> Result<O::X> {
        let h = ops.rms_norm(&x, &self.input_norm)?;
        let [q, k, v] = ops.project(&h, [&self.q, &self.k, &self.v])?;
        let (q, k) = ops.rope(q, k)?;
        let attention = ops.attend(layer, q, k, v)?;
        let [out] = ops.project(&attention, [&self.o])?;
        let x = ops.add(x, out)?;
        let h = ops.rms_norm(&x, &self.post_norm)?;
        let mlp = ops.gated_mlp(&h, &self.mlp)?;
        ops.add(x, mlp)
    }
}
