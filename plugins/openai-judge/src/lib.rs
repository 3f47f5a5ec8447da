//! The LLM-as-judge backend for an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's
//! server, Ollama, …): each prompt is one `POST {url}/chat/completions` at temperature 0. Needs
//! the `network` capability for the endpoint's `host:port` in `plugin.toml`.
//!
//! Config:
//! - `url`: the API base, e.g. `http://127.0.0.1:8080/v1` (required);
//! - `model`: the model name sent with each request (default `judge`);
//! - `api-key`: sent as `Authorization: Bearer …` when set;
//! - `timeout-ms`: connect and first-byte timeout per request (default 60000).

use http_client::post_json;
use research_sdk::config;
use research_sdk::judge::{Judge, Message};
use serde::Deserialize;

struct OpenAiJudge {
    url: String,
    model: String,
    timeout_ms: u64,
    /// `Bearer <api-key>` when a key is set.
    authorization: Option<String>,
}

#[derive(Deserialize)]
struct Reply {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ReplyMessage,
}

#[derive(Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Option<String>,
}

impl Judge for OpenAiJudge {
    fn new() -> Result<Self, String> {
        let url = config::get("url").ok_or("config `url` is not set")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "config `url` must start with http:// or https://, not `{url}`"
            ));
        }
        Ok(OpenAiJudge {
            url,
            model: config::get_or("model", "judge"),
            timeout_ms: config::get_parsed("timeout-ms", 60_000)?,
            authorization: config::get("api-key").map(|key| format!("Bearer {key}")),
        })
    }

    fn complete(&self, prompts: Vec<Vec<Message>>, max_tokens: u32) -> Result<Vec<String>, String> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let (url, model, timeout_ms) = (&self.url, &self.model, self.timeout_ms);
        let headers: Vec<(&str, &str)> = self
            .authorization
            .as_deref()
            .map(|value| vec![("authorization", value)])
            .unwrap_or_default();
        let mut texts = Vec::with_capacity(prompts.len());
        for (index, messages) in prompts.iter().enumerate() {
            let messages: Vec<serde_json::Value> = messages
                .iter()
                .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                .collect();
            let body = serde_json::json!({
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0,
            });
            let reply: Reply = post_json(url, "/chat/completions", &body, &headers, timeout_ms)
                .map_err(|e| format!("prompt {index}: {e}"))?;
            let text = reply
                .choices
                .into_iter()
                .next()
                .ok_or_else(|| format!("prompt {index}: the reply has no choices"))?
                .message
                .content
                .unwrap_or_default();
            texts.push(text);
        }
        Ok(texts)
    }
}

research_sdk::export_judge!(OpenAiJudge);
