#!/usr/bin/env bash
# Tool-call benchmark (issue 9): the overhead of one tool call from a guest through each
# provider kind (built-in, WASM tool component, MCP stdio, MCP streamable HTTP), the same tools
# called directly with the official Python `mcp` client, and `/mcp` tools/call throughput
# against server-everything's own streamable HTTP transport. Rewrites the section of
# benches/RESULTS.md between `<!-- tools:begin -->` and `<!-- tools:end -->` (appends it when
# missing).
#
# Usage: benches/tools.sh [--n 2000] [--secs 20]
#
# Builds `fn` in release and the test guests; installs server-everything (pinned, npm) and the
# Python `mcp` client (pinned) into $SLMFN_PEERS/mcp-venv. Environment: CARGO_TARGET_DIR,
# SLMFN_PEERS (default /var/tmp/slmfn-peers), PORT (default 18090), EVERYTHING_PORT (18091).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "tools.sh: $*" >&2; }
peers="${SLMFN_PEERS:-/var/tmp/slmfn-peers}"
venv="$peers/mcp-venv"
target="${CARGO_TARGET_DIR:-$root/target}"
port="${PORT:-18090}"
everything_port="${EVERYTHING_PORT:-18091}"

if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '2.3.0')" 2>/dev/null; then
    say "installing the Python mcp client into $venv"
    mkdir -p "$peers"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "mcp==2.3.0"
fi
everything="$(scripts/fetch-mcp-server.sh | tail -n1)"
cargo build --release --locked --bin fn
guests="$target/guests-bench"
cargo build --release --locked --target wasm32-wasip2 --manifest-path tests/guests/Cargo.toml \
    --target-dir "$guests"
wasm="$guests/wasm32-wasip2/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-tools-bench.XXXXXX")"
PORT="$everything_port" node "$everything" streamableHttp >"$work/everything.log" 2>&1 &
everything_pid=$!
cat >"$work/tools.toml" <<TOML
[mcp.everything]
command = "node"
args = ["$everything", "stdio"]

[mcp.remote]
url = "http://127.0.0.1:$everything_port/mcp"
TOML
"$target/release/fn" serve --port "$port" --bind 127.0.0.1 --data-dir "$work/data" \
    --tools-file "$work/tools.toml" --mcp-token bench-token >"$work/runtime.log" 2>&1 &
pid=$!
trap 'kill "$pid" "$everything_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 \
        && grep -q "listening" "$work/everything.log"; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$work/runtime.log" >&2; exit 1; }
    sleep 0.1
done
export SLMFN_URL="http://127.0.0.1:$port"
deploy() {
    curl -fsS -o /dev/null -F "manifest=$2" -F "component=@$3" "$SLMFN_URL/admin/functions/$1"
}
deploy toolkit $'name = "toolkit"\nkind = "tool"\n' "$wasm/toolkit.wasm"
deploy tb $'name = "tb"\n[limits]\ntimeout_ms = 290000\n[tools]\nallowed = ["*"]\n' "$wasm/testbed.wasm"

out="${JSON_OUT:-/var/tmp/slmfn-bench/tools.json}"
mkdir -p "$(dirname "$out")"
"$venv/bin/python" benches/tools/bench.py --runtime "$SLMFN_URL" --token bench-token \
    --everything "$everything" --everything-url "http://127.0.0.1:$everything_port/mcp" "$@" >"$out"
python3 benches/tools/render.py "$out" benches/RESULTS.md "$(git rev-parse --short HEAD)" \
    "$(git status --porcelain | grep -q . && echo dirty || echo clean)"
say "wrote benches/RESULTS.md (raw: $out)"
