//! `host model fetch ORG/NAME`: download a model folder from the Hugging Face Hub (hf-hub),
//! keeping only what the host loads, and check that it is an architecture the host supports.

use anyhow::{Context, Result, bail};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use std::path::{Path, PathBuf};

/// Files a model folder needs (the first two are required).
pub const MODEL_FILES: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Checks `ORG/NAME` before any network use.
pub fn parse_repo_id(id: &str) -> Result<(&str, &str)> {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !part.starts_with('.')
    };
    match id.split_once('/') {
        Some((org, name)) if valid(org) && valid(name) => Ok((org, name)),
        _ => bail!(
            "{id:?} is not a Hugging Face model id: expected ORG/NAME, e.g. \
             HuggingFaceTB/SmolLM2-135M-Instruct"
        ),
    }
}

/// The files to download from a repository's file list: the model files that exist plus the
/// weights (`model.safetensors`, or the index, whose shards [`index_shards`] lists).
pub fn files_to_fetch(siblings: &[String]) -> Result<Vec<String>> {
    let has = |name: &str| siblings.iter().any(|s| s == name);
    for required in &MODEL_FILES[..2] {
        if !has(required) {
            bail!(
                "the repository has no {required}: the host loads Hugging Face model folders \
                 with {} (for a GGUF-only repository use `host model import-gguf`)",
                MODEL_FILES[..2].join(" and ")
            );
        }
    }
    let mut files: Vec<String> = MODEL_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    if has("model.safetensors") {
        files.push("model.safetensors".into());
    } else if has("model.safetensors.index.json") {
        // The shards follow from the index's weight_map once it is downloaded.
        files.push("model.safetensors.index.json".into());
    } else {
        bail!(
            "the repository has no safetensors weights (model.safetensors or \
             model.safetensors.index.json); PyTorch .bin weights are not loaded"
        );
    }
    Ok(files)
}

/// The shard files a `model.safetensors.index.json` names (its `weight_map` values), sorted.
pub fn index_shards(index_json: &str) -> Result<Vec<String>> {
    let index: serde_json::Value =
        serde_json::from_str(index_json).context("model.safetensors.index.json is not JSON")?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .context("model.safetensors.index.json has no \"weight_map\" object")?;
    let mut shards: Vec<String> = Vec::new();
    for file in map.values() {
        let file = file
            .as_str()
            .context("a weight_map entry of model.safetensors.index.json is not a file name")?;
        if file.contains('/') || file.contains('\\') || !file.ends_with(".safetensors") {
            bail!("model.safetensors.index.json names an unexpected shard {file:?}");
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    shards.sort();
    Ok(shards)
}

/// `out` may be replaced only when it does not exist or is a model folder (has config.json):
/// `--out models` must never wipe a folder of other things.
fn check_replaceable(out: &Path) -> Result<()> {
    if out.exists() && !out.join("config.json").is_file() {
        bail!(
            "{} exists and is not a model folder (no config.json); choose a new --out",
            out.display()
        );
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`models/llama-3.2-1b` → `…-1b.partial`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Downloads `id` (at `revision`) into `out` and returns the files written. The folder is
/// assembled beside `out` and moved into place only when complete and loadable.
pub fn fetch_model(id: &str, revision: Option<&str>, out: &Path) -> Result<Vec<PathBuf>> {
    parse_repo_id(id)?;
    check_replaceable(out)?;
    let mut builder = ApiBuilder::from_env().with_progress(true);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let api = builder
        .build()
        .context("cannot set up the Hugging Face Hub client")?;
    let repo = match revision {
        Some(revision) => api.repo(Repo::with_revision(
            id.to_string(),
            RepoType::Model,
            revision.to_string(),
        )),
        None => api.repo(Repo::new(id.to_string(), RepoType::Model)),
    };
    let info = repo.info().map_err(|error| {
        anyhow::anyhow!(
            "cannot fetch {id} from {endpoint}: {error}. A gated or private model needs HF_TOKEN; \
             without internet access, bring a model folder yourself (config.json, \
             tokenizer.json, *.safetensors) or import a GGUF with `host model import-gguf FILE \
             --out DIR`; HF_ENDPOINT selects a mirror"
        )
    })?;
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let mut files = files_to_fetch(&siblings).with_context(|| format!("{id} cannot be used"))?;
    let staging = with_suffix(out, ".partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let download = |file: &str| -> Result<()> {
        let cached = repo
            .get(file)
            .map_err(|error| anyhow::anyhow!("cannot download {id}/{file}: {error}"))?;
        std::fs::copy(&cached, staging.join(file)).with_context(|| {
            format!(
                "cannot copy {} into {}",
                cached.display(),
                staging.display()
            )
        })?;
        Ok(())
    };
    for file in &files {
        download(file)?;
    }
    if files.iter().any(|f| f == "model.safetensors.index.json") {
        let index = std::fs::read_to_string(staging.join("model.safetensors.index.json"))?;
        for shard in index_shards(&index)? {
            download(&shard)?;
            files.push(shard);
        }
    }
    let config = super::loader::read_config(&staging)?;
    config.architecture().with_context(|| {
        format!(
            "{id} was downloaded to {} but the host cannot run it",
            staging.display()
        )
    })?;
    // Swap in: the old folder is moved aside first, so a crash leaves one of the two whole.
    let old = with_suffix(out, ".old");
    if out.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot clear {}", old.display()))?;
        }
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move {} aside", out.display()))?;
    }
    crate::durable::publish_dir(&staging, out)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(files.iter().map(|f| out.join(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_or_model_folders_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_replaceable(&dir.path().join("new")).is_ok());
        let error = check_replaceable(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a model folder"), "{error}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert!(check_replaceable(dir.path()).is_ok());
        assert_eq!(
            with_suffix(Path::new("models/llama-3.2-1b"), ".partial"),
            Path::new("models/llama-3.2-1b.partial")
        );
    }

    #[test]
    fn repo_ids_are_checked_before_any_download() {
        assert_eq!(
            parse_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap(),
            ("HuggingFaceTB", "SmolLM2-135M-Instruct")
        );
        for bad in ["gpt2", "a/b/c", "/x", "x/", "../x", "a b/c"] {
            assert!(parse_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_file_list_keeps_model_files_and_safetensors_weights() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let single = files_to_fetch(&names(&[
            "README.md",
            "config.json",
            "tokenizer.json",
            "generation_config.json",
            "model.safetensors",
            "pytorch_model.bin",
        ]))
        .unwrap();
        assert_eq!(
            single,
            [
                "config.json",
                "tokenizer.json",
                "generation_config.json",
                "model.safetensors"
            ]
        );
        let sharded = files_to_fetch(&names(&[
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ]))
        .unwrap();
        assert_eq!(sharded.len(), 3, "the shards come from the index");
        let index = r#"{"metadata": {}, "weight_map": {"a": "model-00002-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            index_shards(index).unwrap(),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        assert!(index_shards(r#"{"weight_map": {"a": "../x.safetensors"}}"#).is_err());
        assert!(index_shards("{}").is_err());
        let error = files_to_fetch(&names(&[
            "config.json",
            "tokenizer.json",
            "pytorch_model.bin",
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("safetensors"), "{error}");
        let error = files_to_fetch(&names(&["model.gguf"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.json") && error.contains("import-gguf"),
            "{error}"
        );
    }
}
