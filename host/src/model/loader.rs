//! Loading a Hugging Face model folder: config.json, one or several safetensors files, and the
//! tokenizer files. Errors name the file and what is wrong with it.

use super::config::ModelConfig;
use super::tokenizer::ModelTokenizer;
use super::transformer::Policy;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A loaded model folder.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub policy: Policy,
    pub tokenizer: ModelTokenizer,
}

/// Reads and validates `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is {} a model folder?)",
            path.display(),
            dir.display()
        )
    })?;
    ModelConfig::parse(&text).with_context(|| format!("invalid {}", path.display()))
}

/// The safetensors files of `dir`: those listed by `model.safetensors.index.json`, else
/// `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            bail!(
                "{} lists {}, which does not exist",
                index.display(),
                missing.display()
            );
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    bail!(
        "{} has no model.safetensors or model.safetensors.index.json",
        dir.display()
    )
}

/// Loads the model in `dir` onto `device` as `dtype` (bf16 weights become f32 when asked).
pub fn load_model(dir: &Path, dtype: DType, device: &Device) -> Result<LoadedModel> {
    let config = read_config(dir)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let files = weight_files(dir)?;
    for file in &files {
        let loaded = candle_core::safetensors::load(file, &Device::Cpu)
            .with_context(|| format!("cannot read weights from {}", file.display()))?;
        tensors.extend(loaded);
    }
    let origin = if files.len() == 1 {
        files[0].display().to_string()
    } else {
        format!(
            "{} (sharded)",
            dir.join("model.safetensors.index.json").display()
        )
    };
    let tokenizer = load_tokenizer(dir, &config)?;
    let policy = Policy::from_tensors(config, tensors, dtype, device, &origin)?;
    Ok(LoadedModel {
        dir: dir.to_path_buf(),
        policy,
        tokenizer,
    })
}

/// The tokenizer of the model folder `dir` whose config is `config`, checked to fit its
/// vocabulary.
pub fn load_tokenizer(dir: &Path, config: &ModelConfig) -> Result<ModelTokenizer> {
    let tokenizer = ModelTokenizer::load(dir, config.extra.get("eos_token_id"))?;
    let vocab = tokenizer.inner().get_vocab_size(true);
    if vocab > config.vocab_size {
        bail!(
            "{}: the tokenizer has {vocab} tokens but config.json's vocab_size is {}",
            dir.join("tokenizer.json").display(),
            config.vocab_size
        );
    }
    Ok(tokenizer)
}
