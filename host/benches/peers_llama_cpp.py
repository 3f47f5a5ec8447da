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

from gguf_writer import f32_gguf, folder_gguf


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
