//! research-host: trains language models with reinforcement learning to reason with a search
//! engine (ReSearch, Search-R1). Reward functions, prompts, tag parsers and search tools are
//! sandboxed WebAssembly components; see [`plugins`].

pub mod cli;
pub mod data;
pub mod demos;
pub mod durable;
pub mod eval;
pub mod folder_lock;
pub mod grpo;
pub mod inference_server;
pub mod kernels;
pub mod memory;
pub mod model;
pub mod plugins;
pub mod report;
pub mod retrieval;
pub mod rollout;
pub mod run_metrics;
pub mod sft;
pub mod threads;
