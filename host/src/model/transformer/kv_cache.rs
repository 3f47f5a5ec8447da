//! Key/value cache of one sequence on the generation path.
//!
//! Per layer a preallocated buffer [1, kv_heads, capacity, head_dim] filled up to `len`, grown
//! by doubling and written in place. The samples of one prompt share its prefill: after
//! [`KvCache::branch`] they read the prompt's positions from one read-only cache behind an
//! `Arc` and keep only their own positions in their own buffers. That saves a copy of the
//! prompt per sample (memory and the time to copy it) and lets the decode attention of a batch
//! read the prompt's keys and values from cache once rather than once per sample.

use anyhow::{Result, bail};
use candle_core::Tensor;
use std::sync::Arc;

/// Positions of a new layer buffer before it first grows.
const INITIAL_CAPACITY: usize = 64;

/// The cache of one sequence: positions shared with other sequences (read-only), then its own.
#[derive(Default)]
pub struct KvCache {
    /// The positions this sequence shares with others (a prompt prefilled once for all its
    /// samples). Never itself branched: one level deep.
    shared: Option<Arc<KvCache>>,
    /// This sequence's own positions, after the shared ones: one entry per layer.
    pub(super) layers: Vec<LayerCache>,
}

/// One layer's buffers.
pub(super) struct LayerCache {
    pub(super) k: Tensor,
    pub(super) v: Tensor,
    pub(super) len: usize,
}

impl LayerCache {
    fn new(k: &Tensor, v: &Tensor) -> Result<LayerCache> {
        let len = k.dim(2)?;
        let mut cache = LayerCache::empty_like(k, v, (len * 2).max(INITIAL_CAPACITY))?;
        cache.append(k, v)?;
        Ok(cache)
    }

    /// Empty buffers of `capacity` positions, shaped and typed like `k` and `v`.
    fn empty_like(k: &Tensor, v: &Tensor, capacity: usize) -> Result<LayerCache> {
        Ok(LayerCache {
            k: Tensor::zeros(grown(k.dims(), capacity), k.dtype(), k.device())?,
            v: Tensor::zeros(grown(v.dims(), capacity), v.dtype(), v.device())?,
            len: 0,
        })
    }

    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let new = k.dim(2)?;
        self.reserve(new)?;
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += new;
        Ok(())
    }

    /// Grows the buffers (doubling) so that `new` more positions fit.
    pub(super) fn reserve(&mut self, new: usize) -> Result<()> {
        let capacity = self.k.dim(2)?;
        if self.len + new > capacity {
            let bigger = ((self.len + new) * 2).max(capacity * 2);
            let (k_old, v_old) = (self.k.clone(), self.v.clone());
            self.k = Tensor::zeros(grown(k_old.dims(), bigger), k_old.dtype(), k_old.device())?;
            self.v = Tensor::zeros(grown(v_old.dims(), bigger), v_old.dtype(), v_old.device())?;
            self.k
                .slice_set(&k_old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            self.v
                .slice_set(&v_old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
        }
        Ok(())
    }

    fn current(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    fn fork(&self) -> Result<LayerCache> {
        let (k, v) = self.current()?;
        if self.len == 0 {
            return LayerCache::empty_like(&self.k, &self.v, INITIAL_CAPACITY);
        }
        LayerCache::new(&k.contiguous()?, &v.contiguous()?)
    }
}

fn grown(dims: &[usize], capacity: usize) -> Vec<usize> {
    let mut dims = dims.to_vec();
    dims[2] = capacity;
    dims
}

impl KvCache {
    /// Tokens already in the cache (shared and own).
    pub fn len(&self) -> usize {
        self.shared_len() + self.layers.first().map_or(0, |l| l.len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions read from the shared cache.
    pub fn shared_len(&self) -> usize {
        self.shared.as_ref().map_or(0, |s| s.len())
    }

    /// An independent copy: its own positions are copied, shared ones stay shared.
    pub fn fork(&self) -> Result<KvCache> {
        Ok(KvCache {
            shared: self.shared.clone(),
            layers: self
                .layers
                .iter()
                .map(LayerCache::fork)
                .collect::<Result<_>>()?,
        })
    }

    /// `copies` caches that continue from this one (the samples of a prompt after its
    /// prefill). With more than one, this cache's positions become their shared, read-only
    /// part instead of being copied; each gets empty buffers for its own positions. A cache
    /// that already shares positions is flattened into one first (sharing is one level deep).
    pub fn branch(self, copies: usize) -> Result<Vec<KvCache>> {
        if copies <= 1 {
            return Ok(if copies == 1 { vec![self] } else { Vec::new() });
        }
        let base = Arc::new(self.flattened()?);
        (0..copies)
            .map(|_| {
                Ok(KvCache {
                    layers: base
                        .layers
                        .iter()
                        .map(|l| LayerCache::empty_like(&l.k, &l.v, INITIAL_CAPACITY))
                        .collect::<Result<_>>()?,
                    shared: Some(base.clone()),
                })
            })
            .collect()
    }

    /// This cache with its shared positions copied into its own buffers.
    fn flattened(self) -> Result<KvCache> {
        if self.shared.is_none() {
            return Ok(self);
        }
        let layers = (0..self.layers.len())
            .map(|layer| {
                let (k, v) = self.layer_kv(layer)?;
                LayerCache::new(&k.contiguous()?, &v.contiguous()?)
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            shared: None,
            layers,
        })
    }

    /// The shared cache's buffers of `layer`, if positions are shared.
    pub(super) fn shared_layer(&self, layer: usize) -> Option<&LayerCache> {
        self.shared.as_ref().and_then(|s| s.layers.get(layer))
    }

    /// Every cached position of `layer` (shared, then own) as [1, kv_heads, len, head_dim].
    pub(super) fn layer_kv(&self, layer: usize) -> Result<(Tensor, Tensor)> {
        let Some(own) = self.layers.get(layer) else {
            bail!("the KV cache has no layer {layer}");
        };
        let (k, v) = own.current()?;
        match self.shared_layer(layer) {
            Some(shared) if shared.len > 0 => {
                let (shared_k, shared_v) = shared.current()?;
                Ok((
                    Tensor::cat(&[&shared_k, &k], 2)?,
                    Tensor::cat(&[&shared_v, &v], 2)?,
                ))
            }
            _ => Ok((k, v)),
        }
    }

    /// Appends new keys and values [1, kv_heads, new, head_dim] to `layer` (layers are filled
    /// in order; a fresh cache gets its buffers on the first append) and returns every cached
    /// position of that layer.
    pub(super) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if layer == self.layers.len() && self.shared.is_none() {
            self.layers.push(LayerCache::new(k, v)?);
        } else if let Some(own) = self.layers.get_mut(layer) {
            own.append(k, v)?;
        } else {
            bail!(
                "the KV cache has {} layers; layer {layer} comes out of order",
                self.layers.len()
            );
        }
        self.layer_kv(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn positions(from: usize, count: usize) -> Tensor {
        // [1, 2 kv heads, count, 3], values tagging the position.
        let values: Vec<f32> = (0..2)
            .flat_map(|h| {
                (from..from + count)
                    .flat_map(move |p| (0..3).map(move |d| (h * 1000 + p * 10 + d) as f32))
            })
            .collect();
        Tensor::from_vec(values, (1, 2, count, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn branches_share_the_prompt_and_keep_their_own_positions() {
        let mut prompt = KvCache::default();
        prompt
            .append(0, &positions(0, 5), &positions(0, 5))
            .unwrap();
        let mut branches = prompt.branch(3).unwrap();
        assert_eq!(branches.len(), 3);
        for (i, branch) in branches.iter_mut().enumerate() {
            assert_eq!((branch.len(), branch.shared_len()), (5, 5));
            // Each branch appends its own (different) position 5.
            let own = (positions(5, 1) + i as f64).unwrap();
            let (k, _) = branch.append(0, &own, &own).unwrap();
            assert_eq!(k.dims(), &[1, 2, 6, 3]);
            assert_eq!(branch.len(), 6);
        }
        for (i, branch) in branches.iter().enumerate() {
            let (k, v) = branch.layer_kv(0).unwrap();
            let mut expected =
                Tensor::cat(&[positions(0, 5), (positions(5, 1) + i as f64).unwrap()], 2).unwrap();
            expected = expected.contiguous().unwrap();
            assert_eq!(
                k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            assert_eq!(v.dims(), expected.dims());
        }
        // A fork of a branch copies its own positions and still shares the prompt.
        let fork = branches[1].fork().unwrap();
        assert_eq!((fork.len(), fork.shared_len()), (6, 5));
        // Branching a branch flattens it: nothing shared twice.
        let again = fork.branch(2).unwrap();
        assert_eq!((again[0].len(), again[0].shared_len()), (6, 6));
        let (k, _) = again[0].layer_kv(0).unwrap();
        assert_eq!(k.dims(), &[1, 2, 6, 3]);
        // One copy is an ordinary cache.
        let mut single = KvCache::default();
        single
            .append(0, &positions(0, 2), &positions(0, 2))
            .unwrap();
        let single = single.branch(1).unwrap();
        assert_eq!((single[0].len(), single[0].shared_len()), (2, 0));
    }

    #[test]
    fn layers_out_of_order_are_an_error() {
        let mut cache = KvCache::default();
        let k = Tensor::zeros((1, 2, 1, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(cache.append(1, &k, &k).is_err());
        cache.append(0, &k, &k).unwrap();
        let mut branches = cache.branch(2).unwrap();
        // A branch has buffers for the layers of its prompt only.
        assert!(branches[0].append(1, &k, &k).is_err());
        assert!(branches[0].layer_kv(3).is_err());
    }
}
