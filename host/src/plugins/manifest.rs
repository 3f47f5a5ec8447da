//! `plugin.toml`: what a plugin is, what it may use, and its settings.

use super::types::PluginKind;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file that marks a folder as a plugin.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A parsed and validated `plugin.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Unique name; what configs and `--use KIND=NAME` refer to.
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// A prebuilt component, relative to the plugin folder. Without it the folder must hold
    /// the plugin's crate, which the host builds for wasm32-wasip2.
    #[serde(default)]
    pub wasm: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Settings passed to the plugin through the `config` interface.
    #[serde(default)]
    pub config: toml::Table,
}

/// Per-call limits. Every call gets a fresh budget; the memory cap holds for the instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Wall-clock deadline of one call, in milliseconds (epoch interruption).
    pub timeout_ms: u64,
    /// Optional instruction budget of one call (Wasmtime fuel). Off by default: fuel
    /// metering slows every plugin a little, the deadline already stops runaway loops.
    pub fuel: Option<u64>,
    /// Linear memory cap of an instance, in MiB.
    pub memory_mb: u64,
    /// Largest output of one call (all returned strings together), in KiB.
    pub max_output_kb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 2_000,
            fuel: None,
            memory_mb: 128,
            max_output_kb: 1_024,
        }
    }
}

impl Limits {
    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb << 20
    }

    /// The output cap in bytes.
    pub fn max_output_bytes(&self) -> usize {
        usize::try_from(self.max_output_kb << 10).unwrap_or(usize::MAX)
    }
}

/// What a plugin may reach beyond its own memory. Nothing by default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    /// `host:port` authorities the plugin may send HTTP requests to (`wasi:http`). `*:*`
    /// allows any.
    #[serde(default)]
    pub network: Vec<String>,
}

impl Manifest {
    /// Reads and validates `dir/plugin.toml`; errors name the file (and the line for syntax
    /// errors).
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = crate::data::text_file::read_text(&path, "the plugin manifest")?;
        Manifest::parse(&text).with_context(|| format!("invalid {}", path.display()))
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text)?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            bail!(
                "name `{}` must be non-empty and use only a-z, 0-9, `-` and `_`",
                self.name
            );
        }
        if self.version.trim().is_empty() {
            bail!("version must not be empty");
        }
        let limits = &self.limits;
        if !(1..=600_000).contains(&limits.timeout_ms) {
            bail!(
                "[limits] timeout-ms must be between 1 and 600000, not {}",
                limits.timeout_ms
            );
        }
        if !(1..=16_384).contains(&limits.memory_mb) {
            bail!(
                "[limits] memory-mb must be between 1 and 16384, not {}",
                limits.memory_mb
            );
        }
        if limits.max_output_kb == 0 {
            bail!("[limits] max-output-kb must be at least 1");
        }
        if limits.fuel == Some(0) {
            bail!("[limits] fuel must be at least 1 (leave it out for no fuel limit)");
        }
        if let Some(key) = self
            .config
            .keys()
            .find(|k| k.starts_with(super::discovery::HOST_KEY_PREFIX))
        {
            bail!(
                "[config] key `{key}`: keys starting with `{}` are set by the host, not in \
                 plugin.toml",
                super::discovery::HOST_KEY_PREFIX
            );
        }
        for authority in &self.capabilities.network {
            let valid = authority.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && (port == "*" || port.parse::<u16>().is_ok())
            });
            if !valid {
                bail!("[capabilities] network entry `{authority}` must be `host:port` (or `*:*`)");
            }
        }
        Ok(())
    }

    /// The `[config]` table as the text values the `config` interface hands out, with
    /// `overrides` applied on top.
    pub fn config_values(&self, overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut values: BTreeMap<String, String> = self
            .config
            .iter()
            .map(|(key, value)| (key.clone(), config_text(value)))
            .collect();
        values.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        values
    }
}

/// A TOML value as config text: strings as they are, scalars in TOML spelling, arrays and
/// tables as JSON.
fn config_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_config_text() {
        let manifest = Manifest::parse(
            "name = \"x\"\nkind = \"reward\"\nversion = \"1\"\n[config]\na = 1\nb = true\nc = \"s\"\nd = [1, 2]\n",
        )
        .unwrap();
        assert_eq!(manifest.limits, Limits::default());
        let values = manifest.config_values(&BTreeMap::from([("c".into(), "t".into())]));
        assert_eq!(values["a"], "1");
        assert_eq!(values["b"], "true");
        assert_eq!(values["c"], "t");
        assert_eq!(values["d"], "[1,2]");
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let err =
            Manifest::parse("name = \"x\"\nkind = \"critic\"\nversion = \"1\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("critic"), "{err:#}");
        let err =
            Manifest::parse("name = \"X Y\"\nkind = \"reward\"\nversion = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        let err = Manifest::parse(
            "name = \"x\"\nkind = \"reward\"\nversion = \"1\"\n[limits]\ntimeout-ms = 0\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("timeout-ms"), "{err}");
        let err = Manifest::parse(
            "name = \"x\"\nkind = \"search\"\nversion = \"1\"\n[capabilities]\nnetwork = [\"nohost\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
        let err =
            Manifest::parse("name = \"x\"\nkind = \"reward\"\nversion = \"1\"\nsurprise = 1\n")
                .unwrap_err();
        assert!(format!("{err:#}").contains("surprise"), "{err:#}");
        let err = Manifest::parse(
            "name = \"x\"\nkind = \"reward\"\nversion = \"1\"\n[config]\n\"host.assistant-marker\" = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("set by the host"), "{err}");
    }
}
