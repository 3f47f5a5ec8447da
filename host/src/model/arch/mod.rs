//! The decoder layer of each architecture, written once against [`Ops`].
//!
//! A file per architecture says which weights its layer holds (by Hugging Face name) and the
//! order of its steps: norms, projections, rotary positions, attention, the gated MLP and the
//! residual adds. It says nothing about how a step is computed. The executors in
//! [`crate::model::transformer`] do that:
//!
//! - the training forward (fused CPU-f32 ops with their own backward, or candle's composed
//!   ops for other dtypes and devices) over a padded batch;
//! - the generation forward on tensors (candle's fused ops and the decode-sized products)
//!   that appends to one KV cache or decodes one token for several caches;
//! - the decode step on plain rows of floats, for CPU f32 models.
//!
//! Adding an architecture is a file here with its [`parameters`](llama::parameters), its
//! weights and its `forward`; a variant of [`Block`] with its arms in `parameters`, `load` and
//! `forward`; and its names in [`Architecture`] (`model_type`, class name, which projections
//! carry biases) and a shape for it in `model::tiny` for the tests.

use super::config::{Architecture, ModelConfig};
use anyhow::Result;
use candle_core::Tensor;

pub mod llama;
pub mod qwen3;

/// A projection `x · weightᵀ (+ bias)`, weight [out, in].
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// The SwiGLU MLP: `down(silu(gate(x)) · up(x))`.
#[derive(Clone)]
pub struct GatedMlp {
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// The steps a layer is made of. `X` is the executor's form of the activations (a tensor of
/// rows, or plain rows of floats); a layer description only passes them from step to step.
pub trait Ops {
    type X;

    /// RMS norm `x / √(mean(x²) + eps) · weight` over each run of `weight.len()` values of
    /// every row: the hidden state with a [hidden] weight, or every head of q or k with a
    /// [head_dim] weight.
    fn rms_norm(&mut self, x: &Self::X, weight: &Tensor) -> Result<Self::X>;

    /// Several projections of the same input, in one pass where the executor can.
    fn project<const N: usize>(
        &mut self,
        x: &Self::X,
        linears: [&Linear; N],
    ) -> Result<[Self::X; N]>;

    /// The rotary embedding of queries and keys (as [`Ops::project`] gave them) at the
    /// executor's positions. What it returns is in a layout of the executor's choosing (heads
    /// first, or rows of heads): pass it only to [`Ops::attend`].
    fn rope(&mut self, q: Self::X, k: Self::X) -> Result<(Self::X, Self::X)>;

    /// Attention of layer `layer` over `q` and `k` from [`Ops::rope`] and `v` as
    /// [`Ops::project`] gave it: the executor holds the context (the training mask, the KV
    /// cache the new keys and values are written to, or one cache per decoded sequence).
    /// Returns each position's heads side by side, the output projection's input.
    fn attend(&mut self, layer: usize, q: Self::X, k: Self::X, v: Self::X) -> Result<Self::X>;

    /// The gated MLP.
    fn gated_mlp(&mut self, x: &Self::X, mlp: &GatedMlp) -> Result<Self::X>;

    /// The residual add `x + y`.
    fn add(&mut self, x: Self::X, y: Self::X) -> Result<Self::X>;
}

/// One decoder layer's weights, of the architecture that reads them.
#[derive(Clone)]
pub enum Block {
    /// Llama, and Qwen2 (Llama with q/k/v biases).
    Llama(llama::Block),
    /// Qwen3: Llama with an RMS norm on every query and key head.
    Qwen3(qwen3::Block),
}

impl Block {
    /// The Hugging Face names and shapes of the parameters of the layer at `prefix`
    /// (`model.layers.{i}`).
    pub fn parameters(config: &ModelConfig, prefix: &str) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(match config.architecture()? {
            Architecture::Qwen2 | Architecture::Llama => llama::parameters(config, prefix),
            Architecture::Qwen3 => qwen3::parameters(config, prefix),
        })
    }

    /// Reads the layer at `prefix` through `get` (a parameter by name).
    pub fn load(
        config: &ModelConfig,
        prefix: &str,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Block> {
        Ok(match config.architecture()? {
            Architecture::Qwen2 | Architecture::Llama => {
                Block::Llama(llama::Block::load(config, prefix, get)?)
            }
            Architecture::Qwen3 => Block::Qwen3(qwen3::Block::load(config, prefix, get)?),
        })
    }

    /// The layer's forward on `x` through `ops`; `layer` is its index (for the KV cache).
    pub fn forward<O: Ops>(&self, ops: &mut O, layer: usize, x: O::X) -> Result<O::X> {
        match self {
            Block::Llama(block) => block.forward(ops, layer, x),
            Block::Qwen3(block) => block.forward(ops, layer, x),
        }
    }
}

/// A `{prefix}.{name}` parameter through `get`.
fn read(get: &dyn Fn(&str) -> Result<Tensor>, prefix: &str, name: &str) -> Result<Tensor> {
    get(&format!("{prefix}.{name}"))
}

/// A projection at `{prefix}.{name}`, with its bias when `bias` says it has one.
fn read_linear(
    get: &dyn Fn(&str) -> Result<Tensor>,
    prefix: &str,
    name: &str,
    bias: bool,
) -> Result<Linear> {
    Ok(Linear {
        weight: read(get, prefix, &format!("{name}.weight"))?,
        bias: if bias {
            Some(read(get, prefix, &format!("{name}.bias"))?)
        } else {
            None
        },
    })
}
