//! Bindings for every released version of the `research:plugins` contract, and the detection
//! of which version (and kind) a component was built against.
//!
//! Each `since_v*` module converts its generated types to the host's own ([`super::types`]).
//! A new contract version adds a module here; older modules stay, so older plugins keep
//! loading.

/// The host side of a contract version whose `types` are 0.1.0's and whose kinds' records have
/// 0.2.0's shapes (0.2.0 and 0.3.0): `add_to_linker`, the `config` and `retriever` imports, and
/// one function per kind call converting to and from the host's types. Each version module
/// invokes it over its own generated bindings (`reward`, `prompt`, `parser`, `search`, `judge`),
/// which the paths inside resolve to.
macro_rules! kind_calls {
    () => {
        use v0_1_0::reward::research::plugins::types as wit;

        /// Adds this version's host interfaces (`config`, `retriever`) to `linker`.
        pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            reward::research::plugins::config::add_to_linker::<HostState, HasSelf<HostState>>(
                linker,
                |state| state,
            )?;
            search::research::plugins::retriever::add_to_linker::<HostState, HasSelf<HostState>>(
                linker,
                |state| state,
            )?;
            Ok(())
        }

        impl reward::research::plugins::config::Host for HostState {
            fn get(&mut self, key: String) -> Option<String> {
                self.config.get(&key).cloned()
            }

            fn keys(&mut self) -> Vec<String> {
                self.config.keys().cloned().collect()
            }
        }

        impl search::research::plugins::retriever::Host for HostState {
            fn retrieve(
                &mut self,
                queries: Vec<String>,
                top_k: u32,
            ) -> Result<Vec<Vec<wit::Passage>>, String> {
                v0_1_0::retrieve_for_guest(self, &queries, top_k)
            }
        }

        /// `reward.score`.
        pub fn score(
            plugin: &reward::RewardPlugin,
            store: &mut Store<HostState>,
            sample: &host::RewardSample,
        ) -> wasmtime::Result<Result<host::RewardScore, String>> {
            use reward::exports::research::plugins::reward::Sample;
            let sample = Sample {
                question: sample.question.clone(),
                golden_answers: sample.golden_answers.clone(),
                response: sample.response.clone(),
                finish: v0_1_0::finish_to_wit(&sample.finish),
                num_searches: sample.num_searches,
                metadata: sample.metadata.clone(),
            };
            let result = plugin
                .research_plugins_reward()
                .call_score(store, &sample)?;
            Ok(result.map(|score| host::RewardScore {
                total: score.total,
                components: score
                    .components
                    .into_iter()
                    .map(|c| (c.name, c.value))
                    .collect(),
            }))
        }

        /// `prompt.render`.
        pub fn render(
            plugin: &prompt::PromptPlugin,
            store: &mut Store<HostState>,
            question: &str,
        ) -> wasmtime::Result<Result<host::Rendered, String>> {
            use prompt::exports::research::plugins::prompt::Rendered;
            let result = plugin
                .research_plugins_prompt()
                .call_render(store, question)?;
            Ok(result.map(|rendered| match rendered {
                Rendered::Text(text) => host::Rendered::Text(text),
                Rendered::Chat(messages) => host::Rendered::Chat(
                    messages.into_iter().map(v0_1_0::message_from_wit).collect(),
                ),
            }))
        }

        /// `parser.stop-sequences`.
        pub fn stop_sequences(
            plugin: &parser::ParserPlugin,
            store: &mut Store<HostState>,
        ) -> wasmtime::Result<Vec<String>> {
            plugin.research_plugins_parser().call_stop_sequences(store)
        }

        /// `parser.parse`.
        pub fn parse(
            plugin: &parser::ParserPlugin,
            store: &mut Store<HostState>,
            turn: &str,
        ) -> wasmtime::Result<host::Action> {
            use parser::exports::research::plugins::parser::Action;
            let action = plugin.research_plugins_parser().call_parse(store, turn)?;
            Ok(match action {
                Action::Search(query) => host::Action::Search(query),
                Action::Answer(answer) => host::Action::Answer(answer),
                Action::Continue => host::Action::Continue,
                Action::Invalid(feedback) => host::Action::Invalid(feedback),
            })
        }

        /// `parser.format-results`.
        pub fn format_results(
            plugin: &parser::ParserPlugin,
            store: &mut Store<HostState>,
            query: &str,
            passages: &[host::Passage],
        ) -> wasmtime::Result<String> {
            let passages: Vec<wit::Passage> = passages
                .iter()
                .cloned()
                .map(v0_1_0::passage_to_wit)
                .collect();
            plugin
                .research_plugins_parser()
                .call_format_results(store, query, &passages)
        }

        /// `search.search`.
        pub fn search(
            plugin: &search::SearchPlugin,
            store: &mut Store<HostState>,
            queries: &[String],
            top_k: u32,
        ) -> wasmtime::Result<Result<Vec<Vec<host::Passage>>, String>> {
            let result = plugin
                .research_plugins_search()
                .call_search(store, queries, top_k)?;
            Ok(result.map(v0_1_0::passage_lists_from_wit))
        }

        /// `judge.complete`.
        pub fn complete(
            plugin: &judge::JudgePlugin,
            store: &mut Store<HostState>,
            prompts: &[Vec<host::Message>],
            max_tokens: u32,
        ) -> wasmtime::Result<Result<Vec<String>, String>> {
            let prompts: Vec<Vec<wit::Message>> = prompts
                .iter()
                .map(|messages| {
                    messages
                        .iter()
                        .cloned()
                        .map(v0_1_0::message_to_wit)
                        .collect()
                })
                .collect();
            plugin
                .research_plugins_judge()
                .call_complete(store, &prompts, max_tokens)
        }
    };
}

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
