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
/// weights (`model.safetensors`, or the index and every shard it names).
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
        files.push("model.safetensors.index.json".into());
        files.extend(
            siblings
                .iter()
                .filter(|s| s.starts_with("model-") && s.ends_with(".safetensors"))
                .cloned(),
        );
    } else {
        bail!(
            "the repository has no safetensors weights (model.safetensors or \
             model.safetensors.index.json); PyTorch .bin weights are not loaded"
        );
    }
    Ok(files)
}

/// Downloads `id` (at `revision`) into `out` and returns the files written.
pub fn fetch_model(id: &str, revision: Option<&str>, out: &Path) -> Result<Vec<PathBuf>> {
    parse_repo_id(id)?;
    let builder = ApiBuilder::from_env().with_progress(true);
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
            "cannot fetch {id} from {endpoint}: {error}. Without internet access, bring a \
             model folder yourself (config.json, tokenizer.json, *.safetensors) or import a GGUF \
             with `host model import-gguf FILE --out DIR`; HF_ENDPOINT selects a mirror"
        )
    })?;
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = files_to_fetch(&siblings).with_context(|| format!("{id} cannot be used"))?;
    let staging = out.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    for file in &files {
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
    }
    let config = super::loader::read_config(&staging)?;
    config.architecture().with_context(|| {
        format!(
            "{id} was downloaded to {} but the host cannot run it",
            staging.display()
        )
    })?;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("cannot replace {}", out.display()))?;
    }
    std::fs::rename(&staging, out)
        .with_context(|| format!("cannot move {} to {}", staging.display(), out.display()))?;
    Ok(files.iter().map(|f| out.join(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(sharded.len(), 5);
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
