//! AdamW with a saveable state, global grad-norm clipping and the learning-rate schedule.

use crate::kernels::inplace;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// AdamW's hyper-parameters (PyTorch's defaults, decoupled weight decay).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        AdamWSettings {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW over named variables; its moments and step count can be saved and restored exactly.
pub struct AdamW {
    settings: AdamWSettings,
    step: u64,
    moments: BTreeMap<String, (Tensor, Tensor)>,
}

const STEP_KEY: &str = "__step__";

impl AdamW {
    /// A fresh optimiser.
    pub fn new(settings: AdamWSettings) -> AdamW {
        AdamW {
            settings,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Updates taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update of every variable that has a gradient, at learning rate `lr`. f32 CPU
    /// variables are updated in place ([`inplace`]); others through candle ops.
    pub fn step(
        &mut self,
        params: &BTreeMap<String, Var>,
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
    ) -> Result<()> {
        self.step += 1;
        let s = self.settings;
        let t = self.step as i32;
        let correction1 = 1.0 - s.beta1.powi(t);
        let correction2 = 1.0 - s.beta2.powi(t);
        for (name, var) in params {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let (m, v) = match self.moments.remove(name) {
                Some(moments) => moments,
                None => (grad.zeros_like()?, grad.zeros_like()?),
            };
            if inplace::applies(&[var.as_tensor(), grad, &m, &v]) {
                let update = inplace::AdamWUpdate {
                    lr,
                    beta1: s.beta1,
                    beta2: s.beta2,
                    eps: s.eps,
                    weight_decay: s.weight_decay,
                    correction1,
                    correction2,
                };
                update.apply(var.as_tensor(), grad, &m, &v)?;
                self.moments.insert(name.clone(), (m, v));
                continue;
            }
            let m = ((m * s.beta1)? + (grad * (1.0 - s.beta1))?)?;
            let v = ((v * s.beta2)? + (grad.sqr()? * (1.0 - s.beta2))?)?;
            let m_hat = (&m / correction1)?;
            let v_hat = (&v / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + s.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * s.weight_decay))?;
            let next = (decayed - (update * lr)?)?;
            var.set(&next.to_dtype(var.dtype())?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }

    /// Writes the moments and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, (m, v)) in &self.moments {
            tensors.insert(format!("m.{name}"), m.clone());
            tensors.insert(format!("v.{name}"), v.clone());
        }
        tensors.insert(
            STEP_KEY.to_string(),
            Tensor::new(&[self.step as i64], &Device::Cpu)?,
        );
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Restores a state written by [`AdamW::save`], checking it against `params`.
    pub fn load(
        settings: AdamWSettings,
        path: &Path,
        params: &BTreeMap<String, Var>,
    ) -> Result<AdamW> {
        let device = params
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu);
        let mut tensors = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("cannot read optimiser state {}", path.display()))?;
        let step = tensors
            .remove(STEP_KEY)
            .with_context(|| format!("{} has no step count", path.display()))?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .first()
            .copied()
            .unwrap_or(0);
        let mut moments = BTreeMap::new();
        for (name, var) in params {
            let (Some(m), Some(v)) = (
                tensors.remove(&format!("m.{name}")),
                tensors.remove(&format!("v.{name}")),
            ) else {
                continue;
            };
            if m.dims() != var.dims() || v.dims() != var.dims() {
                bail!(
                    "{}: moments of `{name}` have shape {:?}, the model has {:?}",
                    path.display(),
                    m.dims(),
                    var.dims()
                );
            }
            moments.insert(name.clone(), (m, v));
        }
        if let Some(extra) = tensors.keys().next() {
            bail!(
                "{}: `{extra}` belongs to no parameter of this model",
                path.display()
            );
        }
        Ok(AdamW {
            settings,
            step: step.max(0) as u64,
            moments,
        })
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (≤ 0: no clipping).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for grad in grads.values() {
        total += grad
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for grad in grads.values_mut() {
            *grad = (&*grad * scale)?;
        }
    }
    Ok(norm)
}

/// Shape of the learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    /// Cosine decay to 0 at the last step.
    Cosine,
}

/// Learning rate per optimiser step: linear warmup, then constant or cosine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub kind: ScheduleKind,
}

impl LrSchedule {
    /// A schedule over `total_steps` updates whose first `warmup_ratio` share warms up.
    pub fn new(base: f64, warmup_ratio: f64, total_steps: u64, kind: ScheduleKind) -> LrSchedule {
        LrSchedule {
            base,
            warmup_steps: (warmup_ratio * total_steps as f64).round() as u64,
            total_steps,
            kind,
        }
    }

    /// The rate of update `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.base,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(values: &[f32]) -> BTreeMap<String, Var> {
        let tensor = Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap();
        BTreeMap::from([("w".to_string(), Var::from_tensor(&tensor).unwrap())])
    }

    fn grads(values: &[f32]) -> BTreeMap<String, Tensor> {
        BTreeMap::from([(
            "w".to_string(),
            Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap(),
        )])
    }

    #[test]
    fn adamw_matches_the_closed_form_for_two_steps() {
        let s = AdamWSettings::default();
        let p = params(&[1.0, -2.0]);
        let mut opt = AdamW::new(s);
        let lr = 0.1;
        opt.step(&p, &grads(&[0.5, -1.0]), lr).unwrap();
        // Step 1: m̂ = g, v̂ = g², update = g / (|g| + eps) ≈ sign(g).
        let mut want = [1.0f64, -2.0];
        let g1 = [0.5f64, -1.0];
        for i in 0..2 {
            want[i] = want[i] * (1.0 - lr * 0.01) - lr * g1[i] / (g1[i].abs() + 1e-8);
        }
        let got = p["w"].as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - want[i]).abs() < 1e-6, "{got:?} {want:?}");
        }
        opt.step(&p, &grads(&[0.1, 0.2]), lr).unwrap();
        let g2 = [0.1f64, 0.2];
        for i in 0..2 {
            let m = 0.9 * 0.1 * g1[i] + 0.1 * g2[i];
            let v = 0.999 * 0.001 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
            let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
            want[i] = want[i] * (1.0 - lr * 0.01) - lr * mh / (vh.sqrt() + 1e-8);
        }
        let got = p["w"].as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - want[i]).abs() < 1e-5, "{got:?} {want:?}");
        }
    }

    #[test]
    fn in_place_f32_updates_follow_the_composed_f64_ones() {
        // f32 CPU variables take the in-place kernels, f64 ones the candle ops.
        let values: Vec<f32> = (0..300)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let narrow = params(&values);
        let wide = BTreeMap::from([(
            "w".to_string(),
            Var::from_tensor(&Tensor::from_slice(&wide, 300, &Device::Cpu).unwrap()).unwrap(),
        )]);
        let (mut a, mut b) = (
            AdamW::new(AdamWSettings::default()),
            AdamW::new(AdamWSettings::default()),
        );
        for step in 0..4 {
            let g: Vec<f32> = (0..300)
                .map(|i| (((i + step * 13) * 53 % 97) as f32 - 48.0) / 10.0)
                .collect();
            a.step(&narrow, &grads(&g), 0.01).unwrap();
            let g = Tensor::from_slice(&g, 300, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            b.step(&wide, &BTreeMap::from([("w".to_string(), g)]), 0.01)
                .unwrap();
        }
        let got = narrow["w"].as_tensor().to_vec1::<f32>().unwrap();
        let want = wide["w"].as_tensor().to_vec1::<f64>().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "{worst}");
        // Four steps of lr 0.01 moved every weight by about 0.04.
        let moved = got
            .iter()
            .zip(&values)
            .map(|(g, v)| (g - v).abs())
            .fold(0.0, f32::max);
        assert!(moved > 0.03, "{moved}");
    }

    #[test]
    fn saved_state_continues_identically() {
        let dir = tempfile::tempdir().unwrap();
        let s = AdamWSettings::default();
        let (a, b) = (params(&[1.0, 2.0, 3.0]), params(&[1.0, 2.0, 3.0]));
        let mut first = AdamW::new(s);
        first.step(&a, &grads(&[0.3, -0.2, 0.1]), 0.01).unwrap();
        let mut other = AdamW::new(s);
        other.step(&b, &grads(&[0.3, -0.2, 0.1]), 0.01).unwrap();
        let path = dir.path().join("opt.safetensors");
        other.save(&path).unwrap();
        let mut restored = AdamW::load(s, &path, &b).unwrap();
        assert_eq!(restored.steps_taken(), 1);
        first.step(&a, &grads(&[0.7, 0.1, -0.4]), 0.01).unwrap();
        restored.step(&b, &grads(&[0.7, 0.1, -0.4]), 0.01).unwrap();
        assert_eq!(
            a["w"].as_tensor().to_vec1::<f32>().unwrap(),
            b["w"].as_tensor().to_vec1::<f32>().unwrap()
        );
        // A state for another model is refused.
        let error = AdamW::load(s, &path, &params(&[1.0])).err().unwrap();
        assert!(error.to_string().contains("shape"), "{error}");
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = grads(&[3.0, 4.0]);
        let norm = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        let v = g["w"].to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5);
        let mut small = grads(&[0.3, 0.4]);
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small["w"].to_vec1::<f32>().unwrap(), vec![0.3, 0.4]);
    }

    #[test]
    fn schedule_warms_up_then_holds_or_decays() {
        let constant = LrSchedule {
            base: 1.0,
            warmup_steps: 4,
            total_steps: 10,
            kind: ScheduleKind::Constant,
        };
        assert_eq!(constant.at(0), 0.25);
        assert_eq!(constant.at(3), 1.0);
        assert_eq!(constant.at(9), 1.0);
        let cosine = LrSchedule {
            kind: ScheduleKind::Cosine,
            ..constant
        };
        assert_eq!(cosine.at(4), 1.0);
        assert!((cosine.at(7) - 0.5).abs() < 1e-9);
        assert!(cosine.at(10) < 1e-12);
    }
}
