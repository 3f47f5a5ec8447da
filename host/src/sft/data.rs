//! The trajectories `host sft` trains on: read from JSONL files (the form of a run's
//! `trajectories/` and of `host demos`), checked line by line, and turned into token
//! sequences with the loss mask on the log-prob grid.

use crate::data::qa::QaExample;
use crate::rollout::Trajectory;
use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::path::Path;

/// One training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Prompt and response ids.
    pub ids: Vec<u32>,
    /// One value per next-token position (`ids.len() − 1`): 1 where the predicted token is a
    /// generated response token, 0 on the prompt and on observations.
    pub mask: Vec<f32>,
    /// The question, to keep held-out questions out.
    pub question: String,
}

impl SftExample {
    /// Tokens the loss is taken on.
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }
}

/// Reads trajectory files. Every line must be a trajectory whose loss mask matches its
/// response, with at least one generated token, ids inside the vocabulary and a length the
/// context holds; anything else is an error naming the file and line. A failed rollout
/// (`error` set) is skipped.
pub fn load_trajectories(
    paths: &[impl AsRef<Path>],
    vocab: usize,
    context: usize,
) -> Result<Vec<SftExample>> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = crate::data::text_file::read_text(path, "the trajectories")?;
        let before = out.len();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let place = format!("{}:{}", path.display(), index + 1);
            let trajectory: Trajectory = serde_json::from_str(line)
                .with_context(|| format!("{place}: not a trajectory record"))?;
            if trajectory.error.is_some() {
                continue;
            }
            out.push(
                check(trajectory, vocab, context).map_err(|e| anyhow::anyhow!("{place}: {e}"))?,
            );
        }
        if out.len() == before {
            bail!("{} holds no trajectories", path.display());
        }
    }
    if out.is_empty() {
        bail!("no trajectory files given (sft.data or --data)");
    }
    Ok(out)
}

fn check(t: Trajectory, vocab: usize, context: usize) -> Result<SftExample, String> {
    if t.loss_mask.len() != t.response_ids.len() {
        return Err(format!(
            "the loss mask has {} values for {} response ids",
            t.loss_mask.len(),
            t.response_ids.len()
        ));
    }
    if t.prompt_ids.is_empty() {
        return Err("the prompt has no ids".into());
    }
    if let Some(bad) = t.loss_mask.iter().find(|&&m| m > 1) {
        return Err(format!("loss mask values must be 0 or 1, found {bad}"));
    }
    if t.generated_tokens() == 0 {
        return Err("no generated token to train on (the loss mask is all 0)".into());
    }
    if let Some(id) = t
        .prompt_ids
        .iter()
        .chain(&t.response_ids)
        .find(|&&id| id as usize >= vocab)
    {
        return Err(format!(
            "token id {id} is outside the model's vocabulary of {vocab} (made with another tokenizer?)"
        ));
    }
    let length = t.prompt_ids.len() + t.response_ids.len();
    if length > context {
        return Err(format!(
            "{length} tokens do not fit the model's context of {context}"
        ));
    }
    Ok(SftExample {
        mask: t.logprob_mask(),
        ids: t.full_ids(),
        question: t.question,
    })
}

/// Drops the examples whose question is one of `held_out` (compared after answer
/// normalisation), so that validation never scores a trained question; returns how many.
pub fn drop_held_out(examples: &mut Vec<SftExample>, held_out: &[QaExample]) -> usize {
    let normal = |q: &str| qa_scoring::normalize::normalize_answer(q);
    let held: HashSet<String> = held_out.iter().map(|qa| normal(&qa.question)).collect();
    let before = examples.len();
    examples.retain(|e| !held.contains(&normal(&e.question)));
    before - examples.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(prompt: &[u32], response: &[u32], mask: &[u8]) -> String {
        serde_json::json!({
            "group": 0, "example": 0, "id": "q", "sample": 0, "question": "Where?",
            "golden_answers": ["x"], "prompt_text": "p", "prompt_ids": prompt,
            "response_ids": response, "loss_mask": mask, "segments": [], "response_text": "",
            "queries": [], "answer": null, "finish": "eos", "turns": 0, "error": null,
            "reward": 1.0, "components": [], "advantage": 0.0
        })
        .to_string()
    }

    fn file(lines: &[String]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    #[test]
    fn masks_land_on_the_log_prob_grid() {
        let f = file(&[line(&[1, 2], &[3, 4, 5], &[1, 0, 1])]);
        let examples = load_trajectories(&[f.path()], 10, 100).unwrap();
        assert_eq!(examples[0].ids, vec![1, 2, 3, 4, 5]);
        // Position 1 predicts token 3 (generated), 2 predicts 4 (observed), 3 predicts 5.
        assert_eq!(examples[0].mask, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(examples[0].trained_tokens(), 2);
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            (line(&[1], &[3, 4], &[1]), "1 values for 2"),
            (line(&[1], &[3], &[0]), "all 0"),
            (line(&[1], &[30], &[1]), "vocabulary of 10"),
            (line(&[], &[3], &[1]), "prompt has no ids"),
            (line(&[1], &[3], &[2]), "0 or 1"),
            ("{\"not\": 1}".to_string(), "not a trajectory"),
        ];
        for (bad, expected) in cases {
            let f = file(&[line(&[1], &[2], &[1]), bad]);
            let error = format!("{:#}", load_trajectories(&[f.path()], 10, 100).unwrap_err());
            let place = format!("{}:2", f.path().display());
            assert!(
                error.contains(&place) && error.contains(expected),
                "{error}"
            );
        }
        let long = file(&[line(&[1, 2, 3], &[4, 5], &[1, 1])]);
        let error = load_trajectories(&[long.path()], 10, 4)
            .unwrap_err()
            .to_string();
        assert!(error.contains("context of 4"), "{error}");
        let empty = file(&[]);
        let error = load_trajectories(&[empty.path()], 10, 100)
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no trajectories"), "{error}");
    }

    #[test]
    fn held_out_questions_are_dropped() {
        let f = file(&[line(&[1], &[2], &[1])]);
        let mut examples = load_trajectories(&[f.path()], 10, 100).unwrap();
        let held = [QaExample {
            id: "v".into(),
            question: "where".into(),
            golden_answers: vec![],
            metadata: None,
        }];
        assert_eq!(drop_held_out(&mut examples, &held), 1);
        assert!(examples.is_empty());
    }
}
