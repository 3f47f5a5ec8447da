//! When a sampled sequence stops: at an EOS id, at one of the parser's stop sequences (matched
//! on the decoded text of the current turn), or when its token budget or the model's context
//! runs out. The in-process engine and the inference-server clients apply the same rules to
//! every token they record, so a turn ends at the same token whoever sampled it.

use super::tokenizer::ModelTokenizer;
use anyhow::Result;

/// Why a sequence stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The turn ended with this stop sequence; the sequence can be resumed.
    Sequence(String),
    /// An end-of-sequence token was sampled.
    Eos,
    /// The sampled-token budget (or the model's context) ran out.
    Length,
}

/// Where a sequence stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqState {
    Running,
    /// Stopped; waiting for the caller (`append` resumes, `finish` ends).
    Stopped(Stop),
    Finished(Stop),
}

/// Stop rules shared by the batch.
#[derive(Debug, Clone, Default)]
pub struct StopRules {
    pub stop_sequences: Vec<String>,
    pub eos_ids: Vec<u32>,
    /// Sampled tokens per sequence (appended tokens do not count).
    pub max_new_tokens: usize,
}

/// What one sequence holds, as the stop rules read it.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Prompt, sampled and appended tokens, in order.
    pub tokens: &'a [u32],
    pub prompt_len: usize,
    /// Where the current turn starts in `tokens`.
    pub turn_start: usize,
    /// Tokens sampled so far (appended ones do not count).
    pub generated: usize,
}

/// The stop rules with what applying them needs: the tokenizer (to read the turn's text), the
/// model's context and the response budget.
#[derive(Clone)]
pub struct StopCheck<'m> {
    rules: StopRules,
    tokenizer: &'m ModelTokenizer,
    /// Positions of the model's context.
    max_positions: usize,
    /// Response tokens (sampled and appended) a sequence may hold; `None`: no limit.
    response_budget: Option<usize>,
    /// Longest stop sequence, in characters; bounds the tail decoded for matching.
    longest_stop: usize,
}

impl<'m> StopCheck<'m> {
    pub fn new(rules: StopRules, tokenizer: &'m ModelTokenizer, max_positions: usize) -> Self {
        let longest_stop = rules
            .stop_sequences
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
        StopCheck {
            rules,
            tokenizer,
            max_positions,
            response_budget: None,
            longest_stop,
        }
    }

    /// Limits every sequence's response (sampled and appended tokens together) to `tokens`.
    pub fn set_response_budget(&mut self, tokens: usize) {
        self.response_budget = Some(tokens);
    }

    pub fn rules(&self) -> &StopRules {
        &self.rules
    }

    /// Whether a response of `response_len` tokens fills the response budget.
    pub fn fills_budget(&self, response_len: usize) -> bool {
        self.response_budget
            .is_some_and(|budget| response_len >= budget)
    }

    /// Tokens the sequence may still sample before a length rule ends it (a sequence resumed
    /// with no room left is finished instead, so a running one has at least 1).
    pub fn room(&self, progress: &Progress) -> usize {
        let len = progress.tokens.len();
        let mut room = self
            .rules
            .max_new_tokens
            .saturating_sub(progress.generated)
            .min(self.max_positions.saturating_sub(len));
        if let Some(budget) = self.response_budget {
            room = room.min(budget.saturating_sub(len - progress.prompt_len));
        }
        room
    }

    /// The state a sequence enters after sampling the last token of `progress.tokens`;
    /// `None`: it goes on.
    pub fn after_sampled(&self, progress: &Progress) -> Result<Option<SeqState>> {
        let Some(&token) = progress.tokens.last() else {
            return Ok(None);
        };
        if self.rules.eos_ids.contains(&token) {
            return Ok(Some(SeqState::Finished(Stop::Eos)));
        }
        if let Some(sequence) = self.matched_stop(progress)? {
            return Ok(Some(SeqState::Stopped(Stop::Sequence(sequence))));
        }
        Ok((self.room(progress) == 0).then_some(SeqState::Finished(Stop::Length)))
    }

    /// The stop sequence that the current turn's text now contains, if any.
    fn matched_stop(&self, progress: &Progress) -> Result<Option<String>> {
        if self.rules.stop_sequences.is_empty() {
            return Ok(None);
        }
        // Each token decodes to at least one character (or part of one), so this many tokens
        // cover the longest stop sequence plus the newest token.
        let window = self.longest_stop + 4;
        let tokens = progress.tokens;
        let start = progress.turn_start.max(tokens.len().saturating_sub(window));
        let tail = self.tokenizer.decode(&tokens[start..])?;
        Ok(self
            .rules
            .stop_sequences
            .iter()
            .find(|stop| tail.contains(stop.as_str()))
            .cloned())
    }
}
