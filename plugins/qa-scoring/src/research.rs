//! ReSearch (Agent-RL/ReSearch): format check, `\boxed{}` answer extraction, F1 reward, and
//! the query rule of its rollout.

use crate::metrics::f1;
use crate::text::py_strip;

/// Why a response fails the ReSearch format check (`validate_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    ThinkNotPaired,
    ThinkMissing,
    AnswerNotSingle,
    SearchResultIncomplete,
    SearchResultOrder,
    AnswerOrder,
    BoxedMissing,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FormatError::ThinkNotPaired => "<think> </think> not paired",
            FormatError::ThinkMissing => "<think> or </think> not found",
            FormatError::AnswerNotSingle => "<answer> or </answer> not found exactly once",
            FormatError::SearchResultIncomplete => "search/result tags are incomplete",
            FormatError::SearchResultOrder => "search/result tags are in the wrong order",
            FormatError::AnswerOrder => "<answer> must come before </answer>",
            FormatError::BoxedMissing => "answer is missing \\boxed{} format",
        })
    }
}

/// The reference `validate_format` on the response text (observations included).
pub fn validate_format(text: &str) -> Result<(), FormatError> {
    let think_open = text.matches("<think>").count();
    let think_close = text.matches("</think>").count();
    if think_open != think_close {
        return Err(FormatError::ThinkNotPaired);
    }
    if think_open == 0 {
        return Err(FormatError::ThinkMissing);
    }
    if text.matches("<answer>").count() != 1 || text.matches("</answer>").count() != 1 {
        return Err(FormatError::AnswerNotSingle);
    }
    let mut pos = 0;
    while let Some(search) = find_from(text, "<search>", pos) {
        let result = find_from(text, "<result>", search);
        let search_end = find_from(text, "</search>", search);
        let (Some(result), Some(search_end)) = (result, search_end) else {
            return Err(FormatError::SearchResultIncomplete);
        };
        let Some(result_end) = find_from(text, "</result>", result) else {
            return Err(FormatError::SearchResultIncomplete);
        };
        if !(search < search_end && search_end < result && result < result_end) {
            return Err(FormatError::SearchResultOrder);
        }
        pos = result_end;
    }
    // Both tags occur exactly once here.
    let answer_start = text.find("<answer>").unwrap_or(0);
    let answer_end = text.find("</answer>").unwrap_or(0);
    if answer_start > answer_end {
        return Err(FormatError::AnswerOrder);
    }
    let content = &text[answer_start..answer_end];
    if !content.contains("\\boxed{") || !content.contains('}') {
        return Err(FormatError::BoxedMissing);
    }
    Ok(())
}

fn find_from(text: &str, needle: &str, from: usize) -> Option<usize> {
    text.get(from..)?.find(needle).map(|i| i + from)
}

/// The text of the first `<answer>…</answer>` (`re.search` with DOTALL on the stripped text).
pub fn answer_span(text: &str) -> Option<&str> {
    let text = py_strip(text);
    let start = text.find("<answer>")? + "<answer>".len();
    let end = text[start..].find("</answer>")? + start;
    Some(&text[start..end])
}

/// The MATH-style `last_boxed_only_string`: the last `\boxed{…}` (braces matched), or, when
/// the text has `\boxed ` with a space, `\boxed ` and what follows its last occurrence up to
/// the first `$`. Falls back to `\fbox`. None when nothing is found or braces never close.
pub fn last_boxed_only_string(text: &str) -> Option<String> {
    if let Some(idx) = text.rfind("\\boxed ") {
        let after = &text[idx + "\\boxed ".len()..];
        let until_dollar = after.split('$').next().unwrap_or("");
        return Some(format!("\\boxed {until_dollar}"));
    }
    let idx = text.rfind("\\boxed").or_else(|| text.rfind("\\fbox"))?;
    let mut open = 0i64;
    for (offset, byte) in text.as_bytes()[idx..].iter().enumerate() {
        match byte {
            b'{' => open += 1,
            b'}' => {
                open -= 1;
                if open == 0 {
                    return Some(text[idx..idx + offset + 1].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// The reference `remove_boxed`: strips `\boxed ` or `\boxed{` … `}`; None where the Python
/// code's assertion fails (for example on `\fbox{…}`).
pub fn remove_boxed(boxed: &str) -> Option<&str> {
    if boxed.contains("\\boxed ") {
        return boxed.strip_prefix("\\boxed ");
    }
    boxed.strip_prefix("\\boxed{")?.strip_suffix('}')
}

/// The boxed answer inside an answer span, as the reference extracts it.
pub fn boxed_answer(span: &str) -> Option<String> {
    let boxed = last_boxed_only_string(span)?;
    remove_boxed(&boxed).map(str::to_string)
}

/// Result of the ReSearch reward on one response.
#[derive(Debug, Clone, PartialEq)]
pub struct ResearchScore {
    /// The reward: 0 (bad format, over length, no boxed answer), F1 when F1 > 0, else 0.1.
    pub total: f64,
    /// F1 of the extracted boxed answer (0 when none could be extracted), whatever the gates.
    pub answer_f1: f64,
    /// Whether the format check passed.
    pub format_ok: bool,
    /// Why the total is what it is (for logs and reward authors).
    pub reason: String,
}

/// The response as the ReSearch reference reads it, with whether it then ends with EOS. The
/// reference finds the response inside the decoded prompt + response by the chat template's
/// assistant marker (the prompt ends with it) and takes what follows up to the next marker: a
/// response that contains the marker (a model starting a new turn) is cut there, and the cut
/// part does not end with EOS. Without a marker the response is read whole.
pub fn as_reference_reads<'a>(
    response: &'a str,
    ended_with_eos: bool,
    assistant_marker: Option<&str>,
) -> (&'a str, bool) {
    match assistant_marker
        .filter(|marker| !marker.is_empty())
        .and_then(|marker| response.find(marker))
    {
        Some(at) => (&response[..at], false),
        None => (response, ended_with_eos),
    }
}

/// The ReSearch reward (`compute_score`): format check, EOS check, boxed answer, F1 with a
/// 0.1 floor for well-formed wrong answers.
pub fn score(response: &str, ended_with_eos: bool, golden_answers: &[String]) -> ResearchScore {
    let format = validate_format(response);
    let boxed = answer_span(response).and_then(boxed_answer);
    let answer_f1 = boxed.as_deref().map_or(0.0, |a| f1(a, golden_answers));
    let result = |total: f64, reason: String| ResearchScore {
        total,
        answer_f1,
        format_ok: format.is_ok(),
        reason,
    };
    if let Err(error) = format {
        return result(0.0, format!("bad format: {error}"));
    }
    if !ended_with_eos {
        return result(0.0, "over length".to_string());
    }
    let Some(answer) = answer_span(response) else {
        return result(0.0, "cannot extract answer".to_string());
    };
    if boxed_answer(answer).is_none() {
        return result(0.0, "find box error".to_string());
    }
    if answer_f1 > 0.0 {
        result(answer_f1, format!("correct answer, f1 {answer_f1}"))
    } else {
        result(0.1, "wrong answer but good format".to_string())
    }
}

/// The query of a turn that ended with `</search>`: the text between the last `<search>` and
/// the last `</search>`, stripped; empty when the turn has no `<search>` before it.
pub fn extract_query(turn: &str) -> Option<String> {
    let end = turn.rfind("</search>")?;
    let query = match turn[..end].rfind("<search>") {
        Some(start) => py_strip(&turn[start + "<search>".len()..end]),
        None => "",
    };
    Some(query.to_string())
}

/// The observation ReSearch appends after a search: ` <result>\n` + the passages' contents
/// joined by blank lines (stripped) + `\n</result>`.
pub fn format_results<'a>(contents: impl IntoIterator<Item = &'a str>) -> String {
    let joined = contents.into_iter().collect::<Vec<_>>().join("\n\n");
    format!(" <result>\n{}\n</result>", py_strip(&joined))
}
