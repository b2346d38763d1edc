#!/usr/bin/env bash
# Tool-selection accuracy benchmark (issue 8): SmolLM2-135M on the task set in
# benches/agent/tasks.json (48 tasks, 6 tools, dev and held-out splits), greedy, a call required:
# slmfn's OpenAI API against llama.cpp (llama-cpp-python) with a bare JSON-schema grammar on the
# same GGUF and prompt. Rewrites the section of benches/RESULTS.md between `<!-- agent:begin -->`
# and `<!-- agent:end -->` (appends it when missing).
#
# Usage: benches/agent.sh
#
# Builds `slmfn` in release, reuses (or installs) the llama-cpp-python venv of
# benches/inference.sh ($SLMFN_PEERS/llama-venv, pinned) and installs the pinned `openai` client
# into it. Environment: CARGO_TARGET_DIR, SLMFN_PEERS (default /var/tmp/slmfn-peers),
# SLMFN_MODEL_PATH, PORT (default 18089).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "agent.sh: $*" >&2; }

peers="${SLMFN_PEERS:-/var/tmp/slmfn-peers}"
venv="$peers/llama-venv"
llama_version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
openai_version=3.57.0
target="${CARGO_TARGET_DIR:-$root/target}"
port="${PORT:-18089}"

if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$llama_version')" \
    2>/dev/null; then
    say "installing llama-cpp-python $llama_version into $venv (compiles llama.cpp: minutes)"
    mkdir -p "$peers"
    python3 -m venv "$venv"
    nice -n 5 "$venv/bin/pip" install --no-cache-dir "llama-cpp-python==$llama_version"
fi
"$venv/bin/pip" install --quiet "openai==$openai_version"

nice -n 5 cargo build --release --bin slmfn
model="${SLMFN_MODEL_PATH:-}"
if [[ -z "$model" ]]; then
    model="$(scripts/fetch-model.sh | tail -n1)"
fi
# The embedding model routes tools for the `routed` technique.
embed="${SLMFN_EMBED_MODEL_PATH:-}"
if [[ -z "$embed" ]]; then
    embed="$(scripts/fetch-model.sh minilm | tail -n1)"
fi

data="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-agent-bench.XXXXXX")"
log="$data/runtime.log"
RAYON_NUM_THREADS=2 "$target/release/slmfn" --port "$port" --bind 127.0.0.1 --data-dir "$data/data" \
    --model "smollm2=$model" --model "minilm=$embed" --preload smollm2 --preload minilm \
    >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
# Ready when /readyz says so (the model is preloaded before it turns green); bounded.
for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null

out="${JSON_OUT:-/var/tmp/slmfn-bench/agent.json}"
mkdir -p "$(dirname "$out")"
RAYON_NUM_THREADS=2 "$venv/bin/python" benches/agent/accuracy.py \
    --tasks benches/agent/tasks.json --slmfn-url "http://127.0.0.1:$port/v1" \
    --techniques grammar,spans,scores,routed,routed+examples,routed@auto,routed+examples@auto \
    --llama-model "$model" --threads 2 --json-out "$out"
"$venv/bin/python" benches/agent/render.py "$out" benches/RESULTS.md "$(git rev-parse --short HEAD)"

# Constrained vs free decode speed on the same prompt (every token masked by a JSON schema).
nice -n 5 cargo build --release -p slmfn-models --example inference_bench
RAYON_NUM_THREADS=2 "$target/release/examples/inference_bench" constrained "$model" \
    "Describe the weather in Paris in a few sentences." 128 5 >"$data/constrained.jsonl"
"$venv/bin/python" benches/agent/render.py --constrained "$data/constrained.jsonl" benches/RESULTS.md
