//! Multi-turn rollouts: the engine that interleaves decoding with parser, search and
//! observation tokens, the trajectories it produces, and scored episodes of questions.

pub mod episodes;
pub mod generator;
pub mod runner;
pub mod trajectory;
pub mod validation;

pub use episodes::{Episodes, RolloutModel};
pub use generator::{Generation, Generator};
pub use runner::{PromptInput, RolloutPlugins, RolloutSettings, RolloutTimes, run_rollouts};
pub use trajectory::{Segment, SegmentKind, Trajectory};
