#!/usr/bin/env bash
# The llama.cpp peer of the benches: installs llama-cpp-python $LLAMA_CPP_PYTHON_VERSION
# (default 0.3.36) into $SLMFN_PEERS/llama-venv (default /var/tmp/slmfn-peers) when it is
# missing — pip compiles llama.cpp with default CMAKE_ARGS: several minutes on 2 cores — and
# prints that venv's python.
#
# Usage: python="$(benches/llama-venv.sh)"     (NICE: niceness of the compile, default 5)
set -euo pipefail
peers="${SLMFN_PEERS:-/var/tmp/slmfn-peers}"
venv="$peers/llama-venv"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" \
    2>/dev/null; then
    echo "llama-venv: installing llama-cpp-python $version into $venv (compiles llama.cpp: minutes)" >&2
    mkdir -p "$peers"
    python3 -m venv "$venv"
    nice -n "${NICE:-5}" "$venv/bin/pip" install --no-cache-dir "llama-cpp-python==$version" >&2
fi
echo "$venv/bin/python"
