#!/usr/bin/env bash
# Builds the runtime image `localhost/slmfn:<version>` (knative/Containerfile, ARTIFACTS=prebuilt)
# from this host, without pulling any base image: a static musl `slmfn`, the example functions
# of functions/ built and precompiled for it, and a minimal rootfs (/tmp, a non-root user, CA
# certificates), on `scratch`. The model is not baked in (mount it; see knative/README.md).
#
# Needs: musl-tools, podman, runc (Debian packages) and the rustup targets
# x86_64-unknown-linux-musl and wasm32-wasip2 (added here when missing).
#
# Usage: scripts/build-image.sh [TAG]     (default localhost/slmfn:0.1.0)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "build-image: $*" >&2; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
tag="${1:-localhost/slmfn:$version}"
for tool in musl-gcc podman runc; do
    command -v "$tool" >/dev/null || { say "$tool is missing: apt-get install -y musl-tools podman runc"; exit 1; }
done
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
target="${CARGO_TARGET_DIR:-$root/target}"

say "building the static slmfn binary (release, musl)"
CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-cpu=x86-64-v3 -C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin slmfn
out=knative/build
rm -rf "$out"
mkdir -p "$out"/rootfs/{tmp,models,etc/ssl/certs}
install -m 0755 "$target/x86_64-unknown-linux-musl/release/slmfn" "$out/slmfn"

say "building and precompiling the functions"
scripts/build-guests.sh --locked >/dev/null
scripts/layout-functions.sh "$out/functions" "$out/slmfn"
chmod 1777 "$out/rootfs/tmp"
echo 'nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin' >"$out/rootfs/etc/passwd"
echo 'nonroot:x:65532:' >"$out/rootfs/etc/group"
cp /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/"

say "building $tag"
podman build -f knative/Containerfile --build-arg ARTIFACTS=prebuilt --build-arg WITH_MODEL=none \
    -t "$tag" .
echo "$tag"
