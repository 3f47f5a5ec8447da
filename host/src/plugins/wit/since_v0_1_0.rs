//! `research:plugins@0.1.0` (`wit/since_v0.1.0`): generated bindings and conversions to the
//! host's types.

use crate::plugins::sandbox::HostState;
use crate::plugins::types as host;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

/// The contract version of this module.
pub const VERSION: &str = "0.1.0";

pub mod reward {
    wasmtime::component::bindgen!({
        world: "reward-plugin",
        path: "../wit/since_v0.1.0",
    });
}

pub mod prompt {
    wasmtime::component::bindgen!({
        world: "prompt-plugin",
        path: "../wit/since_v0.1.0",
        with: {
            "research:plugins/types": super::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod parser {
    wasmtime::component::bindgen!({
        world: "parser-plugin",
        path: "../wit/since_v0.1.0",
        with: {
            "research:plugins/types": super::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod search {
    wasmtime::component::bindgen!({
        world: "search-plugin",
        path: "../wit/since_v0.1.0",
        with: {
            "research:plugins/types": super::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

use reward::research::plugins::types as wit;

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

impl reward::research::plugins::types::Host for HostState {}

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
        retrieve_for_guest(self, &queries, top_k)
    }
}

/// `retriever.retrieve` for a guest: the run's index, or an error when it has none.
pub(crate) fn retrieve_for_guest(
    state: &HostState,
    queries: &[String],
    top_k: u32,
) -> Result<Vec<Vec<wit::Passage>>, String> {
    let retriever = state
        .retriever
        .as_ref()
        .ok_or("this run has no index: start it with an index for local-search")?;
    let results = retriever
        .retrieve(queries, top_k as usize)
        .map_err(|error| format!("{error:#}"))?;
    Ok(results
        .into_iter()
        .map(|passages| passages.into_iter().map(passage_to_wit).collect())
        .collect())
}

pub(crate) fn passage_to_wit(p: host::Passage) -> wit::Passage {
    wit::Passage {
        id: p.id,
        title: p.title,
        text: p.text,
        score: p.score,
    }
}

pub(crate) fn passage_from_wit(p: wit::Passage) -> host::Passage {
    host::Passage {
        id: p.id,
        title: p.title,
        text: p.text,
        score: p.score,
    }
}

pub(crate) fn finish_to_wit(finish: &host::Finish) -> wit::Finish {
    match finish {
        host::Finish::Eos => wit::Finish::Eos,
        host::Finish::Stop(sequence) => wit::Finish::Stop(sequence.clone()),
        host::Finish::Length => wit::Finish::Length,
        host::Finish::MaxTurns => wit::Finish::MaxTurns,
    }
}

pub(crate) fn message_from_wit(m: wit::Message) -> host::Message {
    host::Message {
        role: m.role,
        content: m.content,
    }
}

pub(crate) fn message_to_wit(m: host::Message) -> wit::Message {
    wit::Message {
        role: m.role,
        content: m.content,
    }
}

pub(crate) fn passage_lists_from_wit(lists: Vec<Vec<wit::Passage>>) -> Vec<Vec<host::Passage>> {
    lists
        .into_iter()
        .map(|passages| passages.into_iter().map(passage_from_wit).collect())
        .collect()
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
        finish: finish_to_wit(&sample.finish),
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
            host::Rendered::Chat(messages.into_iter().map(message_from_wit).collect())
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
    let passages: Vec<wit::Passage> = passages.iter().cloned().map(passage_to_wit).collect();
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
    Ok(result.map(passage_lists_from_wit))
}
