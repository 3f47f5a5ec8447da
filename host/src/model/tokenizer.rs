//! The model's tokenizer (`tokenizer.json`), its chat template (`tokenizer_config.json`,
//! rendered with minijinja) and its end-of-sequence ids (`generation_config.json`).

use crate::plugins::Message;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Tokenizer, chat template and special ids of one model folder.
pub struct ModelTokenizer {
    tokenizer: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
}

impl ModelTokenizer {
    /// Reads `tokenizer.json` (required), `tokenizer_config.json` and
    /// `generation_config.json` (optional) from `dir`. `config_eos` is config.json's
    /// `eos_token_id`, used when generation_config.json has none.
    pub fn load(dir: &Path, config_eos: Option<&serde_json::Value>) -> Result<ModelTokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            bail!(
                "{} is missing: a model folder needs its tokenizer.json",
                path.display()
            );
        }
        let tokenizer = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let config_path = dir.join("tokenizer_config.json");
        let (chat_template, bos_token, eos_token) = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", config_path.display()))?;
            (
                chat_template_of(&value),
                token_text(value.get("bos_token")),
                token_text(value.get("eos_token")),
            )
        } else {
            (None, None, None)
        };
        let generation_path = dir.join("generation_config.json");
        let mut eos_ids = Vec::new();
        if generation_path.is_file() {
            let text = std::fs::read_to_string(&generation_path)
                .with_context(|| format!("cannot read {}", generation_path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", generation_path.display()))?;
            eos_ids = token_ids(value.get("eos_token_id"));
        }
        if eos_ids.is_empty() {
            eos_ids = token_ids(config_eos);
        }
        if eos_ids.is_empty()
            && let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t))
        {
            eos_ids.push(id);
        }
        Ok(ModelTokenizer {
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            eos_ids,
        })
    }

    /// The underlying tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Ids that end a sequence.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether the model has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Token ids of `text` (special tokens in the text are recognised, none are added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included (so tags and EOS text stay visible).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| anyhow::anyhow!("cannot decode: {e}"))
    }

    /// The text the chat template opens an assistant turn with (its generation prompt, e.g.
    /// `<|im_start|>assistant\n`), found by rendering a one-message conversation with and
    /// without it; none without a template or when the two renders do not differ by a suffix.
    pub fn assistant_marker(&self) -> Result<Option<String>> {
        if self.chat_template.is_none() {
            return Ok(None);
        }
        let probe = [Message {
            role: "user".into(),
            content: "x".into(),
        }];
        let without = self.apply_chat_template(&probe, false)?;
        let with = self.apply_chat_template(&probe, true)?;
        Ok(with
            .strip_prefix(&without)
            .filter(|marker| !marker.is_empty())
            .map(str::to_string))
    }

    /// Renders `messages` with the chat template (plus the assistant generation prompt when
    /// `add_generation_prompt`). Without a template the contents are joined by blank lines.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some(template) = &self.chat_template else {
            let parts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
            return Ok(parts.join("\n\n"));
        };
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template("chat", template)
            .context("the chat template in tokenizer_config.json does not parse")?;
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        env.get_template("chat")?
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .context("rendering the chat template failed")
    }
}

/// The template string of `chat_template` (a string, or a list of named templates).
fn chat_template_of(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|item| item.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| items.first())
            .and_then(|item| item.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// A special token written as a string or as `{"content": …}`.
fn token_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => other.get("content")?.as_str().map(str::to_string),
    }
}

/// An id or a list of ids.
fn token_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|id| vec![id as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|id| id as u32)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;
    use crate::model::tiny::{TINY, init_tiny};

    #[test]
    fn the_assistant_marker_is_the_chat_templates_generation_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        init_tiny(Architecture::Qwen2, TINY, 0, None, &model).unwrap();
        let tokenizer = ModelTokenizer::load(&model, None).unwrap();
        assert_eq!(
            tokenizer.assistant_marker().unwrap().as_deref(),
            Some("<|im_start|>assistant\n")
        );

        // A Llama-3-style template: the marker is its assistant header.
        let config = model.join("tokenizer_config.json");
        let llama = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n\
                     {{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}\
                     <|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
        std::fs::write(
            &config,
            serde_json::json!({"chat_template": llama}).to_string(),
        )
        .unwrap();
        let tokenizer = ModelTokenizer::load(&model, None).unwrap();
        assert_eq!(
            tokenizer.assistant_marker().unwrap().as_deref(),
            Some("<|start_header_id|>assistant<|end_header_id|>\n\n")
        );

        // No template, or one without a generation prompt: no marker.
        std::fs::write(&config, "{}").unwrap();
        let tokenizer = ModelTokenizer::load(&model, None).unwrap();
        assert_eq!(tokenizer.assistant_marker().unwrap(), None);
        let flat = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
        std::fs::write(
            &config,
            serde_json::json!({"chat_template": flat}).to_string(),
        )
        .unwrap();
        let tokenizer = ModelTokenizer::load(&model, None).unwrap();
        assert_eq!(tokenizer.assistant_marker().unwrap(), None);
    }
}
