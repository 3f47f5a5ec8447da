//! The Search-R1 prompt: one user message; the question is trimmed and gets a `?` when it
//! has none.

use research_sdk::prompt::{Message, Prompt, Rendered};

const TEMPLATE: &str = "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. You can search as many times as your want. If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}";

struct SearchR1Prompt;

impl Prompt for SearchR1Prompt {
    fn new() -> Result<Self, String> {
        Ok(SearchR1Prompt)
    }

    fn render(&self, question: String) -> Result<Rendered, String> {
        let mut question = question.trim().to_string();
        if !question.ends_with('?') {
            question.push('?');
        }
        let content = TEMPLATE.replacen("{question}", &question, 1);
        Ok(Rendered::Chat(vec![Message::user(content)]))
    }
}

research_sdk::export_prompt!(SearchR1Prompt);
