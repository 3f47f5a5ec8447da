//! The end-to-end suite: one test binary whose modules are the suite's parts, so wasmtime and
//! candle are linked once and the shipped plugins are built once for all of them. Run one part
//! with `cargo test -p research-host --test integration train::` (module path as the filter).

mod common;

mod cli;
mod contract_versions;
mod eval;
mod generate;
mod gguf;
mod hostile_plugins;
mod inference_server;
mod judge_plugin;
mod learning;
mod loss_mask;
mod model;
mod network_plugins;
mod parity;
mod parser_conformance;
mod quickstart;
mod report;
mod retrieval;
mod reward_conformance;
/// The answer-scoring rules, natively (the module is not named after the `qa_scoring` crate
/// it tests, so the crate's name stays unambiguous).
#[path = "qa_scoring.rs"]
mod scoring_rules;
mod server;
mod train;
mod warm_start;
