#!/usr/bin/env bash
# Installs the npm reference MCP server the tests use (@modelcontextprotocol/server-everything,
# pinned) into the cache, once, and prints the path of its entry point (dist/index.js).
# Needs node and npm.
set -euo pipefail
version="2026.8.31"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/slmfn/npm/server-everything-$version"
entry="$cache/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [[ ! -f "$entry" ]]; then
    command -v npm >/dev/null || { echo "fetch-mcp-server: npm is needed (apt-get install nodejs npm)" >&2; exit 1; }
    mkdir -p "$cache"
    echo "fetch-mcp-server: installing @modelcontextprotocol/server-everything@$version" >&2
    npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/server-everything@$version" >&2
fi
echo "$entry"
