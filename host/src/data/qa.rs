//! Question-answer datasets in FlashRAG JSONL form:
//! `{"id": "…", "question": "…", "golden_answers": ["…", …], "metadata": {…}}` per line.
//! Bad lines stop the load with FILE:LINE and the reason, or are skipped and counted.

use super::corpus::OnBadRecord;
use anyhow::{Result, bail};
use serde_json::Value;
use std::path::Path;

/// One question with its accepted answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QaExample {
    pub id: String,
    pub question: String,
    pub golden_answers: Vec<String>,
    /// The line's `metadata`, passed on to the reward plugin as JSON text.
    pub metadata: Option<String>,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct QaSet {
    /// Where it came from (a path, or a name for embedded data).
    pub origin: String,
    pub examples: Vec<QaExample>,
    /// Lines skipped as bad (with `OnBadRecord::Skip`), with their first reasons.
    pub skipped: usize,
    pub skipped_reasons: Vec<String>,
}

/// Reads a dataset file.
pub fn load_qa(path: &Path, on_bad: OnBadRecord) -> Result<QaSet> {
    let text = super::text_file::read_text(path, "the dataset")?;
    parse_qa(&text, &path.display().to_string(), on_bad)
}

/// Parses dataset text; `origin` names it in errors.
pub fn parse_qa(text: &str, origin: &str, on_bad: OnBadRecord) -> Result<QaSet> {
    let mut set = QaSet {
        origin: origin.to_string(),
        examples: Vec::new(),
        skipped: 0,
        skipped_reasons: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(example) => set.examples.push(example),
            Err(reason) => {
                let message = format!("{origin}:{}: {reason}", index + 1);
                match on_bad {
                    OnBadRecord::Stop => bail!("{message}"),
                    OnBadRecord::Skip => {
                        set.skipped += 1;
                        if set.skipped_reasons.len() < 20 {
                            set.skipped_reasons.push(message);
                        }
                    }
                }
            }
        }
    }
    if set.examples.is_empty() {
        bail!("{origin} holds no questions");
    }
    Ok(set)
}

fn parse_line(line: &str) -> Result<QaExample, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("a line must be a JSON object with id, question and golden_answers")?;
    let id = match object.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("no `id` (a string or a number)".into()),
    };
    let question = object
        .get("question")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or(format!("question {id}: no `question` text"))?
        .to_string();
    let golden_answers: Vec<String> = match object.get("golden_answers") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!(
                    "question {id}: golden answer {other} is not a string"
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        _ => {
            return Err(format!(
                "question {id}: no `golden_answers` (a list of accepted answers)"
            ));
        }
    };
    if golden_answers.iter().all(|a| a.trim().is_empty()) {
        return Err(format!("question {id}: `golden_answers` is empty"));
    }
    let metadata = object
        .get("metadata")
        .filter(|m| !m.is_null())
        .map(Value::to_string);
    Ok(QaExample {
        id,
        question,
        golden_answers,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_accepted_and_invalid_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qa.jsonl");
        let line = r#"{"id": "a", "question": "Who?", "golden_answers": ["Ada"]}"#;
        std::fs::write(&path, format!("\u{feff}{line}\n{line}\n")).unwrap();
        let set = load_qa(&path, OnBadRecord::Stop).unwrap();
        assert_eq!(set.examples.len(), 2);
        assert_eq!(set.examples[0].id, "a");

        let mut bytes = format!("{line}\n").into_bytes();
        bytes.extend_from_slice(b"{\"id\": \"b\", \"question\": \"Caf\xE9?\"}\n");
        std::fs::write(&path, bytes).unwrap();
        let error = load_qa(&path, OnBadRecord::Skip).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}:2:", path.display()))
                && error.contains("not valid UTF-8"),
            "{error}"
        );
    }

    #[test]
    fn flashrag_lines_parse() {
        let text = r#"{"id": "a1", "question": "Who?", "golden_answers": ["Ada", "Ada L."], "metadata": {"hops": 2}}

{"id": 7, "question": " What? ", "golden_answers": "42"}"#;
        let set = parse_qa(text, "mem", OnBadRecord::Stop).unwrap();
        assert_eq!(set.examples.len(), 2);
        assert_eq!(set.examples[0].golden_answers, vec!["Ada", "Ada L."]);
        assert_eq!(set.examples[0].metadata.as_deref(), Some(r#"{"hops":2}"#));
        assert_eq!(set.examples[1].id, "7");
        assert_eq!(set.examples[1].question, "What?");
        assert_eq!(set.examples[1].golden_answers, vec!["42"]);
    }

    #[test]
    fn a_line_without_answers_names_its_line() {
        let text = "{\"id\": \"1\", \"question\": \"Q\", \"golden_answers\": [\"x\"]}\n{\"id\": \"2\", \"question\": \"Q2\"}\n";
        let error = parse_qa(text, "train.jsonl", OnBadRecord::Stop).unwrap_err();
        assert_eq!(
            error.to_string(),
            "train.jsonl:2: question 2: no `golden_answers` (a list of accepted answers)"
        );
        let skipped = parse_qa(text, "train.jsonl", OnBadRecord::Skip).unwrap();
        assert_eq!(skipped.examples.len(), 1);
        assert_eq!(skipped.skipped, 1);
        assert!(skipped.skipped_reasons[0].starts_with("train.jsonl:2:"));
    }

    #[test]
    fn other_bad_lines() {
        for (line, reason) in [
            ("not json", "not JSON"),
            ("[1]", "JSON object"),
            (
                "{\"question\": \"Q\", \"golden_answers\": [\"a\"]}",
                "no `id`",
            ),
            (
                "{\"id\": \"1\", \"golden_answers\": [\"a\"]}",
                "no `question`",
            ),
            (
                "{\"id\": \"1\", \"question\": \"Q\", \"golden_answers\": []}",
                "is empty",
            ),
        ] {
            let error = parse_qa(line, "d", OnBadRecord::Stop)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("d:1: ") && error.contains(reason),
                "{error}"
            );
        }
        assert!(parse_qa("\n\n", "d", OnBadRecord::Stop).is_err());
    }
}
