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

kind_calls!();

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
