//! Training trajectories for a supervised warm start, in the JSONL form of a run's
//! `trajectories/`: built without a teacher from QA pairs and the real index
//! ([`builder`]), collected from the rewarded rollouts of a run, or re-tokenised from a
//! teacher's transcripts ([`collect`]). The wording of a dialect is a [`template`].

pub mod builder;
pub mod collect;
pub mod template;

pub use builder::{DemoBuilder, DemoSet, DropReason};
pub use template::DemoTemplate;
