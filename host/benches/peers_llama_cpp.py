#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) decode speed on the same weights as
benches/model_speed.rs: batch-1 greedy tokens/s on an f32 GGUF, 2 threads. Prints one JSON line.

With --gguf, the f32 GGUF is made from the Q4_1 GGUF that `host model import-gguf` imported
(so both runtimes hold exactly the same dequantised weights): every tensor is dequantised with
the `gguf` package and written back as F32 with the original metadata (tokenizer, chat
template). Without it, the GGUF is written from the model folder itself (safetensors,
config.json, tokenizer.json; Qwen2 or Llama) into --work, as llama.cpp's converter would.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import gguf
from llama_cpp import Llama


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


def max_difference(gguf_path: Path, folder: Path) -> float:
    """Largest absolute difference between the f32 GGUF's tensors and the imported model's, over
    the tensors whose layout both share (embeddings, norms, MLP; llama.cpp permutes Q/K rows)."""
    from safetensors.numpy import load_file

    ours = {}
    for shard in sorted(folder.glob("*.safetensors")):
        ours.update(load_file(shard))
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    layers = {"ffn_down": "mlp.down_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_norm": "input_layernorm",
              "ffn_norm": "post_attention_layernorm"}
    worst, compared = 0.0, 0
    for tensor in gguf.GGUFReader(gguf_path).tensors:
        name = names.get(tensor.name)
        parts = tensor.name.split(".")
        if name is None and len(parts) == 4 and parts[0] == "blk" and parts[2] in layers:
            name = f"model.layers.{parts[1]}.{layers[parts[2]]}.{parts[3]}"
        if name is None or name not in ours:
            continue
        theirs = np.asarray(tensor.data, dtype=np.float32).reshape(ours[name].shape)
        worst = max(worst, float(np.abs(theirs - ours[name]).max()))
        compared += 1
    if compared == 0:
        raise SystemExit(f"no tensor of {gguf_path} matched {folder}")
    return worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", help="the GGUF the model folder was imported from")
    parser.add_argument("--model", required=True, help="the model folder (for its chat template)")
    parser.add_argument("--work", help="where to write the f32 GGUF of --model when there is no --gguf")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.gguf:
        source = Path(args.gguf)
        target = source.with_name(source.stem + ".f32.gguf")
        if not target.exists():
            f32_gguf(source, target)
    else:
        if not args.work:
            raise SystemExit("--work DIR is needed to convert --model without --gguf")
        target = Path(args.work) / (Path(args.model).name + ".f32.gguf")
        if not target.exists():
            folder_gguf(Path(args.model), target)
    same_weights = max_difference(target, Path(args.model))

    from transformers import PreTrainedTokenizerFast

    folder = Path(args.model)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    messages = [{"role": "user", "content": "What is the capital of France? Think step by step."}]
    if config.get("chat_template"):
        tokenizer.chat_template = config["chat_template"]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = messages[0]["content"]
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]

    llm = Llama(model_path=str(target), n_threads=2, n_threads_batch=2, n_ctx=1024, n_batch=512,
                verbose=False)
    n = args.new_tokens

    def decode():
        llm.reset()  # no prompt reuse between runs: every run prefills
        produced, first, started = 0, None, time.perf_counter()
        for _ in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            produced += 1
            if first is None:
                first = time.perf_counter()  # prefill + first token
            if produced == n:
                break
        end = time.perf_counter()
        return (produced - 1) / (end - first), first - started

    decode()  # warm-up, as on our side
    batch1, prefill = decode()
    print(json.dumps({"runtime": "llama.cpp (llama-cpp-python " + __import__("llama_cpp").__version__ + ", f32 GGUF)",
                      "decode_b1_tok_s": batch1, "prefill_s": prefill, "gguf": str(target),
                      "gguf_bytes": target.stat().st_size, "max_abs_weight_difference": same_weights}))


if __name__ == "__main__":
    main()
