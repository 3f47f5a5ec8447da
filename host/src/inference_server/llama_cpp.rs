//! llama.cpp's server API: `POST /completion` with the prompt as token ids, `return_tokens`
//! for the sampled ids and `n_probs` for their log-probs; `GET /health` to see that the model
//! is loaded. llama.cpp cannot load new weights: it serves evaluation and frozen-policy
//! rollouts only.

use super::http::JsonClient;
use super::{Completion, CompletionRequest};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// `POST /completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequestBody {
    /// The prompt as token ids.
    pub prompt: Vec<u32>,
    pub n_predict: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0: off.
    pub top_k: usize,
    /// llama.cpp's default of 0.05 would cut the distribution: off.
    pub min_p: f32,
    /// Neutral values for llama.cpp's other samplers, so that no server default reshapes the
    /// policy's distribution.
    pub typical_p: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub dry_multiplier: f32,
    pub xtc_probability: f32,
    pub stop: Vec<String>,
    /// 32 bits, never 0xFFFFFFFF (which asks llama.cpp for a random seed).
    pub seed: u32,
    /// Log-probs of the sampled token (and of the likeliest one).
    pub n_probs: u32,
    pub return_tokens: bool,
    pub cache_prompt: bool,
}

/// The answer of `/completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub content: String,
    pub tokens: Vec<u32>,
    /// One entry per sampled token, in order; the tokens of a matched stop sequence are
    /// left out.
    #[serde(default)]
    pub completion_probabilities: Vec<TokenProbability>,
    #[serde(default)]
    pub stop_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProbability {
    pub id: u32,
    #[serde(default)]
    pub logprob: Option<f32>,
}

/// The request for one completion.
pub fn completion_request(request: &CompletionRequest) -> CompletionRequestBody {
    let s = request.sampling;
    let greedy = request.greedy();
    CompletionRequestBody {
        prompt: request.prompt.to_vec(),
        n_predict: request.max_new_tokens,
        temperature: if greedy { 0.0 } else { s.temperature },
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: 0.0,
        typical_p: 1.0,
        repeat_penalty: 1.0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        dry_multiplier: 0.0,
        xtc_probability: 0.0,
        stop: request.stop.to_vec(),
        seed: (request.seed % u64::from(u32::MAX)) as u32,
        n_probs: 1,
        return_tokens: true,
        cache_prompt: true,
    }
}

pub fn complete(client: &JsonClient, request: &CompletionRequest) -> Result<Completion> {
    let answer: CompletionResponse = client.post("/completion", &completion_request(request))?;
    // The log-probs line up with the ids from the first token on; an entry for another id (or
    // none) leaves that token's log-prob unknown.
    let logprobs = answer
        .tokens
        .iter()
        .enumerate()
        .map(|(i, id)| match answer.completion_probabilities.get(i) {
            Some(p) if p.id == *id => p.logprob.unwrap_or(f32::NAN),
            _ => f32::NAN,
        })
        .collect();
    Ok(Completion {
        ids: answer.tokens,
        logprobs,
    })
}

pub fn check(client: &JsonClient) -> Result<()> {
    client.get::<serde_json::Value>("/health").map(|_| ())
}
