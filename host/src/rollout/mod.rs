//! Multi-turn rollouts: the engine that interleaves decoding with parser, search and
//! observation tokens, and the trajectories it produces.

pub mod runner;
pub mod trajectory;

pub use runner::{PromptInput, RolloutPlugins, RolloutSettings, RolloutTimes, run_rollouts};
pub use trajectory::{Segment, SegmentKind, Trajectory};
