//! Typed access to a parser plugin.

use super::error::PluginError;
use super::instance::{Instance, InstancePool, OutputSize};
use super::types::{Action, Passage};
use super::wit::{since_v0_1_0 as v0_1_0, since_v0_2_0 as v0_2_0, since_v0_3_0 as v0_3_0};

/// The bindings of a parser plugin, by contract version.
pub(crate) enum ParserBindings {
    V0_1_0(v0_1_0::parser::ParserPlugin),
    V0_2_0(v0_2_0::parser::ParserPlugin),
    V0_3_0(v0_3_0::parser::ParserPlugin),
}

/// A loaded parser plugin.
pub struct ParserPlugin {
    pub(crate) pool: InstancePool<ParserBindings>,
}

/// Most stop sequences a parser may declare.
pub const MAX_STOP_SEQUENCES: usize = 32;

impl OutputSize for Action {
    fn output_size(&self) -> usize {
        match self {
            Action::Search(text) | Action::Answer(text) | Action::Invalid(text) => text.len(),
            Action::Continue => 0,
        }
    }
}

impl ParserPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// The strings that end a turn: non-empty, at most [`MAX_STOP_SEQUENCES`].
    pub fn stop_sequences(&self) -> Result<Vec<String>, PluginError> {
        const FUNCTION: &str = "parser.stop-sequences";
        let sequences = self.pool.call(FUNCTION, |bindings, store| match bindings {
            ParserBindings::V0_1_0(b) => v0_1_0::stop_sequences(b, store),
            ParserBindings::V0_2_0(b) => v0_2_0::stop_sequences(b, store),
            ParserBindings::V0_3_0(b) => v0_3_0::stop_sequences(b, store),
        })?;
        let problem = if sequences.len() > MAX_STOP_SEQUENCES {
            Some(format!(
                "{} stop sequences, more than {MAX_STOP_SEQUENCES}",
                sequences.len()
            ))
        } else if sequences.iter().any(String::is_empty) {
            Some("an empty stop sequence".to_string())
        } else {
            None
        };
        self.pool.validated(FUNCTION, sequences, problem)
    }

    /// Reads one turn.
    pub fn parse(&self, turn: &str) -> Result<Action, PluginError> {
        self.parse_in(Instance::Pooled, turn)
    }

    /// [`Self::parse`] on the chosen kind of instance.
    pub(crate) fn parse_in(&self, instance: Instance, turn: &str) -> Result<Action, PluginError> {
        self.pool
            .call_in(instance, "parser.parse", |bindings, store| match bindings {
                ParserBindings::V0_1_0(b) => v0_1_0::parse(b, store, turn),
                ParserBindings::V0_2_0(b) => v0_2_0::parse(b, store, turn),
                ParserBindings::V0_3_0(b) => v0_3_0::parse(b, store, turn),
            })
    }

    /// The observation for one query's passages.
    pub fn format_results(&self, query: &str, passages: &[Passage]) -> Result<String, PluginError> {
        self.format_results_in(Instance::Pooled, query, passages)
    }

    /// [`Self::format_results`] on the chosen kind of instance.
    pub(crate) fn format_results_in(
        &self,
        instance: Instance,
        query: &str,
        passages: &[Passage],
    ) -> Result<String, PluginError> {
        self.pool.call_in(
            instance,
            "parser.format-results",
            |bindings, store| match bindings {
                ParserBindings::V0_1_0(b) => v0_1_0::format_results(b, store, query, passages),
                ParserBindings::V0_2_0(b) => v0_2_0::format_results(b, store, query, passages),
                ParserBindings::V0_3_0(b) => v0_3_0::format_results(b, store, query, passages),
            },
        )
    }
}
