#!/usr/bin/env bash
# Concurrent streams (issue 11, part 3): slmfn's batched sessions (`parallel = N`) vs llama.cpp's
# own server with continuous batching (`llama-server --parallel N`), 1, 4 and 8 streams of 128
# greedy tokens, different chats. Rewrites the `concurrency` section of benches/RESULTS.md.
#
# Usage: benches/concurrency.sh [driver flags]   (--streams 1 4 8 --gen 128 --repeats 3 ...;
#        python3 benches/concurrency/driver.py --help lists them)
#
# Builds the `inference_bench` example in release and llama-server (benches/llama-server.sh,
# minutes the first time) before measuring; finds the model as benches/inference.sh does.
# Environment: CARGO_TARGET_DIR, SLMFN_PEERS, SLMFN_MODEL_PATH, NICE.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
server="$(benches/llama-server.sh)"
nice -n "${NICE:-5}" cargo build --release -p slmfn-models --example inference_bench
model="${SLMFN_MODEL_PATH:-}"
if [[ -z "$model" ]]; then
    model="$(scripts/fetch-model.sh | tail -n1)"
fi
bin="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-concurrency-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
cp "$target/release/examples/inference_bench" "$bin/"
python3 benches/concurrency/driver.py --model "$model" --bench "$bin/inference_bench" \
    --server "$server" --commit "$(git rev-parse --short HEAD)" "$@"
