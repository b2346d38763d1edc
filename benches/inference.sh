#!/usr/bin/env bash
# Inference benchmark of issue 3: slmfn vs llama.cpp (llama-cpp-python) on the same GGUF, same
# thread count, same prompt tokens; warm time to first token of a deployed agent vs the pool
# in-process; cold start (exec -> first token). Rewrites the section of benches/RESULTS.md
# between `<!-- inference:begin -->` and `<!-- inference:end -->` (creates the file, or appends
# the section, when missing) and leaves the rest of the file alone.
#
# Usage: benches/inference.sh [driver flags]   (benches/inference.sh --help lists them:
#        --repeats 3 --runs 3 --threads 2 --prompt-tokens 200 --gen 128 --max-load 1.5 ...)
#        benches/inference.sh --render-only         rewrites the section from the raw numbers of
#        the last run (--json-out, default /var/tmp/slmfn-bench/inference.json), measuring
#        nothing: for when another script rewrote RESULTS.md.
#
# What it does first, so that no compile runs while measuring:
#   - builds `slmfn`, `fn` and the `inference_bench` example in release (CPU flags from
#     .cargo/config.toml: x86-64-v3) and the support-desk guest (wasm32-wasip2);
#   - installs llama-cpp-python $LLAMA_CPP_PYTHON_VERSION into $SLMFN_PEERS/llama-venv (benches/llama-venv.sh) when it
#     is missing (pip compiles llama.cpp with default CMAKE_ARGS: several minutes on 2 cores);
#   - finds the model: $SLMFN_MODEL_PATH, else `scripts/fetch-model.sh` (the default smollm2).
#
# Environment: CARGO_TARGET_DIR (default ./target), SLMFN_PEERS (default /var/tmp/slmfn-peers),
# SLMFN_MODEL_PATH, NICE (niceness of the builds, default 5).
#
# Measure on a quiet machine: before each measurement the driver waits (bounded) for the 1-min
# load average to drop below --max-load and RESULTS.md says how loaded the machine was.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "inference.sh: $*" >&2; }

for a in "$@"; do
    case "$a" in
        -h | --help) exec python3 benches/inference/driver.py --help ;;
        # Measures nothing, builds nothing: rewrites the section from the last run's numbers.
        --render-only) exec python3 benches/inference/driver.py "$@" ;;
    esac
done

target="${CARGO_TARGET_DIR:-$root/target}"
nice="${NICE:-5}"

# --- the peer ----------------------------------------------------------------------------------
python="$(benches/llama-venv.sh)"

# --- slmfn -------------------------------------------------------------------------------------
nice -n "$nice" cargo build --release --bin slmfn --bin fn
nice -n "$nice" cargo build --release -p slmfn-models --example inference_bench
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# Where cargo puts it (functions/target, or $CARGO_TARGET_DIR): where `fn deploy` looks too.
nice -n "$nice" cargo build --release --target wasm32-wasip2 \
    --manifest-path functions/Cargo.toml -p support-desk

model="${SLMFN_MODEL_PATH:-}"
if [[ -z "$model" ]]; then
    model="$(scripts/fetch-model.sh | tail -n1)"
fi
[[ -f "$model" ]] || { say "model not found: $model"; exit 1; }

# Private copies: the target directory may be shared, and a build by someone else must not swap
# a binary in the middle of the run.
bin="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-inference-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
cp "$target/release/slmfn" "$target/release/fn" "$target/release/examples/inference_bench" "$bin/"

python3 benches/inference/driver.py \
    --model "$model" \
    --slmfn "$bin/slmfn" \
    --fn "$bin/fn" \
    --bench "$bin/inference_bench" \
    --python "$python" \
    "$@"
