#!/usr/bin/env bash
# Scale from zero (issue 10): process exec -> first CloudEvent answered by a deployed agent in
# cluster mode with the default model preloaded, side by side with the same start answering
# over `POST /fn/...`, and with llama.cpp's own import + load + first token + the same answer
# (benches/scale/driver.py says exactly what each side does). Rewrites the section of
# benches/RESULTS.md between `<!-- scale:begin -->` and `<!-- scale:end -->` (appends it when
# missing).
#
# Usage: benches/scale.sh [--repeats 3] [--threads 2]
#
# Builds first, so that nothing compiles while measuring: `slmfn` (release), the example
# functions (wasm32-wasip2), laid out and precompiled as in the image
# (scripts/layout-functions.sh); installs the llama.cpp peer when missing
# (benches/llama-venv.sh: a long compile); finds the
# model ($SLMFN_MODEL_PATH, else scripts/fetch-model.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "scale.sh: $*" >&2; }
target="${CARGO_TARGET_DIR:-$root/target}"

python="$(benches/llama-venv.sh)"
cargo build --release --locked --bin slmfn
scripts/build-guests.sh --locked >/dev/null
model="${SLMFN_MODEL_PATH:-}"
[[ -n "$model" ]] || model="$(scripts/fetch-model.sh | tail -n 1)"
[[ -f "$model" ]] || { say "model not found: $model"; exit 1; }

# Private copies: a build by someone else must not swap a binary in the middle of the run.
work="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-scale.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$target/release/slmfn" "$work/slmfn"
scripts/layout-functions.sh "$work/functions" "$work/slmfn" >/dev/null

python3 benches/scale/driver.py --slmfn "$work/slmfn" --functions "$work/functions" \
    --model "$model" --python "$python" "$@"
