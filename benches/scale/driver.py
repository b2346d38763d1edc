"""Scale from zero (issue 10), run by benches/scale.sh: what a Knative pod started for the
first event of a burst costs, from process exec.

Per repetition, interleaved, each from a fresh process:
  1. slmfn, cluster mode (`slmfn serve --functions DIR` with K_SERVICE set, the example
     functions precompiled, the default model preloaded): exec -> /readyz green -> the reply
     to one `dev.ci.build.failed` event (binary mode) from ci-triage;
  2. the same start -> the answer of `POST /fn/ci-triage` with the same input (the HTTP path);
  3. llama.cpp (llama-cpp-python): exec -> import -> load -> first token -> the whole answer of
     the same chat (ci-triage's messages and JSON Schema, the GGUF's own template, greedy).
/readyz is polled every 5 ms. Medians over the repetitions; every run is printed too.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRIAGE = os.path.join(ROOT, "functions", "ci-triage")
SAMPLE = "npm-404"
# ci-triage's system prompt and answer schema for this sample (functions/ci-triage/src/lib.rs),
# mirrored for the llama.cpp side.
SYSTEM = ("You are a CI/DevOps engineer. Read the CI log excerpt and answer in JSON: the step "
          "that failed, the likely cause of the failure, and a suggested fix.")
PROSE = {"type": "string", "minLength": 10, "maxLength": 120,
         "pattern": "^[A-Za-z][A-Za-z0-9 ,.;:'`()/@_-]*$"}


def say(msg):
    print(f"scale: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, headers, timeout=300):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


def slmfn_once(args, path):
    port = free_port()
    data = tempfile.mkdtemp(prefix="slmfn-scale-")
    env = dict(os.environ, PORT=str(port), K_SERVICE="ci-triage", K_REVISION="ci-triage-00001",
               SLMFN_MODELS=f"smollm2={args.model}", SLMFN_PRELOAD="smollm2",
               OMP_NUM_THREADS=str(args.threads))
    log = open(os.path.join(data, "slmfn.log"), "w+")
    t0 = time.perf_counter()
    p = subprocess.Popen([args.slmfn, "serve", "--bind", "127.0.0.1", "--functions",
                          args.functions, "--data-dir", os.path.join(data, "data")],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if p.poll() is not None:
                raise SystemExit(f"slmfn exited: {open(log.name).read()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.005)  # the poll interval
        ready = time.perf_counter() - t0
        body = json.dumps({"sample": SAMPLE}).encode()
        t1 = time.perf_counter()
        if path == "event":
            status, headers, reply = post(base + "/events", body, {
                "ce-specversion": "1.0", "ce-id": "scale-1", "ce-source": "/ci/bench",
                "ce-type": "dev.ci.build.failed", "content-type": "application/json"})
            kind = {k.lower(): v for k, v in headers.items()}.get("ce-type")
            if status != 200 or kind != "dev.ci.build.triaged":
                raise SystemExit(f"no triage reply: {status} {headers} {reply[:500]!r}")
        else:
            status, _, reply = post(base + "/fn/ci-triage", body,
                                    {"content-type": "application/json"})
            if status != 200:
                raise SystemExit(f"/fn/ci-triage answered {status}: {reply[:500]!r}")
        done = time.perf_counter()
        answer = json.loads(reply)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            tokens = sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                         if line.startswith("slmfn_completion_tokens_total"))
        if answer["triage"]["failing_step"] != "npm ci":
            raise SystemExit(f"unexpected triage: {answer}")
    finally:
        p.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(p.pid, 0)
    log.seek(0)
    text = log.read()
    log.close()
    shutil.rmtree(data, ignore_errors=True)
    if '"compiled":0' not in text and "compiled=0" not in text:
        raise SystemExit(f"the runtime compiled components at start:\n{text[-2000:]}")
    return {"ready_s": ready, "answered_s": done - t0, "request_s": done - t1,
            "peak_rss_kb": ru.ru_maxrss, "tokens": int(tokens), "answer": answer["triage"]}


def llama_once(args, request):
    t0 = time.perf_counter()
    p = subprocess.Popen([args.python, os.path.join(HERE, "llama_cold.py"), args.model, request,
                          str(args.threads)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    at = {}
    for line in p.stdout:
        e = json.loads(line)
        at[e["event"]] = time.perf_counter() - t0
        if e["event"] == "done":
            at["answer"], at["tokens"] = e["answer"], e["tokens"]
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or "done" not in at:
        raise SystemExit("llama_cold.py failed")
    return {"imported_s": at["imported"], "loaded_s": at["loaded"],
            "first_token_s": at["first_token"], "answered_s": at["done"],
            "peak_rss_kb": ru.ru_maxrss, "tokens": at["tokens"], "answer": at["answer"]}


def med(xs):
    return statistics.median(xs)


def ms(x):
    return f"{x * 1000:.0f} ms"


def render(args, runs, m):
    e, h, ll = m["event"], m["http"], m["llama"]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=ROOT).stdout.strip() or "?"
    # The results file itself may hold another bench's fresh section.
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".",
                            ":(exclude)benches/RESULTS.md"], cwd=ROOT).returncode != 0
    cpu = next((line.split(": ", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    lines = [
        "<!-- scale:begin -->",
        "## Scale from zero: exec → first event answered, cluster mode (issue 10)",
        "",
        f"Written by `benches/scale.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" at git {rev}{' (with uncommitted changes)' if dirty else ''}. Re-run: "
        "`benches/scale.sh`.",
        "",
        f"- Machine: {cpu}, {os.cpu_count()} cores; {args.threads} inference threads on each "
        f"side; {args.repeats} repetition{'s' if args.repeats > 1 else ''} of each, interleaved, every one a new process; "
        "medians.",
        "- slmfn: what a Knative pod does for the first event of a burst. `slmfn serve "
        "--functions DIR` with `K_SERVICE` set (cluster mode), the example functions "
        "precompiled (`slmfn precompile`: nothing compiles at start, checked in the log), "
        "the default model (SmolLM2-135M Q4_1) preloaded before `/readyz` turns green, polled "
        "every 5 ms; then one `dev.ci.build.failed` event (binary mode, `{\"sample\": "
        "\"npm-404\"}`) answered by ci-triage with its `dev.ci.build.triaged` reply — a "
        "JSON-Schema-constrained triage, greedy. The HTTP row: the same start, then "
        "`POST /fn/ci-triage` with the same body.",
        "- llama.cpp (llama-cpp-python): `python llama_cold.py` exec → `import llama_cpp` → "
        "`Llama(...)` → the same chat (ci-triage's messages, the GGUF's template) under "
        "llama.cpp's grammar from the same JSON Schema, greedy, streamed: first token and "
        "the whole answer.",
        "",
        "| | exec → ready (model loaded) | exec → first token | exec → answered | "
        "the request itself | peak RSS |",
        "|---|---|---|---|---|---|",
        f"| slmfn, event (`POST /events`) | {ms(e['ready_s'])} | — | {ms(e['answered_s'])} | "
        f"{ms(e['request_s'])} | {e['peak_rss_kb'] / 1024:.0f} MiB |",
        f"| slmfn, HTTP (`POST /fn/ci-triage`) | {ms(h['ready_s'])} | — | "
        f"{ms(h['answered_s'])} | {ms(h['request_s'])} | {h['peak_rss_kb'] / 1024:.0f} MiB |",
        f"| llama.cpp | import {ms(ll['imported_s'])}, loaded {ms(ll['loaded_s'])} | "
        f"{ms(ll['first_token_s'])} | {ms(ll['answered_s'])} | "
        f"{ms(ll['answered_s'] - ll['loaded_s'])} | {ll['peak_rss_kb'] / 1024:.0f} MiB |",
        "",
        f"- Event path ÷ HTTP path, exec → answered: "
        f"**{e['answered_s'] / h['answered_s']:.2f}×**.",
        f"- slmfn event ÷ llama.cpp, exec → answered: "
        f"**{e['answered_s'] / ll['answered_s']:.2f}×**; slmfn exec → ready ÷ llama.cpp exec "
        f"→ loaded (a process up with the model in memory; llama.cpp waits for nothing else): "
        f"**{e['ready_s'] / ll['loaded_s']:.2f}×**; peak RSS "
        f"**{e['peak_rss_kb'] / ll['peak_rss_kb']:.2f}×**.",
        f"- Tokens generated, first run: slmfn {runs['event'][0]['tokens']} (from its "
        f"`/metrics`), llama.cpp {runs['llama'][0]['tokens']} (streamed pieces): the two "
        "greedy answers differ, so \"answered\" compares different lengths; llama.cpp's "
        "first token waits for its grammar to be built from the schema.",
        "- Every run (exec → ready / answered, s): event "
        + "; ".join(f"{r['ready_s']:.3f}/{r['answered_s']:.3f}" for r in runs["event"])
        + "; HTTP " + "; ".join(f"{r['ready_s']:.3f}/{r['answered_s']:.3f}"
                                for r in runs["http"])
        + "; llama.cpp (first token / answered) "
        + "; ".join(f"{r['first_token_s']:.3f}/{r['answered_s']:.3f}" for r in runs["llama"])
        + ".",
        f"- The answers, first run: slmfn `{json.dumps(runs['event'][0]['answer'])}`; "
        f"llama.cpp `{runs['llama'][0]['answer'].strip()}`.",
        "<!-- scale:end -->",
    ]
    section = "\n".join(lines) + "\n"
    path = os.path.join(ROOT, "benches", "RESULTS.md")
    text = open(path).read()
    if "<!-- scale:begin -->" in text:
        a = text.index("<!-- scale:begin -->")
        b = text.index("<!-- scale:end -->") + len("<!-- scale:end -->\n")
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(path, "w").write(text)
    say(f"wrote the scale section of {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slmfn", required=True)
    ap.add_argument("--functions", required=True, help="the precompiled functions dir")
    ap.add_argument("--model", required=True)
    ap.add_argument("--python", required=True, help="the venv python with llama_cpp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", default="/var/tmp/slmfn-bench/scale.json")
    args = ap.parse_args()

    with open(os.path.join(TRIAGE, "logs", f"{SAMPLE}.log")) as f:
        log = f.read()
    request = os.path.join(tempfile.mkdtemp(prefix="slmfn-scale-req-"), "request.json")
    with open(request, "w") as f:
        json.dump({"messages": [{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": f"CI log excerpt:\n{log}"}],
                   "schema": {"type": "object",
                              "properties": {"failing_step": {"const": "npm ci"},
                                             "likely_cause": PROSE, "suggested_fix": PROSE},
                              "required": ["failing_step", "likely_cause", "suggested_fix"],
                              "additionalProperties": False},
                   "max_tokens": 400}, f)
    runs = {"event": [], "http": [], "llama": []}
    try:
        measure(args, request, runs)
    finally:
        shutil.rmtree(os.path.dirname(request), ignore_errors=True)
    report(args, runs)


def measure(args, request, runs):
    for rep in range(args.repeats):
        for side in runs:
            r = llama_once(args, request) if side == "llama" else slmfn_once(args, side)
            runs[side].append(r)
            say(f"#{rep + 1} {side}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in r.items() if k.endswith("_s")))


def report(args, runs):
    medians = {side: {k: med([r[k] for r in rs]) for k in rs[0]
                      if k.endswith("_s") or k in ("peak_rss_kb", "tokens")}
               for side, rs in runs.items()}
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump({"runs": runs, "medians": medians, "threads": args.threads,
                   "repeats": args.repeats}, f, indent=1)
    render(args, runs, medians)


if __name__ == "__main__":
    main()
