#!/usr/bin/env bash
# The image end to end (outside the default test run: it builds a release musl binary and an
# image): builds it with scripts/build-image.sh, runs it as Knative would (read-only root, only
# /tmp writable, K_SERVICE set, --network host on loopback, the default model mounted
# read-only), waits for /readyz, then gets a triage reply to a dev.ci.build.failed event and an
# answer from /fn/hello. Exits non-zero on any failure.
#
# Usage: scripts/test-image.sh      (PORT, default 18480)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "test-image: $*" >&2; }
port="${PORT:-18480}"
# Sandboxes that refuse setrlimit(RLIMIT_NOFILE) and have no systemd need these two settings
# (podman's defaults elsewhere); an operator's own CONTAINERS_CONF wins.
if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF="$(mktemp)"
    printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n' >"$CONTAINERS_CONF"
    export CONTAINERS_CONF
fi
tag="$(scripts/build-image.sh | tail -n 1)"
model="$(scripts/fetch-model.sh | tail -n 1)"
name="slmfn-image-test-$$"
podman --runtime runc run -d --name "$name" --network host --read-only --tmpfs /tmp \
    -v "$(dirname "$model")":/models:ro -e PORT="$port" -e K_SERVICE=slmfn \
    -e SLMFN_MODELS="smollm2=/models/$(basename "$model")" -e SLMFN_PRELOAD=smollm2 \
    "$tag" >/dev/null
trap 'podman logs "$name" >&2 || true; podman rm -f "$name" >/dev/null 2>&1 || true' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz" || true)" = 200 ] && break
    [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || { say "the container exited"; exit 1; }
    sleep 0.2 # a poll interval
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ] || { say "never ready"; exit 1; }
podman logs "$name" 2>&1 | grep -Eq '"compiled":0|compiled=0' || { say "the image compiled components at start"; exit 1; }
headers="$(mktemp)"
reply="$(curl -s -D "$headers" "$base/events" -H 'ce-specversion: 1.0' -H 'ce-id: image-1' \
    -H 'ce-source: /ci/test' -H 'ce-type: dev.ci.build.failed' -H 'content-type: application/json' \
    -d '{"sample": "npm-404"}')"
grep -qi '^ce-type: dev.ci.build.triaged' "$headers" || { say "no triage reply: $(cat "$headers") $reply"; exit 1; }
grep -q '"failing_step":"npm ci"' <<<"$reply" || { say "unexpected triage: $reply"; exit 1; }
hello="$(curl -s -X POST "$base/fn/hello" -d 'image')"
[ -n "$hello" ] || { say "/fn/hello did not answer"; exit 1; }
say "ok: ready, nothing compiled at start, an event triaged, /fn/hello answered ($hello)"
