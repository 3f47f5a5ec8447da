//! Write plugins for the research host as WebAssembly components.
//!
//! A plugin is one crate with `crate-type = ["cdylib"]`, built with
//! `cargo build --release --target wasm32-wasip2`. It implements one trait and exports it with
//! the matching macro; the generated bindings stay hidden:
//!
//! ```ignore
//! use research_sdk::reward::{Reward, RewardScore, Sample};
//!
//! struct Exact;
//!
//! impl Reward for Exact {
//!     fn score(sample: Sample) -> Result<RewardScore, String> {
//!         let hit = sample.golden_answers.iter().any(|g| sample.response.contains(g.as_str()));
//!         Ok(RewardScore::new(if hit { 1.0 } else { 0.0 }))
//!     }
//! }
//!
//! research_sdk::export_reward!(Exact);
//! ```
//!
//! | kind   | trait                  | macro             |
//! |--------|------------------------|-------------------|
//! | reward | [`reward::Reward`]     | [`export_reward!`] |
//! | prompt | [`prompt::Prompt`]     | [`export_prompt!`] |
//! | parser | [`parser::Parser`]     | [`export_parser!`] |
//! | search | [`search::Search`]     | [`export_search!`] |
//! | judge  | [`judge::Judge`]       | [`export_judge!`]  |
//!
//! Settings come from the `[config]` table of the plugin's `plugin.toml` through [`config`].
//! Plugins run sandboxed: no files, no network (unless granted), no environment.

// Lets the generated bindings name this crate by the same absolute path from inside it and
// from the plugin crates that expand its export macros.
extern crate self as research_sdk;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// Generated bindings, one module per world of `research:plugins@0.2.0`. Not part of the API.
#[doc(hidden)]
pub mod bindings {
    pub mod reward {
        wit_bindgen::generate!({
            world: "reward-plugin",
            path: "../../wit/since_v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_reward_world",
            default_bindings_module: "::research_sdk::bindings::reward",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
        });
    }
    pub mod prompt {
        wit_bindgen::generate!({
            world: "prompt-plugin",
            path: "../../wit/since_v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_prompt_world",
            default_bindings_module: "::research_sdk::bindings::prompt",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.2.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.2.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
    pub mod parser {
        wit_bindgen::generate!({
            world: "parser-plugin",
            path: "../../wit/since_v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_parser_world",
            default_bindings_module: "::research_sdk::bindings::parser",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.2.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.2.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
    pub mod judge {
        wit_bindgen::generate!({
            world: "judge-plugin",
            path: "../../wit/since_v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_judge_world",
            default_bindings_module: "::research_sdk::bindings::judge",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.2.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.2.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
    pub mod search {
        wit_bindgen::generate!({
            world: "search-plugin",
            path: "../../wit/since_v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_search_world",
            default_bindings_module: "::research_sdk::bindings::search",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.2.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.2.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
}

pub mod types;

pub mod config;

pub mod reward;

pub mod prompt;

pub mod parser;

pub mod search;

pub mod judge;
