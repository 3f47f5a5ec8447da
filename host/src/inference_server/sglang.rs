//! SGLang's native API: `POST /generate` with `input_ids` and `return_logprob`, `POST
//! /update_weights_from_disk` with the folder to load (SGLang flushes its prefix cache on
//! it), and `GET /get_model_info` to see that the server is up.

use super::http::JsonClient;
use super::{Completion, CompletionRequest, SharedSampling, aligned};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `POST /generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub input_ids: Vec<u32>,
    pub sampling_params: SamplingParams,
    pub return_logprob: bool,
}

/// The sampling parameters of a `/generate` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    #[serde(flatten)]
    pub shared: SharedSampling,
    /// Keep the stop sequence in the text (the ids always hold it).
    pub no_stop_trim: bool,
    pub skip_special_tokens: bool,
    /// The request's seed (sampled requests only; 31 bits, which every SGLang version stores).
    /// SGLang follows it only when started with `--enable-deterministic-inference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_seed: Option<u64>,
}

/// The answer of `/generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    #[serde(default)]
    pub text: String,
    /// The sampled ids (older servers give them only inside the log-probs).
    #[serde(default)]
    pub output_ids: Option<Vec<u32>>,
    pub meta_info: MetaInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaInfo {
    /// One `[logprob, token id, token text or null]` per sampled token.
    #[serde(default)]
    pub output_token_logprobs: Vec<(Option<f32>, u32, Option<String>)>,
    #[serde(default)]
    pub finish_reason: Option<serde_json::Value>,
}

/// `POST /update_weights_from_disk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateWeightsRequest {
    pub model_path: String,
}

/// The answer of `/update_weights_from_disk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateWeightsResponse {
    pub success: bool,
    #[serde(default)]
    pub message: String,
}

/// The request for one completion.
pub fn generate_request(request: &CompletionRequest) -> GenerateRequest {
    GenerateRequest {
        input_ids: request.prompt.to_vec(),
        sampling_params: SamplingParams {
            max_new_tokens: request.max_new_tokens,
            shared: request.shared_sampling(),
            no_stop_trim: true,
            skip_special_tokens: false,
            sampling_seed: (!request.greedy()).then_some(request.seed & 0x7FFF_FFFF),
        },
        return_logprob: true,
    }
}

pub fn complete(client: &JsonClient, request: &CompletionRequest) -> Result<Completion> {
    let answer: GenerateResponse = client.post("/generate", &generate_request(request))?;
    let logprobs: Vec<f32> = answer
        .meta_info
        .output_token_logprobs
        .iter()
        .map(|(logprob, _, _)| logprob.unwrap_or(f32::NAN))
        .collect();
    let ids = match answer.output_ids {
        Some(ids) => ids,
        None => answer
            .meta_info
            .output_token_logprobs
            .iter()
            .map(|(_, id, _)| *id)
            .collect(),
    };
    Ok(aligned(ids, logprobs))
}

pub fn load_weights(client: &JsonClient, folder: &Path) -> Result<()> {
    let request = UpdateWeightsRequest {
        model_path: folder.display().to_string(),
    };
    let answer: UpdateWeightsResponse = client.post("/update_weights_from_disk", &request)?;
    if !answer.success {
        bail!(
            "POST {}: SGLang did not load {}: {}",
            client.url("/update_weights_from_disk"),
            folder.display(),
            answer.message
        );
    }
    Ok(())
}

pub fn check(client: &JsonClient) -> Result<()> {
    client
        .get::<serde_json::Value>("/get_model_info")
        .map(|_| ())
}
