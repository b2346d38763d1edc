#!/usr/bin/env bash
# The soak (issue 12): one runtime on 127.0.0.1 under mixed traffic -- the testbed guest, the
# ci-triage agent and the testbed's model calls, /v1/chat/completions plain and streamed, deploys
# of new revisions, rollbacks and deletes -- killed with SIGKILL every ~30 s and restarted on the
# same data dir, the registry checked against every acknowledged deploy after each restart.
# Bounded (10 minutes of traffic by default, a request cap, a watchdog), loopback only, not part
# of CI. What it does and what each figure means: docs/reliability.md.
#
# Usage: benches/soak.sh [--minutes N] [--src DIR] [--no-build] [driver flags]
#
#   --minutes N   minutes of traffic (default 10; env SOAK_MINUTES). Runs of 10 minutes or more
#                 rewrite the results section of docs/reliability.md; shorter trials only print
#                 it (pass --write to record one anyway).
#   --src DIR     the checkout to build the runtime and the guests from (default: this one;
#                 env SOAK_SRC), e.g. a clean worktree of HEAD:
#                   git worktree add /tmp/soak-tree HEAD && benches/soak.sh --src /tmp/soak-tree
#   --no-build    use what DIR already built
#   driver flags  --kill-every S, --admin-every MIN MAX, --testbed-workers N, --agent-workers N,
#                 --openai-workers N, --max-requests N, --ready-timeout S, --keep-data
#                 (python3 benches/soak/driver.py --help lists them)
#
# Builds in release (`cargo build --release --locked --bin slmfn --bin fn`, then
# scripts/build-guests.sh --locked) in DIR, copies the runtime and the two components into a
# work dir (a later build elsewhere cannot swap them mid-run), finds the default model
# ($SLMFN_MODEL_PATH, else scripts/fetch-model.sh) and runs benches/soak/driver.py (Python 3,
# standard library only). Exits 1 when a target is missed.
#
# Environment: CARGO_TARGET_DIR, SLMFN_MODEL_PATH, SOAK_MINUTES, SOAK_SRC, TMPDIR, NICE (the
# build's niceness, default 5).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "soak.sh: $*" >&2; }

minutes="${SOAK_MINUTES:-10}"
src="${SOAK_SRC:-$root}"
build=1
write=0
pass=()
while (($#)); do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --minutes=*) minutes="${1#*=}"; shift ;;
        --src) src="$2"; shift 2 ;;
        --src=*) src="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        --write) write=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) pass+=("$1"); shift ;;
    esac
done
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || { say "--minutes takes a number, not $minutes"; exit 2; }
src="$(cd "$src" && pwd)"
target="${CARGO_TARGET_DIR:-$src/target}"
[[ "$target" == /* ]] || target="$src/$target"

if [[ "$build" == 1 ]]; then
    say "building slmfn and fn (release) in $src"
    (cd "$src" && CARGO_TARGET_DIR="$target" nice -n "${NICE:-5}" \
        cargo build --release --locked --bin slmfn --bin fn)
    say "building the guests in $src"
    (cd "$src" && nice -n "${NICE:-5}" scripts/build-guests.sh --locked >/dev/null)
fi
testbed="$src/tests/guests/target/wasm32-wasip2/release/testbed.wasm"
agent="$src/functions/target/wasm32-wasip2/release/ci_triage.wasm"
for f in "$target/release/slmfn" "$target/release/fn" "$testbed" "$agent"; do
    [[ -f "$f" ]] || { say "missing $f (run without --no-build)"; exit 1; }
done

model="${SLMFN_MODEL_PATH:-}"
[[ -n "$model" ]] || model="$(cd "$src" && SLMFN_FN="$target/release/fn" scripts/fetch-model.sh | tail -n 1)"
[[ -f "$model" ]] || { say "model not found: $model"; exit 1; }

# The commit the binaries come from; "+ local changes" when files that go into them differ.
commit="$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$src" status --porcelain --untracked-files=no -- . ':!docs' ':!benches' ':!*.md' 2>/dev/null)" ]]; then
    commit="$commit + local changes"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/slmfn-soak.XXXXXX")"
bin="$work/bin"
mkdir -p "$bin"
trap 'rm -rf "$bin"' EXIT
cp "$target/release/slmfn" "$testbed" "$agent" "$src/functions/ci-triage/fn.toml" "$bin/"
cp -r "$src/functions/ci-triage/logs" "$bin/logs"

doc_flags=(--doc "$root/docs/reliability.md")
[[ "$write" == 1 ]] && doc_flags+=(--write)
say "runtime from $commit, model $model, $minutes min; work dir $work"
python3 "$root/benches/soak/driver.py" --slmfn "$bin/slmfn" --testbed "$bin/testbed.wasm" \
    --agent "$bin/ci_triage.wasm" --agent-manifest "$bin/fn.toml" --agent-logs "$bin/logs" \
    --model "$model" --commit "$commit" --minutes "$minutes" --work "$work" \
    "${doc_flags[@]}" "${pass[@]}"
