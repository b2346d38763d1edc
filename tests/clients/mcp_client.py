"""The official Python `mcp` client against the runtime's `/mcp`.

Checks, for the session-based revision (initialize handshake, Mcp-Session-Id) and the
stateless 2026-07-28 revision (no handshake, no session): tools/list shows the deployed tool
component's tools and the agent; tools/call runs both; schema-violating arguments are an error;
a long call reports progress. Plain HTTP: no token is 401, a foreign Origin is 403.

Prints a JSON summary on success; exits non-zero with the failed check otherwise.
"""

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def exercise(url, token, mode):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        listed = await client.list_tools()
        names = sorted(t.name for t in listed.tools)
        check("toolkit.add" in names and "hello" in names, f"{mode}: tools/list {names}")
        add = await client.call_tool("toolkit.add", {"a": 2, "b": 40})
        check(not add.is_error, f"{mode}: toolkit.add failed: {add}")
        check(add.structured_content == {"sum": 42}, f"{mode}: toolkit.add answered {add}")
        hello = await client.call_tool("hello", {"name": "Ada"})
        check(not hello.is_error and "Ada" in json.dumps(hello.structured_content or text_of(hello)),
              f"{mode}: the hello agent answered {hello}")
        refused = None
        try:
            bad = await client.call_tool("toolkit.add", {"a": "two", "b": 40})
            refused = bad.is_error
        except Exception as e:  # a JSON-RPC error: invalid params
            refused = "violate" in str(e) or "invalid" in str(e).lower()
        check(refused, f"{mode}: schema-violating arguments were not refused")
        progress = []

        async def on_progress(value, total, message):
            progress.append((value, message))

        spun = await client.call_tool("toolkit.spin", {}, progress_callback=on_progress)
        check(spun.is_error, f"{mode}: toolkit.spin should fail at its deadline: {spun}")
        check(len(progress) >= 1, f"{mode}: no progress during a 2 s call")
        return {"tools": names, "progress": len(progress)}


def plain_http(url, token):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "check", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with httpx2.Client(timeout=30) as http:
        anonymous = http.post(url, json=body, headers=headers)
        check(anonymous.status_code == 401, f"no token: {anonymous.status_code}")
        check("Bearer" in anonymous.headers.get("www-authenticate", ""), "no WWW-Authenticate")
        wrong = http.post(url, json=body, headers={**headers, "Authorization": "Bearer nope"})
        check(wrong.status_code == 401, f"wrong token: {wrong.status_code}")
        foreign = http.post(url, json=body, headers={
            **headers, "Authorization": f"Bearer {token}", "Origin": "https://evil.example"})
        check(foreign.status_code == 403, f"foreign Origin: {foreign.status_code}")
    return True


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    plain_http(args.url, args.token)
    legacy = await exercise(args.url, args.token, "legacy")
    stateless = await exercise(args.url, args.token, "2026-07-28")
    print(json.dumps({"legacy": legacy, "stateless": stateless}))


asyncio.run(main())
