//! Evaluation: answer metrics and the `host eval` loop over the training rollout engine.

pub mod judge;
pub mod metrics;
pub mod runner;

pub use metrics::{AnswerScores, DatasetReport, EvalRecord, score_answer, summarise};
pub use runner::{EvalOptions, evaluate};
