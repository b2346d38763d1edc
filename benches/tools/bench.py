"""Tool-call overhead and /mcp throughput (benches/tools.sh runs this; prints one JSON object).

1. From a guest: `tools.call` timed inside the guest (testbed `/tools/bench`) for each provider
   kind: built-in (`clock.now`), WASM component (`toolkit.echo`), MCP stdio (`everything.echo`),
   MCP streamable HTTP (`remote.echo`).
2. The same tools called directly with the official Python `mcp` client: `echo` on
   server-everything over stdio and over HTTP, `toolkit.echo` on the runtime's `/mcp`.
3. `tools/call` throughput, one client and 8 concurrent, of the runtime's `/mcp`
   (`toolkit.echo`) and of server-everything's own HTTP transport (`echo`).

Every loop is bounded by a count and a time limit.
"""

import argparse
import asyncio
import json
import statistics
import time
import urllib.request

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def guest(runtime, name, arguments, n):
    body = json.dumps({"name": name, "arguments": arguments, "n": n}).encode()
    req = urllib.request.Request(f"{runtime}/fn/tb/tools/bench", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def summary(micros, errors=0):
    micros = sorted(micros)
    n = len(micros)
    return {"n": n, "p50_us": micros[n // 2], "p90_us": micros[min(n - 1, int(n * 0.9))],
            "mean_us": statistics.fmean(micros), "errors": errors}


async def direct(client, name, arguments, n, secs):
    for _ in range(10):
        await client.call_tool(name, arguments)
    micros, errors = [], 0
    deadline = time.monotonic() + secs
    while len(micros) < n and time.monotonic() < deadline:
        started = time.perf_counter()
        result = await client.call_tool(name, arguments)
        micros.append((time.perf_counter() - started) * 1e6)
        errors += bool(result.is_error)
    return summary(micros, errors)


async def throughput(client, name, arguments, concurrency, n, secs):
    done = 0
    deadline = time.monotonic() + secs

    async def worker():
        nonlocal done
        while done < n and time.monotonic() < deadline:
            await client.call_tool(name, arguments)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"calls": done, "calls_per_s": done / (time.perf_counter() - started),
            "concurrency": concurrency}


def http_client(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=120)),
                  mode="legacy")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runtime", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--everything", required=True, help="server-everything's dist/index.js")
    p.add_argument("--everything-url", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--secs", type=float, default=20)
    a = p.parse_args()
    out = {"guest": {}, "direct": {}, "throughput": {}}
    for kind, name, args in [("builtin", "clock.now", {}), ("component", "toolkit.echo", {"text": "hi"}),
                             ("mcp_stdio", "everything.echo", {"message": "hi"}),
                             ("mcp_http", "remote.echo", {"message": "hi"})]:
        out["guest"][kind] = guest(a.runtime, name, args, a.n)
    stdio = StdioServerParameters(command="node", args=[a.everything, "stdio"])
    async with Client(stdio, mode="legacy") as c:
        out["direct"]["mcp_stdio"] = await direct(c, "echo", {"message": "hi"}, a.n, a.secs)
    async with http_client(a.everything_url) as c:
        out["direct"]["mcp_http"] = await direct(c, "echo", {"message": "hi"}, a.n, a.secs)
        for conc in (1, 8):
            out["throughput"][f"everything_c{conc}"] = await throughput(
                c, "echo", {"message": "hi"}, conc, a.n, a.secs)
    async with http_client(f"{a.runtime}/mcp", a.token) as c:
        out["direct"]["component_via_mcp"] = await direct(c, "toolkit.echo", {"text": "hi"}, a.n, a.secs)
        for conc in (1, 8):
            out["throughput"][f"slmfn_c{conc}"] = await throughput(
                c, "toolkit.echo", {"text": "hi"}, conc, a.n, a.secs)
    print(json.dumps(out))


asyncio.run(main())
