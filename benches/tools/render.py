"""Writes the tool-call section of benches/RESULTS.md from benches/tools/bench.py's JSON.

    python3 benches/tools/render.py RESULTS_JSON benches/RESULTS.md COMMIT clean|dirty
"""

import json
import os
import sys
import time

BEGIN, END = "<!-- tools:begin -->", "<!-- tools:end -->"


def replace_section(path, section):
    text = open(path).read()
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    open(path, "w").write(text)


def us(v):
    return f"{v:.0f} µs" if v >= 100 else f"{v:.1f} µs"


def main():
    data = json.load(open(sys.argv[1]))
    commit, state = sys.argv[3], sys.argv[4]
    g, d, t = data["guest"], data["direct"], data["throughput"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    comp = g["component"]["p50_us"]
    lines = [
        "## Tools: one call through each provider kind, and `/mcp` throughput (issue 9)",
        "",
        f"Written by `benches/tools.sh` on {when} at git {commit}"
        + (" (with uncommitted changes)" if state == "dirty" else "")
        + f"; load average after the run {load}. Re-run: `benches/tools.sh`.",
        "",
        "Release build, 2 cores shared by the runtime, the MCP servers and the clients. Guest-side",
        "figures are timed inside the guest (testbed `/tools/bench`: `tools.call` in a loop, 10",
        "unmeasured first); direct figures are the official Python `mcp` client 2.3.0 (one call at a",
        "time) against the same tool. server-everything 2026.8.31 on node.",
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| WASM tool component call from a guest ≤ 100 µs p50, in process | {us(comp)} | "
        + ("**met**" if comp <= 100 else "**missed**") + " |",
        "",
        "### One call, p50 (p90)",
        "",
        "| provider kind | from a guest (slmfn) | the same tool, Python `mcp` client direct | ratio direct / guest |",
        "|---|---|---|---|",
    ]
    rows = [
        ("built-in (`clock.now`)", "builtin", None),
        ("WASM tool component (`toolkit.echo`)", "component", "component_via_mcp"),
        ("MCP stdio (server-everything `echo`)", "mcp_stdio", "mcp_stdio"),
        ("MCP streamable HTTP (server-everything `echo`)", "mcp_http", "mcp_http"),
    ]
    for label, gk, dk in rows:
        gv = g[gk]
        guest = f"{us(gv['p50_us'])} ({us(gv['p90_us'])})" + (f", {gv['errors']} errors" if gv["errors"] else "")
        if dk:
            dv = d[dk]
            direct = f"{us(dv['p50_us'])} ({us(dv['p90_us'])})"
            ratio = f"{dv['p50_us'] / gv['p50_us']:.1f}×"
        else:
            direct, ratio = "— (not exposed over MCP)", "—"
        if dk == "component_via_mcp":
            direct += " via slmfn `/mcp`"
        lines.append(f"| {label} | {guest} | {direct} | {ratio} |")
    lines += [
        "",
        "A guest's call to a built-in or a tool component never leaves the process (no HTTP, no",
        "JSON-RPC); the direct figure for the component goes through `/mcp` over HTTP. The MCP rows",
        "reach the same server both ways; from a guest the hop is our `rmcp` client, which costs less",
        "than the Python client does, so the guest's call is the faster one there too.",
        "",
        "### `tools/call` throughput (Python `mcp` client, calls/s)",
        "",
        "| in flight | slmfn `/mcp` (`toolkit.echo`, a fresh component instance per call) | server-everything streamable HTTP (`echo`) | ratio |",
        "|---|---|---|---|",
    ]
    for c in (1, 8):
        s, e = t[f"slmfn_c{c}"], t[f"everything_c{c}"]
        lines.append(f"| {c} | {s['calls_per_s']:.0f} ({s['calls']} calls) | {e['calls_per_s']:.0f} ({e['calls']} calls) | "
                     f"{s['calls_per_s'] / e['calls_per_s']:.2f}× |")
    lines.append("")
    lines.append("One Python client process on the same 2 cores drives both servers; at 8 in flight it and the")
    lines.append("servers compete for the cores, and the ratio compares the two servers under that same client.")
    replace_section(sys.argv[2], "\n".join(lines))


main()
