#!/usr/bin/env bash
# Step-time breakdown of GRPO training on CPU (2 threads): SmolLM2-135M-Instruct (imported from
# the PyPI GGUF), the all-MiniLM-L6-v2 index of wiki-vital-passages.jsonl and MuSiQue training
# questions from the benchmark data folder $RESEARCH_HOST_DATA (docs/data.md), with examples/research.toml scaled to a short run.
#
#   host/benches/train_step.sh [STEPS] [extra `host train` flags…]
#
# Builds what is missing once (model import, index: ~6 min) into
# ${RESEARCH_HOST_CACHE:-~/.cache/research-host}/assets, then trains STEPS steps (default 3)
# into target/bench-runs/ and prints the per-step split: generation, retrieval, plugins,
# forward/backward, optimiser.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${RESEARCH_HOST_DATA:-../shared/data} # docs/data.md
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
assets=$cache/assets
steps=${1:-3}
shift || true
for f in wiki-vital-passages.jsonl musique-train.jsonl; do
  [ -f "$data/$f" ] || { echo "needs $data/$f (set RESEARCH_HOST_DATA; see docs/data.md)" >&2; exit 2; }
done
cargo build -q --release --bin host
host=target/release/host
model=$(host/benches/fetch_smollm2.sh | tail -n 1)
embedder=$(host/benches/fetch_minilm.sh | tail -n 1)
index=$assets/wiki-minilm
if ! $host index info --index "$index" >/dev/null 2>&1; then
  echo "== indexing the wiki passages with MiniLM (once)"
  $host index build --corpus "$data/wiki-vital-passages.jsonl" --embedder "$embedder" --out "$index"
fi
export RAYON_NUM_THREADS=2
out=target/bench-runs/train-step-$(date +%s)
echo "== host train examples/research.toml, $steps steps -> $out"
$host train examples/research.toml --model "$model" --index "$index" \
  --train "$data/musique-train.jsonl" --steps "$steps" --out "$out" --quiet \
  --set rollout.batch_prompts=2 --set rollout.max_response_tokens=384 \
  --set validation.every=0 --set checkpoint.every=0 "$@"
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"time"' in l]
parts = ["generation", "retrieval", "plugins", "forward_backward", "optimizer"]
print("| step | total s | " + " | ".join(parts) + " | generated tok/s | response tokens | searches/rollout |")
print("|---:|---:|" + "---:|" * len(parts) + "---:|---:|---:|")
for r in rows:
    t = r["time"]
    print(f"| {r['step']} | {t['total']:.1f} | " + " | ".join(f"{t[p]:.2f}" for p in parts)
          + f" | {r['tokens_per_s']:.1f} | {r['response_length']:.0f} | {r['searches_per_rollout']:.2f} |")
total = sum(r["time"]["total"] for r in rows)
print("\nshare of the step: " + ", ".join(
    f"{p} {100 * sum(r['time'][p] for r in rows) / total:.2f} %" for p in parts))
PY
