#!/usr/bin/env bash
# Builds the guest components (wasm32-wasip2, release) of the two guest workspaces and prints
# the path of each component:
#
#   functions/    -> functions/target/wasm32-wasip2/release/hello.wasm
#   tests/guests/ -> tests/guests/target/wasm32-wasip2/release/{testbed,wrong-world}.wasm
#
# Run with: scripts/build-guests.sh [extra cargo build args, e.g. --locked]
#
# Each workspace always builds into its own target/ directory, even when CARGO_TARGET_DIR is
# set (it is overridden with --target-dir): the paths above are then the same on every machine,
# and the `[build] component` path in functions/*/fn.toml stays valid.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=wasm32-wasip2

if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
else
    echo "build-guests: rustup not found; assuming the $target target is installed" >&2
fi

for workspace in functions tests/guests; do
    dir="$root/$workspace"
    echo "build-guests: building $workspace" >&2
    cargo build --release --target "$target" \
        --manifest-path "$dir/Cargo.toml" --target-dir "$dir/target" "$@"
done

for workspace in functions tests/guests; do
    for wasm in "$root/$workspace/target/$target/release/"*.wasm; do
        if [[ -e "$wasm" ]]; then echo "$wasm"; fi
    done
done
