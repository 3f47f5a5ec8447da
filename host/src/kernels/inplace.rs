//! In-place f32 CPU kernels of the update: gradient accumulation over micro-batches and the
//! AdamW step read and write each buffer once. The composed candle ops they replace allocate a
//! fresh tensor per operation — on a 135 M-parameter model ~540 MB each, a dozen per step, every
//! one of them page-faulted and zeroed by the kernel. Other devices and dtypes keep the
//! composed ops ([`applies`] says which).

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;
use std::collections::BTreeMap;

type CandleResult<T> = candle_core::Result<T>;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 16;

/// Whether the in-place kernels apply to all of `tensors`: f32, on the CPU, contiguous, one
/// shape.
pub fn applies(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    tensors.iter().all(|t| {
        t.device().is_cpu()
            && t.dtype() == candle_core::DType::F32
            && t.is_contiguous()
            && t.dims() == first.dims()
    })
}

/// The contiguous f32 elements of an in-place target.
pub(crate) fn slice_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
) -> CandleResult<&'a mut [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("in-place target must be contiguous".into()))?;
    match storage {
        CpuStorage::F32(data) => Ok(&mut data[start..end]),
        _ => candle_core::bail!("in-place kernels take f32 only"),
    }
}

/// The contiguous f32 elements of an in-place operand.
pub(crate) fn operand<'a>(storage: &'a CpuStorage, layout: &Layout) -> CandleResult<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("in-place operand must be contiguous".into()))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, len: usize) -> CandleResult<&'a [f32]> {
    let data = operand(storage, layout)?;
    if data.len() != len {
        candle_core::bail!("in-place operand has {} elements, not {len}", data.len());
    }
    Ok(data)
}

/// Adds `grad` to the running gradient sum of `name`: the first gradient is kept as it is
/// (backward passes return a fresh tensor per variable), later ones are added in place where
/// the kernels apply and with a candle add otherwise.
pub fn accumulate(
    sums: &mut BTreeMap<String, Tensor>,
    name: &str,
    grad: &Tensor,
) -> candle_core::Result<()> {
    match sums.get_mut(name) {
        Some(sum) if applies(&[sum, grad]) => add_assign(sum, grad),
        Some(sum) => {
            *sum = (&*sum + grad)?;
            Ok(())
        }
        None => {
            sums.insert(name.to_string(), grad.clone());
            Ok(())
        }
    }
}

/// `sum += other`, in place in `sum`'s storage (every tensor sharing it sees the change).
pub fn add_assign(sum: &Tensor, other: &Tensor) -> candle_core::Result<()> {
    sum.inplace_op2(other, &AddAssign)
}

struct AddAssign;

impl InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "add-assign"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<()> {
        let sum = slice_mut(s1, l1)?;
        let other = slice(s2, l2, sum.len())?;
        sum.par_chunks_mut(CHUNK)
            .zip(other.par_chunks(CHUNK))
            .for_each(|(sum, other)| sum.iter_mut().zip(other).for_each(|(s, o)| *s += o));
        Ok(())
    }
}

/// One AdamW update with decoupled weight decay, in place in `param`, `m` and `v`:
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p(1 − lr·wd) − lr · (m/c₁) / (√(v/c₂) + ε)`, with `c₁`, `c₂` the bias corrections.
#[derive(Debug, Clone, Copy)]
pub struct AdamWUpdate {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub correction1: f64,
    pub correction2: f64,
}

impl AdamWUpdate {
    /// Applies the update to `param` with gradient `grad` and moments `m`, `v`.
    pub fn apply(
        &self,
        param: &Tensor,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<()> {
        m.inplace_op2(
            grad,
            &Moment {
                beta: self.beta1,
                square: false,
            },
        )?;
        v.inplace_op2(
            grad,
            &Moment {
                beta: self.beta2,
                square: true,
            },
        )?;
        param.inplace_op3(m, v, self)
    }
}

/// `moment ← β·moment + (1−β)·g` (or `g²`).
struct Moment {
    beta: f64,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<()> {
        let moment = slice_mut(s1, l1)?;
        let grad = slice(s2, l2, moment.len())?;
        let (keep, take) = (self.beta as f32, (1.0 - self.beta) as f32);
        let square = self.square;
        moment
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .for_each(|(moment, grad)| {
                for (m, &g) in moment.iter_mut().zip(grad) {
                    let g = if square { g * g } else { g };
                    *m = *m * keep + g * take;
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for AdamWUpdate {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CandleResult<()> {
        let param = slice_mut(s1, l1)?;
        let m = slice(s2, l2, param.len())?;
        let v = slice(s3, l3, param.len())?;
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let lr = self.lr as f32;
        let (c1, c2, eps) = (
            self.correction1 as f32,
            self.correction2 as f32,
            self.eps as f32,
        );
        param
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(param, (m, v))| {
                for ((p, &m), &v) in param.iter_mut().zip(m).zip(v) {
                    let update = (m / c1) / ((v / c2).sqrt() + eps);
                    *p = *p * decay - update * lr;
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn accumulation_sums_gradients_in_place_and_falls_back_for_other_dtypes() {
        let mut sums = BTreeMap::new();
        let g = |values: &[f32]| Tensor::new(values, &Device::Cpu).unwrap();
        accumulate(&mut sums, "w", &g(&[1.0, 2.0])).unwrap();
        accumulate(&mut sums, "w", &g(&[0.25, -4.0])).unwrap();
        accumulate(&mut sums, "b", &g(&[3.0])).unwrap();
        assert_eq!(sums["w"].to_vec1::<f32>().unwrap(), vec![1.25, -2.0]);
        assert_eq!(sums["b"].to_vec1::<f32>().unwrap(), vec![3.0]);
        let wide = |values: &[f64]| Tensor::new(values, &Device::Cpu).unwrap();
        accumulate(&mut sums, "d", &wide(&[1.0])).unwrap();
        accumulate(&mut sums, "d", &wide(&[0.5])).unwrap();
        assert_eq!(sums["d"].to_vec1::<f64>().unwrap(), vec![1.5]);
    }

    #[test]
    fn add_assign_changes_the_sum_in_place_and_refuses_a_shape_mismatch() {
        let sum = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let view = sum.clone();
        add_assign(
            &sum,
            &Tensor::new(&[0.5f32, -2.0, 10.0], &Device::Cpu).unwrap(),
        )
        .unwrap();
        assert_eq!(view.to_vec1::<f32>().unwrap(), vec![1.5, 0.0, 13.0]);
        let short = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        assert!(add_assign(&sum, &short).is_err());
        assert!(applies(&[&sum, &view]));
        assert!(!applies(&[&sum, &short]));
        assert!(!applies(&[&sum.to_dtype(candle_core::DType::F64).unwrap()]));
    }
}
