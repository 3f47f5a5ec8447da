//! Finding plugins in a `--plugins` folder and choosing the active one of each kind.

use super::manifest::{MANIFEST_FILE, Manifest};
use super::types::PluginKind;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The optional file in a plugins folder that names the default plugin of each kind.
pub const DEFAULTS_FILE: &str = "defaults.toml";

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A prebuilt `.wasm` component.
    Prebuilt(PathBuf),
    /// A crate (its `Cargo.toml`), loaded from the component `host plugins build` made of it.
    Crate(PathBuf),
}

impl PluginSource {
    /// A short description for tables: `prebuilt` or `source`.
    pub fn label(&self) -> &'static str {
        match self {
            PluginSource::Prebuilt(_) => "prebuilt",
            PluginSource::Crate(_) => "source",
        }
    }
}

/// A plugin folder with a valid manifest.
#[derive(Debug, Clone)]
pub struct DiscoveredPlugin {
    /// The `--plugins` folder it was found in (its own folder for a one-plugin folder).
    pub root: PathBuf,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub source: PluginSource,
}

/// Every plugin under `root`: `root` itself when it holds a `plugin.toml`, else each direct
/// sub-folder that holds one (others, such as a shared SDK crate, are skipped). Sorted by name.
pub fn discover(root: &Path) -> Result<Vec<DiscoveredPlugin>> {
    if !root.is_dir() {
        bail!(
            "plugin folder {} does not exist or is not a folder",
            root.display()
        );
    }
    let root = &std::fs::canonicalize(root)
        .with_context(|| format!("cannot resolve plugin folder {}", root.display()))?;
    let mut dirs = Vec::new();
    if root.join(MANIFEST_FILE).is_file() {
        dirs.push(root.to_path_buf());
    } else {
        let entries = std::fs::read_dir(root)
            .with_context(|| format!("cannot list plugin folder {}", root.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot list plugin folder {}", root.display()))?
                .path();
            if path.is_dir() && path.join(MANIFEST_FILE).is_file() {
                dirs.push(path);
            }
        }
    }
    let mut plugins = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let manifest = Manifest::load(&dir)?;
        let source = match &manifest.wasm {
            Some(wasm) => {
                let path = dir.join(wasm);
                if !path.is_file() {
                    bail!(
                        "{}: `wasm = \"{}\"` does not exist ({})",
                        dir.join(MANIFEST_FILE).display(),
                        wasm.display(),
                        path.display()
                    );
                }
                PluginSource::Prebuilt(path)
            }
            None => {
                let cargo_toml = dir.join("Cargo.toml");
                if !cargo_toml.is_file() {
                    bail!(
                        "{}: no `wasm = \"…\"` and no Cargo.toml beside it; a plugin needs a prebuilt component or its crate",
                        dir.join(MANIFEST_FILE).display()
                    );
                }
                PluginSource::Crate(cargo_toml)
            }
        };
        plugins.push(DiscoveredPlugin {
            root: root.to_path_buf(),
            dir,
            manifest,
            source,
        });
    }
    plugins.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    for pair in plugins.windows(2) {
        if pair[0].manifest.name == pair[1].manifest.name {
            bail!(
                "two plugins are named `{}`: {} and {}",
                pair[0].manifest.name,
                pair[0].dir.display(),
                pair[1].dir.display()
            );
        }
    }
    if plugins.is_empty() {
        bail!(
            "no plugins in {}: expected sub-folders with a {MANIFEST_FILE}",
            root.display()
        );
    }
    Ok(plugins)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    #[serde(default)]
    active: BTreeMap<PluginKind, String>,
}

/// Which plugin of each kind is active, and config overrides per plugin.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Explicit choices (run config or `--use KIND=NAME`); they win over `defaults.toml`.
    pub active: BTreeMap<PluginKind, String>,
    /// `plugin name → key → value`, applied over each plugin's `[config]`.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// What the host tells every plugin through its config, under keys that start with
    /// [`HOST_KEY_PREFIX`] (see [`ASSISTANT_MARKER`]); users cannot set these.
    pub host: BTreeMap<String, String>,
}

/// The prefix of the config keys the host sets for every plugin.
pub const HOST_KEY_PREFIX: &str = "host.";

/// Config key: the text the model's chat template opens an assistant turn with (e.g.
/// `<|im_start|>assistant\n`), set when the run's model has a chat template. References that
/// find the response inside the decoded prompt + response by this marker cut a response that
/// contains it; a reward plugin reproducing them reads it here.
pub const ASSISTANT_MARKER: &str = "host.assistant-marker";

impl Selection {
    /// Parses `KIND=NAME`.
    pub fn parse_use(&mut self, text: &str) -> Result<()> {
        let (kind, name) = text.split_once('=').with_context(|| {
            format!("`--use {text}`: expected KIND=NAME, e.g. reward=searchr1-reward")
        })?;
        let kind: PluginKind = kind.trim().parse().map_err(anyhow::Error::msg)?;
        self.active.insert(kind, name.trim().to_string());
        Ok(())
    }

    /// Parses `PLUGIN.KEY=VALUE`.
    pub fn parse_config(&mut self, text: &str) -> Result<()> {
        let parsed = text
            .split_once('=')
            .and_then(|(target, value)| target.split_once('.').map(|(p, k)| (p, k, value)));
        let Some((plugin, key, value)) = parsed else {
            bail!("`--config {text}`: expected PLUGIN.KEY=VALUE, e.g. tag-parser.dialect=searchr1");
        };
        if key.trim().starts_with(HOST_KEY_PREFIX) {
            bail!(
                "`--config {text}`: keys starting with `{HOST_KEY_PREFIX}` are set by the host \
                 (from the model and the run), not by users"
            );
        }
        self.config
            .entry(plugin.trim().to_string())
            .or_default()
            .insert(key.trim().to_string(), value.to_string());
        Ok(())
    }

    /// The active plugin of `kind` among `plugins`: the explicit choice, else the folder's
    /// `defaults.toml`, else the only plugin of that kind. None when the folder has none.
    pub fn resolve<'a>(
        &self,
        root: &Path,
        plugins: &'a [DiscoveredPlugin],
        kind: PluginKind,
    ) -> Result<Option<&'a DiscoveredPlugin>> {
        let of_kind: Vec<&DiscoveredPlugin> =
            plugins.iter().filter(|p| p.manifest.kind == kind).collect();
        let chosen = match self.active.get(&kind) {
            Some(name) => Some((name.clone(), "your selection".to_string())),
            None => read_defaults(root)?
                .active
                .get(&kind)
                .map(|name| (name.clone(), root.join(DEFAULTS_FILE).display().to_string())),
        };
        if let Some((name, origin)) = chosen {
            let found = plugins.iter().find(|p| p.manifest.name == name);
            return match found {
                Some(plugin) if plugin.manifest.kind == kind => Ok(Some(plugin)),
                Some(plugin) => bail!(
                    "{origin} names `{name}` as the {kind} plugin, but it is a {} plugin",
                    plugin.manifest.kind
                ),
                None => bail!(
                    "{origin} names `{name}` as the {kind} plugin, but {} has no plugin of that name (it has: {})",
                    root.display(),
                    names(&of_kind)
                ),
            };
        }
        match of_kind.as_slice() {
            [] => Ok(None),
            [only] => Ok(Some(only)),
            several => bail!(
                "{} holds several {kind} plugins ({}): choose one with `--use {kind}=NAME` or an [active] entry in {}",
                root.display(),
                names(several),
                root.join(DEFAULTS_FILE).display()
            ),
        }
    }
}

fn names(plugins: &[&DiscoveredPlugin]) -> String {
    if plugins.is_empty() {
        return "none".to_string();
    }
    plugins
        .iter()
        .map(|p| p.manifest.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_defaults(root: &Path) -> Result<DefaultsFile> {
    let path = root.join(DEFAULTS_FILE);
    if !path.is_file() {
        return Ok(DefaultsFile::default());
    }
    let text = crate::data::text_file::read_text(&path, "the plugin defaults")?;
    toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
}
