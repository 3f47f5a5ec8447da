//! The flags `host train`, `host sft` and `host demos` share: the config file (or the
//! embedded default), where its model, index and plugins come from, and overrides of any
//! setting.

use crate::grpo::TrainConfig;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// A training config from the command line.
#[derive(Debug, Clone, Args)]
pub struct ConfigFlags {
    /// Training config (TOML; see examples/research.toml). Without it: the embedded default.
    #[arg(value_name = "CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Folder of plugins [default: the config's plugins.dir, else ./plugins].
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,
    /// Choose the active plugin of a kind, e.g. `--use reward=searchr1-reward` (repeatable).
    #[arg(long = "use", value_name = "KIND=NAME")]
    pub use_plugin: Vec<String>,
    /// Override a plugin setting, e.g. `--config tag-parser.dialect=searchr1` (repeatable).
    #[arg(long = "config", value_name = "PLUGIN.KEY=VALUE")]
    pub plugin_config: Vec<String>,
    /// Policy model folder (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Passage index for the host's retriever (`host index build`).
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Any other setting, as SECTION.KEY=VALUE (repeatable), e.g. `--set grpo.kl_coef=0`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Cache folder for compiled plugins and the embedded default's assets [default:
    /// $RESEARCH_HOST_CACHE, else ~/.cache/research-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl ConfigFlags {
    /// The config file or the embedded default, with --plugins, --model and --index applied.
    /// A command applies its own flags next, then [`ConfigFlags::finish`].
    pub fn base(&self) -> Result<TrainConfig> {
        let mut config = match &self.config_file {
            Some(path) => TrainConfig::load(path)?,
            None => super::train::embedded_default_config(),
        };
        if let Some(dir) = &self.plugins {
            config.plugins.dir = dir.clone();
        }
        if let Some(model) = &self.model {
            config.model.path = Some(model.clone());
        }
        if let Some(index) = &self.index {
            config.retrieval.index = Some(index.clone());
        }
        Ok(config)
    }

    /// Applies --set, then writes --use and --config into the config's [plugins] (so that the
    /// saved config, and a resume, keep them).
    pub fn finish(&self, config: &mut TrainConfig) -> Result<()> {
        for assignment in &self.set {
            config.set(assignment)?;
        }
        super::train::fold_plugin_flags(config, &self.use_plugin, &self.plugin_config)
    }

    /// Whether any of these flags (the cache folder aside) was given: a resumed run refuses
    /// them.
    pub fn any(&self) -> bool {
        self.config_file.is_some()
            || self.plugins.is_some()
            || !self.use_plugin.is_empty()
            || !self.plugin_config.is_empty()
            || self.model.is_some()
            || self.index.is_some()
            || !self.set.is_empty()
    }

    /// The cache folder: --cache-dir, else $RESEARCH_HOST_CACHE, else ~/.cache/research-host.
    pub fn cache_root(&self) -> Option<PathBuf> {
        self.cache_dir
            .clone()
            .or_else(crate::plugins::engine::default_cache_dir)
    }
}
