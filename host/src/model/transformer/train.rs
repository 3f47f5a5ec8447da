//! The training forward's executor: a padded batch [batch, seq, hidden] through ops that all
//! have a backward. CPU f32 models take the fused ops of [`fused`] and
//! [`causal_attention`] (each one graph node with its own backward); other dtypes and devices
//! take candle's ops, with the softmax, RMS norm and rotary embedding written out.

use super::{Path, Policy, array, per_run, project_tensors};
use crate::kernels::causal_attention::causal_attention;
use crate::kernels::fused;
use crate::model::arch::{GatedMlp, Linear, Ops};
use anyhow::Result;
use candle_core::{D, DType, Tensor};
use std::sync::Arc;

/// Added to attention scores of masked keys. Finite, so that fully masked rows (padding
/// queries) stay finite in the forward and the backward.
const MASKED: f64 = -1e9;

/// What the training forward's attention reads.
enum Attention {
    /// The fused op: the keys that are not padding, [batch · seq], and each token's rotary
    /// angles [batch, seq, head_dim / 2].
    Fused {
        key_valid: Arc<[bool]>,
        cos: Tensor,
        sin: Tensor,
    },
    /// Candle's ops: an additive bias [batch, 1, seq, seq] (causal and key padding) and the
    /// angles full-width per head, [batch, 1, seq, head_dim].
    Composed {
        bias: Tensor,
        cos: Tensor,
        sin: Tensor,
    },
}

/// The training forward's executor of the layer descriptions.
pub(super) struct TrainOps {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    attention: Attention,
}

impl TrainOps {
    /// The executor for `mask` [batch, seq] (1 = token): positions count only real tokens.
    pub(super) fn new(
        policy: &Policy,
        mask: &Tensor,
        batch: usize,
        seq: usize,
    ) -> Result<TrainOps> {
        let config = &policy.config;
        let hd = config.head_dim();
        let mask_f = mask.to_dtype(DType::F32)?;
        let positions = (mask_f.cumsum(1)? - 1.0)?.clamp(0.0, (policy.cos.dim(0)? - 1) as f64)?;
        let positions = positions.to_dtype(DType::U32)?.flatten_all()?;
        let rows = |table: &Tensor| -> Result<Tensor> {
            Ok(table
                .index_select(&positions, 0)?
                .reshape((batch, seq, hd / 2))?)
        };
        let (cos, sin) = (rows(&policy.cos)?, rows(&policy.sin)?);
        let attention = if fused::applies(&policy.embed) {
            let valid = mask_f.flatten_all()?.to_vec1::<f32>()?;
            Attention::Fused {
                key_valid: valid.iter().map(|&m| m > 0.5).collect(),
                cos,
                sin,
            }
        } else {
            let causal: Vec<f32> = (0..seq)
                .flat_map(|i| (0..seq).map(move |j| if j > i { MASKED as f32 } else { 0.0 }))
                .collect();
            let causal = Tensor::from_vec(causal, (1, 1, seq, seq), &policy.device)?;
            let key_pad = ((1.0 - &mask_f)? * MASKED)?.reshape((batch, 1, 1, seq))?;
            let bias = causal.broadcast_add(&key_pad)?.to_dtype(policy.dtype)?;
            let full = |t: &Tensor| -> Result<Tensor> {
                Ok(Tensor::cat(&[t, t], D::Minus1)?.unsqueeze(1)?)
            };
            Attention::Composed {
                bias,
                cos: full(&cos)?,
                sin: full(&sin)?,
            }
        };
        Ok(TrainOps {
            batch,
            seq,
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
            head_dim: hd,
            eps: config.rms_norm_eps,
            attention,
        })
    }

    /// [batch, seq, n · head_dim] as rows [batch, seq, n, head_dim].
    fn heads_of(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(D::Minus1)? / self.head_dim;
        Ok(x.reshape((self.batch, self.seq, n, self.head_dim))?)
    }

    /// Grouped-query attention on candle's ops: repeat each kv head for its query heads.
    fn repeat_kv(&self, x: Tensor) -> Result<Tensor> {
        let repeat = self.heads / self.kv_heads;
        if repeat == 1 {
            return Ok(x);
        }
        let (b, kv, s, d) = x.dims4()?;
        Ok(x.unsqueeze(2)?
            .broadcast_as((b, kv, repeat, s, d))?
            .reshape((b, kv * repeat, s, d))?)
    }
}

impl Ops for TrainOps {
    type X = Tensor;

    fn rms_norm(&mut self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let eps = self.eps;
        per_run(x, weight.dim(0)?, |x| rms_norm_diff(x, weight, eps))
    }

    fn project<const N: usize>(
        &mut self,
        x: &Tensor,
        linears: [&Linear; N],
    ) -> Result<[Tensor; N]> {
        project_tensors(x, linears, Path::Train)
    }

    /// Fused: rows [batch, seq, heads, head_dim]; composed: [batch, heads, seq, head_dim].
    fn rope(&mut self, q: Tensor, k: Tensor) -> Result<(Tensor, Tensor)> {
        let (q, k) = (self.heads_of(&q)?, self.heads_of(&k)?);
        match &self.attention {
            Attention::Fused { cos, sin, .. } => {
                Ok((fused::rope(&q, cos, sin)?, fused::rope(&k, cos, sin)?))
            }
            Attention::Composed { cos, sin, .. } => Ok((
                rope_diff(&q.transpose(1, 2)?, cos, sin)?,
                rope_diff(&k.transpose(1, 2)?, cos, sin)?,
            )),
        }
    }

    fn attend(&mut self, _layer: usize, q: Tensor, k: Tensor, v: Tensor) -> Result<Tensor> {
        let v = self.heads_of(&v)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        match &self.attention {
            Attention::Fused { key_valid, .. } => {
                Ok(causal_attention(&q, &k, &v, key_valid.clone(), scale)?)
            }
            Attention::Composed { bias, .. } => {
                let bias = bias.clone();
                let k = self.repeat_kv(k)?;
                let v = self.repeat_kv(v.transpose(1, 2)?)?;
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let probs = candle_nn::ops::softmax(&scores.broadcast_add(&bias)?, D::Minus1)?;
                Ok(probs.matmul(&v)?.transpose(1, 2)?.reshape((
                    self.batch,
                    self.seq,
                    self.heads * self.head_dim,
                ))?)
            }
        }
    }

    fn gated_mlp(&mut self, x: &Tensor, mlp: &GatedMlp) -> Result<Tensor> {
        let [gate, up] = array(super::linears(x, &[&mlp.gate, &mlp.up], Path::Train)?)?;
        let activated = if fused::applies(&gate) {
            fused::swiglu(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        super::linear(&activated, &mlp.down, Path::Train)
    }

    fn add(&mut self, x: Tensor, y: Tensor) -> Result<Tensor> {
        Ok((x + y)?)
    }
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
