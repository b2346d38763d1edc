#!/usr/bin/env bash
# Runs the benchmarks of issue 2 and writes their section of benches/RESULTS.md (between
# `<!-- runtime:begin -->` and `<!-- runtime:end -->`; other scripts' sections are kept):
#
#   - criterion (benches/bench_main.rs): in-process Host::invoke, a fresh instance per call, also
#     pinned to one core (taskset) to show what cross-core hand-offs cost;
#   - the HTTP load harness (benches/http_load.rs): slmfn vs `wasmtime serve`, same client,
#     same machine, same run; the ratios are slmfn / wasmtime serve.
#
# Installs what is missing: the wasm32-wasip2 target and wasmtime-cli 48.0.8 (cargo install into
# $SLMFN_PEERS, default /var/tmp/slmfn-peers; a long compile). Needs jq.
#
# Usage: benches/run.sh [http_load flags: --requests 20000 --secs 20 --concurrency 16,64 --rounds 5]
#
# Measure on a quiet machine: the client shares the cores with the server, and RESULTS.md reports
# the load average and the CPU share other processes took during each measurement.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
peers="${SLMFN_PEERS:-/var/tmp/slmfn-peers}"
wasmtime="$peers/bin/wasmtime"
wasmtime_version=48.0.8
export CRITERION_HOME="${CARGO_TARGET_DIR:-$root/target}/criterion"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say() { echo "run.sh: $*" >&2; }

command -v jq >/dev/null || { say "jq is needed to write RESULTS.md (apt-get install jq)"; exit 1; }
if ! "$wasmtime" --version 2>/dev/null | grep -q " $wasmtime_version\b"; then
    say "installing wasmtime-cli $wasmtime_version into $peers (a long compile)"
    cargo install wasmtime-cli --version "$wasmtime_version" --locked --root "$peers"
fi

# Guests (build-guests.sh adds the wasm32-wasip2 target when missing), then the bench binaries,
# so that no compile runs while measuring.
scripts/build-guests.sh >/dev/null
cargo build --release --target wasm32-wasip2 --manifest-path benches/guests/Cargo.toml \
    --target-dir benches/guests/target
cargo bench --no-run --bench bench_main --bench http_load

# mark NAME: the time, the machine's busy CPU ticks and this shell's children's CPU seconds (so
# that other load = busy - ours). `times` must run in this shell, not a subshell.
mark() {
    times >"$work/times"
    awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } }
         END { print s }' "$work/times" >"$work/$1.ours"
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat >"$work/$1.busy"
    date +%s.%N >"$work/$1.time"
}
# other_pct FROM TO: CPU share (of all cores) used by other processes between two marks.
other_pct() {
    awk -v n="$(nproc)" -v b0="$(<"$work/$1.busy")" -v b1="$(<"$work/$2.busy")" \
        -v o0="$(<"$work/$1.ours")" -v o1="$(<"$work/$2.ours")" \
        -v t0="$(<"$work/$1.time")" -v t1="$(<"$work/$2.time")" \
        'BEGIN { o = (b1 - b0) / 100 - (o1 - o0); if (o < 0) o = 0; printf "%.1f", 100 * o / ((t1 - t0) * n) }'
}

load_criterion="$(cut -d' ' -f1-3 /proc/loadavg)"
mark criterion0
cargo bench --bench bench_main -- --noplot
# The same single calls on one core: no cross-core wake-ups or TLB-shootdown IPIs.
pinned="$work/criterion-pinned"
CRITERION_HOME="$pinned" taskset -c 0 cargo bench --bench bench_main -- --noplot 'invoke/'
mark criterion1
load_http="$(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench http_load -- --wasmtime "$wasmtime" --out "$work/load.json" "$@"

# --- RESULTS.md -------------------------------------------------------------------------------

# est ID FIELD [DIR]: a criterion estimate (ns per iteration), e.g. est invoke/echo median.
est() { jq ".$2.point_estimate" "${3:-$CRITERION_HOME}/instantiate/$1/new/estimates.json"; }
us() { awk -v ns="$1" -v d="${2:-1}" 'BEGIN { printf "%.1f", ns / d / 1000 }'; }
met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = op == "le" ? v <= t : v >= t; print ok ? "**met**" : "**not met**" }'; }

echo_p50="$(est invoke/echo median)"
hello_p50="$(est invoke/hello median)"
echo_pinned="$(est invoke/echo median "$pinned")"
hello_pinned="$(est invoke/hello median "$pinned")"
x16="$(est invoke_x16/echo median)"
criterion_other="$(other_pct criterion0 criterion1)"

# Per concurrency level: the median over rounds of each number, and the ratios slmfn / peer as
# the median of the per-round ratios (each round measures both servers back to back).
load_rows="$(jq -r '
  def median: sort | .[(length - 1) / 2 | floor];
  def f1: . * 10 | round / 10;
  def f2: . * 100 | round / 100;
  def row($server; $runs): [$runs[] | select(.server == $server)] as $r
    | {rps: ([$r[].rps] | median), p50: ([$r[].p50_us] | median), p99: ([$r[].p99_us] | median),
       cpu: ([$r[].server_cpu_us_per_req] | median), client: ([$r[].client_cpu_us_per_req] | median),
       other: ([$r[].other_cpu_pct] | max), errors: ([$r[].errors] | add), rounds: ($r | length)};
  def ratio($runs; f): [$runs | group_by(.round)[]
    | (map(select(.server == "slmfn"))[0] | f) / (map(select(.server != "slmfn"))[0] | f)] | median;
  .runs | group_by(.connections)[] | . as $runs | $runs[0].connections as $c
  | row("slmfn"; $runs) as $s | row("wasmtime serve"; $runs) as $w
  | ratio($runs; .rps) as $rps
  | "| \($c) | slmfn | \($s.rps | round) | \($s.p50 | f1) | \($s.p99 | f1) | \($s.cpu | f1) | \($s.client | f1) | \($s.other | f1) | \($s.errors) |",
    "| \($c) | wasmtime serve | \($w.rps | round) | \($w.p50 | f1) | \($w.p99 | f1) | \($w.cpu | f1) | \($w.client | f1) | \($w.other | f1) | \($w.errors) |",
    "| \($c) | **slmfn / wasmtime serve** | **\($rps | f2)×** | \(ratio($runs; .p50_us) | f2)× | \(ratio($runs; .p99_us) | f2)× | \(ratio($runs; .server_cpu_us_per_req) | f2)× | \(ratio($runs; .client_cpu_us_per_req) | f2)× | | |",
    "RATIO \($c) \($rps | f2) \([$runs[].other_cpu_pct] | max | f1)"
' "$work/load.json")"
ratios="$(grep '^RATIO' <<<"$load_rows" || true)"
load_rows="$(grep -v '^RATIO' <<<"$load_rows")"
http_other="$(awk '{ if ($4 > m) m = $4 } END { print m + 0 }' <<<"$ratios")"
load_args="$(jq -r '.args' "$work/load.json")"
errors_md="$(jq -r '.runs[] | select(.errors > 0)
    | "- **\(.server), \(.connections) connections, round \(.round): \(.errors) unexpected answer(s)**; the first: `\(.first_error)`"' \
    "$work/load.json")"

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
{
    echo "<!-- runtime:begin -->"
    echo "## Runtime: in-process invoke, HTTP vs \`wasmtime serve\` (issue 2)"
    echo
    echo "Written by \`benches/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') at git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'). Re-run: \`benches/run.sh\`."
    echo
    echo "### Machine and build"
    echo
    echo "- CPU: $cpu_model, $(nproc) cores (\`nproc\`); the load client runs on the same cores as the server."
    echo "- Load average (1/5/15 min) before the in-process bench: $load_criterion; before the HTTP load: $load_http."
    echo "- CPU share taken by other processes while measuring: ${criterion_other}% during the in-process bench; at most ${http_other}% during any HTTP run (per-run figures below)."
    if awk -v c="$criterion_other" -v h="$http_other" 'BEGIN { exit !(c >= 5 || h >= 5) }'; then
        echo "- **These measurements were taken on a loaded machine** (other processes used CPU while measuring): absolute numbers are unreliable (either way: on a VM a busy core also wakes faster); the ratios, measured alternately in the same run, are the better guide."
    else
        echo "- The machine was quiet while measuring (other processes took < 5% CPU)."
    fi
    echo "- Host build: release settings (\`cargo bench\` profile, inheriting \`[profile.release]\`), \`-C target-cpu=x86-64-v3\` (.cargo/config.toml), rustc $(rustc --version | cut -d' ' -f2)."
    echo "- Guests: wasm32-wasip2, \`opt-level = \"s\"\`, LTO, stripped (benches/guests, functions)."
    echo "- Peer: \`$("$wasmtime" --version)\` \`serve\` with its defaults (pooling allocator; a fresh instance per request for WASIp2 components, as slmfn) plus \`-S cli\` (Rust's std for wasm32-wasip2 imports \`wasi:cli/environment\`)."
    echo
    echo "### Targets"
    echo
    echo "| target | measured | |"
    echo "|---|---|---|"
    echo "| in-process instantiate+invoke p50 ≤ 50 µs | $(us "$echo_p50") µs (\`echo\`), $(us "$hello_p50") µs (\`hello\`); pinned to one core: $(us "$echo_pinned") µs, $(us "$hello_pinned") µs | $(met "$(us "$echo_p50")" 50 le) (\`echo\`), $(met "$(us "$hello_p50")" 50 le) (\`hello\`) |"
    while read -r _ c ratio _; do
        echo "| HTTP throughput ≥ 1.0× \`wasmtime serve\`, $c connections | $ratio× | $(met "$ratio" 1.0 ge) |"
    done <<<"$ratios"
    echo
    echo "### In-process instantiate + invoke (criterion, \`benches/benchmarks/instantiate.rs\`)"
    echo
    echo "\`Host::invoke\` on a host with a registry in a temp dir, the component deployed beforehand: per call a fresh"
    echo "instance from the \`InstancePre\`, \`handle\` called, the store dropped, all on the caller's task (the guest runtime takes over only a guest that yields or waits; neither of these does). No HTTP."
    echo "The pinned rows run the same calls with every thread on one core: the difference to the unpinned rows is"
    echo "the cost of handing each call between threads on different cores (wake-ups of idle cores, TLB-shootdown IPIs)."
    echo
    echo "| bench | median | mean | throughput |"
    echo "|---|---|---|---|"
    echo "| \`invoke/echo\` (200 \"hello\") | $(us "$echo_p50") µs | $(us "$(est invoke/echo mean)") µs | $(awk -v ns="$echo_p50" 'BEGIN { printf "%.0f", 1e9 / ns }') invocations/s |"
    echo "| \`invoke/hello\` (kv increment + JSON) | $(us "$hello_p50") µs | $(us "$(est invoke/hello mean)") µs | $(awk -v ns="$hello_p50" 'BEGIN { printf "%.0f", 1e9 / ns }') invocations/s |"
    echo "| \`invoke/echo\`, pinned to one core (\`taskset -c 0\`) | $(us "$echo_pinned") µs | $(us "$(est invoke/echo mean "$pinned")") µs | $(awk -v ns="$echo_pinned" 'BEGIN { printf "%.0f", 1e9 / ns }') invocations/s |"
    echo "| \`invoke/hello\`, pinned to one core | $(us "$hello_pinned") µs | $(us "$(est invoke/hello mean "$pinned")") µs | $(awk -v ns="$hello_pinned" 'BEGIN { printf "%.0f", 1e9 / ns }') invocations/s |"
    echo "| \`invoke_x16/echo\` (16 in flight), per invocation | $(us "$x16" 16) µs | $(us "$(est invoke_x16/echo mean)" 16) µs | $(awk -v ns="$x16" 'BEGIN { printf "%.0f", 16e9 / ns }') invocations/s |"
    echo
    echo "### HTTP over loopback (\`benches/http_load.rs\`)"
    echo
    echo "Keep-alive HTTP/1.1 GETs (hyper client, one request at a time per connection) answering 200 \"hello\":"
    echo "slmfn \`/fn/echo\` (benches/guests/echo-agent) vs \`wasmtime serve\` with benches/guests/echo-http."
    echo "Settings: \`$load_args\`; each number is the median over the rounds (servers take turns),"
    echo "each ratio the median of the per-round ratios;"
    echo "\"other CPU\" is the largest share of all cores taken by other processes during a run."
    echo "CPU/req is CPU time per request (user + system) of the server process and of the client; it drops"
    echo "when other processes hold the other cores (fewer cross-core wake-ups and TLB-shootdown IPIs), so"
    echo "compare it between the two servers of one row pair only."
    echo
    echo "| connections | server | req/s | p50 µs | p99 µs | server CPU µs/req | client CPU µs/req | other CPU % | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    echo "$load_rows"
    echo
    if [[ -n "$errors_md" ]]; then printf '%s\n\n' "$errors_md"; fi
    echo "Commands: \`$(jq -r '.servers | map(.command) | join("`, `")' "$work/load.json")\` (ports and paths vary)."
    echo "<!-- runtime:end -->"
} >"$work/section.md"

# RESULTS.md: the title, this section, then every other script's marked section as it was
# (e.g. benches/inference.sh's); anything else (an old unmarked version of ours) is dropped.
results=benches/RESULTS.md
{
    echo "# Benchmark results"
    echo
    cat "$work/section.md"
    if [[ -f "$results" ]]; then
        awk '/^<!-- [a-z0-9-]+:begin -->$/ && $0 != "<!-- runtime:begin -->" { keep = 1; print "" }
             keep { print }
             /^<!-- [a-z0-9-]+:end -->$/ { keep = 0 }' "$results"
    fi
} >"$work/results.md"
mv "$work/results.md" "$results"
say "wrote $results"
