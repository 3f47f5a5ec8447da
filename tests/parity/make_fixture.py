#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for our tiny checkpoints.

Run by hand when the tiny-model recipe changes (needs torch + transformers, e.g. the benchmark
venv at ~/.cache/research-host/venv):

    cargo build --bin host
    ~/.cache/research-host/venv/bin/python tests/parity/make_fixture.py

It creates the tiny Qwen2, Llama and Qwen3 checkpoints with `host model init` (fixed seeds), runs them
through transformers in float32 and writes tests/data/parity.json: the input ids, the
log-probability of every next token and the full logits of the last position, plus the SHA-256
of the checkpoint files so that the Rust test (tests/parity.rs) knows it compares the same
weights and tokenizer.
"""
import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
MODELS = [("qwen2", 1), ("llama", 2), ("qwen3", 3)]
INPUTS = [
    "<think> The capital of France is Paris. </think> <answer> Paris </answer>",
    "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n<search> author of Hamlet </search>",
    "Numbers 1969 and 2024; punctuation!? Ünïcödé 東京.",
]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=str(ROOT / "target/debug/host"))
    parser.add_argument("--out", default=str(ROOT / "tests/data/parity.json"))
    args = parser.parse_args()
    fixture = {
        "generated_by": "tests/parity/make_fixture.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "models": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for arch, seed in MODELS:
            folder = Path(tmp) / arch
            subprocess.run(
                [args.host, "model", "init", "--arch", arch, "--seed", str(seed), "--out", str(folder)],
                check=True,
            )
            # Our tokenizer.json as it is: AutoTokenizer would build a model-specific class that
            # replaces its pre-tokenizer (Qwen2Tokenizer installs Qwen2's own regex).
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            model.eval()
            inputs = []
            for text in INPUTS:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0].double()
                logprobs = torch.log_softmax(logits, dim=-1)
                inputs.append(
                    {
                        "text": text,
                        "ids": ids,
                        "next_logprobs": [logprobs[t, ids[t + 1]].item() for t in range(len(ids) - 1)],
                        "last_logits": logits[-1].tolist(),
                    }
                )
            fixture["models"].append(
                {
                    "arch": arch,
                    "seed": seed,
                    "tokenizer_sha256": sha256(folder / "tokenizer.json"),
                    "weights_sha256": sha256(folder / "model.safetensors"),
                    "inputs": inputs,
                }
            )
    Path(args.out).write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
