//! The wording of a demonstration: which query is derived from a question, what the
//! "model" writes before a search and before its answer, whether EOS follows, and how search
//! results are delimited in a teacher's transcript. Two are shipped (`research`,
//! `searchr1`, in `demos/templates/`); a user's own TOML file replaces them.

use crate::grpo::TrainConfig;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One dialect's demonstration wording. Text fields take `{question}`, `{entities}` (the
/// question's capitalised names, or the question when it names none), `{query}`,
/// `{entity}`, `{title}`, `{evidence}` (the sentence that holds the answer), `{quote}` (that
/// sentence cut after the answer) and `{answer}`; other braces are kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoTemplate {
    /// Forms of the first search's query, tried in order until one leads to the answer.
    pub first_queries: Vec<String>,
    /// The query of a second search, made from an entity of the first results.
    pub follow_query: String,
    /// Generated text up to the first search, ending with the parser's stop sequence.
    pub first_turn: String,
    /// Generated text of the second search.
    pub follow_turn: String,
    /// Generated text after the results that hold the answer, the answer included.
    pub answer_turn: String,
    /// Whether the end-of-sequence token follows the answer turn.
    pub end_with_eos: bool,
    /// Where an observation starts in a transcript.
    pub observation_open: String,
    /// Where it ends.
    pub observation_close: String,
}

/// The shipped templates, by name.
const SHIPPED: [(&str, &str); 2] = [
    ("research", include_str!("templates/research.toml")),
    ("searchr1", include_str!("templates/searchr1.toml")),
];

/// The values a template's placeholders take.
#[derive(Debug, Clone, Default)]
pub struct Fill<'a> {
    pub question: &'a str,
    pub entities: &'a str,
    pub query: &'a str,
    pub entity: &'a str,
    pub title: &'a str,
    pub evidence: &'a str,
    pub quote: &'a str,
    pub answer: &'a str,
}

impl DemoTemplate {
    /// The shipped template that matches a run's dialect: `searchr1` when the active parser's
    /// `dialect` setting says so, else `research`.
    pub fn default_name(config: &TrainConfig) -> &'static str {
        let parser = config
            .plugins
            .active
            .get("parser")
            .map_or("tag-parser", String::as_str);
        match config
            .plugins
            .config
            .get(parser)
            .and_then(|settings| settings.get("dialect"))
            .and_then(|value| value.as_str())
        {
            Some("searchr1") => "searchr1",
            _ => "research",
        }
    }

    /// A shipped template by name (`research`, `searchr1`) or a TOML file.
    pub fn load(name_or_path: &str) -> Result<DemoTemplate> {
        if let Some((name, text)) = SHIPPED.iter().find(|(name, _)| *name == name_or_path) {
            return DemoTemplate::parse(text, &format!("the shipped `{name}` template"));
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            bail!(
                "no demonstration template `{name_or_path}`: name a shipped one (research, \
                 searchr1) or a TOML file"
            );
        }
        let text = crate::data::text_file::read_text(path, "the demonstration template")?;
        DemoTemplate::parse(&text, &path.display().to_string())
    }

    /// Parses template TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<DemoTemplate> {
        let template: DemoTemplate =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let required = [
            ("first_turn", &template.first_turn, "{query}"),
            ("follow_turn", &template.follow_turn, "{query}"),
            ("answer_turn", &template.answer_turn, "{answer}"),
        ];
        for (key, value, placeholder) in required {
            if !value.contains(placeholder) {
                bail!("{origin}: `{key}` must contain {placeholder}");
            }
        }
        if template.first_queries.is_empty() {
            bail!("{origin}: `first_queries` needs at least one form");
        }
        if template.observation_open.is_empty() || template.observation_close.is_empty() {
            bail!("{origin}: `observation_open` and `observation_close` must not be empty");
        }
        Ok(template)
    }
}

/// `text` with its placeholders replaced.
pub fn fill(text: &str, values: &Fill) -> String {
    // One pass, so that a value holding a placeholder's name is not replaced again.
    let names: [(&str, &str); 8] = [
        ("{question}", values.question),
        ("{entities}", values.entities),
        ("{query}", values.query),
        ("{entity}", values.entity),
        ("{title}", values.title),
        ("{evidence}", values.evidence),
        ("{quote}", values.quote),
        ("{answer}", values.answer),
    ];
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    'scan: while let Some(open) = rest.find('{') {
        for (name, value) in names {
            if rest[open..].starts_with(name) {
                out.push_str(&rest[..open]);
                out.push_str(value);
                rest = &rest[open + name.len()..];
                continue 'scan;
            }
        }
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_once_and_other_braces_stay() {
        let values = Fill {
            answer: "{query}",
            query: "q",
            ..Fill::default()
        };
        assert_eq!(
            fill(r"\boxed{{answer}} <search> {query} </search> {x}", &values),
            r"\boxed{{query}} <search> q </search> {x}"
        );
    }

    #[test]
    fn shipped_templates_load_and_bad_ones_are_refused() {
        let research = DemoTemplate::load("research").unwrap();
        assert!(research.end_with_eos);
        let answer = fill(
            &research.answer_turn,
            &Fill {
                answer: "Paris",
                ..Fill::default()
            },
        );
        assert!(answer.contains(r"\boxed{Paris}"), "{answer}");
        assert!(!DemoTemplate::load("searchr1").unwrap().end_with_eos);
        let error = DemoTemplate::load("nope").unwrap_err().to_string();
        assert!(error.contains("research, searchr1"), "{error}");
        let text = include_str!("templates/research.toml").replace("{answer}", "X");
        let error = DemoTemplate::parse(&text, "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("mine.toml") && error.contains("answer_turn"),
            "{error}"
        );
        let text = include_str!("templates/research.toml").replace(
            r#"first_queries = ["{question}", "{entities}"]"#,
            "first_queries = []",
        );
        let error = DemoTemplate::parse(&text, "q.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("first_queries"), "{error}");
        let error = DemoTemplate::parse("first_queries = 1", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("t.toml"), "{error}");
    }
}
