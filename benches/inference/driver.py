"""Runs the inference benchmark of issue 3 and rewrites the inference section of RESULTS.md.

Started by benches/inference.sh, which builds and installs what this needs. Standard library
only. Measurements (each repeated --repeats times, medians reported):

  1. throughput, one process per repetition and side, interleaved (llama.cpp, slmfn, slmfn
     with the opt-in f32 prefill): load, one warm-up generation, then --runs measured
     generations of --gen tokens after the same --prompt-tokens token ids, greedy,
     end-of-generation ignored; peak RSS of each process from wait4(); then the same for a
     6-token prompt (time to first token only);
  2. warm time to first token of the deployed support-desk agent (max_tokens=1) against the
     same chat through the pool in-process (examples/inference_bench.rs `pool`, a second
     process kept up meanwhile), and through the OpenAI-compatible endpoint (the same server,
     no WASM), for a short question and for the support ticket; the three paths take turns;
  3. prompt cache: time to first token of the short question's chat from an empty cache, and
     right after the ticket's chat (same system prompt: the shared prefix is reused), one
     process per repetition and side (llama-cpp-python rewinds its context the way
     `Llama.generate` does);
  4. cold start: `slmfn` exec -> /readyz green -> first token from the deployed agent (model
     preloaded, function already in the data directory), against a Python process that imports
     llama-cpp-python, loads the model and samples one token of the same chat prompt.

Before each measurement it waits (bounded) for the 1-minute load average to drop below
--max-load and the cores to be idle enough (--max-busy); it records the load average and the
CPU share other processes took during the measurement (busy ticks of /proc/stat minus the CPU
time of this script and of the processes it ran), and measures again (--retries) when that
share exceeds --max-other. Raw numbers go to --json-out; --render-only rewrites the section
from them.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "benches", "inference")
BEGIN = "<!-- inference:begin -->"
END = "<!-- inference:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def say(*a):
    print("inference:", *a, file=sys.stderr, flush=True)


# --- load gating and CPU accounting ------------------------------------------------------------


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def self_cpu():
    t = os.times()
    return t.user + t.system


def proc_cpu(pid):
    """CPU seconds of a live process (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def busy_now(secs=1.0):
    """Share (%) of all cores busy over the next `secs` (this script is idle meanwhile)."""
    b0, t0 = busy_ticks(), time.monotonic()
    time.sleep(secs)
    return (busy_ticks() - b0) / CLK_TCK / ((time.monotonic() - t0) * NCPU) * 100


class Gate:
    """Waits for a quiet machine; remembers how each measurement went."""

    def __init__(self, args):
        self.max_load = args.max_load
        self.max_busy = args.max_busy
        self.max_other = args.max_other
        self.retries = args.retries
        self.max_wait = args.max_wait
        self.budget = args.total_wait
        self.records = []

    def wait(self, what):
        """Until the 1-min load average is below max_load and the cores were less than
        max_busy % busy over the last second; at most max_wait (and the total budget)."""
        start = time.monotonic()
        while True:
            la = loadavg()
            busy = busy_now()
            if la[0] < self.max_load and busy < self.max_busy:
                break
            waited = time.monotonic() - start
            if waited >= self.max_wait or self.budget <= 0:
                say(f"{what}: load {la[0]:.2f} (busy {busy:.0f}%) still too high after "
                    f"{waited:.0f} s; measuring anyway (noted in RESULTS.md)")
                break
            if int(waited) % 60 < 6:
                say(f"{what}: waiting: load {la[0]:.2f} (limit {self.max_load}), "
                    f"{busy:.0f}% busy (limit {self.max_busy}%)")
            time.sleep(5)
            self.budget -= 6
        return Meter(self, what, la, time.monotonic() - start)

    def measure(self, what, fn):
        """Runs fn() -> (result, CPU seconds of the processes it ran) after wait(); runs it
        again (up to `retries` times) when other processes took more than max_other % of the
        cores meanwhile. Returns the last result."""
        for attempt in range(self.retries + 1):
            m = self.wait(what)
            result, cpu = fn()
            rec = m.done(cpu)
            rec["attempt"] = attempt + 1
            if rec["other_cpu_pct"] <= self.max_other or attempt == self.retries:
                return result, rec
            rec["discarded"] = True
            say(f"{what}: other processes took {rec['other_cpu_pct']}% of the CPU; again")


class Meter:
    def __init__(self, gate, what, la, waited):
        self.gate, self.what, self.la, self.waited = gate, what, la, waited
        self.t0 = time.monotonic()
        self.b0 = busy_ticks()
        self.s0 = self_cpu()

    def done(self, child_cpu_s):
        """child_cpu_s: CPU seconds of the processes we ran during the measurement."""
        dt = time.monotonic() - self.t0
        busy = (busy_ticks() - self.b0) / CLK_TCK
        ours = child_cpu_s + (self_cpu() - self.s0)
        other = max(0.0, busy - ours) / (dt * NCPU) * 100 if dt > 0 else 0.0
        rec = {
            "what": self.what,
            "load1": self.la[0],
            "over": self.la[0] >= self.gate.max_load,
            "discarded": False,
            "waited_s": round(self.waited, 1),
            "other_cpu_pct": round(other, 1),
            "secs": round(dt, 2),
        }
        self.gate.records.append(rec)
        return rec


# --- child processes ---------------------------------------------------------------------------


def run_json(cmd, env=None):
    """Runs cmd, returns (JSON lines of its stdout, peak RSS kB, CPU seconds)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {' '.join(cmd)}")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines, ru.ru_maxrss, ru.ru_utime + ru.ru_stime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} if data else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class Server:
    def __init__(self, args, data_dir):
        self.port = free_port()
        self.log = open(os.path.join(data_dir, "slmfn.log"), "ab")
        self.cmd = [
            args.slmfn, "--bind", "127.0.0.1", "--port", str(self.port),
            "--data-dir", os.path.join(data_dir, "data"),
            "--model", f"smollm2={args.model}", "--preload", "smollm2",
            "--model-keep-alive", "forever",
        ]
        self.env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))

    def start(self):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log, env=self.env)
        return self

    def wait_ready(self, timeout=60):
        """Polls /readyz every 5 ms; returns seconds since start."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                status, _ = request(self.port, "GET", "/readyz", timeout=5)
                if status == 200:
                    return time.perf_counter() - self.t0
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"slmfn exited ({self.proc.returncode}); see {self.log.name}")
            time.sleep(0.005)
        raise SystemExit(f"slmfn not ready after {timeout} s; see {self.log.name}")

    def stop(self):
        """SIGTERM, wait; returns (peak RSS kB, CPU seconds)."""
        self.proc.send_signal(signal.SIGTERM)
        _, _, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        return ru.ru_maxrss, ru.ru_utime + ru.ru_stime


def invoke_agent(port, question):
    t0 = time.perf_counter()
    status, body = request(port, "POST", "/fn/support-desk",
                        {"question": question, "max_tokens": 1, "temperature": 0})
    wall = time.perf_counter() - t0
    if status != 200:
        raise SystemExit(f"agent answered {status}: {body[:300]!r}")
    b = json.loads(body)
    return wall, b


def invoke_openai(port, system, question):
    t0 = time.perf_counter()
    status, body = request(port, "POST", "/v1/chat/completions", {
        "model": "smollm2", "max_tokens": 1, "temperature": 0,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": question}],
    })
    wall = time.perf_counter() - t0
    if status != 200:
        raise SystemExit(f"/v1/chat/completions answered {status}: {body[:300]!r}")
    return wall, json.loads(body)


# --- the measurements --------------------------------------------------------------------------


def interleaved(args, gate, what, sides):
    """Runs each side's command once per repetition, sides taking turns, each through the load
    gate; yields (repetition, side, JSON lines, peak RSS in kB, the gate's record)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    for rep in range(args.repeats):
        for side, cmd in sides.items():
            def once(cmd=cmd):
                lines, rss, cpu = run_json(cmd, env)
                return (lines, rss), cpu

            (lines, rss), rec = gate.measure(f"{what} {side} #{rep + 1}", once)
            yield rep, side, lines, rss, rec


def throughput(args, gate, files):
    sides = {
        "llama": [args.python, os.path.join(HERE, "bench_llama.py"), "generate", args.model,
                  files["raw"], str(args.gen), str(args.runs + 1), str(args.threads)],
        "slmfn": [args.bench, "generate", args.model, files["raw"], str(args.gen),
                  str(args.runs + 1)],
        "slmfn_f32": [args.bench, "generate", args.model, files["raw"], str(args.gen),
                      str(args.runs + 1), "dense"],
    }
    res = {k: {"procs": []} for k in sides}
    for rep, side, lines, rss, rec in interleaved(args, gate, "throughput", sides):
        load = next(x for x in lines if x["event"] == "load")
        runs = [x for x in lines if x["event"] == "run"]
        res[side]["procs"].append({
            "load": load, "peak_rss_kb": rss, "warmup": runs[0], "runs": runs[1:],
            "meter": rec,
        })
        r = runs[1:]
        say(f"{side} #{rep + 1}: load {load['load_s']:.3f} s, prompt "
            f"{med([x['prompt_tps'] for x in r]):.1f} tok/s, generation "
            f"{med([x['gen_tps'] for x in r]):.1f} tok/s, peak RSS {rss // 1024} MiB "
            f"(load avg {rec['load1']:.2f}, other CPU {rec['other_cpu_pct']}%)")
    for side, d in res.items():
        runs = [r for p in d["procs"] for r in p["runs"]]
        d["prompt_tps"] = med([r["prompt_tps"] for r in runs])
        d["gen_tps"] = med([r["gen_tps"] for r in runs])
        d["ttft_s"] = med([r["ttft_s"] for r in runs])
        d["first_run_ttft_s"] = med([p["warmup"]["ttft_s"] for p in d["procs"]])
        d["load_s"] = med([p["load"]["load_s"] for p in d["procs"]])
        d["peak_rss_kb"] = med([p["peak_rss_kb"] for p in d["procs"]])
        if side == "llama":
            d["native_prompt_tps"] = med([r["native_prompt_tps"] for r in runs])
            d["native_gen_tps"] = med([r["native_gen_tps"] for r in runs])
        d["tokens"] = d["procs"][0]["runs"][0]["tokens"]
    return res


def short_prompt(args, gate, files):
    """Time to first token of a 6-token prompt (the first 6 of the throughput prompt's ids),
    one process per repetition and side, 2 tokens generated per run."""
    sides = {
        "llama": [args.python, os.path.join(HERE, "bench_llama.py"), "generate", args.model,
                  files["raw6"], "2", str(args.runs + 1), str(args.threads)],
        "slmfn": [args.bench, "generate", args.model, files["raw6"], "2", str(args.runs + 1)],
    }
    res = {k: {"ttft": []} for k in sides}
    for rep, side, lines, _, _ in interleaved(args, gate, "short prompt", sides):
        runs = [x for x in lines if x["event"] == "run"][1:]  # the first is a warm-up
        res[side]["ttft"] += [r["ttft_s"] for r in runs]
        say(f"short prompt {side} #{rep + 1}: TTFT {med([r['ttft_s'] for r in runs]) * 1e3:.1f} ms")
    for d in res.values():
        d["ttft_s"] = med(d["ttft"])
    return res


def prompt_cache(args, gate, files):
    sides = {
        "llama": [args.python, os.path.join(HERE, "bench_llama.py"), "prompt-cache", args.model,
                  files["chat_ticket"], files["chat_short"], str(args.runs + 1),
                  str(args.threads)],
        "slmfn": [args.bench, "prompt-cache", args.model, files["chat_ticket"],
                  files["chat_short"], str(args.runs + 1)],
    }
    res = {k: {"runs": []} for k in sides}
    for rep, side, lines, _, _ in interleaved(args, gate, "prompt cache", sides):
        runs = [x for x in lines if x["event"] == "run"][1:]  # the first is a warm-up
        res[side]["runs"].extend(runs)
        say(f"prompt cache {side} #{rep + 1}: fresh "
            f"{ms(med([r['fresh_ttft_s'] for r in runs]))}, cached "
            f"{ms(med([r['cached_ttft_s'] for r in runs]))} "
            f"({runs[0]['cached_tokens']} of {runs[0]['prompt_tokens']} tokens reused)")
    for d in res.values():
        d["fresh_s"] = med([r["fresh_ttft_s"] for r in d["runs"]])
        d["cached_s"] = med([r["cached_ttft_s"] for r in d["runs"]])
        d["cached_tokens"] = d["runs"][0]["cached_tokens"]
        d["prompt_tokens"] = d["runs"][0]["prompt_tokens"]
        d["same_token"] = all(r["fresh_token"] == r["cached_token"] for r in d["runs"])
    return res


def warm_ttft(args, gate, files, prompts, data_dir):
    """Deployed agent vs /v1 vs the pool in-process, per prompt, interleaved: the server and a
    pool process (examples/inference_bench.rs `pool`) are both up, idle but for the call being
    timed, and the three paths take turns (the order rotating), so drift hits them alike."""
    res = {}
    pool = subprocess.Popen(
        [args.bench, "pool", args.model, files["system"]], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, RAYON_NUM_THREADS=str(args.threads)))
    server = None
    try:
        pool_load = json.loads(pool.stdout.readline())
        if pool_load.get("event") != "load":
            raise SystemExit(f"inference_bench pool: unexpected {pool_load}")
        res["pool_preload_s"] = pool_load["load_s"]

        def pool_call(name):
            pool.stdin.write(files["q_" + name] + "\n")
            pool.stdin.flush()
            line = pool.stdout.readline()
            if not line:
                raise SystemExit("inference_bench pool exited")
            return json.loads(line)

        server = Server(args, data_dir).start()
        server.wait_ready()
        deploy = subprocess.run(
            [args.fn, "deploy", "--path", os.path.join(ROOT, "functions", "support-desk"),
             "--no-build", "--json"],
            env=dict(os.environ, SLMFN_URL=f"http://127.0.0.1:{server.port}"),
            capture_output=True, text=True)
        if deploy.returncode != 0:
            raise SystemExit(f"fn deploy failed: {deploy.stderr}")
        for name, question in prompts.items():
            calls = {
                "agent": lambda q=question: invoke_agent(server.port, q),
                "openai": lambda q=question: invoke_openai(server.port, files["system_text"], q),
                "pool": lambda n=name: pool_call(n),
            }
            # Warm-up: the first call instantiates the component and fills caches.
            for call in calls.values():
                call()
            d = {"agent_s": [], "openai_s": [], "pool_s": [], "agent_inner_s": []}
            for rep in range(args.repeats):
                order = list(calls)[rep % 3:] + list(calls)[:rep % 3]

                def once(order=order, calls=calls):
                    c0 = proc_cpu(server.proc.pid) + proc_cpu(pool.pid)
                    got = {}
                    for k in order:
                        # The same call once unmeasured first: the server's model session
                        # keeps one caller's prompt at a time (the agent's or /v1's), so each
                        # measured call finds its own prompt cached, as the pool's does.
                        calls[k]()
                        # Let the other process's idle worker threads stop spinning first.
                        time.sleep(0.05)
                        got[k] = calls[k]()
                    return got, proc_cpu(server.proc.pid) + proc_cpu(pool.pid) - c0

                got, _ = gate.measure(f"warm TTFT {name} #{rep + 1}", once)
                wall, body = got["agent"]
                d["agent_s"].append(wall)
                d["agent_inner_s"].append(body["usage"]["duration_ms"] / 1000)
                d["openai_s"].append(got["openai"][0])
                d["pool_s"].append(got["pool"]["wall_s"])
            d["prompt_tokens"] = body["usage"]["prompt_tokens"]
            d["openai_prompt_tokens"] = got["openai"][1]["usage"]["prompt_tokens"]
            d["pool_prompt_tokens"] = got["pool"]["prompt_tokens"]
            d["pool_cached_tokens"] = got["pool"]["cached_tokens"]
            d["openai_cached_tokens"] = got["openai"][1]["usage"]["prompt_tokens_details"][
                "cached_tokens"]
            d["agent_answer"] = body["answer"]
            d["pool_answer"] = got["pool"]["text"]
            for k in ("agent_s", "openai_s", "agent_inner_s", "pool_s"):
                d[k[:-2] + "_med_s"] = med(d[k])
            res[name] = d
    finally:
        if server is not None:
            server.stop()
        pool.stdin.close()
        pool.wait()
    for n in prompts:
        if res[n]["prompt_tokens"] != res[n]["pool_prompt_tokens"]:
            say(f"warning: the agent and the pool saw prompts of different lengths ({n})")
    return res


def cold_start(args, gate, files, data_dir):
    res = {"slmfn": [], "llama": []}
    question = files["q_short_text"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for rep in range(args.repeats):
        def slmfn_once():
            server = Server(args, data_dir).start()
            ready = server.wait_ready()
            wall, body = invoke_agent(server.port, question)
            first = time.perf_counter() - server.t0
            rss, cpu = server.stop()
            return (ready, first, wall, body, rss), cpu

        (ready, first, wall, body, rss), _ = gate.measure(
            f"cold start slmfn #{rep + 1}", slmfn_once)
        res["slmfn"].append({"ready_s": ready, "first_token_s": first,
                             "request_s": wall, "peak_rss_kb": rss, "answer": body["answer"]})
        say(f"cold slmfn #{rep + 1}: ready {ready:.3f} s, first token {first:.3f} s")

        def llama_once():
            t0 = time.perf_counter()
            p = subprocess.Popen(
                [args.python, os.path.join(HERE, "bench_llama.py"), "cold", args.model,
                 files["chat_short"], str(args.threads)],
                stdout=subprocess.PIPE, text=True, env=env)
            events = {}
            for line in p.stdout:
                e = json.loads(line)
                events[e["event"]] = e
                if e["event"] == "first_token":
                    events["wall"] = time.perf_counter() - t0
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0 or "wall" not in events:
                raise SystemExit("bench_llama.py cold failed")
            return (events, ru), ru.ru_utime + ru.ru_stime

        (events, ru), _ = gate.measure(f"cold start llama.cpp #{rep + 1}", llama_once)
        res["llama"].append({
            "first_token_s": events["wall"], "import_s": events["imported"]["t"],
            "load_s": events["loaded"]["load_s"], "ttft_s": events["first_token"]["ttft_s"],
            "in_process_s": events["loaded"]["load_s"] + events["first_token"]["ttft_s"],
            "peak_rss_kb": ru.ru_maxrss,
        })
        say(f"cold llama.cpp #{rep + 1}: first token {events['wall']:.3f} s")
    for side in res.values():
        keys = side[0].keys()
        side.append({k: med([r[k] for r in side]) for k in keys if k != "answer"})
    return {k: {"runs": v[:-1], "med": v[-1]} for k, v in res.items()}


# --- helpers -----------------------------------------------------------------------------------


def med(xs):
    return statistics.median(xs)


def support_desk_system():
    src = open(os.path.join(ROOT, "functions", "support-desk", "src", "lib.rs")).read()
    m = re.search(r'const SYSTEM: &str = "((?:[^"\\]|\\.)*)";', src, re.S)
    if not m:
        raise SystemExit("cannot find `const SYSTEM` in functions/support-desk/src/lib.rs")
    # Rust string continuation: backslash-newline plus the next line's leading whitespace.
    text = re.sub(r"\\\n\s*", "", m.group(1))
    return text.replace('\\"', '"').replace("\\\\", "\\")


def machine():
    info = {"nproc": NCPU}
    with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    m = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    info["cpu"] = m.group(1).strip() if m else "?"
    flags = set(re.search(r"flags\s*:\s*(.*)", cpuinfo).group(1).split())
    info["host_avx512"] = "avx512f" in flags
    cfg = open(os.path.join(ROOT, ".cargo", "config.toml")).read()
    m = re.search(r"target-cpu=([\w-]+)", cfg)
    info["target_cpu"] = m.group(1) if m else "(default)"
    info["rustflags_env"] = os.environ.get("RUSTFLAGS", "")
    info["rustc"] = subprocess.run(["rustc", "--version"], capture_output=True,
                                   text=True).stdout.strip()
    lock = open(os.path.join(ROOT, "Cargo.lock")).read()
    m = re.search(r'name = "candle-core"\nversion = "([^"]+)"', lock)
    info["candle"] = m.group(1) if m else "?"
    info["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
    # Local changes that could matter (RESULTS.md itself does not).
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                            "--", ".", ":!benches/RESULTS.md"],
                           capture_output=True, text=True).stdout.splitlines()
    info["dirty_files"] = [line[3:] for line in dirty]
    info["dirty"] = bool(dirty)
    return info


def fmt(x, d=1):
    return f"{x:.{d}f}"


def ms(x):
    return f"{x * 1000:.0f} ms"


def mib(kb):
    return f"{kb / 1024:.0f} MiB"


def met(ok):
    return "**met**" if ok else "**not met**"


def samples(xs):
    return "/".join(f"{x * 1000:.0f}" for x in xs)


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# --- RESULTS.md --------------------------------------------------------------------------------


def render(args, info, tp, warm, cold, gate, llama_info, files, date, pc=None, short=None):
    L, S, Q = tp["llama"], tp["slmfn"], tp["slmfn_f32"]
    recs = [r for r in gate.records if not r["discarded"]]
    redone = [r for r in gate.records if r["discarded"]]
    noisy = [r for r in recs if r["other_cpu_pct"] > args.max_other]
    loads = [r["load1"] for r in recs]
    others = [r["other_cpu_pct"] for r in recs]
    over = [r for r in recs if r["over"]]
    out = []
    w = out.append
    files_changed = info.get("dirty_files")
    if files_changed:
        shown = ", ".join(f"`{f}`" for f in files_changed[:6])
        changes = f" with local changes to {shown}{' …' if len(files_changed) > 6 else ''}"
    elif info["dirty"] and files_changed is None:
        changes = " (with local changes)"
    else:
        changes = ""
    w(BEGIN)
    w("## Inference: slmfn vs llama.cpp (issues 3 and 11)")
    w("")
    w(f"Written by `benches/inference.sh` from measurements of {date} at commit `{info['commit']}`{changes}; "
      "this section is rewritten on every run. All ratios come from this one run.")
    w("")
    w(f"- Machine: {info['cpu']}, {info['nproc']} vCPU (AVX-512 on the host: "
      f"{'yes' if info['host_avx512'] else 'no'}).")
    sl = S["procs"][0]["load"]
    feats = ", ".join(f for f in ("avx2", "fma", "f16c", "avx512f") if sl.get(f)) or "none"
    kernels = sl.get("kernels", "?")
    info["rustflags_note"] = (f"and `RUSTFLAGS={info['rustflags_env']}` " if info["rustflags_env"]
                              else "")
    w(f"- slmfn: release build, `-C target-cpu={info['target_cpu']}` from `.cargo/config.toml` "
      f"{info['rustflags_note']}(compiled in: {feats}), {info['rustc']}, candle {info['candle']}; "
      f"`RAYON_NUM_THREADS={args.threads}`; kernels chosen at run time: `{kernels}`. Default load "
      "options (prompts through the quantized weights with 16-bit activations, generation with "
      "8-bit ones; no f32 copies) unless said otherwise.")
    w(f"- llama.cpp: llama-cpp-python {llama_info['version']} built by `pip install` with "
      "default `CMAKE_ARGS` (GGML_NATIVE: compiled for this CPU), "
      f"`n_threads={args.threads}`, `n_threads_batch={args.threads}`, `n_ctx={llama_info['n_ctx']}`, "
      "`n_batch=512`, flash attention off (the library's default), mmap on; "
      f"ggml reports `{llama_info['system_info'].strip().rstrip('|').strip()}`.")
    w(f"- Model: `{os.path.basename(args.model)}` ({files['model_bytes'] / 1e6:.1f} MB, "
      f"sha256 `{files['sha256'][:12]}…`), file in the page cache (read once before measuring).")
    w(f"- Workload: the same {args.prompt_tokens} prompt token ids on both sides (the support "
      f"ticket of `benches/inference/ticket.txt`, cut to {args.prompt_tokens} tokens), "
      f"{args.gen} generated tokens, greedy, end-of-generation ignored on both sides.")
    w(f"- Repetitions: {args.repeats} processes per side, interleaved; each loads the model, runs "
      f"one warm-up generation, then {args.runs} measured ones: rates and TTFT are medians of the "
      f"{args.repeats * args.runs} measured generations, load time and peak RSS medians of the "
      f"{args.repeats} processes. Warm and cold measurements: medians of {args.repeats}.")
    w(f"- Load: each measurement waited (bounded) for a 1-minute load average below "
      f"{args.max_load} and cores less than {args.max_busy:.0f}% busy, and was done again (at "
      f"most {args.retries} times) when other processes took more than {args.max_other:.0f}% of "
      f"the CPU meanwhile ({len(redone)} redone this run). Kept measurements: 1-min load average "
      f"at their start min {min(loads):.2f}, median {med(loads):.2f}, max {max(loads):.2f} "
      f"(our own previous measurement included); CPU share taken by other processes during "
      f"them: median {med(others):.1f}%, max {max(others):.1f}%. "
      + (f"**{len(over)} of {len(recs)} started with the load above the threshold** "
         f"({', '.join(r['what'] for r in over)}). " if over else
         "Every one started below the threshold. ")
      + (f"**Noisy even after retries: {', '.join(r['what'] for r in noisy)}.**" if noisy
         else ""))
    w("")
    w("### Throughput (same GGUF, same threads, same prompt)")
    w("")
    w("| | llama.cpp | slmfn | slmfn / llama.cpp | target | | slmfn, opt-in f32 prefill |")
    w("|---|---|---|---|---|---|---|")
    rp = S["prompt_tps"] / L["prompt_tps"]
    rg = S["gen_tps"] / L["gen_tps"]
    rt = S["ttft_s"] / L["ttft_s"]
    rl = S["load_s"] / L["load_s"]
    rr = S["peak_rss_kb"] / L["peak_rss_kb"]
    w(f"| prompt processing, tok/s | {fmt(L['prompt_tps'])} | {fmt(S['prompt_tps'])} | "
      f"{rp:.2f}× | ≥ 1.2× | {met(rp >= 1.2)} | {fmt(Q['prompt_tps'])} "
      f"({Q['prompt_tps'] / L['prompt_tps']:.2f}×) |")
    w(f"| generation, tok/s | {fmt(L['gen_tps'])} | {fmt(S['gen_tps'])} | {rg:.2f}× | ≥ 1.3× | "
      f"{met(rg >= 1.3)} | {fmt(Q['gen_tps'])} ({Q['gen_tps'] / L['gen_tps']:.2f}×) |")
    w(f"| time to first token ({args.prompt_tokens}-token prompt) | {ms(L['ttft_s'])} | "
      f"{ms(S['ttft_s'])} | {rt:.2f}× | ≤ 1.0× | {met(rt <= 1.0)} | {ms(Q['ttft_s'])} |")
    if short:
        r6 = short["slmfn"]["ttft_s"] / short["llama"]["ttft_s"]
        w(f"| time to first token (6-token prompt) | {ms(short['llama']['ttft_s'])} | "
          f"{ms(short['slmfn']['ttft_s'])} | {r6:.2f}× | ≤ 1.0× | {met(r6 <= 1.0)} | |")
    w(f"| TTFT, first generation of the process | {ms(L['first_run_ttft_s'])} | "
      f"{ms(S['first_run_ttft_s'])} | {S['first_run_ttft_s'] / L['first_run_ttft_s']:.2f}× | | | "
      f"{ms(Q['first_run_ttft_s'])} |")
    w(f"| model load | {fmt(L['load_s'], 3)} s | {fmt(S['load_s'], 3)} s | "
      f"{rl:.2f}× | ≤ 1.5× | {met(rl <= 1.5)} | {fmt(Q['load_s'], 3)} s |")
    w(f"| peak RSS (whole process) | {mib(L['peak_rss_kb'])} | {mib(S['peak_rss_kb'])} | "
      f"{rr:.2f}× | ≤ 1.0× | {met(rr <= 1.0)} | {mib(Q['peak_rss_kb'])} |")
    w("")
    agree = common_prefix(L["tokens"], S["tokens"])
    agree_q = common_prefix(L["tokens"], Q["tokens"])
    w(f"- llama.cpp's numbers are timed around llama-cpp-python calls (`Llama.eval`, the native "
      f"greedy sampler); llama.cpp's own counters give {fmt(L['native_prompt_tps'])} tok/s prompt "
      f"and {fmt(L['native_gen_tps'])} tok/s generation, so the Python loop costs "
      f"{(1 - L['gen_tps'] / L['native_gen_tps']) * 100:.1f}% of generation speed. slmfn's come "
      "from `Usage` of `Session::generate` (sampling and detokenization included). Generation "
      "rate on both sides: (tokens − 1) / (end − first token).")
    if short:
        w(f"- 6-token prompt: every TTFT sample (ms), llama.cpp {samples(short['llama']['ttft'])}; "
          f"slmfn {samples(short['slmfn']['ttft'])}.")
    w(f"- Peak RSS of the llama.cpp process includes the Python interpreter with numpy "
      f"(`python -c 'import llama_cpp'` alone peaks at {mib(files['python_rss_kb'])}). "
      "The opt-in f32 prefill column includes its f32 copies of the matrices (4 bytes per "
      "weight).")
    w(f"- Greedy outputs: llama.cpp and slmfn agree on the first {agree} generated tokens "
      f"({agree_q} with the f32 prefill); they then diverge (different kernels, "
      "different rounding).")
    w("")
    if warm:
        w("### Warm time to first token of a deployed agent")
        w("")
        w("`slmfn --model smollm2=PATH --preload smollm2`, `functions/support-desk` deployed with "
          "`fn deploy`; `POST /fn/support-desk` with `max_tokens: 1` (client wall time, loopback "
          "HTTP) against the same chat (the agent's system prompt + the question) through "
          "`ModelPool::generate` in-process (`examples/inference_bench.rs pool`), and through "
          "`POST /v1/chat/completions` on the same server (HTTP, no WASM). Both processes are up; "
          "the three paths take turns (order rotating), one warm-up call each, then medians of "
          f"{args.repeats}. Each measured call follows an unmeasured one of the same path: model "
          "sessions keep one caller's prompt at a time (the server's serves the agent and /v1 in "
          "turn), so every measured call reuses its whole prompt but the last token from the prompt "
          "cache (pool: "
          + ", ".join(f"{warm[n]['pool_cached_tokens']} of {warm[n]['pool_prompt_tokens']}"
                      for n in ("short", "ticket"))
          + " tokens; /v1: "
          + ", ".join(f"{warm[n]['openai_cached_tokens']} of {warm[n]['openai_prompt_tokens']}"
                      for n in ("short", "ticket"))
          + "). What differs between the paths is then HTTP, the WASM hop and the template, "
          "against one token's forward pass.")
        w("")
        w("| question | prompt tokens | pool, in-process | /v1/chat/completions | deployed agent "
          "| agent / pool | target | |")
        w("|---|---|---|---|---|---|---|---|")
        for name, label in (("short", "\"What is the capital of France?\""),
                            ("ticket", "the support ticket")):
            d = warm[name]
            r = d["agent_med_s"] / d["pool_med_s"]
            w(f"| {label} | {d['pool_prompt_tokens']} | {ms(d['pool_med_s'])} | "
              f"{ms(d['openai_med_s'])} | {ms(d['agent_med_s'])} (inference inside: "
              f"{ms(d['agent_inner_med_s'])}) | {r:.2f}× | ≤ 1.2× | {met(r <= 1.2)} |")
        w("")
        for name in ("short", "ticket"):
            d = warm[name]
            w(f"- Every sample, {name} (ms): pool {samples(d['pool_s'])}; /v1 "
              f"{samples(d['openai_s'])}; agent {samples(d['agent_s'])}, of which inference (as "
              f"the agent's `usage.duration_ms` reports it) {samples(d['agent_inner_s'])}. Best of "
              f"each: agent / pool {min(d['agent_s']) / min(d['pool_s']):.2f}×.")
        w("")
    else:
        w("### Warm time to first token of a deployed agent")
        w("")
        w("Not measured in this run (`--without-agent`): the deployed `support-desk` agent "
          "now calls tools (the `tickets` component, MiniLM for its FAQ search), which this "
          "bench does not deploy, so it answers 500; the section needs a tool-aware rewrite.")
        w("")
    if pc:
        L2, S2 = pc["llama"], pc["slmfn"]
        w("### Prompt cache")
        w("")
        w(f"Time to first token of the short question's chat ({S2['prompt_tokens']} tokens: the "
          "support-desk system prompt + the question) from an empty KV cache, and right after "
          f"the support ticket's chat, whose first {S2['cached_tokens']} tokens it shares and "
          "reuses (slmfn: the session's prompt cache, `examples/inference_bench.rs "
          "prompt-cache`; llama.cpp: `n_tokens` rewound to the shared prefix, as "
          f"`Llama.generate` does; llama.cpp reused {L2['cached_tokens']}). Medians of "
          f"{len(S2['runs'])} runs per side over {args.repeats} processes, one warm-up each.")
        w("")
        rf, rc = S2["fresh_s"] / L2["fresh_s"], S2["cached_s"] / L2["cached_s"]
        w("| | llama.cpp | slmfn | slmfn / llama.cpp | target | |")
        w("|---|---|---|---|---|---|")
        w(f"| TTFT, empty cache | {ms(L2['fresh_s'])} | {ms(S2['fresh_s'])} | "
          f"{rf:.2f}× | ≤ 1.0× | {met(rf <= 1.0)} |")
        w(f"| TTFT, shared prefix reused | {ms(L2['cached_s'])} | {ms(S2['cached_s'])} | "
          f"{rc:.2f}× | ≤ 1.0× | {met(rc <= 1.0)} |")
        w(f"| reused / empty | {L2['cached_s'] / L2['fresh_s']:.2f}× | "
          f"{S2['cached_s'] / S2['fresh_s']:.2f}× | | | |")
        w("")
        w(f"- The first token is the same with and without the cache: llama.cpp "
          f"{'yes' if L2['same_token'] else 'NO'}, slmfn {'yes' if S2['same_token'] else 'NO'} "
          "(every run).")
        w("")
    if cold:
        w("### Cold start")
        w("")
        cs, cl = cold["slmfn"]["med"], cold["llama"]["med"]
        w("slmfn: process exec → `/readyz` green (model preloaded; `support-desk` already in the data "
          "directory) → first token of `POST /fn/support-desk` (short question, `max_tokens: 1`), "
          "polling `/readyz` every 5 ms. llama.cpp: `python bench_llama.py cold` exec → "
          "`import llama_cpp` → `Llama(...)` → first token of the same chat prompt.")
        w("")
        w("| | exec → ready | exec → first token | target | | peak RSS |")
        w("|---|---|---|---|---|---|")
        cold_ok = cs["first_token_s"] <= 0.35 and cs["first_token_s"] < cl["in_process_s"]
        w(f"| slmfn (deployed agent) | {ms(cs['ready_s'])} | {ms(cs['first_token_s'])} "
          f"(request {ms(cs['request_s'])}) | ≤ 350 ms and below llama.cpp's load + first token | "
          f"{met(cold_ok)} | {mib(cs['peak_rss_kb'])} |")
        w(f"| llama.cpp (llama-cpp-python) | import {ms(cl['import_s'])} + load "
          f"{ms(cl['load_s'])} | {ms(cl['first_token_s'])} (load + first token in-process: "
          f"{ms(cl['in_process_s'])}) | | | {mib(cl['peak_rss_kb'])} |")
        w(f"| slmfn / llama.cpp | | {cs['first_token_s'] / cl['first_token_s']:.2f}× "
          f"(vs in-process load + first token: {cs['first_token_s'] / cl['in_process_s']:.2f}×) "
          "| | | |")
        w("")
        w(f"- For comparison: `ModelPool::preload` of the model in-process took "
          f"{ms(warm['pool_preload_s'])}, `Model::load` alone {ms(S['load_s'])} (throughput table); "
          f"every slmfn cold start: "
          + ", ".join(f"ready {ms(r['ready_s'])} / first token {ms(r['first_token_s'])}"
                      for r in cold["slmfn"]["runs"]) + ".")
        w("")
    else:
        w("### Cold start")
        w("")
        w("Not measured in this run (`--without-agent`): the deployed `support-desk` agent "
          "now calls tools (the `tickets` component, MiniLM for its FAQ search), which this "
          "bench does not deploy, so it answers 500; the section needs a tool-aware rewrite.")
        w("")
    w("Run it with `benches/inference.sh` (options: `benches/inference.sh --help`); it builds "
      "the release binaries and the guest, installs llama-cpp-python into "
      "`$SLMFN_PEERS/llama-venv` when missing (a long compile), and writes the raw numbers to "
      f"`{os.path.relpath(args.json_out, ROOT) if args.json_out.startswith(ROOT) else args.json_out}`.")
    w(END)
    return "\n".join(out) + "\n"


def write_section(path, section):
    text = open(path).read() if os.path.exists(path) else ""
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        if b < len(text) and text[b] == "\n":
            b += 1
        text = text[:a] + section + text[b:]
    else:
        if text and not text.endswith("\n"):
            text += "\n"
        text = (text + "\n" if text else "# Benchmark results\n\n") + section
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite the RESULTS.md section from --json-out (the "
                    "raw numbers of the last run), e.g. after another script rewrote the file")
    ap.add_argument("--model", help="the GGUF file")
    ap.add_argument("--slmfn", help="the release `slmfn` binary")
    ap.add_argument("--fn", help="the release `fn` binary")
    ap.add_argument("--bench", help="the release `inference_bench` example")
    ap.add_argument("--python", help="python of the llama-cpp-python venv")
    ap.add_argument("--results", default=os.path.join(ROOT, "benches", "RESULTS.md"))
    ap.add_argument("--json-out", default="/var/tmp/slmfn-bench/inference.json")
    ap.add_argument("--without-agent", action="store_true",
                    help="skip the two measurements through the deployed support-desk agent "
                    "(warm time to first token, cold start)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="measured generations per process")
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="wait for a 1-min load average below this before each measurement")
    ap.add_argument("--max-busy", type=float, default=25,
                    help="... and for the cores to be less busy than this %% over 1 s")
    ap.add_argument("--max-other", type=float, default=15,
                    help="measure again when other processes took more than this %% of the CPU")
    ap.add_argument("--retries", type=int, default=2, help="at most this many times again")
    ap.add_argument("--max-wait", type=float, default=300, help="seconds one measurement waits")
    ap.add_argument("--total-wait", type=float, default=1800, help="seconds all waits may take")
    args = ap.parse_args()

    if args.render_only:
        with open(args.json_out) as f:
            d = json.load(f)
        run_args = argparse.Namespace(**d["args"])
        gate = Gate(run_args)
        gate.records = d["load"]
        section = render(run_args, d["machine"], d["throughput"], d["warm"], d["cold"], gate,
                         d["throughput"]["llama"]["procs"][0]["load"], d["files"], d["date"],
                         d.get("prompt_cache"), d.get("short"))
        write_section(args.results, section)
        say(f"wrote {args.results} (inference section) from {args.json_out}")
        return
    for a in ("model", "slmfn", "fn", "bench", "python"):
        if getattr(args, a) is None:
            ap.error(f"--{a} is required")

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gate = Gate(args)
    info = machine()
    work = tempfile.mkdtemp(prefix="slmfn-inference-")
    files = {"model_bytes": os.path.getsize(args.model)}
    with open(args.model, "rb") as f:  # page cache warm, digest for the record
        files["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    system = support_desk_system()
    files["system_text"] = system
    files["system"] = os.path.join(work, "system.txt")
    open(files["system"], "w").write(system)
    files["q_short"] = os.path.join(HERE, "question-short.txt")
    files["q_ticket"] = os.path.join(HERE, "ticket.txt")
    files["q_short_text"] = open(files["q_short"]).read().strip()
    files["q_ticket_text"] = open(files["q_ticket"]).read().strip()

    enc, _, _ = run_json([args.bench, "encode", args.model, files["q_ticket"],
                          str(args.prompt_tokens), files["system"], files["q_short"],
                          files["q_ticket"]])
    enc = enc[0]
    for key, ids in (("raw", enc["raw"]), ("raw6", enc["raw"][:6]), ("chat_short", enc["chats"][0]),
                     ("chat_ticket", enc["chats"][1])):
        files[key] = os.path.join(work, key + ".json")
        json.dump(ids, open(files[key], "w"))

    _, py_rss, _ = run_json([args.python, "-c", "import llama_cpp"])
    files["python_rss_kb"] = py_rss
    say(f"throughput: {args.repeats} x 3 processes")
    tp = throughput(args, gate, files)
    llama_info = tp["llama"]["procs"][0]["load"]
    say("short prompt")
    short = short_prompt(args, gate, files)
    warm = cold = None
    if not args.without_agent:
        say("warm time to first token")
        warm = warm_ttft(args, gate, files,
                         {"short": files["q_short_text"], "ticket": files["q_ticket_text"]},
                         work)
    say("prompt cache")
    pc = prompt_cache(args, gate, files)
    if not args.without_agent:
        say("cold start")
        cold = cold_start(args, gate, files, work)

    # The raw numbers first: a rendering bug must not lose a run (`--render-only` redoes it).
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump({"date": date, "args": vars(args), "machine": info, "throughput": tp,
                   "warm": warm, "cold": cold, "prompt_cache": pc, "short": short,
                   "load": gate.records,
                   "files": {k: files[k] for k in ("sha256", "python_rss_kb", "model_bytes")}},
                  f, indent=1)
    section = render(args, info, tp, warm, cold, gate, llama_info, files, date, pc, short)
    write_section(args.results, section)
    shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {args.results} (inference section) and {args.json_out}")
    print(section)


if __name__ == "__main__":
    main()
