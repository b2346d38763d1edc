"""Concurrent streams: slmfn's batched sessions vs llama.cpp's own server.

Run benches/concurrency.sh, not this directly. For each stream count N (1, 4, 8 by default),
alternating the two sides `--repeats` times, each run in a fresh process:

  - slmfn: `inference_bench concurrent` — a ModelPool with `parallel = N`, N different chats
    submitted at once, greedy, GEN tokens each, end of generation ignored;
  - llama.cpp: `llama-server --parallel N` (continuous batching; built by
    benches/llama-server.sh from the sources the llama-cpp-python sdist vendors), the same
    token ids sent by N concurrent streaming `/completion` requests, greedy (`top_k` 1),
    `n_predict` GEN, `ignore_eos`.

Aggregate tok/s = all generated tokens / (first request sent -> last answer complete); the
time between tokens is the gap between two streamed chunks of one stream. Ratios use the
medians. Rewrites the section of benches/RESULTS.md between `<!-- concurrency:begin -->` and
`<!-- concurrency:end -->`.
"""

import argparse
import datetime
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN, END = "<!-- concurrency:begin -->", "<!-- concurrency:end -->"


def say(*a):
    print("concurrency:", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slmfn_run(args, streams):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run(
        [args.bench, "concurrent", args.model, args.questions, str(args.gen), str(streams)],
        env=env, check=True, capture_output=True, text=True, timeout=600,
    ).stdout
    line = next(l for l in out.splitlines() if '"concurrent"' in l)
    return json.loads(line)


def stream_one(port, prompt, gen, record):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({
        "prompt": prompt, "n_predict": gen, "stream": True, "ignore_eos": True,
        "top_k": 1, "temperature": 0.0, "cache_prompt": False, "samplers": ["top_k"],
    })
    conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"llama-server answered {resp.status}: {resp.read()[:200]!r}")
    times, tokens = [], 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event.get("stop"):
            tokens = event.get("tokens_predicted", tokens)
            break
        times.append(time.perf_counter())
    conn.close()
    record.append((times, tokens))


def llama_run(args, streams, prompts):
    port = free_port()
    ctx = streams * args.slot_ctx
    cmd = [args.server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
           "-t", str(args.threads), "-tb", str(args.threads), "--parallel", str(streams),
           "-c", str(ctx), "-ngl", "0", "--no-webui", "--cont-batching"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError("llama-server exited: " + server.stderr.read()[-2000:])
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama-server did not become healthy in 120 s")
            time.sleep(0.1)
        record = []
        threads = [threading.Thread(target=stream_one, args=(port, p, args.gen, record))
                   for p in prompts[:streams]]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        if len(record) != streams:
            raise RuntimeError("a llama-server stream failed")
        tokens = sum(t for _, t in record)
        gaps = [b - a for times, _ in record for a, b in zip(times, times[1:])]
        ttft = [times[0] - started for times, _ in record if times]
        return {"tokens": tokens, "wall_s": wall, "aggregate_tok_s": tokens / wall,
                "gaps_s": gaps, "ttft_s": ttft}
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def render(args, results, commit):
    ours1 = statistics.median(r["aggregate_tok_s"] for r in results["1"]["slmfn"])
    base1 = statistics.median(r["aggregate_tok_s"] for r in results["1"]["llama"])
    targets = {"4": 2.0, "8": 2.5}
    lines = [BEGIN, "## Concurrent streams (issue 11, part 3)", "",
             f"`benches/concurrency.sh` at `{commit}`, {datetime.date.today()}, {machine()}; "
             f"{args.threads} threads each side, {args.gen} greedy tokens per stream, different "
             f"chats per stream (`benches/concurrency/questions.txt`), medians of "
             f"{args.repeats} runs, each in a fresh process. slmfn: a pool with `parallel = N` "
             f"(batched sessions, `crate::batcher`). llama.cpp: `llama-server --parallel N` "
             f"(continuous batching) built from the sources the llama-cpp-python sdist "
             f"vendors, {args.slot_ctx} tokens of context per slot.", "",
             "| streams | slmfn tok/s (all streams) | llama-server tok/s | slmfn ÷ llama-server "
             "| slmfn ÷ single-stream llama.cpp | target | slmfn between tokens p50 / p99 "
             "| llama-server p50 / p99 | TTFT p50 slmfn / llama-server |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for n in args.streams:
        r = results[str(n)]
        ours = statistics.median(x["aggregate_tok_s"] for x in r["slmfn"])
        theirs = statistics.median(x["aggregate_tok_s"] for x in r["llama"])
        g_ours = [g for x in r["slmfn"] for g in x["gaps_s"]]
        g_theirs = [g for x in r["llama"] for g in x["gaps_s"]]
        t_ours = [t for x in r["slmfn"] for t in x["ttft_s"]]
        t_theirs = [t for x in r["llama"] for t in x["ttft_s"]]
        vs_single = ours / base1
        target = targets.get(str(n))
        if target:
            single_ok, server_ok = vs_single >= target, ours >= theirs
            word = lambda ok: "met" if ok else "**not met**"
            goal = f"≥ {target}× single: {word(single_ok)}; ≥ 1.0× server: {word(server_ok)}"
            verdicts.append(single_ok and server_ok)
        else:
            goal = "—"
        lines.append(
            f"| {n} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}× | {vs_single:.2f}× | {goal} "
            f"| {pct(g_ours, 50) * 1e3:.1f} / {pct(g_ours, 99) * 1e3:.1f} ms "
            f"| {pct(g_theirs, 50) * 1e3:.1f} / {pct(g_theirs, 99) * 1e3:.1f} ms "
            f"| {pct(t_ours, 50) * 1e3:.0f} / {pct(t_theirs, 50) * 1e3:.0f} ms |")
    lines += ["", f"Single-stream llama.cpp (llama-server, one slot): {base1:.1f} tok/s; "
              f"slmfn with `parallel = 1`: {ours1:.1f} tok/s. Every run's figures: "
              f"`{args.json_out}`.", "",
              "- Aggregate tok/s counts all streams' tokens over the whole run, prompts "
              "included: every stream starts at once, so the first tokens wait for all the "
              "prompts on both sides.",
              "- Between tokens: the gaps between one stream's streamed chunks after its first. "
              "slmfn feeds a prompt 32 tokens per step while other sessions generate, so a "
              "stream whose prompt finished first waits for the others' remaining chunks: that "
              "is most of slmfn's p99.",
              "- The single-stream baseline of the ratio is llama-server with one slot in the "
              "same run (benches/inference.sh measures llama.cpp through llama-cpp-python "
              "instead).", END, ""]
    return "\n".join(lines), verdicts


def write_section(path, section):
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n\n"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        if b < len(text) and text[b] == "\n":
            b += 1
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--bench", help="the release `inference_bench` example")
    ap.add_argument("--server", help="the `llama-server` binary")
    ap.add_argument("--questions", default=os.path.join(ROOT, "benches", "concurrency", "questions.txt"))
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slot-ctx", type=int, default=512)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--results", default=os.path.join(ROOT, "benches", "RESULTS.md"))
    ap.add_argument("--json-out", default="/var/tmp/slmfn-bench/concurrency.json")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the section from --json-out's figures, measuring nothing")
    args = ap.parse_args()
    if args.render_only:
        saved = json.load(open(args.json_out))
        for key in ("streams", "gen", "threads", "repeats", "slot_ctx", "commit"):
            setattr(args, key, saved["args"][key])
        section, _ = render(args, saved["results"], args.commit)
        write_section(args.results, section)
        print(section)
        return
    if not (args.model and args.bench and args.server):
        ap.error("--model, --bench and --server are required unless --render-only")
    if 1 not in args.streams:
        args.streams = [1] + args.streams
    results = {}
    for n in args.streams:
        r = results.setdefault(str(n), {"slmfn": [], "llama": []})
        for rep in range(args.repeats):
            ours = slmfn_run(args, n)
            r["slmfn"].append(ours)
            theirs = llama_run(args, n, ours["prompts"])
            r["llama"].append(theirs)
            say(f"{n} streams, run {rep + 1}: slmfn {ours['aggregate_tok_s']:.1f} tok/s "
                f"({ours['batched_session_steps']} session steps in {ours['batched_steps']} "
                f"passes), llama-server {theirs['aggregate_tok_s']:.1f} tok/s")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump({"args": vars(args), "results": results}, f)
    section, verdicts = render(args, results, args.commit)
    write_section(args.results, section)
    print(section)


if __name__ == "__main__":
    main()
