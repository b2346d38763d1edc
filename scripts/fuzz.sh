#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (libFuzzer, nightly Rust, AddressSanitizer) for a bounded
# time each: `gguf_file` (a model file of any bytes, the pool's way from header to a token) and
# `chat_messages` (hostile message content through the shipped chat templates, and no content
# becoming a control token). Not part of CI; the proptest properties in the crates' tests cover
# the same inputs on stable. Installs what it needs: a nightly toolchain through rustup and a
# pinned cargo-fuzz. A finding is saved under fuzz/artifacts/TARGET/ and the script exits 1.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Environment: FUZZ_TARGET_DIR (default /var/tmp/slmfn-fuzz-target: sanitizer builds differ
# from the normal ones, so they get their own); CARGO_TARGET_DIR for the seeds' build.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
rustup toolchain install nightly --profile minimal >/dev/null
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "0.13.2"; then
    cargo +nightly install cargo-fuzz --version 0.13.2 --locked
fi
corpus="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-fuzz-corpus.XXXXXX")"
trap 'rm -rf "$corpus"' EXIT
# The seeds, with the ordinary toolchain and target dir.
cargo run --quiet --locked -p slmfn-models --features test-util --example fuzz_corpus -- "$corpus"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/slmfn-fuzz-target}"
status=0
for target in gguf_file chat_messages; do
    echo "fuzz: $target for ${seconds}s" >&2
    cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 \
        || status=1
done
exit "$status"
