#!/usr/bin/env bash
# The continuous-batching peer of the concurrency bench: llama.cpp's own `llama-server`, built
# with cmake from the llama.cpp sources that the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist
# vendors (the same llama.cpp as benches/llama-venv.sh), into $SLMFN_PEERS/llama-server (default
# /var/tmp/slmfn-peers). cmake comes from pip (the `cmake` package) in $SLMFN_PEERS/cmake-venv.
# Prints the server binary's path. Several minutes on 2 cores the first time.
#
# Usage: server="$(benches/llama-server.sh)"     (NICE: niceness of the compile, default 5)
set -euo pipefail
peers="${SLMFN_PEERS:-/var/tmp/slmfn-peers}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
out="$peers/llama-server-$version"
bin="$out/build/bin/llama-server"
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
say() { echo "llama-server: $*" >&2; }
mkdir -p "$peers"
venv="$peers/cmake-venv"
if ! "$venv/bin/cmake" --version >/dev/null 2>&1; then
    say "installing cmake into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "cmake==3.31.6" "ninja==1.11.1.4" >&2
fi
src="$out/src"
if [[ ! -f "$src/CMakeLists.txt" ]]; then
    say "fetching the llama-cpp-python $version sdist"
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    "$venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -d "$dl" >&2
    tar -xzf "$dl"/llama_cpp_python-"$version".tar.gz -C "$dl"
    rm -rf "$src"
    mkdir -p "$out"
    mv "$dl/llama_cpp_python-$version/vendor/llama.cpp" "$src"
fi
say "building llama-server (minutes)"
# The same CPU build pip makes of the bindings (GGML_NATIVE), without curl: nothing to download.
nice -n "${NICE:-5}" "$venv/bin/cmake" -S "$src" -B "$out/build" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    >&2
nice -n "${NICE:-5}" "$venv/bin/cmake" --build "$out/build" --target llama-server -j "$(nproc)" >&2
echo "$bin"
