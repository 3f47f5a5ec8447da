//! The active plugins of a run: one per kind, chosen from a `--plugins` folder.

use super::discovery::{DiscoveredPlugin, Selection, discover};
use super::judge::JudgePlugin;
use super::loader::{HostOptions, LoadedPlugin, PluginHost, PluginInfo};
use super::parser::ParserPlugin;
use super::prompt::PromptPlugin;
use super::retriever::Retriever;
use super::reward::RewardPlugin;
use super::search::SearchPlugin;
use super::types::PluginKind;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The active plugin of each requested kind.
pub struct PluginSet {
    pub root: PathBuf,
    pub reward: Option<RewardPlugin>,
    pub prompt: Option<PromptPlugin>,
    pub parser: Option<ParserPlugin>,
    pub search: Option<SearchPlugin>,
    /// Loaded only when asked for (LLM-as-judge through a plugin).
    pub judge: Option<JudgePlugin>,
    /// What was loaded, in kind order.
    pub loaded: Vec<PluginInfo>,
}

impl PluginSet {
    /// Loads the active plugin of each kind in `kinds` from `root`. Every requested kind must
    /// be present.
    pub fn load(
        root: &Path,
        selection: &Selection,
        kinds: &[PluginKind],
        cache_dir: Option<PathBuf>,
        retriever: Option<Arc<dyn Retriever>>,
    ) -> Result<PluginSet> {
        let discovered = discover(root)?;
        let mut chosen: Vec<&DiscoveredPlugin> = Vec::new();
        for &kind in kinds {
            match selection.resolve(root, &discovered, kind)? {
                Some(plugin) => chosen.push(plugin),
                None => bail!(
                    "{} has no {kind} plugin{}",
                    root.display(),
                    if kind == PluginKind::Judge {
                        ""
                    } else {
                        " (a run needs one of each kind: reward, prompt, parser, search)"
                    }
                ),
            }
        }
        let options = HostOptions {
            cache_dir,
            fuel: chosen.iter().any(|p| p.manifest.limits.fuel.is_some()),
        };
        let mut host = PluginHost::new(&options)?;
        if let Some(retriever) = retriever {
            host.set_retriever(retriever);
        }
        let mut set = PluginSet {
            root: root.to_path_buf(),
            reward: None,
            prompt: None,
            parser: None,
            search: None,
            judge: None,
            loaded: Vec::new(),
        };
        for plugin in chosen {
            let mut overrides = selection
                .config
                .get(&plugin.manifest.name)
                .cloned()
                .unwrap_or_default();
            overrides.extend(selection.host.clone());
            let (info, loaded) = host.load(plugin, &overrides)?;
            set.loaded.push(info);
            match loaded {
                LoadedPlugin::Reward(p) => set.reward = Some(p),
                LoadedPlugin::Prompt(p) => set.prompt = Some(p),
                LoadedPlugin::Parser(p) => set.parser = Some(p),
                LoadedPlugin::Search(p) => set.search = Some(p),
                LoadedPlugin::Judge(p) => set.judge = Some(p),
            }
        }
        Ok(set)
    }

    /// The reward plugin, or an error saying it was not loaded.
    pub fn reward(&self) -> Result<&RewardPlugin> {
        match &self.reward {
            Some(plugin) => Ok(plugin),
            None => bail!("no reward plugin loaded from {}", self.root.display()),
        }
    }
}
