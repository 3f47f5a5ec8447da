//! The policy model: Hugging Face config and weights, a trainable Qwen2 / Qwen3 / Llama
//! transformer (one layer description per architecture in [`arch`]) with a differentiable
//! training forward and a fused generation forward, tokenizer and chat
//! template, log-probs, checkpoints, and tiny random models for tests.

pub mod arch;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod logprobs;
pub mod stop_rules;
pub mod tiny;
pub mod tokenizer;
pub mod transformer;
pub mod worker;

pub use checkpoint::save_checkpoint;
pub use config::{Architecture, ModelConfig};
pub use device::{DeviceKind, WeightDType};
pub use generate::{Engine, SamplingParams, SeqState, Sequence, Stop, StopRules};
pub use loader::{LoadedModel, load_model};
pub use logprobs::{PaddedBatch, TokenStats};
pub use tokenizer::ModelTokenizer;
pub use transformer::{KvCache, Policy};
pub use worker::on_worker;
