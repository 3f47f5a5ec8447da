//! Bindings for every released version of the `research:plugins` contract, and the detection
//! of which version (and kind) a component was built against.
//!
//! Each `since_v*` module converts its generated types to the host's own ([`super::types`]).
//! A new contract version adds a module here; older modules stay, so older plugins keep
//! loading.

pub mod since_v0_1_0;
pub mod since_v0_2_0;
pub mod since_v0_3_0;

use super::types::PluginKind;
use anyhow::{Result, bail};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The contract versions this host can load, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    since_v0_1_0::VERSION,
    since_v0_2_0::VERSION,
    since_v0_3_0::VERSION,
];

/// The contract version a component speaks, read from the versioned names of its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractVersion {
    V0_1_0,
    V0_2_0,
    V0_3_0,
}

impl ContractVersion {
    /// The version as written in WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => since_v0_1_0::VERSION,
            ContractVersion::V0_2_0 => since_v0_2_0::VERSION,
            ContractVersion::V0_3_0 => since_v0_3_0::VERSION,
        }
    }
}

/// What a component exports of the contract: its kind and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractExport {
    pub kind: PluginKind,
    pub version: ContractVersion,
}

/// Finds the single `research:plugins/<kind>@<version>` export of `component`.
pub fn exported_contract(component: &Component, engine: &Engine) -> Result<ContractExport> {
    let mut found = Vec::new();
    for (name, _) in component.component_type().exports(engine) {
        let Some(rest) = name.strip_prefix("research:plugins/") else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let Some(kind) = PluginKind::ALL
            .into_iter()
            .find(|k| k.interface() == interface)
        else {
            continue;
        };
        found.push((kind, version.to_string(), name.to_string()));
    }
    let (kind, version, name) = match found.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "the component exports no plugin interface (expected one of research:plugins/{{reward,prompt,parser,search,judge}}@{}); was it built with research-sdk?",
            SUPPORTED_VERSIONS.join("|")
        ),
        several => bail!(
            "the component exports several plugin interfaces ({}); a plugin exports exactly one",
            several
                .iter()
                .map(|f| f.2.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let version = match_version(&version).ok_or_else(|| {
        anyhow::anyhow!(
            "`{name}` is built against contract version {version}, which this host does not know (it supports {}); update the host or rebuild the plugin with a matching research-sdk",
            SUPPORTED_VERSIONS.join(", ")
        )
    })?;
    Ok(ContractExport { kind, version })
}

/// Semver compatibility as the component model sees it: for 0.x versions the minor number
/// must match, later patch releases of a known minor are compatible.
fn match_version(version: &str) -> Option<ContractVersion> {
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    match (major, minor) {
        ("0", "1") => Some(ContractVersion::V0_1_0),
        ("0", "2") => Some(ContractVersion::V0_2_0),
        ("0", "3") => Some(ContractVersion::V0_3_0),
        _ => None,
    }
}

/// Interface imports the host can satisfy: WASI 0.2 (files, sockets and clocks are present
/// but empty or denied) and the contract's own `config` / `retriever`.
pub fn check_imports(component: &Component, engine: &Engine, network_granted: bool) -> Result<()> {
    for (name, _) in component.component_type().imports(engine) {
        if name.starts_with("wasi:http/") && !network_granted {
            bail!(
                "it imports `{name}` (outgoing HTTP) but has no network capability; grant it in plugin.toml:\n    [capabilities]\n    network = [\"host:port\"]"
            );
        }
        let known = name.starts_with("wasi:") || name.starts_with("research:plugins/");
        if !known {
            bail!("it imports `{name}`, which the host does not provide");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(match_version("0.1.0"), Some(ContractVersion::V0_1_0));
        assert_eq!(match_version("0.1.7"), Some(ContractVersion::V0_1_0));
        assert_eq!(match_version("0.2.0"), Some(ContractVersion::V0_2_0));
        assert_eq!(match_version("0.2.3"), Some(ContractVersion::V0_2_0));
        assert_eq!(match_version("0.3.1"), Some(ContractVersion::V0_3_0));
        assert_eq!(match_version("0.4.0"), None);
        assert_eq!(match_version("1.0.0"), None);
        assert_eq!(match_version(""), None);
    }
}
