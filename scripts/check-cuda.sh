#!/usr/bin/env bash
# Compile-checks the CUDA path (`--features cuda`) without a GPU: installs the CUDA 13.4
# compiler from Python wheels into a venv, then runs `cargo check --features cuda`.
# Not part of the default CI run: ~8 minutes of nvcc compiling candle-kernels on 2 cores.
# Run it when GPU-related code changes.
#
# Environment: SLMFN_CUDA_VENV (default /var/tmp/slmfn-cuda-venv), CUDA_COMPUTE_CAP (default 90,
# H100; 80 for A100), CARGO_TARGET_DIR (default /var/tmp/slmfn-cuda-target: the CUDA build of
# candle differs from the CPU one, so it gets its own target dir).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SLMFN_CUDA_VENV:-/var/tmp/slmfn-cuda-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
# cudarc knows CUDA versions up to 13.4: stay on these wheel versions.
"$venv/bin/python" -m pip install --quiet --no-deps \
    nvidia-cuda-nvcc==13.4.92 nvidia-cuda-crt==13.4.92 nvidia-nvvm==13.4.92 \
    nvidia-cuda-runtime==13.4.92 nvidia-cuda-cccl==13.3.5.0.6
site="$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
export CUDA_HOME="$site/nvidia/cu13"
export PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13040
# candle-kernels links -lcudart; the wheel ships only the versioned library.
ln -sf libcudart.so.13 "$CUDA_HOME/lib/libcudart.so"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/slmfn-cuda-target}"
nvcc --version | tail -n 2
cargo check --locked --features cuda --bin fn --bin slmfn
echo "check-cuda: the cuda feature compiles"
