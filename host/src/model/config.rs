//! `config.json` of a Hugging Face model folder, for the architectures we run (Qwen2 / Qwen2.5,
//! Qwen3 and Llama, e.g. SmolLM2).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The architectures the policy supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Qwen2,
    Qwen3,
    Llama,
}

impl Architecture {
    /// The `model_type` value in config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Llama => "llama",
        }
    }

    /// The `architectures` entry in config.json.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "qwen2" => Ok(Architecture::Qwen2),
            "qwen3" => Ok(Architecture::Qwen3),
            "llama" => Ok(Architecture::Llama),
            other => Err(format!(
                "unknown architecture `{other}` (expected qwen2, qwen3 or llama)"
            )),
        }
    }
}

/// The fields of `config.json` the model needs; unknown fields are kept and written back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Llama and Qwen3: biases on q/k/v/o (Qwen2 always has q/k/v biases and none on o).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Everything else in the file (token ids, sliding window settings, …), kept as is.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_max_positions() -> usize {
    32_768
}
fn default_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "silu".to_string()
}

impl ModelConfig {
    /// Parses config.json text and checks that the model is one we can run.
    pub fn parse(text: &str) -> Result<ModelConfig> {
        let mut config: ModelConfig = serde_json::from_str(text)?;
        config.read_rope_parameters()?;
        config.validate()?;
        Ok(config)
    }

    /// Configs saved by transformers 5 hold the rotary settings in `rope_parameters`
    /// (`rope_theta`, `rope_type`) instead of a top-level `rope_theta`: the base is read from
    /// there, and any rotary type other than the default one is refused.
    fn read_rope_parameters(&mut self) -> Result<()> {
        let Some(parameters) = self.extra.get("rope_parameters") else {
            return Ok(());
        };
        if parameters.is_null() {
            return Ok(());
        }
        let kind = parameters
            .get("rope_type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            bail!("rope_parameters.rope_type `{kind}` is not supported (only default)");
        }
        if let Some(theta) = parameters
            .get("rope_theta")
            .and_then(serde_json::Value::as_f64)
        {
            self.rope_theta = theta;
        }
        Ok(())
    }

    /// The architecture, from `model_type` (or `architectures`).
    pub fn architecture(&self) -> Result<Architecture> {
        let from_class = self
            .architectures
            .iter()
            .find_map(|class| match class.as_str() {
                "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
                "Qwen3ForCausalLM" => Some(Architecture::Qwen3),
                "LlamaForCausalLM" => Some(Architecture::Llama),
                _ => None,
            });
        match self.model_type.as_str() {
            "qwen2" => Ok(Architecture::Qwen2),
            "qwen3" => Ok(Architecture::Qwen3),
            "llama" => Ok(Architecture::Llama),
            "" => from_class.ok_or_else(|| anyhow::anyhow!("config.json has no model_type")),
            other => bail!(
                "model_type `{other}` is not supported (supported: qwen2, qwen3, llama); architectures = {:?}",
                self.architectures
            ),
        }
    }

    /// Key/value heads (grouped-query attention); defaults to the attention heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head: `head_dim`, else Qwen3's default of 128, else hidden /
    /// heads.
    pub fn head_dim(&self) -> usize {
        match (self.head_dim, self.architecture()) {
            (Some(width), _) => width,
            (None, Ok(Architecture::Qwen3)) => 128,
            (None, _) => self.hidden_size / self.num_attention_heads.max(1),
        }
    }

    /// Whether q/k/v projections carry biases.
    pub fn qkv_bias(&self) -> bool {
        match self.architecture() {
            Ok(Architecture::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Whether the output projection carries a bias (Llama or Qwen3 with `attention_bias`).
    pub fn o_bias(&self) -> bool {
        matches!(
            self.architecture(),
            Ok(Architecture::Llama | Architecture::Qwen3)
        ) && self.attention_bias.unwrap_or(false)
    }

    /// The first layer that Hugging Face would run with sliding-window attention: from
    /// `max_window_layers` on when `use_sliding_window` is set (Qwen2, Qwen3), or one that
    /// `layer_types` lists as `sliding_attention`.
    fn first_sliding_layer(&self) -> Option<usize> {
        let extra = |key: &str| self.extra.get(key);
        let listed = extra("layer_types")
            .and_then(serde_json::Value::as_array)
            .and_then(|types| {
                types
                    .iter()
                    .position(|t| t.as_str() == Some("sliding_attention"))
            });
        let window_set = extra("sliding_window").is_some_and(|w| !w.is_null());
        let from_flag = (extra("use_sliding_window") == Some(&serde_json::Value::Bool(true))
            && window_set)
            .then(|| {
                extra("max_window_layers")
                    .and_then(serde_json::Value::as_u64)
                    .map_or(0, |from| from as usize)
            })
            .filter(|&from| from < self.num_hidden_layers);
        listed.into_iter().chain(from_flag).min()
    }

    fn validate(&self) -> Result<()> {
        self.architecture()?;
        if self.hidden_act != "silu" {
            bail!(
                "hidden_act `{}` is not supported (only silu)",
                self.hidden_act
            );
        }
        let heads = self.num_attention_heads;
        if heads == 0 || self.kv_heads() == 0 || !heads.is_multiple_of(self.kv_heads()) {
            bail!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({})",
                self.kv_heads()
            );
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            bail!(
                "head dimension {} must be even and positive",
                self.head_dim()
            );
        }
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
        {
            bail!(
                "vocab_size, hidden_size, intermediate_size and num_hidden_layers must be positive"
            );
        }
        if let Some(layer) = self.first_sliding_layer() {
            bail!(
                "layer {layer} attends through a sliding window (use_sliding_window / \
                 max_window_layers / layer_types), which is not supported: attention here reads \
                 every position"
            );
        }
        if let Some(scaling) = &self.rope_scaling
            && !scaling.is_null()
        {
            bail!("rope_scaling {scaling} is not supported yet");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> Result<ModelConfig> {
        let mut base = serde_json::json!({
            "model_type": "qwen2", "vocab_size": 16, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
        });
        for (key, value) in extra.as_object().unwrap() {
            base[key] = value.clone();
        }
        ModelConfig::parse(&base.to_string())
    }

    #[test]
    fn the_rotary_base_of_transformers_5_configs_is_read_and_other_rotary_types_refused() {
        assert_eq!(config(serde_json::json!({})).unwrap().rope_theta, 10_000.0);
        let five =
            serde_json::json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}});
        assert_eq!(config(five).unwrap().rope_theta, 1e6);
        let yarn = serde_json::json!({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}});
        let error = format!("{:#}", config(yarn).unwrap_err());
        assert!(error.contains("rope_type `yarn`"), "{error}");
    }

    #[test]
    fn only_layers_that_would_slide_are_refused() {
        let window = |flag: bool, from: usize| serde_json::json!({"use_sliding_window": flag, "sliding_window": 4096, "max_window_layers": from});
        // Off, or on from a layer past the last one (Qwen2.5's released configs): full attention.
        assert!(config(window(false, 0)).is_ok());
        assert!(config(window(true, 4)).is_ok());
        let error = format!("{:#}", config(window(true, 2)).unwrap_err());
        assert!(
            error.contains("layer 2") && error.contains("sliding"),
            "{error}"
        );
        let listed = serde_json::json!({"layer_types": ["full_attention", "sliding_attention", "full_attention", "full_attention"]});
        let error = format!("{:#}", config(listed).unwrap_err());
        assert!(error.contains("layer 1"), "{error}");
    }

    #[test]
    fn qwen3_heads_default_to_128_wide_and_others_to_hidden_over_heads() {
        let qwen3 = config(serde_json::json!({"model_type": "qwen3", "hidden_size": 256})).unwrap();
        assert_eq!(qwen3.head_dim(), 128);
        assert_eq!(config(serde_json::json!({})).unwrap().head_dim(), 4);
        let given = config(serde_json::json!({"model_type": "qwen3", "head_dim": 6})).unwrap();
        assert_eq!(given.head_dim(), 6);
    }
}
