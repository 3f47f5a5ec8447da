//! Search over the host's own index through the imported `retriever`. Config `max-top-k`
//! (default 50) caps how many passages one query may ask for.

use research_sdk::config;
use research_sdk::search::{Passage, Search, retriever};

struct LocalSearch {
    /// The most passages one query may ask for.
    max_top_k: u32,
}

impl Search for LocalSearch {
    fn new() -> Result<Self, String> {
        Ok(LocalSearch {
            max_top_k: config::get_parsed("max-top-k", 50)?,
        })
    }

    fn search(&self, queries: Vec<String>, top_k: u32) -> Result<Vec<Vec<Passage>>, String> {
        let results = retriever::retrieve(&queries, top_k.min(self.max_top_k))?;
        if results.len() != queries.len() {
            return Err(format!(
                "the retriever answered {} of {} queries",
                results.len(),
                queries.len()
            ));
        }
        Ok(results)
    }
}

research_sdk::export_search!(LocalSearch);
