//! Checkpoints in Hugging Face layout (config.json, model.safetensors, tokenizer files),
//! written atomically and durably: everything goes to a temporary folder beside the target,
//! which is synced to the disk and then replaces the target with a rename.

use super::transformer::Policy;
use anyhow::{Context, Result};
use std::path::Path;

/// Tokenizer and generation files copied from the source model folder when present.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Writes `policy` to `out` (replacing it atomically), copying tokenizer files from
/// `tokenizer_dir`.
pub fn save_checkpoint(policy: &Policy, tokenizer_dir: &Path, out: &Path) -> Result<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let temp = tempfile::Builder::new()
        .prefix(".checkpoint-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let mut config = policy.config().clone();
    config.architectures = vec![config.architecture()?.class_name().to_string()];
    config.model_type = config.architecture()?.model_type().to_string();
    config.torch_dtype = Some(dtype_name(policy.dtype()).to_string());
    std::fs::write(
        temp.path().join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    candle_core::safetensors::save(
        &policy.named_tensors(),
        temp.path().join("model.safetensors"),
    )
    .context("cannot write model.safetensors")?;
    for name in TOKENIZER_FILES {
        let source = tokenizer_dir.join(name);
        if source.is_file() {
            std::fs::copy(&source, temp.path().join(name))
                .with_context(|| format!("cannot copy {}", source.display()))?;
        }
    }
    let staged = temp.keep();
    if out.exists() {
        let old = parent.join(format!(
            ".replaced-{}-{}",
            out.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint"),
            std::process::id()
        ));
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move aside {}", out.display()))?;
        crate::durable::publish_dir(&staged, out)?;
        std::fs::remove_dir_all(&old).ok();
    } else {
        crate::durable::publish_dir(&staged, out)?;
    }
    Ok(())
}

fn dtype_name(dtype: candle_core::DType) -> &'static str {
    match dtype {
        candle_core::DType::BF16 => "bfloat16",
        candle_core::DType::F16 => "float16",
        candle_core::DType::F64 => "float64",
        _ => "float32",
    }
}

/// Writes `value` as pretty JSON to `dir/name`.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
