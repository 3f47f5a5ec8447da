//! Supervised fine-tuning on trajectories (`host sft`), the warm start that lets a small
//! model write the answer format before GRPO: cross-entropy on the generated tokens only
//! (prompt and observations masked), micro-batch accumulation, AdamW with its schedule, the
//! run folder, checkpoints and validation of `host train`.

pub mod cache_entry;
pub mod copying;
pub mod data;
pub mod embedded;
pub mod loss;
pub mod trainer;

pub use data::{SftExample, drop_held_out, load_trajectories};
pub use trainer::{SftInputs, SftTrainer};
