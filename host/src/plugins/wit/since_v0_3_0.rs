//! `research:plugins@0.3.0` (`wit/since_v0.3.0`): generated bindings and conversions to the
//! host's types. 0.3.0 is 0.2.0 plus the `init` function every world exports (called once on
//! each new instance); its `types` interface is identical to 0.1.0's, so its records reuse
//! 0.1.0's Rust types and the conversions of [`super::since_v0_1_0`].

use super::since_v0_1_0 as v0_1_0;
use crate::plugins::sandbox::HostState;
use crate::plugins::types as host;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

/// The contract version of this module.
pub const VERSION: &str = "0.3.0";

pub mod reward {
    wasmtime::component::bindgen!({
        world: "reward-plugin",
        path: "../wit/since_v0.3.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
        },
    });
}

pub mod prompt {
    wasmtime::component::bindgen!({
        world: "prompt-plugin",
        path: "../wit/since_v0.3.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod parser {
    wasmtime::component::bindgen!({
        world: "parser-plugin",
        path: "../wit/since_v0.3.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod search {
    wasmtime::component::bindgen!({
        world: "search-plugin",
        path: "../wit/since_v0.3.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod judge {
    wasmtime::component::bindgen!({
        world: "judge-plugin",
        path: "../wit/since_v0.3.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

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
        Rendered::Chat(messages) => {
            host::Rendered::Chat(messages.into_iter().map(v0_1_0::message_from_wit).collect())
        }
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

/// `init` of a new instance: `Err` carries the plugin's complaint about its settings.
macro_rules! init_of {
    ($name:ident, $module:ident, $plugin:ident) => {
        #[doc = concat!("`init` of a ", stringify!($module), " plugin.")]
        pub fn $name(
            plugin: &$module::$plugin,
            store: &mut Store<HostState>,
        ) -> wasmtime::Result<Result<(), String>> {
            plugin.call_init(store)
        }
    };
}

init_of!(init_reward, reward, RewardPlugin);
init_of!(init_prompt, prompt, PromptPlugin);
init_of!(init_parser, parser, ParserPlugin);
init_of!(init_search, search, SearchPlugin);
init_of!(init_judge, judge, JudgePlugin);
