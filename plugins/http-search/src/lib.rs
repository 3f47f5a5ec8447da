//! Search over a remote retrieval server through `wasi:http`. Needs the `network` capability
//! for the server's `host:port` in `plugin.toml`; without it the host refuses to load it.
//!
//! Config:
//! - `url`: the server's base URL, e.g. `http://127.0.0.1:8000` (required);
//! - `api`: `searchr1` (POST `/retrieve`, the default) or `research` (POST `/batch_search`);
//! - `timeout-ms`: connect and first-byte timeout (default 10000).

use http_client::post_json;
use research_sdk::config;
use research_sdk::search::{Passage, Search};
use serde::Deserialize;

struct HttpSearch {
    url: String,
    /// `searchr1` or `research`.
    api: String,
    timeout_ms: u64,
}

impl Search for HttpSearch {
    fn new() -> Result<Self, String> {
        let url = config::get("url").ok_or("config `url` is not set")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "config `url` must start with http:// or https://, not `{url}`"
            ));
        }
        Ok(HttpSearch {
            url,
            api: config::get_choice("api", &["searchr1", "research"], "searchr1")?,
            timeout_ms: config::get_parsed("timeout-ms", 10_000)?,
        })
    }

    fn search(&self, queries: Vec<String>, top_k: u32) -> Result<Vec<Vec<Passage>>, String> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let (url, timeout_ms) = (&self.url, self.timeout_ms);
        let results = if self.api == "searchr1" {
            let body =
                serde_json::json!({"queries": queries, "topk": top_k, "return_scores": true});
            let reply: SearchR1Reply = post_json(url, "/retrieve", &body, &[], timeout_ms)?;
            reply
                .result
                .into_iter()
                .map(|hits| {
                    hits.into_iter()
                        .map(|hit| {
                            Passage::from_contents(
                                hit.document.id,
                                &hit.document.contents,
                                hit.score,
                            )
                        })
                        .collect()
                })
                .collect::<Vec<Vec<Passage>>>()
        } else {
            let body = serde_json::json!({"query": queries, "top_n": top_k});
            let reply: Vec<Vec<Document>> =
                post_json(url, "/batch_search", &body, &[], timeout_ms)?;
            reply
                .into_iter()
                .map(|docs| {
                    let count = docs.len();
                    docs.into_iter()
                        .enumerate()
                        // This API returns no scores: rank order becomes a descending score.
                        .map(|(rank, doc)| {
                            Passage::from_contents(doc.id, &doc.contents, (count - rank) as f32)
                        })
                        .collect()
                })
                .collect::<Vec<Vec<Passage>>>()
        };
        if results.len() != queries.len() {
            return Err(format!(
                "the server answered {} of {} queries",
                results.len(),
                queries.len()
            ));
        }
        Ok(results)
    }
}

#[derive(Deserialize)]
struct Document {
    #[serde(deserialize_with = "id_as_string")]
    id: String,
    contents: String,
}

#[derive(Deserialize)]
struct ScoredDocument {
    document: Document,
    score: f32,
}

#[derive(Deserialize)]
struct SearchR1Reply {
    result: Vec<Vec<ScoredDocument>>,
}

/// Corpus ids are strings in FlashRAG files but some servers send numbers.
fn id_as_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

research_sdk::export_search!(HttpSearch);
