#!/usr/bin/env bash
# GRPO step time of the quickstart config with and without `grpo.skip_zero_contribution`,
# alternating the two in one run (2 threads): SmolLM2-135M-Instruct, the MiniLM index of the
# Wikipedia vital summaries, examples/quickstart/train.jsonl, examples/quickstart/quickstart.toml
# with `grpo.kl_coef=0` (with a KL term no sequence adds nothing; the config's entropy
# coefficient is already 0). SmolLM2 earns the ReSearch reward's 0 on almost every rollout, so
# most groups have zero advantage: the case the switch is for.
#
#   host/benches/skip_zero.sh [STEPS] [ROUNDS]
#
# Prepares the quickstart's assets first (examples/quickstart.sh --prepare-only: ~8 minutes
# once), then runs ROUNDS (default 2) rounds of STEPS (default 2) steps with each setting and
# prints each run's step times and their medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-2}
rounds=${2:-2}
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
./examples/quickstart.sh --prepare-only >/dev/null
host=target/release/host
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RAYON_NUM_THREADS=2
for round in $(seq 1 "$rounds"); do
  for skip in false true; do
    out=$work/run-$skip-$round
    echo "== round $round, skip_zero_contribution = $skip"
    $host train examples/quickstart/quickstart.toml --model "$cache/assets/smollm2-135m-instruct" \
      --index "$cache/assets/wiki-minilm" --steps "$steps" --out "$out" --quiet \
      --set grpo.kl_coef=0 --set grpo.skip_zero_contribution=$skip \
      --set validation.every=0 --set checkpoint.every=0 >/dev/null 2>&1
  done
done
python3 - "$work" <<'PY'
import glob, json, statistics, sys
work = sys.argv[1]
print("| skip_zero_contribution | step s (each) | median step s | forward/backward s (median) | sequences run / skipped |")
print("|---|---|---:|---:|---:|")
for skip in ("false", "true"):
    rows = []
    for path in sorted(glob.glob(f"{work}/run-{skip}-*/metrics.jsonl")):
        rows += [json.loads(l) for l in open(path) if '"time"' in l]
    steps = [r["time"]["total"] for r in rows]
    fb = [r["time"]["forward_backward"] for r in rows]
    run = sum(r["sequences_trained"] for r in rows)
    skipped = sum(r["sequences_skipped"] for r in rows)
    print(f"| {skip} | {', '.join(f'{s:.1f}' for s in steps)} | {statistics.median(steps):.1f} | "
          f"{statistics.median(fb):.1f} | {run} / {skipped} |")
PY
