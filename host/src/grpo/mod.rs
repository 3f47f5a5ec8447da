//! GRPO: group advantages, the clipped policy loss with k3 KL and entropy, AdamW with its
//! schedule, collapse guards, the training configuration, the run folder and the training loop.

pub mod advantages;
pub mod assets;
pub mod config;
pub mod guards;
pub mod loss;
pub mod optim;
pub mod run_dir;
pub mod trainer;

pub use config::TrainConfig;
pub use run_dir::RunDir;
pub use trainer::{ReportOptions, RunInputs, Trainer};
