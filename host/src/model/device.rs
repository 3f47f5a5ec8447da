//! Where a model runs and in which precision its weights are held, as named in configs and on
//! the command line (`model.device = "cpu"`, `--device cuda`, `model.dtype = "f32"`).

use anyhow::Result;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The device a model runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU (the fused f32 kernels).
    #[default]
    Cpu,
    /// The first CUDA GPU (a host built with the `cuda` feature).
    Cuda,
}

impl DeviceKind {
    /// Opens the device; CUDA fails with a clear error on a host built without it.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda => Device::new_cuda(0).map_err(|e| {
                anyhow::anyhow!(
                    "cannot use cuda ({e}); this host may be built without the `cuda` feature"
                )
            }),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

/// The precision the policy's weights are held in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDType {
    #[default]
    F32,
    /// Named so a config that asks for it gets a reason why training refuses it.
    Bf16,
}

impl WeightDType {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            WeightDType::F32 => DType::F32,
            WeightDType::Bf16 => DType::BF16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        dtype: WeightDType,
        device: DeviceKind,
    }

    #[test]
    fn config_names_read_and_unknown_ones_are_refused_with_the_choices() {
        let section: Section = toml::from_str("dtype = \"bf16\"\ndevice = \"cuda\"").unwrap();
        assert_eq!(section.dtype, WeightDType::Bf16);
        assert_eq!(section.device, DeviceKind::Cuda);
        assert_eq!(WeightDType::F32.dtype(), DType::F32);
        let error = toml::from_str::<Section>("dtype = \"f8\"\ndevice = \"cpu\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("f8") && error.contains("f32"), "{error}");
        let error = toml::from_str::<Section>("dtype = \"f32\"\ndevice = \"tpu\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tpu") && error.contains("cuda"), "{error}");
        assert_eq!(DeviceKind::Cpu.to_string(), "cpu");
        assert!(matches!(DeviceKind::Cpu.open(), Ok(Device::Cpu)));
    }
}
