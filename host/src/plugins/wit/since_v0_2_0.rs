//! `research:plugins@0.2.0` (`wit/since_v0.2.0`): generated bindings and conversions to the
//! host's types. 0.2.0 is 0.1.0 plus the `judge` kind; its `types` interface is identical, so
//! its records reuse 0.1.0's Rust types (component types are checked structurally) and the
//! conversions of [`super::since_v0_1_0`].

use super::since_v0_1_0 as v0_1_0;
use crate::plugins::sandbox::HostState;
use crate::plugins::types as host;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

/// The contract version of this module.
pub const VERSION: &str = "0.2.0";

pub mod reward {
    wasmtime::component::bindgen!({
        world: "reward-plugin",
        path: "../wit/since_v0.2.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
        },
    });
}

pub mod prompt {
    wasmtime::component::bindgen!({
        world: "prompt-plugin",
        path: "../wit/since_v0.2.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod parser {
    wasmtime::component::bindgen!({
        world: "parser-plugin",
        path: "../wit/since_v0.2.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod search {
    wasmtime::component::bindgen!({
        world: "search-plugin",
        path: "../wit/since_v0.2.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

pub mod judge {
    wasmtime::component::bindgen!({
        world: "judge-plugin",
        path: "../wit/since_v0.2.0",
        with: {
            "research:plugins/types": crate::plugins::wit::since_v0_1_0::reward::research::plugins::types,
            "research:plugins/config": super::reward::research::plugins::config,
        },
    });
}

kind_calls!();
