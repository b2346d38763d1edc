#!/usr/bin/env bash
# The test command: unit tests and end-to-end tests (real runtime processes, real components).
# Installs what it needs: the wasm32-wasip2 target for the guest components.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo test --workspace --locked "$@"
