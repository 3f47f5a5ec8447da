//! Typed access to a search plugin.

use super::error::PluginError;
use super::instance::{InstancePool, OutputSize};
use super::types::Passage;
use super::wit::{since_v0_1_0 as v0_1_0, since_v0_2_0 as v0_2_0, since_v0_3_0 as v0_3_0};

/// The bindings of a search plugin, by contract version.
pub(crate) enum SearchBindings {
    V0_1_0(v0_1_0::search::SearchPlugin),
    V0_2_0(v0_2_0::search::SearchPlugin),
    V0_3_0(v0_3_0::search::SearchPlugin),
}

/// A loaded search plugin.
pub struct SearchPlugin {
    pub(crate) pool: InstancePool<SearchBindings>,
}

impl OutputSize for Passage {
    fn output_size(&self) -> usize {
        self.id.len() + self.title.len() + self.text.len() + 4
    }
}

impl SearchPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// Searches every query. The answer must hold one list per query with at most `top_k`
    /// passages and finite scores.
    pub fn search(&self, queries: &[String], top_k: u32) -> Result<Vec<Vec<Passage>>, PluginError> {
        const FUNCTION: &str = "search.search";
        let result = self.pool.call(FUNCTION, |bindings, store| match bindings {
            SearchBindings::V0_1_0(b) => v0_1_0::search(b, store, queries, top_k),
            SearchBindings::V0_2_0(b) => v0_2_0::search(b, store, queries, top_k),
            SearchBindings::V0_3_0(b) => v0_3_0::search(b, store, queries, top_k),
        })?;
        let lists = self.pool.guest_result(FUNCTION, result)?;
        let problem = if lists.len() != queries.len() {
            Some(format!(
                "{} result lists for {} queries",
                lists.len(),
                queries.len()
            ))
        } else if let Some(list) = lists.iter().find(|l| l.len() > top_k as usize) {
            Some(format!(
                "{} passages for one query, more than top-k = {top_k}",
                list.len()
            ))
        } else if lists.iter().flatten().any(|p| !p.score.is_finite()) {
            Some("a passage score is not a finite number".to_string())
        } else {
            None
        };
        self.pool.validated(FUNCTION, lists, problem)
    }
}
