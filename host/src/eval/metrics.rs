//! Answer metrics (FlashRAG's): exact match, token F1 / precision / recall, and acc (the
//! normalised golden answer is a substring of the normalised prediction), best over the
//! golden answers; and their means over a dataset.

use crate::rollout::Trajectory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Scores of one prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerScores {
    pub em: f64,
    pub f1: f64,
    pub acc: f64,
    pub precision: f64,
    pub recall: f64,
}

/// Scores `prediction` against `golden_answers`.
pub fn score_answer(prediction: &str, golden_answers: &[String]) -> AnswerScores {
    let tokens = qa_scoring::metrics::token_scores(prediction, golden_answers);
    AnswerScores {
        em: qa_scoring::metrics::exact_match(prediction, golden_answers),
        f1: tokens.f1,
        acc: qa_scoring::metrics::substring_match(prediction, golden_answers),
        precision: tokens.precision,
        recall: tokens.recall,
    }
}

/// One evaluated question: its rollout and the scores of its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    #[serde(flatten)]
    pub trajectory: Trajectory,
    pub scores: AnswerScores,
    /// The LLM judge's decision and raw outputs, when the evaluation used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<super::judge::JudgeOutcome>,
}

impl EvalRecord {
    /// Scores a rollout's answer (no answer scores as an empty prediction).
    pub fn new(trajectory: Trajectory) -> EvalRecord {
        let prediction = trajectory.answer.clone().unwrap_or_default();
        let scores = score_answer(&prediction, &trajectory.golden_answers);
        EvalRecord {
            trajectory,
            scores,
            judge: None,
        }
    }
}

/// Means over a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetReport {
    pub dataset: String,
    pub questions: usize,
    pub em: f64,
    pub f1: f64,
    pub acc: f64,
    pub precision: f64,
    pub recall: f64,
    pub reward: f64,
    pub searches: f64,
    pub response_tokens: f64,
    /// Questions with an answer the parser could read.
    pub answered: usize,
    pub finish: BTreeMap<String, usize>,
    pub plugin_errors: usize,
    /// Fraction the LLM judge found correct (records with a judge outcome only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_acc: Option<f64>,
    /// Judge outputs that held no readable verdict.
    #[serde(default)]
    pub judge_unparsed: usize,
}

/// Aggregates the records of one dataset.
pub fn summarise(dataset: &str, records: &[EvalRecord]) -> DatasetReport {
    let n = records.len().max(1) as f64;
    let mut report = DatasetReport {
        dataset: dataset.to_string(),
        questions: records.len(),
        ..DatasetReport::default()
    };
    for r in records {
        let t = &r.trajectory;
        report.em += r.scores.em / n;
        report.f1 += r.scores.f1 / n;
        report.acc += r.scores.acc / n;
        report.precision += r.scores.precision / n;
        report.recall += r.scores.recall / n;
        report.reward += t.reward.unwrap_or(0.0) / n;
        report.searches += t.queries.len() as f64 / n;
        report.response_tokens += t.response_ids.len() as f64 / n;
        report.answered += usize::from(t.answer.is_some());
        let finish = match t.finish.split_once(':') {
            Some((kind, _)) => kind.to_string(),
            None => t.finish.clone(),
        };
        *report.finish.entry(finish).or_default() += 1;
        report.plugin_errors += usize::from(t.error.is_some());
    }
    let judged: Vec<&super::judge::JudgeOutcome> =
        records.iter().filter_map(|r| r.judge.as_ref()).collect();
    if !judged.is_empty() {
        let correct = judged.iter().filter(|j| j.correct).count();
        report.judge_acc = Some(correct as f64 / judged.len() as f64);
        report.judge_unparsed = judged.iter().map(|j| j.unparsed()).sum();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(answers: &[&str]) -> Vec<String> {
        answers.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn hand_computed_scores() {
        let s = score_answer("The Eiffel Tower!", &golden(&["eiffel tower"]));
        assert_eq!((s.em, s.f1, s.acc), (1.0, 1.0, 1.0));
        // prediction tokens {paris, france}, golden {paris}: precision 1/2, recall 1, F1 2/3.
        let s = score_answer("Paris, France", &golden(&["Paris"]));
        assert_eq!((s.em, s.acc), (0.0, 1.0));
        assert!((s.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((s.precision, s.recall), (0.5, 1.0));
        // Best over golden answers.
        let s = score_answer("new york city", &golden(&["Boston", "New York"]));
        assert!((s.f1 - 0.8).abs() < 1e-12);
        assert_eq!(s.acc, 1.0);
    }

    #[test]
    fn unicode_and_yes_no() {
        let s = score_answer("Zürich", &golden(&["zürich"]));
        assert_eq!((s.em, s.f1), (1.0, 1.0));
        let s = score_answer("São Paulo", &golden(&["Sao Paulo"]));
        assert_eq!(s.em, 0.0);
        assert!((s.f1 - 0.5).abs() < 1e-12);
        // yes/no: a different yes/no answer scores 0 even with overlapping tokens.
        let s = score_answer("yes", &golden(&["no"]));
        assert_eq!((s.em, s.f1, s.acc), (0.0, 0.0, 0.0));
        let s = score_answer("no", &golden(&["No."]));
        assert_eq!((s.em, s.f1), (1.0, 1.0));
        let s = score_answer("", &golden(&["x"]));
        assert_eq!(s, AnswerScores::default());
    }
}
