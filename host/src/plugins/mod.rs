//! The sandboxed plugin runtime: Wasm components (reward, prompt, parser, search, judge) found in a
//! `--plugins` folder, prebuilt or built by the explicit `host plugins build` step (loading never
//! runs cargo), compiled once (cached on disk), and called under per-call limits. A failing plugin yields a [`PluginError`] naming the plugin, the function and the
//! cause; the host and the other plugins keep working.
//!
//! Layout: [`manifest`] and [`discovery`] read folders, [`guest_build`] runs cargo and [`built`]
//! records and checks what it built,
//! [`engine`] compiles and caches, [`sandbox`] is what an instance sees, [`instance`] pools
//! instances and enforces limits, [`wit`] holds the versioned contract bindings, and the
//! per-kind wrappers ([`reward`], [`prompt`], [`parser`], [`search`], [`judge`]) validate
//! outputs.

pub mod bounded_wait;
pub mod built;
pub mod conformance;
pub mod discovery;
pub mod engine;
pub mod error;
pub mod guest_build;
pub mod instance;
pub mod judge;
pub mod loader;
pub mod manifest;
pub mod parser;
pub mod prompt;
pub mod retriever;
pub mod reward;
pub mod sandbox;
pub mod search;
pub mod set;
pub mod types;
pub mod wit;

pub use discovery::{
    ASSISTANT_MARKER, DiscoveredPlugin, HOST_KEY_PREFIX, PluginSource, Selection, discover,
};
pub use error::{Failure, PluginError};
pub use judge::JudgePlugin;
pub use loader::{HostOptions, LoadedPlugin, PluginHost, PluginInfo};
pub use manifest::{Capabilities, Limits, Manifest};
pub use parser::ParserPlugin;
pub use prompt::PromptPlugin;
pub use retriever::{KeywordRetriever, Retriever};
pub use reward::RewardPlugin;
pub use search::SearchPlugin;
pub use set::PluginSet;
pub use types::{
    Action, Finish, Message, Passage, PluginKind, Rendered, RewardSample, RewardScore,
};
