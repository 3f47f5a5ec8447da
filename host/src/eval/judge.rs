//! LLM-as-judge: a judge model decides whether a prediction means the same as a golden answer,
//! answering with REFERENCE.md's JSON verdict `{"rationale", "judgement": "correct"|"incorrect"}`.
//!
//! The judge's raw outputs are kept in every record. A prediction is judged against each golden
//! answer and counts as correct when any verdict is `correct`; a question without an answer is
//! incorrect without a call; an output that holds no readable verdict counts as incorrect and
//! is counted as `unparsed`.

use crate::model::{Engine, LoadedModel, SamplingParams, StopRules};
use crate::plugins::{JudgePlugin, Message};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Produces one completion per chat prompt (greedy).
pub trait JudgeBackend {
    /// A name for reports and settings.
    fn name(&self) -> String;
    /// Completes every prompt, in order.
    fn complete(&self, prompts: &[Vec<Message>]) -> Result<Vec<String>>;
}

/// A judge model the host runs itself (any model folder it can load).
pub struct ModelJudge {
    pub model: LoadedModel,
    /// Tokens per verdict at most.
    pub max_new_tokens: usize,
    /// Prompts decoded together.
    pub batch: usize,
}

impl ModelJudge {
    fn render(&self, messages: &[Message]) -> Result<String> {
        if self.model.tokenizer.has_chat_template() {
            self.model.tokenizer.apply_chat_template(messages, true)
        } else {
            let mut text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
            text.push("");
            Ok(text.join("\n\n"))
        }
    }
}

impl JudgeBackend for ModelJudge {
    fn name(&self) -> String {
        self.model.dir.display().to_string()
    }

    fn complete(&self, prompts: &[Vec<Message>]) -> Result<Vec<String>> {
        let mut outputs = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(self.batch.max(1)) {
            let params = SamplingParams {
                greedy: true,
                ..SamplingParams::default()
            };
            let rules = StopRules {
                stop_sequences: Vec::new(),
                eos_ids: self.model.tokenizer.eos_ids().to_vec(),
                max_new_tokens: self.max_new_tokens,
            };
            let mut engine = Engine::new(&self.model.policy, &self.model.tokenizer, params, rules);
            for messages in chunk {
                let ids = self.model.tokenizer.encode(&self.render(messages)?)?;
                engine.add_prompt(&ids, 1, 0)?;
            }
            engine.run().context("the judge model failed to generate")?;
            for sequence in engine.sequences() {
                outputs.push(self.model.tokenizer.decode(sequence.response())?);
            }
        }
        Ok(outputs)
    }
}

/// A judge behind a judge plugin (an OpenAI-compatible endpoint through `openai-judge`, say).
pub struct PluginJudge {
    pub plugin: JudgePlugin,
    /// Tokens per verdict at most.
    pub max_tokens: u32,
    /// Prompts per plugin call. Each call runs under the plugin's deadline, so a remote
    /// endpoint is best asked one prompt per call (`1`).
    pub batch: usize,
}

impl JudgeBackend for PluginJudge {
    fn name(&self) -> String {
        format!("plugin {}", self.plugin.name())
    }

    fn complete(&self, prompts: &[Vec<Message>]) -> Result<Vec<String>> {
        let mut outputs = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(self.batch.max(1)) {
            outputs.extend(self.plugin.complete(chunk, self.max_tokens)?);
        }
        Ok(outputs)
    }
}

/// The judge's instructions (our wording of the reference's judging rule).
pub const JUDGE_SYSTEM: &str = "You grade answers to questions. Decide whether the predicted \
answer means the same as the golden answer for this question. Ignore differences of case, \
punctuation, articles, word order, abbreviations and extra words that do not change the \
meaning; names, dates and numbers must agree. Reply with a JSON object only, of the form \
{\"rationale\": \"<one short sentence>\", \"judgement\": \"<correct or incorrect>\"}.";

/// The chat prompt for one (question, golden answer, prediction).
pub fn judge_messages(question: &str, golden: &str, prediction: &str) -> Vec<Message> {
    vec![
        Message {
            role: "system".into(),
            content: JUDGE_SYSTEM.into(),
        },
        Message {
            role: "user".into(),
            content: format!(
                "Question: {question}\nGolden answer: {golden}\nPredicted answer: {prediction}"
            ),
        },
    ]
}

/// A verdict read from a judge's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub correct: bool,
    pub rationale: String,
}

/// Reads the last JSON object with a `judgement` of `correct` or `incorrect` (any case) from
/// `output` (code fences and text around it are tolerated): a model that drafts or echoes a
/// verdict before its final one is judged by the final one. `None` when there is none.
pub fn parse_verdict(output: &str) -> Option<Verdict> {
    let mut last = None;
    let mut start = 0;
    while let Some(offset) = output[start..].find('{') {
        let open = start + offset;
        let mut stream =
            serde_json::Deserializer::from_str(&output[open..]).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = stream.next() {
            let judgement = value
                .get("judgement")
                .or_else(|| value.get("judgment"))
                .and_then(|j| j.as_str())
                .map(|j| j.trim().to_ascii_lowercase());
            let correct = match judgement.as_deref() {
                Some("correct") => Some(true),
                Some("incorrect") => Some(false),
                _ => None,
            };
            if let Some(correct) = correct {
                let rationale = value
                    .get("rationale")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default()
                    .to_string();
                last = Some(Verdict { correct, rationale });
            }
        }
        start = open + 1;
    }
    last
}

/// One call of the judge: the golden answer it compared with and what it said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeCall {
    pub golden: String,
    /// The judge's raw output.
    pub output: String,
    /// `correct` / `incorrect`, or none when the output held no verdict.
    pub judgement: Option<String>,
    pub rationale: Option<String>,
}

/// The judge's decision on one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeOutcome {
    pub correct: bool,
    pub calls: Vec<JudgeCall>,
    /// Why no call was made (no answer), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl JudgeOutcome {
    /// Calls whose output held no verdict.
    pub fn unparsed(&self) -> usize {
        self.calls.iter().filter(|c| c.judgement.is_none()).count()
    }
}

/// What is judged: the question, its golden answers and the prediction (none: no answer).
pub struct JudgeItem<'a> {
    pub question: &'a str,
    pub golden_answers: &'a [String],
    pub prediction: Option<&'a str>,
}

/// Judges every item (all its golden answers in one batch of calls).
pub fn judge_all(backend: &dyn JudgeBackend, items: &[JudgeItem]) -> Result<Vec<JudgeOutcome>> {
    let mut prompts = Vec::new();
    let mut owners = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(prediction) = item.prediction.filter(|p| !p.trim().is_empty()) else {
            continue;
        };
        for golden in item.golden_answers {
            prompts.push(judge_messages(item.question, golden, prediction));
            owners.push((index, golden.clone()));
        }
    }
    let outputs = if prompts.is_empty() {
        Vec::new()
    } else {
        backend.complete(&prompts)?
    };
    anyhow::ensure!(
        outputs.len() == prompts.len(),
        "the judge returned {} outputs for {} prompts",
        outputs.len(),
        prompts.len()
    );
    let mut outcomes: Vec<JudgeOutcome> = items
        .iter()
        .map(|item| JudgeOutcome {
            correct: false,
            calls: Vec::new(),
            skipped: item
                .prediction
                .filter(|p| !p.trim().is_empty())
                .is_none()
                .then(|| "no answer".to_string()),
        })
        .collect();
    for ((index, golden), output) in owners.into_iter().zip(outputs) {
        let verdict = parse_verdict(&output);
        let outcome = &mut outcomes[index];
        outcome.correct |= verdict.as_ref().is_some_and(|v| v.correct);
        outcome.calls.push(JudgeCall {
            golden,
            judgement: verdict
                .as_ref()
                .map(|v| if v.correct { "correct" } else { "incorrect" }.to_string()),
            rationale: verdict.map(|v| v.rationale),
            output,
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn verdicts_are_read_from_json_anywhere_in_the_output() {
        let v = parse_verdict(r#"{"rationale": "Same person.", "judgement": "correct"}"#).unwrap();
        assert!(v.correct);
        assert_eq!(v.rationale, "Same person.");
        let fenced = "Sure!\n```json\n{\"rationale\": \"x\", \"judgement\": \"Incorrect\"}\n```";
        assert!(!parse_verdict(fenced).unwrap().correct);
        // An object without a verdict is skipped; braces in text are tolerated.
        let two = "{\"note\": 1} then {weird} and {\"judgment\": \"correct\"}";
        assert!(parse_verdict(two).unwrap().correct);
        // A draft (or the prompt's own example, echoed) does not count: the last verdict does.
        let draft = "{\"judgement\": \"correct\"} on reflection {\"judgement\": \"incorrect\"}";
        assert!(!parse_verdict(draft).unwrap().correct);
        // Echoing the instructions gives no verdict at all.
        assert_eq!(parse_verdict(JUDGE_SYSTEM), None);
        for bad in [
            "",
            "correct",
            "{\"judgement\": \"maybe\"}",
            "{\"judgement\": true}",
            "{\"rationale\": \"cut",
        ] {
            assert_eq!(parse_verdict(bad), None, "{bad}");
        }
    }

    /// Answers from a script, recording the prompts it saw.
    struct Scripted {
        outputs: Vec<&'static str>,
        seen: RefCell<Vec<Vec<Message>>>,
    }

    impl JudgeBackend for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        fn complete(&self, prompts: &[Vec<Message>]) -> Result<Vec<String>> {
            self.seen.borrow_mut().extend(prompts.iter().cloned());
            Ok(self.outputs[..prompts.len()]
                .iter()
                .map(|s| s.to_string())
                .collect())
        }
    }

    #[test]
    fn any_correct_verdict_makes_the_prediction_correct_and_outputs_are_kept() {
        let backend = Scripted {
            outputs: vec![
                r#"{"rationale": "different", "judgement": "incorrect"}"#,
                r#"{"rationale": "alias", "judgement": "correct"}"#,
                "I think so",
            ],
            seen: RefCell::new(Vec::new()),
        };
        let golden_a = vec!["Leo Tolstoy".to_string(), "Tolstoy".to_string()];
        let golden_b = vec!["1912".to_string()];
        let items = [
            JudgeItem {
                question: "Who wrote War and Peace?",
                golden_answers: &golden_a,
                prediction: Some("Lev Tolstoi"),
            },
            JudgeItem {
                question: "When did the Titanic sink?",
                golden_answers: &golden_b,
                prediction: Some("April 1912"),
            },
            JudgeItem {
                question: "When did the Titanic sink?",
                golden_answers: &golden_b,
                prediction: None,
            },
        ];
        let outcomes = judge_all(&backend, &items).unwrap();
        assert!(outcomes[0].correct);
        assert_eq!(outcomes[0].calls.len(), 2);
        assert_eq!(outcomes[0].calls[1].rationale.as_deref(), Some("alias"));
        assert!(!outcomes[1].correct, "an unreadable verdict is not correct");
        assert_eq!(outcomes[1].unparsed(), 1);
        assert_eq!(outcomes[1].calls[0].output, "I think so");
        assert!(!outcomes[2].correct);
        assert_eq!(outcomes[2].skipped.as_deref(), Some("no answer"));
        assert!(outcomes[2].calls.is_empty());
        let seen = backend.seen.borrow();
        assert_eq!(seen.len(), 3, "no call for the missing answer");
        assert_eq!(
            seen[0][1].content,
            "Question: Who wrote War and Peace?\nGolden answer: Leo Tolstoy\nPredicted answer: Lev Tolstoi"
        );
    }
}
