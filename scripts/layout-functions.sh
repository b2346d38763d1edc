#!/usr/bin/env bash
# Lays the example functions of functions/ out as `slmfn serve --functions` reads them —
# OUT/<name>/fn.toml and OUT/<name>/<name>.wasm — from the release guests that
# scripts/build-guests.sh built (build them first), then precompiles them with SLMFN
# (`slmfn precompile OUT`) so that a runtime serving OUT compiles nothing at start.
#
# Usage: scripts/layout-functions.sh OUT SLMFN
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: layout-functions.sh OUT SLMFN}"
slmfn="${2:?usage: layout-functions.sh OUT SLMFN}"
for manifest in "$root"/functions/*/fn.toml; do
    crate="$(basename "$(dirname "$manifest")")"
    name="$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)"
    install -D -m 0644 "$manifest" "$out/$name/fn.toml"
    install -D -m 0644 "$root/functions/target/wasm32-wasip2/release/$(echo "$crate" | tr - _).wasm" \
        "$out/$name/$name.wasm"
done
"$slmfn" precompile "$out"
