//! `host plugins list`, `host plugins build` and `host plugins check`.

use super::PluginArgs;
use crate::plugins::built::{self, BuildState};
use crate::plugins::conformance::{self, Outcome};
use crate::plugins::{
    DiscoveredPlugin, HostOptions, KeywordRetriever, Limits, PluginHost, PluginKind, PluginSource,
    Selection, discover,
};
use anyhow::Result;
use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Show every plugin in the folder: name, kind, version, source, the SHA-256 of its
    /// component, limits, capabilities and which one of each kind is active. Builds nothing.
    List {
        #[command(flatten)]
        plugins: PluginArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build the plugins shipped as sources (a crate beside plugin.toml) into components, with
    /// cargo for wasm32-wasip2, and record them in each plugin's `built/` folder. This is the
    /// only step that runs cargo: a crate's build scripts and procedural macros run natively on
    /// this machine, outside the sandbox, so build only plugins whose code you trust. Loading
    /// (train, eval, reward, check) then runs the recorded component sandboxed, and refuses it
    /// once the sources change.
    Build {
        /// A folder of plugins, or one plugin's folder.
        #[arg(value_name = "DIR", default_value = "plugins")]
        dir: PathBuf,
        /// Build only this plugin (repeatable).
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Cargo's target folder [default: the crate's workspace's own].
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Load every plugin and run the conformance suite of its kind. Exits non-zero when a
    /// plugin fails to load (a source plugin must be built first) or fails a check.
    Check {
        #[command(flatten)]
        plugins: PluginArgs,
    },
}

/// Runs a `plugins` subcommand.
pub fn run(command: PluginsCommand) -> Result<ExitCode> {
    match command {
        PluginsCommand::List { plugins, json } => list(&plugins, json),
        PluginsCommand::Build {
            dir,
            only,
            target_dir,
        } => build(&dir, &only, target_dir.as_deref()),
        PluginsCommand::Check { plugins } => check(&plugins),
    }
}

/// The component column of `plugins list`: the first 12 hex digits of its SHA-256, or why
/// there is none; and the full SHA-256 when there is one.
fn component_of(plugin: &DiscoveredPlugin) -> (String, Option<String>) {
    let state = match &plugin.source {
        PluginSource::Prebuilt(path) => {
            crate::durable::sha256_file(path).map(|sha256| BuildState::Built {
                component: path.clone(),
                sha256,
            })
        }
        PluginSource::Crate(cargo_toml) => built::state(&plugin.dir, cargo_toml),
    };
    match state {
        Ok(BuildState::Built { sha256, .. }) => (sha256[..12].to_string(), Some(sha256)),
        Ok(BuildState::NotBuilt) => ("not built".into(), None),
        Ok(BuildState::Stale(_)) => ("out of date".into(), None),
        Err(error) => (format!("unreadable: {error:#}"), None),
    }
}

fn build(
    dir: &std::path::Path,
    only: &[String],
    target_dir: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let discovered = discover(dir)?;
    for name in only {
        if !discovered.iter().any(|p| &p.manifest.name == name) {
            anyhow::bail!("no plugin named `{name}` in {}", dir.display());
        }
    }
    let chosen: Vec<&DiscoveredPlugin> = discovered
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.manifest.name))
        .filter(|p| matches!(p.source, PluginSource::Crate(_)))
        .collect();
    if chosen.is_empty() {
        println!(
            "nothing to build in {}: every plugin is prebuilt",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "warning: building {} plugin(s) from source; cargo runs their build scripts and \
         procedural macros natively on this machine, outside the sandbox. Build only plugins \
         whose code you trust.",
        chosen.len()
    );
    let progress = ProgressBar::new(chosen.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["name", "component", "KiB", "sha256"]);
    for plugin in chosen {
        progress.set_message(format!("building {}", plugin.manifest.name));
        let built = built::build(plugin, target_dir)?;
        table.add_row([
            built.name,
            built.component.display().to_string(),
            format!("{:.0}", built.bytes as f64 / 1024.0),
            built.sha256,
        ]);
        progress.inc(1);
    }
    progress.finish_and_clear();
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

fn describe_limits(limits: &Limits) -> String {
    let mut text = format!(
        "{} ms, {} MiB, out {} KiB",
        limits.timeout_ms, limits.memory_mb, limits.max_output_kb
    );
    if let Some(fuel) = limits.fuel {
        text.push_str(&format!(", fuel {fuel}"));
    }
    text
}

fn active_names(args: &PluginArgs, selection: &Selection) -> Result<Vec<String>> {
    let discovered = discover(&args.plugins)?;
    let mut names = Vec::new();
    for kind in PluginKind::ALL {
        // A kind with an ambiguous choice is simply shown without an active marker.
        if let Ok(Some(plugin)) = selection.resolve(&args.plugins, &discovered, kind) {
            names.push(plugin.manifest.name.clone());
        }
    }
    Ok(names)
}

fn list(args: &PluginArgs, json: bool) -> Result<ExitCode> {
    let selection = args.selection()?;
    let discovered = discover(&args.plugins)?;
    let active = active_names(args, &selection)?;
    if json {
        let rows: Vec<serde_json::Value> = discovered
            .iter()
            .map(|p| {
                let m = &p.manifest;
                serde_json::json!({
                    "name": m.name, "kind": m.kind, "version": m.version,
                    "description": m.description, "dir": p.dir, "source": p.source.label(),
                    "component_sha256": component_of(p).1,
                    "limits": {"timeout_ms": m.limits.timeout_ms, "memory_mb": m.limits.memory_mb,
                               "max_output_kb": m.limits.max_output_kb, "fuel": m.limits.fuel},
                    "capabilities": {"network": m.capabilities.network},
                    "active": active.contains(&m.name),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "name",
        "kind",
        "version",
        "source",
        "component",
        "limits",
        "capabilities",
        "active",
    ]);
    for plugin in &discovered {
        let m = &plugin.manifest;
        let capabilities = if m.capabilities.network.is_empty() {
            "none".to_string()
        } else {
            format!("network: {}", m.capabilities.network.join(", "))
        };
        table.add_row([
            m.name.clone(),
            m.kind.to_string(),
            m.version.clone(),
            plugin.source.label().to_string(),
            component_of(plugin).0,
            describe_limits(&m.limits),
            capabilities,
            if active.contains(&m.name) {
                "*".into()
            } else {
                String::new()
            },
        ]);
    }
    println!("{table}");
    println!("{} plugins in {}", discovered.len(), args.plugins.display());
    Ok(ExitCode::SUCCESS)
}

fn check(args: &PluginArgs) -> Result<ExitCode> {
    let selection = args.selection()?;
    let discovered = discover(&args.plugins)?;
    let options = HostOptions {
        cache_dir: args.cache_dir(),
        fuel: discovered.iter().any(|p| p.manifest.limits.fuel.is_some()),
    };
    let mut host = PluginHost::new(&options)?;
    host.set_retriever(Arc::new(KeywordRetriever::new(
        conformance::fixture_passages(),
    )));
    let progress = ProgressBar::new(discovered.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut failed = Vec::new();
    let mut report = String::new();
    let empty = Default::default();
    for plugin in &discovered {
        let name = &plugin.manifest.name;
        progress.set_message(format!("checking {name}"));
        let overrides = selection.config.get(name).unwrap_or(&empty);
        match host.load(plugin, overrides) {
            Err(error) => {
                report.push_str(&format!(
                    "✗ {name} ({}): failed to load\n    {error:#}\n",
                    plugin.manifest.kind
                ));
                failed.push(name.clone());
            }
            Ok((info, loaded)) => {
                let network = !info.capabilities.network.is_empty();
                let checks = conformance::check(&loaded, network);
                let failures = checks
                    .iter()
                    .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
                    .count();
                let mark = if failures == 0 { "✓" } else { "✗" };
                report.push_str(&format!(
                    "{mark} {name} ({} plugin, contract {}, {})\n",
                    info.kind,
                    info.contract.as_str(),
                    info.component.display()
                ));
                for check in checks {
                    match check.outcome {
                        Outcome::Pass => report.push_str(&format!("    ok    {}\n", check.name)),
                        Outcome::Warn(why) => {
                            report.push_str(&format!("    warn  {}: {why}\n", check.name))
                        }
                        Outcome::Fail(why) => {
                            report.push_str(&format!("    FAIL  {}: {why}\n", check.name))
                        }
                    }
                }
                if failures > 0 {
                    failed.push(name.clone());
                }
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    print!("{report}");
    if failed.is_empty() {
        println!("all {} plugins passed", discovered.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} of {} plugins failed: {}",
            failed.len(),
            discovered.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
