//! Plugins shipped as sources are built in an explicit, trusted step (`host plugins build`),
//! never while loading: cargo runs a crate's build scripts and procedural macros natively, so
//! building is giving that code the machine. The step writes the component into the plugin's
//! folder (`built/COMPONENT.wasm`) with a record of what it was built from
//! (`built/build.toml`: the SHA-256 of the sources and of the component). Loading takes that
//! component only while the sources are unchanged, and refuses otherwise with the command
//! that builds it.

use super::discovery::{DiscoveredPlugin, PluginSource};
use super::guest_build::build_plugin_crate;
use crate::durable::{sha256_file, write_atomic};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The folder inside a plugin's folder that holds its built component and the record.
pub const BUILT_DIR: &str = "built";
/// The record of a build, inside [`BUILT_DIR`].
pub const RECORD_FILE: &str = "build.toml";

/// What `host plugins build` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// The component's file name inside [`BUILT_DIR`].
    pub component: String,
    /// SHA-256 of the component.
    pub component_sha256: String,
    /// SHA-256 over the crate's sources, its path dependencies' and its workspace's manifest
    /// and lock file ([`sources_sha256`]).
    pub sources_sha256: String,
}

/// Where a source plugin stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildState {
    /// Built from the current sources: the component and its SHA-256.
    Built { component: PathBuf, sha256: String },
    /// Never built (no record).
    NotBuilt,
    /// Built, but the sources or the component changed since.
    Stale(String),
}

/// Where `plugin` (a crate) stands: built from its current sources, never built, or stale.
pub fn state(plugin_dir: &Path, cargo_toml: &Path) -> Result<BuildState> {
    let built = plugin_dir.join(BUILT_DIR);
    let record_path = built.join(RECORD_FILE);
    if !record_path.is_file() {
        return Ok(BuildState::NotBuilt);
    }
    let text = crate::data::text_file::read_text(&record_path, "the build record")?;
    let record: BuildRecord =
        toml::from_str(&text).with_context(|| format!("invalid {}", record_path.display()))?;
    let component = built.join(&record.component);
    if !component.is_file() {
        return Ok(BuildState::Stale(format!(
            "{} is missing",
            component.display()
        )));
    }
    if sources_sha256(cargo_toml)? != record.sources_sha256 {
        return Ok(BuildState::Stale(
            "its sources changed since it was built".into(),
        ));
    }
    let sha256 = sha256_file(&component)?;
    if sha256 != record.component_sha256 {
        return Ok(BuildState::Stale(format!(
            "{} is not the component that was built (its SHA-256 differs)",
            component.display()
        )));
    }
    Ok(BuildState::Built { component, sha256 })
}

/// The component to load for a source plugin, or an error that says how to build it.
pub fn component_for(plugin: &DiscoveredPlugin, cargo_toml: &Path) -> Result<PathBuf> {
    let why = match state(&plugin.dir, cargo_toml)? {
        BuildState::Built { component, .. } => return Ok(component),
        BuildState::NotBuilt => "it is source code that has not been built".to_string(),
        BuildState::Stale(why) => format!("its built component is out of date: {why}"),
    };
    bail!(
        "{why}. The host does not build plugins while loading them (cargo runs a crate's build \
         scripts and macros natively, outside the sandbox). Build the folder's plugins once with \
         `host plugins build {}` if you trust their code, or point `wasm = \"…\"` in its \
         plugin.toml at a prebuilt component",
        plugin.root.display()
    )
}

/// A plugin built by [`build`].
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub component: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// Builds a source plugin with cargo (its build scripts and macros run natively) and records
/// the component in its folder. `target_dir` overrides cargo's target folder.
pub fn build(plugin: &DiscoveredPlugin, target_dir: Option<&Path>) -> Result<Built> {
    let PluginSource::Crate(cargo_toml) = &plugin.source else {
        bail!(
            "`{}` is a prebuilt component; there is nothing to build",
            plugin.manifest.name
        );
    };
    let wasm = build_plugin_crate(cargo_toml, target_dir)
        .with_context(|| format!("cannot build plugin `{}`", plugin.manifest.name))?;
    let built = plugin.dir.join(BUILT_DIR);
    std::fs::create_dir_all(&built)
        .with_context(|| format!("cannot create {}", built.display()))?;
    let file_name = format!("{}.wasm", plugin.manifest.name);
    let component = built.join(&file_name);
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    write_atomic(&component, &bytes)?;
    let record = BuildRecord {
        component: file_name,
        component_sha256: hex::encode(Sha256::digest(&bytes)),
        // Hashed after the build: cargo writes Cargo.lock when a crate has none.
        sources_sha256: sources_sha256(cargo_toml)?,
    };
    write_atomic(
        &built.join(RECORD_FILE),
        toml::to_string(&record)?.as_bytes(),
    )?;
    Ok(Built {
        name: plugin.manifest.name.clone(),
        component,
        sha256: record.component_sha256,
        bytes: bytes.len() as u64,
    })
}

/// SHA-256 over what a crate is built from: its folder, the folders of its path dependencies
/// (transitively, also those declared in the workspace), and its workspace's `Cargo.toml` and
/// `Cargo.lock`. Skipped: `target/`, `built/`, hidden entries and `plugin.toml` (the manifest
/// is read at load, not compiled, so editing its `[config]` needs no rebuild).
pub fn sources_sha256(cargo_toml: &Path) -> Result<String> {
    let crate_dir = cargo_toml
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let crate_dir = std::fs::canonicalize(crate_dir)
        .with_context(|| format!("cannot resolve {}", crate_dir.display()))?;
    let workspace = workspace_root(&crate_dir)?;
    let mut dirs = BTreeSet::new();
    let workspace_deps = match &workspace {
        Some(root) => read_manifest(&root.join("Cargo.toml"))?
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(|d| d.as_table())
            .cloned()
            .unwrap_or_default(),
        None => toml::Table::new(),
    };
    let root = workspace.as_deref().unwrap_or(&crate_dir);
    collect_crates(&crate_dir, root, &workspace_deps, &mut dirs)?;
    let mut hasher = Sha256::new();
    if let Some(root) = &workspace {
        for name in ["Cargo.toml", "Cargo.lock"] {
            hash_file(&mut hasher, &root.join(name), name)?;
        }
    } else {
        hash_file(&mut hasher, &crate_dir.join("Cargo.lock"), "Cargo.lock")?;
    }
    for dir in &dirs {
        let label = dir
            .strip_prefix(workspace.as_deref().unwrap_or(&crate_dir))
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from(dir.file_name().unwrap_or_default().to_os_string()));
        hash_tree(&mut hasher, dir, &label.to_string_lossy(), true)?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The nearest folder at or above `crate_dir` whose Cargo.toml has a `[workspace]` table.
fn workspace_root(crate_dir: &Path) -> Result<Option<PathBuf>> {
    for dir in crate_dir.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() && read_manifest(&manifest)?.get("workspace").is_some() {
            return Ok(Some(dir.to_path_buf()));
        }
    }
    Ok(None)
}

fn read_manifest(path: &Path) -> Result<toml::Table> {
    let text = crate::data::text_file::read_text(path, "the crate manifest")?;
    toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
}

/// Adds `crate_dir` and every crate it depends on by path to `dirs`; `workspace_deps` are the
/// `[workspace.dependencies]` of the workspace at `root` (the crate's folder without one).
fn collect_crates(
    crate_dir: &Path,
    root: &Path,
    workspace_deps: &toml::Table,
    dirs: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    if !dirs.insert(crate_dir.to_path_buf()) {
        return Ok(());
    }
    let manifest = read_manifest(&crate_dir.join("Cargo.toml"))?;
    for table in ["dependencies", "build-dependencies", "dev-dependencies"] {
        let Some(deps) = manifest.get(table).and_then(|t| t.as_table()) else {
            continue;
        };
        for (name, spec) in deps {
            let path = if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
                workspace_deps
                    .get(name)
                    .and_then(|d| d.get("path"))
                    .and_then(|p| p.as_str())
                    .map(|p| root.join(p))
            } else {
                spec.get("path")
                    .and_then(|p| p.as_str())
                    .map(|p| crate_dir.join(p))
            };
            if let Some(path) = path {
                let path = std::fs::canonicalize(&path).with_context(|| {
                    format!(
                        "the path dependency `{name}` of {} ({}) does not exist",
                        crate_dir.display(),
                        path.display()
                    )
                })?;
                collect_crates(&path, root, workspace_deps, dirs)?;
            }
        }
    }
    Ok(())
}

fn hash_file(hasher: &mut Sha256, path: &Path, label: &str) -> Result<()> {
    hasher.update(label.as_bytes());
    hasher.update([0]);
    match std::fs::read(path) {
        Ok(bytes) => {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => hasher.update(u64::MAX.to_le_bytes()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    Ok(())
}

/// Hashes the files under `dir`; `top` skips the crate's output folders (`target/`, `built/`),
/// which exist only at a crate's root.
fn hash_tree(hasher: &mut Sha256, dir: &Path, label: &str, top: bool) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || (top && (name == "target" || name == BUILT_DIR)) {
            continue;
        }
        let path = entry.path();
        let label = format!("{label}/{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            hash_tree(hasher, &path, &label, false)?;
        } else if kind.is_file() && !(name == super::manifest::MANIFEST_FILE && is_crate(dir)) {
            hash_file(hasher, &path, &label)?;
        }
    }
    Ok(())
}

fn is_crate(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_sources_hash_follows_path_dependencies_and_ignores_outputs_and_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            &root.join("Cargo.toml"),
            "[workspace]\nmembers = [\"p\", \"sdk\"]\n[workspace.dependencies]\nsdk = { path = \"sdk\" }\n",
        );
        write(
            &root.join("p/Cargo.toml"),
            "[package]\nname = \"p\"\n[dependencies]\nsdk.workspace = true\nlocal = { path = \"../local\" }\n",
        );
        write(&root.join("p/src/lib.rs"), "fn a() {}");
        write(&root.join("p/plugin.toml"), "name = \"p\"");
        write(&root.join("sdk/Cargo.toml"), "[package]\nname = \"sdk\"\n");
        write(&root.join("sdk/src/lib.rs"), "pub fn s() {}");
        write(
            &root.join("local/Cargo.toml"),
            "[package]\nname = \"local\"\n",
        );
        write(&root.join("local/src/lib.rs"), "pub fn l() {}");
        write(&root.join("other/src/lib.rs"), "unrelated");
        let manifest = root.join("p/Cargo.toml");
        let first = sources_sha256(&manifest).unwrap();
        assert_eq!(first.len(), 64);

        // Outputs, hidden files, unrelated folders and the plugin manifest change nothing.
        write(&root.join("p/target/x.wasm"), "out");
        write(&root.join("p/built/build.toml"), "x");
        write(&root.join("p/.hidden"), "x");
        write(&root.join("other/src/lib.rs"), "changed");
        write(
            &root.join("p/plugin.toml"),
            "name = \"p\"\n[config]\nk = \"v\"",
        );
        assert_eq!(sources_sha256(&manifest).unwrap(), first);

        // The crate (also a module folder named like an output folder), a workspace
        // dependency, a path dependency and the lock file do.
        for (file, text) in [
            ("p/src/lib.rs", "fn b() {}"),
            ("p/src/built/mod.rs", "pub fn c() {}"),
            ("sdk/src/lib.rs", "pub fn t() {}"),
            ("local/src/lib.rs", "pub fn m() {}"),
            ("Cargo.lock", "version = 4"),
        ] {
            let before = sources_sha256(&manifest).unwrap();
            write(&root.join(file), text);
            assert_ne!(sources_sha256(&manifest).unwrap(), before, "{file}");
        }
    }

    #[test]
    fn a_missing_path_dependency_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("p/Cargo.toml"),
            "[package]\nname = \"p\"\n[dependencies]\ngone = { path = \"../gone\" }\n[workspace]\n",
        );
        let error = sources_sha256(&dir.path().join("p/Cargo.toml")).unwrap_err();
        assert!(
            format!("{error:#}").contains("the path dependency `gone`"),
            "{error:#}"
        );
    }
}
