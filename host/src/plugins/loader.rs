//! Turning a discovered plugin into a running one: read its component (prebuilt, or built from
//! its current sources by `host plugins build`; loading never runs cargo), compile it (cached),
//! check its contract version, kind and imports, link it and start an instance.

use super::discovery::{DiscoveredPlugin, PluginSource};
use super::engine::PluginEngine;
use super::error::settled;
use super::instance::{InstancePool, PluginIdentity};
use super::judge::{JudgeBindings, JudgePlugin};
use super::manifest::{Capabilities, Limits};
use super::parser::{ParserBindings, ParserPlugin};
use super::prompt::{PromptBindings, PromptPlugin};
use super::retriever::Retriever;
use super::reward::{RewardBindings, RewardPlugin};
use super::sandbox::HostState;
use super::search::{SearchBindings, SearchPlugin};
use super::types::PluginKind;
use super::wit::{
    self, ContractVersion, since_v0_1_0 as v0_1_0, since_v0_2_0 as v0_2_0, since_v0_3_0 as v0_3_0,
};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::Linker;

/// How the plugin runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Where compiled components are cached (none: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// Turn on fuel metering (needed when any plugin sets `[limits] fuel`).
    pub fuel: bool,
}

/// A loaded plugin of any kind.
pub enum LoadedPlugin {
    Reward(RewardPlugin),
    Prompt(PromptPlugin),
    Parser(ParserPlugin),
    Search(SearchPlugin),
    Judge(JudgePlugin),
}

/// What the host knows about a loaded plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    pub description: String,
    pub dir: PathBuf,
    pub source: &'static str,
    pub component: PathBuf,
    pub contract: ContractVersion,
    pub limits: Limits,
    pub capabilities: Capabilities,
}

/// The plugin runtime: one engine, the linkers, and the retriever offered to search plugins.
pub struct PluginHost {
    engine: Arc<PluginEngine>,
    linker: Linker<HostState>,
    network_linker: Linker<HostState>,
    retriever: Option<Arc<dyn Retriever>>,
}

impl PluginHost {
    /// Creates the engine and the linkers.
    pub fn new(options: &HostOptions) -> Result<PluginHost> {
        let engine = Arc::new(PluginEngine::new(options.cache_dir.clone(), options.fuel)?);
        let mut linker = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        super::bounded_wait::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        v0_1_0::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        v0_2_0::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        v0_3_0::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let mut network_linker = linker.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut network_linker)
            .map_err(anyhow::Error::from)?;
        Ok(PluginHost {
            engine,
            linker,
            network_linker,
            retriever: None,
        })
    }

    /// The retriever that search plugins reach through the `retriever` import (plugins loaded
    /// afterwards see it).
    pub fn set_retriever(&mut self, retriever: Arc<dyn Retriever>) {
        self.retriever = Some(retriever);
    }

    /// Loads `plugin` with `overrides` on top of its `[config]`, and starts one instance so
    /// that every load problem shows up here.
    pub fn load(
        &self,
        plugin: &DiscoveredPlugin,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(PluginInfo, LoadedPlugin)> {
        let manifest = &plugin.manifest;
        self.load_inner(plugin, overrides).with_context(|| {
            format!(
                "cannot load plugin `{}` ({})",
                manifest.name,
                plugin.dir.display()
            )
        })
    }

    fn load_inner(
        &self,
        plugin: &DiscoveredPlugin,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(PluginInfo, LoadedPlugin)> {
        let manifest = &plugin.manifest;
        let component_path = match &plugin.source {
            PluginSource::Prebuilt(path) => path.clone(),
            PluginSource::Crate(cargo_toml) => super::built::component_for(plugin, cargo_toml)?,
        };
        let bytes = std::fs::read(&component_path)
            .with_context(|| format!("cannot read {}", component_path.display()))?;
        let component = self.engine.load_component(&bytes, &component_path)?;
        let engine = self.engine.engine();
        let contract = wit::exported_contract(&component, engine)?;
        if contract.kind != manifest.kind {
            bail!(
                "plugin.toml says kind = \"{}\" but the component exports the {} interface",
                manifest.kind,
                contract.kind
            );
        }
        let network = !manifest.capabilities.network.is_empty();
        wit::check_imports(&component, engine, network)?;
        let linker = if network {
            &self.network_linker
        } else {
            &self.linker
        };
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("its imports cannot be satisfied")?;
        let identity = PluginIdentity {
            name: manifest.name.clone(),
            limits: manifest.limits.clone(),
            network: Arc::new(manifest.capabilities.network.clone()),
            config: Arc::new(manifest.config_values(overrides)),
        };
        let retriever = self.retriever.clone();
        let engine = Arc::clone(&self.engine);
        // One pool of instances per plugin, warmed up so that a broken plugin (or, from contract
        // 0.3.0 on, one that refuses its settings in `init`) fails here.
        macro_rules! start {
            ($instantiate:expr) => {{
                let pool = InstancePool::new(identity, engine, Box::new($instantiate), retriever);
                pool.warm_up()?;
                pool
            }};
        }
        let e = anyhow::Error::from;
        let loaded = match (contract.version, manifest.kind) {
            (ContractVersion::V0_1_0, PluginKind::Reward) => {
                let pre = v0_1_0::reward::RewardPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Reward(RewardPlugin {
                    pool: start!(move |s| Ok(RewardBindings::V0_1_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_1_0, PluginKind::Prompt) => {
                let pre = v0_1_0::prompt::PromptPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Prompt(PromptPlugin {
                    pool: start!(move |s| Ok(PromptBindings::V0_1_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_1_0, PluginKind::Parser) => {
                let pre = v0_1_0::parser::ParserPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Parser(ParserPlugin {
                    pool: start!(move |s| Ok(ParserBindings::V0_1_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_1_0, PluginKind::Search) => {
                let pre = v0_1_0::search::SearchPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Search(SearchPlugin {
                    pool: start!(move |s| Ok(SearchBindings::V0_1_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_1_0, PluginKind::Judge) => {
                bail!("the judge kind needs contract version 0.2.0 or later")
            }
            (ContractVersion::V0_2_0, PluginKind::Reward) => {
                let pre = v0_2_0::reward::RewardPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Reward(RewardPlugin {
                    pool: start!(move |s| Ok(RewardBindings::V0_2_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_2_0, PluginKind::Prompt) => {
                let pre = v0_2_0::prompt::PromptPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Prompt(PromptPlugin {
                    pool: start!(move |s| Ok(PromptBindings::V0_2_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_2_0, PluginKind::Parser) => {
                let pre = v0_2_0::parser::ParserPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Parser(ParserPlugin {
                    pool: start!(move |s| Ok(ParserBindings::V0_2_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_2_0, PluginKind::Search) => {
                let pre = v0_2_0::search::SearchPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Search(SearchPlugin {
                    pool: start!(move |s| Ok(SearchBindings::V0_2_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_2_0, PluginKind::Judge) => {
                let pre = v0_2_0::judge::JudgePluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Judge(JudgePlugin {
                    pool: start!(move |s| Ok(JudgeBindings::V0_2_0(pre.instantiate(s)?))),
                })
            }
            (ContractVersion::V0_3_0, PluginKind::Reward) => {
                let pre = v0_3_0::reward::RewardPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Reward(RewardPlugin {
                    pool: start!(move |s| {
                        let bindings = pre.instantiate(&mut *s)?;
                        settled(v0_3_0::init_reward(&bindings, s)?)?;
                        Ok(RewardBindings::V0_3_0(bindings))
                    }),
                })
            }
            (ContractVersion::V0_3_0, PluginKind::Prompt) => {
                let pre = v0_3_0::prompt::PromptPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Prompt(PromptPlugin {
                    pool: start!(move |s| {
                        let bindings = pre.instantiate(&mut *s)?;
                        settled(v0_3_0::init_prompt(&bindings, s)?)?;
                        Ok(PromptBindings::V0_3_0(bindings))
                    }),
                })
            }
            (ContractVersion::V0_3_0, PluginKind::Parser) => {
                let pre = v0_3_0::parser::ParserPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Parser(ParserPlugin {
                    pool: start!(move |s| {
                        let bindings = pre.instantiate(&mut *s)?;
                        settled(v0_3_0::init_parser(&bindings, s)?)?;
                        Ok(ParserBindings::V0_3_0(bindings))
                    }),
                })
            }
            (ContractVersion::V0_3_0, PluginKind::Search) => {
                let pre = v0_3_0::search::SearchPluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Search(SearchPlugin {
                    pool: start!(move |s| {
                        let bindings = pre.instantiate(&mut *s)?;
                        settled(v0_3_0::init_search(&bindings, s)?)?;
                        Ok(SearchBindings::V0_3_0(bindings))
                    }),
                })
            }
            (ContractVersion::V0_3_0, PluginKind::Judge) => {
                let pre = v0_3_0::judge::JudgePluginPre::new(pre).map_err(e)?;
                LoadedPlugin::Judge(JudgePlugin {
                    pool: start!(move |s| {
                        let bindings = pre.instantiate(&mut *s)?;
                        settled(v0_3_0::init_judge(&bindings, s)?)?;
                        Ok(JudgeBindings::V0_3_0(bindings))
                    }),
                })
            }
        };
        let info = PluginInfo {
            name: manifest.name.clone(),
            kind: manifest.kind,
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            dir: plugin.dir.clone(),
            source: plugin.source.label(),
            component: component_path,
            contract: contract.version,
            limits: manifest.limits.clone(),
            capabilities: manifest.capabilities.clone(),
        };
        Ok((info, loaded))
    }
}
