#!/usr/bin/env bash
# The main job, from a fresh clone: build everything, fetch the default model, start the
# runtime with it preloaded, deploy the example agents and ask them something.
#
#   ./scripts/quickstart.sh            # leaves the runtime running (Ctrl-C stops it)
#   ./scripts/quickstart.sh --no-wait  # stops the runtime after the demo
#
# Environment: PORT (default 8080), SLMFN_DATA_DIR (default ./.slmfn).
set -euo pipefail
cd "$(dirname "$0")/.."
wait_at_end=1
[[ "${1:-}" == "--no-wait" ]] && wait_at_end=0
port="${PORT:-8080}"
data_dir="${SLMFN_DATA_DIR:-.slmfn}"
target="${CARGO_TARGET_DIR:-target}"

step() { printf '\n==> %s\n' "$*"; }

step "Installing the wasm32-wasip2 target"
rustup target add wasm32-wasip2

step "Building the runtime and the fn CLI (release)"
cargo build --release --locked --bin fn --bin slmfn
fn="$target/release/fn"

step "Fetching the default models (smollm2: SmolLM2-135M-Instruct Q4_1; minilm: all-MiniLM-L6-v2)"
model="$(SLMFN_FN="$fn" ./scripts/fetch-model.sh | tail -n 1)"
echo "model: $model"
embedding="$(SLMFN_FN="$fn" ./scripts/fetch-model.sh minilm | tail -n 1)"
echo "embedding model: $embedding"

step "Starting the runtime on 127.0.0.1:$port (data dir $data_dir, model preloaded)"
"$fn" serve --bind 127.0.0.1 --port "$port" --data-dir "$data_dir" \
    --model smollm2 --model minilm --preload smollm2 &
runtime=$!
trap 'kill "$runtime" 2>/dev/null; wait "$runtime" 2>/dev/null' EXIT
export SLMFN_URL="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
    if curl -fsS "$SLMFN_URL/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$runtime" 2>/dev/null; then echo "the runtime exited; see its log above" >&2; exit 1; fi
    sleep 0.2
done
curl -fsS "$SLMFN_URL/readyz" >/dev/null

step "Deploying functions/hello, functions/tickets (a tool component) and functions/support-desk"
"$fn" deploy --path functions/hello
"$fn" deploy --path functions/tickets
"$fn" deploy --path functions/support-desk

step "fn invoke hello --data '{\"name\": \"Ada\"}'"
"$fn" invoke hello --data '{"name": "Ada"}'

step "fn invoke support-desk --data '{\"question\": \"What is the status of ticket 4412?\"}'"
"$fn" invoke support-desk --data '{"question": "What is the status of ticket 4412?"}'

step "fn invoke support-desk --data '{\"question\": \"How long does a refund take?\"}'"
"$fn" invoke support-desk --data '{"question": "How long does a refund take?"}'

if [[ "$wait_at_end" == 1 ]]; then
    step "The runtime is up at $SLMFN_URL — try: $fn invoke support-desk --data '{\"question\": \"...\"}'  (Ctrl-C stops it)"
    wait "$runtime"
fi
