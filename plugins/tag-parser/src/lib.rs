//! The tag grammar of a dialect, chosen by config `dialect`:
//!
//! - `research` (default): a turn ends at `</search>`; the query is the text between the last
//!   `<search>` and `</search>` (empty when there is none); results are shown as
//!   ` <result>\n…\n</result>`; at end of sequence the answer is the boxed answer.
//! - `searchr1`: a turn ends at `</search>` or `</answer>`; the first
//!   `<search>…</search>` or `<answer>…</answer>` is the action; anything else is invalid and
//!   gets Search-R1's feedback text; results are shown as `<information>Doc 1(Title: …) …`.

use qa_scoring::{research, searchr1};
use research_sdk::config;
use research_sdk::parser::{Action, Parser, Passage};

/// The dialect of the `dialect` setting.
enum TagParser {
    Research,
    SearchR1,
}

impl Parser for TagParser {
    fn new() -> Result<Self, String> {
        match config::get_choice("dialect", &["research", "searchr1"], "research")?.as_str() {
            "searchr1" => Ok(TagParser::SearchR1),
            _ => Ok(TagParser::Research),
        }
    }

    fn stop_sequences(&self) -> Vec<String> {
        match self {
            TagParser::Research => vec!["</search>".to_string()],
            TagParser::SearchR1 => vec!["</search>".to_string(), "</answer>".to_string()],
        }
    }

    fn parse(&self, turn: String) -> Action {
        match self {
            TagParser::Research => {
                if let Some(query) = research::extract_query(&turn) {
                    return Action::Search(query);
                }
                match research::answer_span(&turn) {
                    Some(span) => Action::Answer(
                        research::boxed_answer(span)
                            .unwrap_or_else(|| qa_scoring::text::py_strip(span).to_string()),
                    ),
                    None => Action::Continue,
                }
            }
            TagParser::SearchR1 => match searchr1::parse_turn(&turn) {
                searchr1::TurnAction::Search(query) => Action::Search(query),
                searchr1::TurnAction::Answer(answer) => Action::Answer(answer),
                searchr1::TurnAction::Invalid => {
                    Action::Invalid(searchr1::INVALID_ACTION_FEEDBACK.to_string())
                }
            },
        }
    }

    fn format_results(&self, _query: String, passages: Vec<Passage>) -> String {
        let contents: Vec<String> = passages.iter().map(Passage::contents).collect();
        let contents = contents.iter().map(String::as_str);
        match self {
            TagParser::Research => research::format_results(contents),
            TagParser::SearchR1 => searchr1::format_results(contents),
        }
    }
}

research_sdk::export_parser!(TagParser);
