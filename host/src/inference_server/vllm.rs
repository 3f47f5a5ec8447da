//! vLLM's OpenAI-compatible API: `POST /v1/completions` with the prompt as token ids, the
//! sampled ids (`return_token_ids`, or `return_tokens_as_token_ids` on older servers) and their
//! log-probs; `GET /v1/models` for the served model's name and folder. New weights: vLLM
//! reloads them from the folder it was started on (`POST /collective_rpc` with
//! `reload_weights`, then `POST /reset_prefix_cache`; both need `VLLM_SERVER_DEV_MODE=1`), so
//! that folder must be the one the host writes.

use super::http::JsonClient;
use super::{Completion, CompletionRequest, SharedSampling, aligned};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionsRequest {
    pub model: String,
    /// The prompt as token ids.
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    #[serde(flatten)]
    pub shared: SharedSampling,
    /// The request's seed (sampled requests only; vLLM takes a signed 64-bit one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Log-probs of the sampled token (and of the likeliest one).
    pub logprobs: u32,
    pub return_token_ids: bool,
    pub return_tokens_as_token_ids: bool,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
}

/// The answer of `/v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionsResponse {
    pub choices: Vec<Choice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub text: String,
    /// The sampled ids (vLLM 0.10.2 and later, with `return_token_ids`).
    #[serde(default)]
    pub token_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceLogprobs {
    /// `token_id:<id>` with `return_tokens_as_token_ids`.
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub token_logprobs: Vec<Option<f32>>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub data: Vec<ServedModel>,
}

/// A served model: its name and the folder it was loaded from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedModel {
    pub id: String,
    #[serde(default)]
    pub root: Option<String>,
}

/// `POST /collective_rpc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveRpc {
    pub method: String,
}

/// The request for one completion.
pub fn completions_request(model: &str, request: &CompletionRequest) -> CompletionsRequest {
    CompletionsRequest {
        model: model.to_string(),
        prompt: request.prompt.to_vec(),
        max_tokens: request.max_new_tokens,
        shared: request.shared_sampling(),
        seed: (!request.greedy()).then_some(request.seed & i64::MAX as u64),
        logprobs: 1,
        return_token_ids: true,
        return_tokens_as_token_ids: true,
        include_stop_str_in_output: true,
        skip_special_tokens: false,
    }
}

pub fn complete(
    client: &JsonClient,
    model: &str,
    request: &CompletionRequest,
) -> Result<Completion> {
    let answer: CompletionsResponse =
        client.post("/v1/completions", &completions_request(model, request))?;
    let url = client.url("/v1/completions");
    let choice = answer
        .choices
        .into_iter()
        .next()
        .with_context(|| format!("POST {url}: the answer has no choice"))?;
    let logprobs = choice.logprobs.unwrap_or(ChoiceLogprobs {
        tokens: Vec::new(),
        token_logprobs: Vec::new(),
    });
    let ids = match choice.token_ids {
        Some(ids) => ids,
        None => logprobs
            .tokens
            .iter()
            .map(|token| {
                token
                    .strip_prefix("token_id:")
                    .and_then(|id| id.parse().ok())
                    .with_context(|| {
                        format!(
                            "POST {url}: the answer has neither `token_ids` nor tokens as \
                             `token_id:<id>` (got `{token}`); vLLM 0.6 or later is needed"
                        )
                    })
            })
            .collect::<Result<Vec<u32>>>()?,
    };
    let values = logprobs
        .token_logprobs
        .iter()
        .map(|l| l.unwrap_or(f32::NAN))
        .collect();
    Ok(aligned(ids, values))
}

/// The served model (the first of `/v1/models`).
pub fn served_model(client: &JsonClient) -> Result<ServedModel> {
    let list: ModelList = client.get("/v1/models")?;
    list.data.into_iter().next().with_context(|| {
        format!(
            "GET {}: the server serves no model",
            client.url("/v1/models")
        )
    })
}

/// Reloads the weights from the folder vLLM was started on, which must be `folder`.
pub fn load_weights(client: &JsonClient, served: &ServedModel, folder: &Path) -> Result<()> {
    let same = served.root.as_deref().is_some_and(|root| {
        let root = Path::new(root);
        root == folder
            || matches!(
                (root.canonicalize(), folder.canonicalize()),
                (Ok(a), Ok(b)) if a == b
            )
    });
    if !same {
        bail!(
            "vLLM at {} serves `{}` from {}, but the host writes the new weights to {}: vLLM \
             reloads only the folder it was started on, so start it on that folder (copy the initial \
             model there, then `vllm serve {}` with VLLM_SERVER_DEV_MODE=1)",
            client.base(),
            served.id,
            served.root.as_deref().unwrap_or("an unknown folder"),
            folder.display(),
            folder.display()
        );
    }
    let _: serde_json::Value = client.post(
        "/collective_rpc",
        &CollectiveRpc {
            method: "reload_weights".into(),
        },
    )?;
    let _: serde_json::Value = client.post("/reset_prefix_cache", &serde_json::json!({}))?;
    Ok(())
}
