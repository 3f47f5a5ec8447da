//! The host's own plugin-facing types. Every contract version converts to and from these, so
//! the rest of the host never depends on which version a plugin speaks.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Reward,
    Prompt,
    Parser,
    Search,
    /// A language model that completes the LLM-as-judge's prompts (contract 0.2.0 on).
    Judge,
}

impl PluginKind {
    /// Every kind, in display order.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Reward,
        PluginKind::Prompt,
        PluginKind::Parser,
        PluginKind::Search,
        PluginKind::Judge,
    ];

    /// The kinds a rollout needs (training and evaluation); a judge is optional.
    pub const ROLLOUT: [PluginKind; 4] = [
        PluginKind::Reward,
        PluginKind::Prompt,
        PluginKind::Parser,
        PluginKind::Search,
    ];

    /// The WIT interface a plugin of this kind exports.
    pub fn interface(self) -> &'static str {
        match self {
            PluginKind::Reward => "reward",
            PluginKind::Prompt => "prompt",
            PluginKind::Parser => "parser",
            PluginKind::Search => "search",
            PluginKind::Judge => "judge",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.interface())
    }
}

impl FromStr for PluginKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginKind::ALL
            .into_iter()
            .find(|kind| kind.interface() == s)
            .ok_or_else(|| {
                format!(
                    "unknown plugin kind `{s}` (expected reward, prompt, parser, search or judge)"
                )
            })
    }
}

/// One retrieved passage (see the contract for the `contents` convention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub id: String,
    pub title: String,
    pub text: String,
    pub score: f32,
}

impl Passage {
    /// Builds a passage from FlashRAG `contents` (`"Title"\ntext`).
    pub fn from_contents(id: impl Into<String>, contents: &str, score: f32) -> Passage {
        let (title, text) = match contents.split_once('\n') {
            Some((first, rest))
                if first.len() >= 2 && first.starts_with('"') && first.ends_with('"') =>
            {
                (&first[1..first.len() - 1], rest)
            }
            _ => ("", contents),
        };
        Passage {
            id: id.into(),
            title: title.to_string(),
            text: text.to_string(),
            score,
        }
    }

    /// The passage in FlashRAG `contents` form.
    pub fn contents(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("\"{}\"\n{}", self.title, self.text)
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Why a response ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finish {
    Eos,
    Stop(String),
    Length,
    MaxTurns,
}

impl FromStr for Finish {
    type Err = String;
    /// `eos`, `length`, `max-turns` or `stop:SEQUENCE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "eos" => Ok(Finish::Eos),
            "length" => Ok(Finish::Length),
            "max-turns" | "max_turns" => Ok(Finish::MaxTurns),
            other => match other.strip_prefix("stop:") {
                Some(sequence) => Ok(Finish::Stop(sequence.to_string())),
                None => Err(format!(
                    "unknown finish `{other}` (expected eos, length, max-turns or stop:SEQUENCE)"
                )),
            },
        }
    }
}

impl fmt::Display for Finish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finish::Eos => f.write_str("eos"),
            Finish::Stop(sequence) => write!(f, "stop:{sequence}"),
            Finish::Length => f.write_str("length"),
            Finish::MaxTurns => f.write_str("max-turns"),
        }
    }
}

/// What a reward plugin scores.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSample {
    pub question: String,
    pub golden_answers: Vec<String>,
    pub response: String,
    pub finish: Finish,
    pub num_searches: u32,
    pub metadata: Option<String>,
}

/// A reward: the total and its named components, in the plugin's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardScore {
    pub total: f64,
    pub components: Vec<(String, f64)>,
}

/// A rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Text(String),
    Chat(Vec<Message>),
}

/// What the model asked for in one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Search(String),
    Answer(String),
    Continue,
    Invalid(String),
}
