//! Writing GGUF files from tiny models the way llama.cpp lays them out (tensor names, Q/K row
//! permutation for Llama, tokenizer metadata): shared by the GGUF import and quickstart tests.

use candle_core::Tensor;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use research_host::model::gguf::permute;
use research_host::model::{Architecture, LoadedModel};
use std::path::Path;

/// The llama.cpp name of a Hugging Face tensor name.
pub fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unmapped {other}"),
    };
    format!("blk.{layer}.{part}")
}

/// Writes `model` as llama.cpp would: matrices in `dtype`, vectors in f32.
pub fn write_gguf(model: &LoadedModel, arch: Architecture, dtype: GgmlDType, path: &Path) {
    let config = model.policy.config();
    let hd = config.head_dim();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<(String, Tensor)> = model.policy.named_tensors().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in names {
        let tensor = if arch == Architecture::Llama && name.ends_with("q_proj.weight") {
            permute(&tensor, config.num_attention_heads, hd).unwrap()
        } else if arch == Architecture::Llama && name.ends_with("k_proj.weight") {
            permute(&tensor, config.kv_heads(), hd).unwrap()
        } else {
            tensor
        };
        let kind = if tensor.rank() == 2 {
            dtype
        } else {
            GgmlDType::F32
        };
        tensors.push((gguf_name(&name), QTensor::quantize(&tensor, kind).unwrap()));
    }
    let tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = model.tokenizer.inner().get_vocab(true);
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in &vocab {
        tokens[*id as usize] = token.clone();
    }
    let added = model.tokenizer.inner().get_added_tokens_decoder();
    let types: Vec<Value> = (0..tokens.len() as u32)
        .map(|id| match added.get(&id) {
            Some(t) if t.special => Value::I32(3),
            Some(_) => Value::I32(4),
            None => Value::I32(1),
        })
        .collect();
    let merges: Vec<Value> = tokenizer["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(pair) => Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            )),
            _ => panic!("odd merge"),
        })
        .collect();
    let a = arch.model_type();
    let id = |t: &str| model.tokenizer.inner().token_to_id(t).unwrap();
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (
            format!("{a}.context_length"),
            Value::U32(config.max_position_embeddings as u32),
        ),
        (
            format!("{a}.embedding_length"),
            Value::U32(config.hidden_size as u32),
        ),
        (
            format!("{a}.block_count"),
            Value::U32(config.num_hidden_layers as u32),
        ),
        (
            format!("{a}.feed_forward_length"),
            Value::U32(config.intermediate_size as u32),
        ),
        (
            format!("{a}.attention.head_count"),
            Value::U32(config.num_attention_heads as u32),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(config.kv_heads() as u32),
        ),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(config.rms_norm_eps as f32),
        ),
        (
            format!("{a}.rope.freq_base"),
            Value::F32(config.rope_theta as f32),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(id("<|endoftext|>")),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(id("<|im_end|>")),
        ),
        (
            "tokenizer.chat_template".into(),
            Value::String(research_host::model::tiny::CHATML_TEMPLATE.into()),
        ),
    ];
    let metadata_refs: Vec<(&str, &Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata_refs, &tensor_refs).unwrap();
}
