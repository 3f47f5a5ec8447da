//! Write plugins for the research host as WebAssembly components.
//!
//! A plugin is one crate with `crate-type = ["cdylib"]`, built with
//! `host plugins build DIR` (or `cargo build --release --target wasm32-wasip2`). It is a type
//! that implements one trait — a constructor that reads its settings once, and the kind's
//! calls — exported with the matching macro; the generated bindings stay hidden:
//!
//! ```ignore
//! use research_sdk::config;
//! use research_sdk::reward::{Reward, RewardScore, Sample};
//!
//! struct Exact {
//!     partial: f64,
//! }
//!
//! impl Reward for Exact {
//!     fn new() -> Result<Self, String> {
//!         Ok(Exact { partial: config::get_parsed("partial", 0.0)? })
//!     }
//!
//!     fn score(&self, sample: Sample) -> Result<RewardScore, String> {
//!         let hit = sample.golden_answers.iter().any(|g| sample.response.contains(g.as_str()));
//!         Ok(RewardScore::new(if hit { 1.0 } else { self.partial }))
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
//! **Settings** come from the `[config]` table of the plugin's `plugin.toml` (with the run's
//! overrides) through [`config`]. Read and check them in `new`: the host calls it once when it
//! starts an instance, so a bad value fails at `host plugins check` and when a run loads the
//! plugin, not at its first call mid-run.
//!
//! **Instance state.** The host keeps several instances of a plugin and lets any of them serve
//! any call, in any order; it discards one after a failure and starts another. The value `new`
//! returns is therefore all an instance may keep: a call's answer must depend only on its
//! arguments and the settings. The calls take `&self`, and the value must be `Send + Sync`, so
//! keeping counters or caches takes a deliberate `Mutex` or atomic — don't: a run would depend
//! on which instance served which call and a resumed run would no longer continue exactly.
//! `host plugins check` refuses a plugin whose answers differ between calls or between a fresh
//! and a used instance.
//!
//! Plugins run sandboxed: no files, no network (unless granted), no environment.

// Lets the generated bindings name this crate by the same absolute path from inside it and
// from the plugin crates that expand its export macros.
extern crate self as research_sdk;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// The plugin value `init` built, for the exported calls to use.
    pub struct Slot<T>(std::sync::OnceLock<T>);

    impl<T> Default for Slot<T> {
        fn default() -> Slot<T> {
            Slot::new()
        }
    }

    impl<T> Slot<T> {
        pub const fn new() -> Slot<T> {
            Slot(std::sync::OnceLock::new())
        }

        /// Builds the value once (the host calls `init` once per instance).
        pub fn init(&self, make: impl FnOnce() -> Result<T, String>) -> Result<(), String> {
            if self.0.get().is_none() {
                let value = make()?;
                let _ = self.0.set(value);
            }
            Ok(())
        }

        /// The value; an error if the host called before `init` (a host older than the
        /// contract this SDK speaks would).
        pub fn get(&self) -> Result<&T, String> {
            self.0
                .get()
                .ok_or_else(|| "the plugin was called before init".to_string())
        }
    }
}

/// Generated bindings, one module per world of `research:plugins@0.3.0`. Not part of the API.
#[doc(hidden)]
pub mod bindings {
    pub mod reward {
        wit_bindgen::generate!({
            world: "reward-plugin",
            path: "../../wit/since_v0.3.0",
            pub_export_macro: true,
            export_macro_name: "__export_reward_world",
            default_bindings_module: "::research_sdk::bindings::reward",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
        });
    }
    pub mod prompt {
        wit_bindgen::generate!({
            world: "prompt-plugin",
            path: "../../wit/since_v0.3.0",
            pub_export_macro: true,
            export_macro_name: "__export_prompt_world",
            default_bindings_module: "::research_sdk::bindings::prompt",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.3.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.3.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
    pub mod parser {
        wit_bindgen::generate!({
            world: "parser-plugin",
            path: "../../wit/since_v0.3.0",
            pub_export_macro: true,
            export_macro_name: "__export_parser_world",
            default_bindings_module: "::research_sdk::bindings::parser",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.3.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.3.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
    pub mod judge {
        wit_bindgen::generate!({
            world: "judge-plugin",
            path: "../../wit/since_v0.3.0",
            pub_export_macro: true,
            export_macro_name: "__export_judge_world",
            default_bindings_module: "::research_sdk::bindings::judge",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.3.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.3.0": ::research_sdk::bindings::reward::research::plugins::config,
            },
        });
    }
    pub mod search {
        wit_bindgen::generate!({
            world: "search-plugin",
            path: "../../wit/since_v0.3.0",
            pub_export_macro: true,
            export_macro_name: "__export_search_world",
            default_bindings_module: "::research_sdk::bindings::search",
            runtime_path: "::research_sdk::__private::wit_bindgen::rt",
            with: {
                "research:plugins/types@0.3.0": ::research_sdk::bindings::reward::research::plugins::types,
                "research:plugins/config@0.3.0": ::research_sdk::bindings::reward::research::plugins::config,
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
