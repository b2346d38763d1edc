#!/usr/bin/env bash
# CloudEvents benchmark (issue 10): events/s and latency of a no-op `on_event` over loopback in
# binary and in structured mode, each event with a new id (so each goes through the dedupe
# store), against the same function invoked over `POST /fn/echo` with the same body — same
# runtime, same client, same run (the load harness of benches/http_load.rs with `--events`).
# Rewrites the section of benches/RESULTS.md between `<!-- events:begin -->` and
# `<!-- events:end -->` (appends it when missing). Target: events ≥ 0.9× the HTTP path.
#
# Usage: benches/events.sh [http_load flags: --requests 20000 --secs 20 --concurrency 16,64 --rounds 5]
#
# Needs jq. Builds the bench guests and the harness first, so nothing compiles while measuring.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "events.sh: $*" >&2; }
command -v jq >/dev/null || { say "jq is needed to write RESULTS.md (apt-get install jq)"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

scripts/build-guests.sh >/dev/null
cargo build --release --target wasm32-wasip2 --manifest-path benches/guests/Cargo.toml \
    --target-dir benches/guests/target
cargo bench --no-run --bench http_load
load="$(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench http_load -- --events --out "$work/events.json" "$@"

rows="$(jq -r '
  def median: sort | .[(length - 1) / 2 | floor];
  def f1: . * 10 | round / 10;
  def f2: . * 100 | round / 100;
  def row($server; $runs): [$runs[] | select(.server == $server)] as $r
    | {rps: ([$r[].rps] | median), p50: ([$r[].p50_us] | median), p99: ([$r[].p99_us] | median),
       cpu: ([$r[].server_cpu_us_per_req] | median), other: ([$r[].other_cpu_pct] | max),
       errors: ([$r[].errors] | add)};
  def ratio($runs; $server; f): [$runs | group_by(.round)[]
    | (map(select(.server == $server))[0] | f) / (map(select(.server == "/fn (POST)"))[0] | f)] | median;
  .runs | group_by(.connections)[] | . as $runs | $runs[0].connections as $c
  | ("/fn (POST)", "event, binary", "event, structured") as $s | row($s; $runs) as $r
  | if $s == "/fn (POST)" then
      "| \($c) | \($s) | \($r.rps | round) | \($r.p50 | f1) | \($r.p99 | f1) | \($r.cpu | f1) | — | \($r.other | f1) | \($r.errors) |"
    else
      (ratio($runs; $s; .rps) | f2) as $x
      | "| \($c) | \($s) | \($r.rps | round) | \($r.p50 | f1) | \($r.p99 | f1) | \($r.cpu | f1) | **\($x)×** \(if $x >= 0.9 then "(met)" else "(**not met**)" end) | \($r.other | f1) | \($r.errors) |"
    end
' "$work/events.json")"
args="$(jq -r '.args' "$work/events.json")"

section="$work/section.md"
{
    echo "<!-- events:begin -->"
    echo "## CloudEvents: a no-op \`on_event\` vs the same function over \`/fn\` (issue 10)"
    echo
    echo "Written by \`benches/events.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') at git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'). Re-run: \`benches/events.sh\`."
    echo
    echo "- Machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores; the client shares them. Load average before: $load."
    echo "- The \`echo\` bench guest (benches/guests/echo-agent): \`handle\` answers 200 \"hello\", \`on_event\` returns no reply (202); one catch-all trigger."
    echo "- Each event has a new id, so every one is looked up and recorded in the dedupe store (in memory, written behind to sled in 50 ms segments); the HTTP path has no such store."
    echo "- Keep-alive HTTP/1.1 connections, one request in flight each; body \`{\"build\":981,\"status\":\"failed\"}\` for all three. Harness settings: \`$args\`; medians over the rounds; the ratio is the median of per-round ratios against \`/fn\`."
    echo
    echo "| connections | path | req/s | p50 µs | p99 µs | server CPU µs/req | events/s ÷ /fn req/s (target ≥ 0.9×) | other load % | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    echo "$rows"
    echo
    echo "Scale from zero (exec → first event answered in cluster mode, vs the HTTP path and llama.cpp) is measured by \`benches/scale.sh\`: see its section below."
    echo "<!-- events:end -->"
} >"$section"

results=benches/RESULTS.md
if grep -q '<!-- events:begin -->' "$results"; then
    awk -v f="$section" '
        /<!-- events:begin -->/ { while ((getline l < f) > 0) print l; skip = 1; next }
        /<!-- events:end -->/ { skip = 0; next }
        !skip { print }' "$results" >"$work/results.md"
    cp "$work/results.md" "$results"
else
    { echo; cat "$section"; } >>"$results"
fi
say "wrote the events section of $results"
