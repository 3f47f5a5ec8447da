//! ReSearch prompts. Config `mode`: `instruct` (default; system message + the question as the
//! user message, rendered with the model's chat template) or `base` (one plain-text prompt).
//! Config `system` replaces the paper's system message in `instruct` mode (a small model that
//! cannot read instructions learns faster from a short one).

use research_sdk::config;
use research_sdk::prompt::{Message, Prompt, Rendered};

const BASE: &str = "A conversation between User and Assistant. The user asks a question, and the assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. During thinking, the assistant can invoke the wikipedia search tool to search for fact information about specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags respectively, and the search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For example, <think> This is the reasoning process. </think> <search> search query here </search> <result> search result here </result> <think> This is the reasoning process. </think> <answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format. User: {prompt}. Assistant:";

const SYSTEM: &str = "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia search tool. Given a question, you need to first think about the reasoning process in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search for fact information about specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags respectively, and the search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For example, <think> This is the reasoning process. </think> <search> search query here </search> <result> search result here </result> <think> This is the reasoning process. </think> <answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format.";

/// `base`: one plain-text prompt; `instruct`: this system message and the question.
enum ResearchPrompt {
    Base,
    Instruct { system: String },
}

impl Prompt for ResearchPrompt {
    fn new() -> Result<Self, String> {
        Ok(
            match config::get_choice("mode", &["instruct", "base"], "instruct")?.as_str() {
                "base" => ResearchPrompt::Base,
                _ => ResearchPrompt::Instruct {
                    system: config::get_or("system", SYSTEM),
                },
            },
        )
    }

    fn render(&self, question: String) -> Result<Rendered, String> {
        Ok(match self {
            ResearchPrompt::Base => Rendered::Text(BASE.replacen("{prompt}", &question, 1)),
            ResearchPrompt::Instruct { system } => Rendered::Chat(vec![
                Message::system(system.clone()),
                Message::user(question),
            ]),
        })
    }
}

research_sdk::export_prompt!(ResearchPrompt);
