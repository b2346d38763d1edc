"""The soak (issue 12), run by benches/soak.sh: one slmfn runtime on 127.0.0.1 under mixed
traffic for a bounded time, killed with SIGKILL every ~30 s and restarted on the same data dir.

Traffic, each stream in its own thread, one new connection per request:

  - testbed:   the test guest (tests/guests/testbed, deployed as `tb`): /echo, /version,
               /kv/incr, /request, /sleep?ms=300, each answer checked;
  - agents:    the real agent functions/ci-triage (the default model, JSON by construction; the
               failing step is checked against the log) and the testbed's /chat (the guest's
               WIT inference call), alternating;
  - openai:    POST /v1/chat/completions with the default model, plain and streamed (SSE)
               alternating;
  - admin:     every 1-3 s a deploy of a new revision (`tb`, `ci-triage`), a rollback to an
               earlier acknowledged revision, or a deploy / delete of a third function
               (`scratch`, the testbed again) whose kv must start empty after a delete;
  - killer:    SIGKILL every ~30 s (every second kill waits for a deploy, rollback or delete to
               be in flight, then kills within 80 ms), a restart on the same data dir, /readyz
               polled until 200, then the registry checked against every acknowledged
               operation (below) while the admin stream is held.

Classification of every request: answered (an HTTP status came back: 2xx passing its check,
2xx failing it, 503 or 429 with Retry-After -- designed --, other 4xx, other 5xx); refused
while the runtime was down or starting ("during a restart", designed); a transport error on a
request in flight when a kill hit ("cut by a kill", designed); any other transport error
(refused or reset while the runtime was up, a client timeout) is a failure.

Registry check, after every restart and at the end: each function's current revision must be
the result of its last acknowledged operation (a deploy's new revision, a rollback's target,
a delete's absence), or of a later operation whose answer never came (cut by the kill: then
either outcome is allowed, and the one observed becomes the baseline); every acknowledged
deploy since the function's last delete must still be in its revision history; `tb` must
serve the current revision's VERSION. A start that does not reach /readyz (the process exits,
or not ready within --ready-timeout) is a failed registry open.

Writes the results section of docs/reliability.md between `<!-- soak:begin -->` and
`<!-- soak:end -->` (for runs of 10 minutes or more, or with --write), and every figure as
JSON into the work directory.
"""

import argparse
import datetime
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"

PROMPTS = [
    "What is a container image? Answer in one sentence.",
    "Name three uses of a message queue.",
    "Why do builds fail when a dependency is missing?",
    "Explain what a retry with backoff is.",
    "What does HTTP status 404 mean?",
    "Give one tip for writing a good commit message.",
    "What is the difference between a process and a thread?",
    "Why would a service answer 503 while it starts?",
]
SAMPLES = ["npm-404", "docker-oom", "rust-test-failure"]


def say(*a):
    print("soak:", *a, file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failing_step(log):
    """ci-triage's own rule: the `##[group]Run ...` step holding the first `##[error]`."""
    step = None
    for line in log.splitlines():
        if line.startswith("##[group]Run "):
            step = line[len("##[group]Run "):].strip()
        elif line.startswith("##[error]"):
            return step
    return None


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# ---------------------------------------------------------------------------------------------
# The runtime process


class Runtime:
    """One slmfn process at a time on a fixed port and data dir; the kill/restart state that
    request classification reads."""

    def __init__(self, args, work):
        self.args = args
        self.lock = threading.Lock()
        self.kills = 0  # SIGKILLs sent (incremented before the signal)
        self.reaped = 0  # of those, processes reaped
        self.phase = "starting"  # "up" once /readyz answered 200 after the last start
        self.proc = None
        self.gen = 0
        self.port = free_port()
        self.data = os.path.join(work, "data")
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.rss = {}  # gen -> {"pid", "hwm_kb", "rss_kb"}
        self.last_rss_kb = 0
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("SLMFN_") or k.startswith("K_") or k == "PORT")}
        env.setdefault("RUST_LOG", "info")
        self.env = env

    def log_path(self, gen=None):
        return os.path.join(self.logs, f"runtime-{gen or self.gen:03d}.log")

    def spawn(self):
        with self.lock:
            self.gen += 1
            self.phase = "starting"
            log = open(self.log_path(), "wb")
            cmd = [self.args.slmfn, "serve", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--data-dir", self.data, "--model", f"smollm2={self.args.model}",
                   "--preload", "smollm2"]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            self.rss[self.gen] = {"pid": self.proc.pid, "hwm_kb": 0, "rss_kb": 0}
            return self.proc

    def wait_ready(self, timeout):
        """Polls /readyz until 200. Returns (ok, seconds, reason)."""
        started = now()
        proc = self.proc
        while True:
            if proc.poll() is not None:
                return False, now() - started, f"exited with status {proc.returncode}"
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    with self.lock:
                        self.phase = "up"
                    return True, now() - started, ""
            except (OSError, http.client.HTTPException):
                pass
            if now() - started > timeout:
                return False, now() - started, f"not ready within {timeout} s"
            time.sleep(0.05)

    def sample_rss(self):
        with self.lock:
            proc, gen = self.proc, self.gen
        if proc is None or proc.poll() is not None:
            return
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                text = f.read()
        except OSError:
            return
        fields = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.M))
        rec = self.rss[gen]
        rec["hwm_kb"] = max(rec["hwm_kb"], int(fields.get("VmHWM", 0)))
        rec["rss_kb"] = max(rec["rss_kb"], int(fields.get("VmRSS", 0)))
        self.last_rss_kb = int(fields.get("VmRSS", 0))

    def kill9(self):
        self.sample_rss()
        with self.lock:
            self.kills += 1
            self.phase = "restarting"
            proc = self.proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with self.lock:
            self.reaped += 1

    def terminate(self, timeout):
        """SIGTERM (the graceful path); returns (exit status, seconds) or (None, s) if it had
        to be killed."""
        self.sample_rss()
        with self.lock:
            self.phase = "stopping"
            proc = self.proc
        started = now()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        return rc, now() - started

    def shutdown_quietly(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def log_tail(self, gen=None, lines=25):
        try:
            with open(self.log_path(gen), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# Requests and their classification

FAILURE_CLASSES = ("wrong", "4xx", "5xx", "refused-up", "transport")
CLASSES = ("ok", "wrong", "designed-503-restart", "designed-503-up", "designed-429", "4xx",
           "5xx", "restart", "cut", "refused-up", "transport")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {}  # kind -> {class -> count}
        self.latency = {}  # kind -> [seconds] of ok answers
        self.findings = []  # failures, first ones in full
        self.finding_counts = {}

    def record(self, kind, cls, seconds, detail=None):
        with self.lock:
            k = self.by_kind.setdefault(kind, {c: 0 for c in CLASSES})
            k[cls] += 1
            if cls == "ok":
                self.latency.setdefault(kind, []).append(seconds)
            if cls in FAILURE_CLASSES:
                key = (kind, cls)
                self.finding_counts[key] = self.finding_counts.get(key, 0) + 1
                if self.finding_counts[key] <= 5:
                    self.findings.append({"kind": kind, "class": cls, "detail": detail,
                                          "at": time.strftime("%H:%M:%S")})

    def total(self, cls=None):
        with self.lock:
            if cls is None:
                return sum(sum(v.values()) for v in self.by_kind.values())
            return sum(v[cls] for v in self.by_kind.values())


class Outcome:
    def __init__(self, cls, status=None, headers=None, data=b"", error=None):
        self.cls, self.status, self.headers, self.data, self.error = cls, status, headers or {}, data, error

    def json(self):
        try:
            return json.loads(self.data)
        except ValueError:
            return None


class Client:
    def __init__(self, rt, stats):
        self.rt, self.stats = rt, stats
        self.sent = 0
        self.lock = threading.Lock()

    def call(self, kind, method, path, body=None, headers=None, timeout=60, check=None,
             expect=(200, 201, 204)):
        """Sends one request on a new connection and classifies it. `check(outcome)` returns
        None when a 2xx answer is right, else what is wrong with it."""
        rt = self.rt
        with self.lock:
            self.sent += 1
        with rt.lock:
            k0, r0, phase0 = rt.kills, rt.reaped, rt.phase
        t0 = now()
        status, hdrs, data, err = None, {}, b"", None
        try:
            conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=timeout)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                status = resp.status
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                data = resp.read()
            finally:
                conn.close()
        except ConnectionRefusedError as e:
            err = ("refused", e)
        except (OSError, http.client.HTTPException) as e:
            err = ("transport", e)
        seconds = now() - t0
        with rt.lock:
            k1, phase1 = rt.kills, rt.phase
        killed = k1 != k0 or k0 != r0  # a kill during the request, or a dying process
        detail = None
        if err is not None:
            what, e = err
            desc = f"{method} {path}: {type(e).__name__}: {e}"
            if what == "refused":
                if killed or phase0 != "up" or phase1 != "up":
                    cls = "restart"
                else:
                    cls, detail = "refused-up", desc
            elif killed:
                cls = "cut"
            else:
                cls, detail = "transport", f"{desc} (phase {phase0}->{phase1}, {seconds:.1f} s)"
            out = Outcome(cls, error=e)
        else:
            retry_after = "retry-after" in hdrs
            snippet = data[:300].decode(errors="replace")
            if status in expect:
                problem = check(Outcome("ok", status, hdrs, data)) if check else None
                if problem is None:
                    cls = "ok"
                else:
                    cls, detail = "wrong", f"{method} {path} -> {status}: {problem}: {snippet}"
            elif status == 503 and retry_after:
                cls = "designed-503-up" if phase0 == "up" and phase1 == "up" else "designed-503-restart"
            elif status == 429 and retry_after:
                cls = "designed-429"
            elif 400 <= status < 500:
                cls, detail = "4xx", f"{method} {path} -> {status}: {snippet}"
            elif status >= 500:
                cls, detail = "5xx", f"{method} {path} -> {status} (retry-after: {hdrs.get('retry-after')}): {snippet}"
            else:
                cls, detail = "wrong", f"{method} {path} -> unexpected {status}: {snippet}"
            out = Outcome(cls, status, hdrs, data)
        if detail and rt.gen:
            state = "ready" if phase0 == phase1 == "up" else f"{phase0} -> {phase1}, not ready"
            detail += f" [runtime generation {rt.gen}, {state}]"
        self.stats.record(kind, cls, seconds, detail)
        return out


def multipart(manifest, component):
    b = "soak" + uuid.uuid4().hex
    head = lambda extra: (f"--{b}\r\nContent-Disposition: form-data; {extra}\r\n").encode()
    body = (head('name="manifest"') + b"Content-Type: text/plain\r\n\r\n" + manifest.encode()
            + b"\r\n" + head('name="component"; filename="component.wasm"')
            + b"Content-Type: application/wasm\r\n\r\n" + component + b"\r\n"
            + f"--{b}--\r\n".encode())
    return body, f"multipart/form-data; boundary={b}"


# ---------------------------------------------------------------------------------------------
# Functions, operations and the registry check


class Function:
    """One function's operations as the soak sent them, and what the registry must show."""

    def __init__(self, name, component, manifest_of):
        self.name, self.component, self.manifest_of = name, component, manifest_of
        self.ops = []  # {"id", "kind", "marker", "rid", "status": acked|refused|unknown|observed|...}
        self.serial = 0

    def next_marker(self):
        self.serial += 1
        return f"{self.name}-s{self.serial}"

    def baseline(self):
        """Index of the last acknowledged (or observed) operation."""
        for i in range(len(self.ops) - 1, -1, -1):
            if self.ops[i]["status"] in ("acked", "observed"):
                return i
        return None

    @staticmethod
    def state_of(op):
        if op["kind"] == "delete":
            return ("absent",)
        if op.get("rid"):
            return ("present", op["rid"])
        return None  # an unknown deploy whose revision id we never learned

    def expected(self):
        """The state the registry must be in: the baseline's, when nothing is pending."""
        b = self.baseline()
        if b is None:
            return None
        if any(op["status"] == "unknown" for op in self.ops[b + 1:]):
            return None
        return self.state_of(self.ops[b])

    def live_acked_deploys(self):
        """Acknowledged deploys since the last acknowledged (or observed) delete."""
        live = []
        for op in self.ops:
            if op["kind"] == "delete" and op["status"] in ("acked", "observed"):
                live = []
            elif op["kind"] == "deploy" and op["status"] in ("acked", "observed") and op["rid"]:
                live.append(op)
        return live


class Soak:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.rt = Runtime(args, work)
        self.stats = Stats()
        self.client = Client(self.rt, self.stats)
        self.stop = threading.Event()
        self.deploy_lock = threading.Lock()
        self.admin_inflight = threading.Event()
        self.op_ids = 0
        with open(args.testbed, "rb") as f:
            testbed = f.read()
        with open(args.agent, "rb") as f:
            agent = f.read()
        with open(args.agent_manifest) as f:
            agent_manifest = f.read().rstrip("\n")
        self.expected_step = {}
        for s in SAMPLES:
            with open(os.path.join(args.agent_logs, f"{s}.log")) as f:
                self.expected_step[s] = failing_step(f.read())

        def testbed_manifest(name):
            return lambda marker: (
                f'name = "{name}"\ndescription = "soak: the testbed"\n[limits]\n'
                f'timeout_ms = 30000\nmax_concurrency = 32\n[env]\nVERSION = "{marker}"\n'
                f'SOAK_MARKER = "{marker}"\n[models]\nallowed = ["smollm2"]\nmax_tokens = 64\n')

        self.fns = {
            "tb": Function("tb", testbed, testbed_manifest("tb")),
            "ci-triage": Function("ci-triage", agent,
                                  lambda m: f'{agent_manifest}\n\n[env]\nSOAK_MARKER = "{m}"\n'),
            "scratch": Function("scratch", testbed, testbed_manifest("scratch")),
        }
        # Figures.
        self.restarts = []  # {"gen", "kill_to_ready_s", "targeted", "ok"}
        self.failed_opens = []  # {"gen", "reason", "log"}
        self.checks = 0
        self.lost = []  # acknowledged operations lost: {"fn", "op", "how", "at"}
        self.lost_ids = set()
        self.stale_serving = []
        self.kv_inherited = []
        self.unexpected = []  # a refused operation took effect, or a state nothing explains
        self.admin = {k: {"acked": 0, "refused": 0, "unknown": 0, "committed": 0, "not_committed": 0}
                      for k in ("deploy", "rollback", "delete")}
        self.clean = []  # the SIGTERM restarts at the end
        self.aborted = None

    # -- admin operations ----------------------------------------------------------------

    def new_op(self, fn, kind, marker=None, rid=None):
        self.op_ids += 1
        op = {"id": self.op_ids, "kind": kind, "marker": marker, "rid": rid, "status": None,
              "gen": self.rt.gen}
        fn.ops.append(op)
        return op

    def settle(self, op, out):
        if out.cls == "ok":
            op["status"] = "acked"
        elif out.cls in ("cut", "transport"):
            op["status"] = "unknown"  # no answer: it may or may not have committed
        else:
            op["status"] = "refused"  # an answer other than 2xx, or never connected
        self.admin[op["kind"]]["acked" if op["status"] == "acked" else op["status"]] += 1

    def deploy(self, fn):
        marker = fn.next_marker()
        op = self.new_op(fn, "deploy", marker)
        body, ctype = multipart(fn.manifest_of(marker), fn.component)
        self.admin_inflight.set()
        try:
            out = self.client.call(
                "admin:deploy", "POST", f"/admin/functions/{fn.name}", body,
                {"Content-Type": ctype}, timeout=120,
                check=lambda o: None if (o.json() or {}).get("revision") else "no revision id")
        finally:
            self.admin_inflight.clear()
        self.settle(op, out)
        if op["status"] == "acked":
            op["rid"] = out.json()["revision"]
        return op

    def rollback(self, fn):
        exp = fn.expected()
        choices = [o["rid"] for o in fn.live_acked_deploys()
                   if exp is None or ("present", o["rid"]) != exp]
        if not choices or exp is None or exp[0] != "present":
            return None
        target = random.choice(choices)
        op = self.new_op(fn, "rollback", rid=target)
        self.admin_inflight.set()
        try:
            out = self.client.call(
                "admin:rollback", "POST", f"/admin/functions/{fn.name}/rollback",
                json.dumps({"revision": target}), {"Content-Type": "application/json"},
                timeout=60,
                check=lambda o: None if (o.json() or {}).get("revision") == target
                else "rolled back to another revision")
        finally:
            self.admin_inflight.clear()
        self.settle(op, out)
        return op

    def delete(self, fn):
        op = self.new_op(fn, "delete")
        self.admin_inflight.set()
        try:
            out = self.client.call("admin:delete", "DELETE", f"/admin/functions/{fn.name}",
                                   timeout=60)
        finally:
            self.admin_inflight.clear()
        self.settle(op, out)
        return op

    def scratch_cycle(self):
        fn = self.fns["scratch"]
        exp = fn.expected()
        if exp == ("absent",):
            op = self.deploy(fn)
            if op["status"] != "acked":
                return
            # A function created again after a delete must start with an empty kv.
            out = self.client.call("testbed", "GET", "/fn/scratch/kv/get?key=owner", timeout=30,
                                   expect=(200, 404))
            if out.cls == "ok" and out.status == 200:
                self.kv_inherited.append({"value": out.data.decode(errors="replace"),
                                          "deploy": op["marker"], "gen": self.rt.gen})
            if out.cls == "ok":
                self.client.call("testbed", "POST", "/fn/scratch/kv/set?key=owner",
                                 op["marker"].encode(), timeout=30)
        elif exp is not None:
            if random.random() < 0.5:
                self.delete(fn)
            else:
                self.deploy(fn)

    def admin_loop(self):
        rng = random.Random(2)
        while not self.stop.wait(rng.uniform(*self.args.admin_every)):
            with self.deploy_lock:
                if self.stop.is_set():
                    return
                r = rng.random()
                if r < 0.40:
                    self.deploy(self.fns["tb"])
                elif r < 0.60:
                    if self.rollback(self.fns["tb"]) is None:
                        self.deploy(self.fns["tb"])
                elif r < 0.75:
                    self.deploy(self.fns["ci-triage"])
                elif r < 0.82:
                    if self.rollback(self.fns["ci-triage"]) is None:
                        self.deploy(self.fns["ci-triage"])
                else:
                    self.scratch_cycle()

    # -- the registry check --------------------------------------------------------------

    def read(self, path):
        out = self.client.call("admin:read", "GET", path, timeout=30, expect=(200, 404))
        if out.cls != "ok":
            raise RuntimeError(f"GET {path}: {out.cls} {out.status} {out.data[:200]!r} {out.error}")
        return out.status, out.json()

    def lose(self, fn, op, how, where):
        if op["id"] in self.lost_ids:
            return
        self.lost_ids.add(op["id"])
        self.lost.append({"function": fn.name, "op": op["kind"], "marker": op.get("marker"),
                          "revision": op.get("rid"), "acked_in_generation": op["gen"],
                          "how": how, "found": where})
        say(f"LOST: {fn.name} {op['kind']} {op.get('marker') or op.get('rid')}: {how} ({where})")

    def check(self, where):
        """Called with the admin stream held and the runtime ready."""
        self.checks += 1
        for fn in self.fns.values():
            status, f = self.read(f"/admin/functions/{fn.name}")
            observed = ("absent",) if status == 404 else ("present", f["current_revision"])
            history = {}
            if status == 200:
                _, revs = self.read(f"/admin/functions/{fn.name}/revisions")
                for r in revs["revisions"]:
                    history[r["revision"]] = ((r.get("manifest") or {}).get("env") or {}).get("SOAK_MARKER")
            b = fn.baseline()
            base = fn.ops[b]
            pending = [op for op in fn.ops[b + 1:] if op["status"] == "unknown"]
            # An unknown deploy that committed shows up in the history under its marker.
            for op in pending:
                if op["kind"] == "deploy" and not op.get("rid"):
                    for rid, marker in history.items():
                        if marker == op["marker"]:
                            op["rid"] = rid
            allowed = {}
            for op in [base] + pending:
                s = self.state_of_safe(op)
                if s is not None:
                    allowed.setdefault(s, op)
            if observed in allowed:
                winner = allowed[observed]
                for op in pending:
                    op["status"] = "not-committed"
                    self.admin[op["kind"]]["not_committed"] += 1
                if winner is not base:
                    winner["status"] = "observed"
                    self.admin[winner["kind"]]["not_committed"] -= 1
                    self.admin[winner["kind"]]["committed"] += 1
            else:
                refused = [op for op in fn.ops if op["status"] == "refused"
                           and self.state_of_safe(op) == observed]
                if refused:
                    self.unexpected.append({"function": fn.name, "found": where,
                                            "what": f"a refused {refused[-1]['kind']} took effect",
                                            "observed": observed})
                elif not pending:
                    self.lose(fn, base, f"current is {observed}, not {Function.state_of(base)}", where)
                else:
                    self.unexpected.append({"function": fn.name, "found": where,
                                            "what": "a state no operation explains",
                                            "observed": observed,
                                            "allowed": [list(s) for s in allowed]})
                for op in pending:
                    op["status"] = "not-committed"
                    self.admin[op["kind"]]["not_committed"] += 1
                # Resynchronise on what the registry says, so one loss is counted once.
                self.op_ids += 1
                fn.ops.append({"id": self.op_ids, "kind": "delete" if observed == ("absent",) else "deploy",
                               "marker": "(observed)", "rid": observed[1] if len(observed) > 1 else None,
                               "status": "observed", "gen": self.rt.gen})
            if status == 200:
                for op in fn.live_acked_deploys():
                    if op["rid"] not in history:
                        self.lose(fn, op, "acknowledged revision missing from the history", where)
                if fn.name == "tb":
                    want = history.get(f["current_revision"])
                    out = self.client.call("testbed", "GET", "/fn/tb/version", timeout=30)
                    got = out.data.decode(errors="replace") if out.cls == "ok" else f"{out.cls} {out.status}"
                    if got != want:
                        self.stale_serving.append({"found": where, "serving": got, "current": want})
                        say(f"STALE: tb serves {got!r}, its current revision is {want!r} ({where})")

    @staticmethod
    def state_of_safe(op):
        return Function.state_of(op)

    # -- restarts ------------------------------------------------------------------------

    def start(self, label):
        """Starts the runtime (up to 3 attempts) and waits for /readyz. Returns seconds."""
        for attempt in range(3):
            t0 = now()
            self.rt.spawn()
            ok, _, reason = self.rt.wait_ready(self.args.ready_timeout)
            if ok:
                return now() - t0
            tail = self.rt.log_tail()
            self.failed_opens.append({"generation": self.rt.gen, "after": label,
                                      "attempt": attempt + 1, "reason": reason, "log": tail})
            say(f"FAILED START (generation {self.rt.gen}, {label}): {reason}\n{tail}")
            self.rt.shutdown_quietly()
        raise RuntimeError(f"the runtime did not start after {label}: see {self.rt.logs}")

    def killer_loop(self):
        rng = random.Random(3)
        every = self.args.kill_every
        while True:
            wait = rng.uniform(0.8 * every, 1.2 * every)
            if now() + wait > self.end - 3:
                return
            if self.stop.wait(wait):
                return
            targeted = len(self.restarts) % 2 == 1
            if targeted:
                # Kill while an admin write is in flight: mid-upload, mid-compile, mid-commit
                # or just after its answer (a testbed deploy takes ~10 ms here).
                if self.admin_inflight.wait(10):
                    time.sleep(rng.uniform(0, 0.005 if rng.random() < 0.5 else 0.03))
            t0 = now()
            self.rt.kill9()
            try:
                self.start(f"kill {self.rt.kills}")
            except RuntimeError as e:
                self.aborted = str(e)
                self.stop.set()
                return
            took = now() - t0
            self.restarts.append({"generation": self.rt.gen, "kill_to_ready_s": took,
                                  "targeted": targeted})
            with self.deploy_lock:
                try:
                    self.check(f"after kill {self.rt.kills}")
                except RuntimeError as e:
                    self.unexpected.append({"found": f"after kill {self.rt.kills}",
                                            "what": f"the registry check failed: {e}"})

    # -- traffic -------------------------------------------------------------------------

    def testbed_loop(self, seed):
        rng = random.Random(seed)
        key = f"w{seed}"
        while not self.stop.is_set() and self.client.sent < self.args.max_requests:
            r = rng.random()
            if r < 0.35:
                body = os.urandom(rng.randint(16, 4096))
                self.client.call("testbed", "POST", "/fn/tb/echo", body, timeout=30,
                                 check=lambda o, b=body: None if o.data == b else "echo differs")
            elif r < 0.55:
                self.client.call("testbed", "GET", "/fn/tb/version", timeout=30,
                                 check=lambda o: None if o.data.startswith(b"tb-s") else "no version")
            elif r < 0.80:
                self.client.call("testbed", "POST", f"/fn/tb/kv/incr?key={key}", timeout=30,
                                 check=lambda o: None if isinstance(o.json(), int) else "not a count")
            elif r < 0.90:
                self.client.call("testbed", "GET", "/fn/tb/request?soak=1", timeout=30,
                                 check=lambda o: None if (o.json() or {}).get("path") == "/request"
                                 else "bad echo of the request")
            else:
                self.client.call("testbed", "GET", "/fn/tb/sleep?ms=300", timeout=30,
                                 check=lambda o: None if (o.json() or {}).get("slept_ms") == 300
                                 else "bad sleep answer")
            self.pause(rng, self.args.testbed_pause)

    def pause(self, rng, seconds):
        """Between requests; longer while the runtime is down, so refusals don't flood."""
        if self.rt.phase != "up":
            seconds = max(seconds, 0.1)
        self.stop.wait(rng.uniform(0.5 * seconds, 1.5 * seconds))

    def agent_loop(self, seed):
        rng = random.Random(seed)
        turn = 0
        while not self.stop.is_set() and self.client.sent < self.args.max_requests:
            turn += 1
            if turn % 2:
                sample = rng.choice(SAMPLES)
                step = self.expected_step[sample]

                def ok(o, step=step):
                    j = o.json() or {}
                    t = j.get("triage") or {}
                    if t.get("failing_step") != step:
                        return f"failing_step {t.get('failing_step')!r}, expected {step!r}"
                    if not t.get("likely_cause") or not t.get("suggested_fix"):
                        return "no cause or fix"
                    return None
                self.client.call("agent:ci-triage", "POST", "/fn/ci-triage",
                                 json.dumps({"sample": sample}),
                                 {"Content-Type": "application/json"}, timeout=150, check=ok)
            else:
                self.client.call("agent:testbed-chat", "POST", "/fn/tb/chat",
                                 json.dumps({"prompt": rng.choice(PROMPTS), "max_tokens": 32}),
                                 {"Content-Type": "application/json"}, timeout=90,
                                 check=lambda o: None if isinstance((o.json() or {}).get("text"), str)
                                 and (o.json() or {}).get("text") else "no text")
            self.pause(rng, 0.2)

    def openai_loop(self, seed):
        rng = random.Random(seed)
        turn = 0
        while not self.stop.is_set() and self.client.sent < self.args.max_requests:
            turn += 1
            stream = turn % 2 == 0
            body = json.dumps({"model": "default", "max_tokens": 48, "temperature": 0,
                               "stream": stream,
                               "messages": [{"role": "user", "content": rng.choice(PROMPTS)}]})
            if stream:
                def ok(o):
                    text = o.data.decode(errors="replace")
                    if "data: [DONE]" not in text:
                        return "stream without [DONE]"
                    if '"content"' not in text:
                        return "stream without content"
                    return None
                self.client.call("v1:chat-stream", "POST", "/v1/chat/completions", body,
                                 {"Content-Type": "application/json"}, timeout=150, check=ok)
            else:
                def ok(o):
                    j = o.json() or {}
                    try:
                        content = j["choices"][0]["message"]["content"]
                    except (KeyError, IndexError, TypeError):
                        return "no choices[0].message.content"
                    return None if isinstance(content, str) and content else "empty content"
                self.client.call("v1:chat", "POST", "/v1/chat/completions", body,
                                 {"Content-Type": "application/json"}, timeout=150, check=ok)
            self.pause(rng, 0.2)

    def rss_loop(self):
        while not self.stop.wait(1.0):
            self.rt.sample_rss()

    # -- the run -------------------------------------------------------------------------

    def run(self):
        args = self.args
        started_wall = time.time()
        self.load_start = os.getloadavg()
        say(f"work dir {self.work}; runtime on 127.0.0.1:{self.rt.port}; "
            f"{args.minutes} min, a kill every ~{args.kill_every} s")
        first_ready = self.start("the first start")
        say(f"ready in {first_ready:.2f} s")
        with self.deploy_lock:
            for name in ("tb", "ci-triage", "scratch"):
                op = self.deploy(self.fns[name])
                if op["status"] != "acked":
                    raise RuntimeError(f"the first deploy of {name} failed: see {self.rt.logs}")
            self.client.call("testbed", "POST", "/fn/scratch/kv/set?key=owner", b"scratch-s1",
                             timeout=30)
            self.check("after the first deploys")
        rss_thread = threading.Thread(target=self.rss_loop, daemon=True)
        rss_thread.start()
        self.t_start = now()
        self.end = self.t_start + args.minutes * 60
        threads = [threading.Thread(target=self.testbed_loop, args=(10 + i,))
                   for i in range(args.testbed_workers)]
        threads += [threading.Thread(target=self.agent_loop, args=(20 + i,))
                    for i in range(args.agent_workers)]
        threads += [threading.Thread(target=self.openai_loop, args=(30 + i,))
                    for i in range(args.openai_workers)]
        threads += [threading.Thread(target=self.admin_loop)]
        killer = threading.Thread(target=self.killer_loop)
        for t in threads + [killer]:
            t.start()
        next_report = now() + 30
        while now() < self.end and not self.stop.is_set():
            self.stop.wait(min(1.0, max(0.0, self.end - now())))
            if now() >= next_report:
                next_report += 30
                s = self.stats
                say(f"{now() - self.t_start:5.0f} s: sent {self.client.sent}, ok {s.total('ok')}, "
                    f"5xx {s.total('5xx')}, restart {s.total('restart')}, cut {s.total('cut')}, "
                    f"kills {self.rt.kills}, lost {len(self.lost)}, "
                    f"RSS {self.rt.last_rss_kb / 1024:.0f} MiB")
        self.stop.set()
        killer.join()
        for t in threads:
            t.join()
        self.t_traffic = now() - self.t_start
        self.load_end = os.getloadavg()
        if self.aborted:
            say(f"ABORTED: {self.aborted}")
        else:
            # The end: the live registry, then a graceful stop and a clean restart, checked too.
            with self.deploy_lock:
                self.check("at the end")
            rc, took = self.rt.terminate(60)
            clean = {"sigterm_exit": rc, "sigterm_s": took}
            self.clean.append(clean)
            try:
                clean["restart_ready_s"] = self.start("a SIGTERM at the end")
                with self.deploy_lock:
                    self.check("after a SIGTERM restart at the end")
                self.rt.sample_rss()
                clean["final_sigterm_exit"], _ = self.rt.terminate(60)
            except RuntimeError as e:
                self.aborted = str(e)
        self.rt.shutdown_quietly()
        self.wall = time.time() - started_wall

    # -- figures -------------------------------------------------------------------------

    def figures(self):
        s = self.stats
        totals = {c: s.total(c) for c in CLASSES}
        answered = sum(totals[c] for c in ("ok", "wrong", "designed-503-restart",
                                           "designed-503-up", "designed-429", "4xx", "5xx"))
        gens = sorted(self.rt.rss.items())
        hwm = [r["hwm_kb"] for _, r in gens if r["hwm_kb"]]
        restart_s = [r["kill_to_ready_s"] for r in self.restarts]
        try:
            data_bytes = sum(os.path.getsize(os.path.join(d, f))
                             for d, _, fs in os.walk(self.rt.data) for f in fs)
        except OSError:
            data_bytes = 0
        log_lines = {"error": 0, "warn": 0, "panic": 0}
        log_examples = []
        for name in sorted(os.listdir(self.rt.logs)):
            with open(os.path.join(self.rt.logs, name), errors="replace") as f:
                for line in f:
                    level = ("panic" if "panicked" in line else "error" if " ERROR " in line
                             else "warn" if " WARN " in line else None)
                    if level:
                        log_lines[level] += 1
                        if len(log_examples) < 10:
                            log_examples.append(f"{name}: {line.strip()[:300]}")
        kinds = {}
        for kind, counts in sorted(s.by_kind.items()):
            lat = s.latency.get(kind, [])
            kinds[kind] = dict(counts, sent=sum(counts.values()),
                               ok_p50_s=pct(lat, 50) if lat else None,
                               ok_p99_s=pct(lat, 99) if lat else None)
        return {
            "minutes": self.args.minutes, "traffic_s": self.t_traffic, "wall_s": self.wall,
            "kill_every_s": self.args.kill_every,
            "loadavg_start": self.load_start, "loadavg_end": self.load_end, "sent": s.total(), "answered": answered,
            "classes": totals, "kinds": kinds, "kills": self.rt.kills,
            "restarts": self.restarts, "restart_p50_s": pct(restart_s, 50) if restart_s else None,
            "restart_max_s": max(restart_s) if restart_s else None,
            "failed_opens": self.failed_opens, "checks": self.checks, "admin": self.admin,
            "lost": self.lost, "stale_serving": self.stale_serving,
            "kv_inherited": self.kv_inherited, "unexpected": self.unexpected,
            "clean": self.clean, "peak_rss_kb": max(hwm) if hwm else 0,
            "rss_by_generation": {g: r for g, r in gens}, "data_dir_bytes": data_bytes,
            "log_lines": log_lines, "log_examples": log_examples,
            "findings": s.findings,
            "finding_counts": {f"{k[0]} {k[1]}": v for k, v in s.finding_counts.items()},
            "aborted": self.aborted,
            "ops": {name: fn.ops for name, fn in self.fns.items()},
        }


# ---------------------------------------------------------------------------------------------
# The report


def machine():
    cpu = "unknown CPU"
    mem_kb = 0
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc; {cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM"


def verdict(value, target=0):
    return "met" if value <= target else "**not met**"


def render(args, fig):
    c = fig["classes"]
    sent = fig["sent"] or 1
    share = lambda n: f"{n} ({100 * n / sent:.1f} %)"
    five = c["5xx"]
    lost = len(fig["lost"])
    opens = len(fig["failed_opens"])
    restarts = fig["restarts"]
    a = fig["admin"]
    gens = fig["rss_by_generation"]
    first_hwm = next(iter(gens.values()))["hwm_kb"] if gens else 0
    last_hwm = list(gens.values())[-1]["hwm_kb"] if gens else 0
    clean = fig["clean"][0] if fig["clean"] else {}
    cut_writes = sum(v["unknown"] for v in a.values())
    committed = sum(v["committed"] for v in a.values())
    logs = fig["log_lines"]
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        BEGIN,
        "## Results",
        "",
        f"`benches/soak.sh --minutes {args.minutes:g}` at `{args.commit}`, {when}, {machine()}; "
        f"traffic for {fig['traffic_s'] / 60:.1f} min ({fig['wall_s'] / 60:.1f} min wall with "
        f"the first start and the clean restart at the end), a SIGKILL every "
        f"~{args.kill_every:g} s (uniform ±20 %), {args.testbed_workers} testbed, "
        f"{args.agent_workers} agent and {args.openai_workers} `/v1` stream(s), an admin write "
        f"every {args.admin_every[0]:g}-{args.admin_every[1]:g} s. Model: SmolLM2-135M-Instruct "
        f"Q4_1 (`scripts/fetch-model.sh`), preloaded. Load average (1 min) at the start / end "
        f"of the traffic: {fig['loadavg_start'][0]:.2f} / {fig['loadavg_end'][0]:.2f} (the "
        f"machine is shared).",
        "",
    ]
    if fig["aborted"]:
        lines += [f"**The run was aborted:** {fig['aborted']}", ""]
    lines += [
        "| figure | value | target |",
        "|---|---|---|",
        f"| requests sent | {fig['sent']} | — |",
        f"| answered (an HTTP status came back) | {share(fig['answered'])} | — |",
        f"| … 2xx, answer checked and right | {share(c['ok'])} | — |",
        f"| … 503 + `Retry-After` while not ready (designed) | {c['designed-503-restart']} | — |",
        f"| … 503 + `Retry-After` while ready (overloaded, designed) | {c['designed-503-up']} | — |",
        f"| … 429 + `Retry-After` (model queue full, designed) | {c['designed-429']} | — |",
        f"| **5xx other than designed** | {five} | 0: {verdict(five)} |",
        f"| 4xx other than expected | {c['4xx']} | 0: {verdict(c['4xx'])} |",
        f"| 2xx with a wrong answer | {c['wrong']} | 0: {verdict(c['wrong'])} |",
        f"| during a restart (connection refused while down or starting) | {share(c['restart'])} | — (designed) |",
        f"| cut by a kill (in flight when SIGKILL hit) | {share(c['cut'])} | — (designed) |",
        f"| transport errors while up (refused, reset, timeout; no kill) | {c['transport'] + c['refused-up']} | 0: {verdict(c['transport'] + c['refused-up'])} |",
        f"| kill -9s / restarts to ready | {fig['kills']} / {len(restarts)} | — |",
        f"| kill → `/readyz` 200, p50 / max | "
        + (f"{fig['restart_p50_s']:.2f} / {fig['restart_max_s']:.2f} s" if restarts else "—")
        + " | — |",
        f"| **registry opens that failed** (a start after a kill that never got ready) | {opens} | 0: {verdict(opens)} |",
        f"| admin writes acknowledged: deploys / rollbacks / deletes | {a['deploy']['acked']} / {a['rollback']['acked']} / {a['delete']['acked']} | — |",
        f"| admin writes cut by a kill (no answer) | {cut_writes}: {committed} committed, "
        f"{sum(v['not_committed'] for v in a.values())} not, {cut_writes - committed - sum(v['not_committed'] for v in a.values())} "
        f"superseded before a check | either is correct |",
        f"| admin writes refused (not ready, down) | {sum(v['refused'] for v in a.values())} | — |",
        f"| registry checks (after each restart and at the end) | {fig['checks']} | — |",
        f"| **acknowledged deploys lost** (incl. rollbacks, deletes) | {lost} | 0: {verdict(lost)} |",
        f"| `tb` serving other than its current revision | {len(fig['stale_serving'])} | 0: {verdict(len(fig['stale_serving']))} |",
        f"| kv inherited by a function created again after a delete | {len(fig['kv_inherited'])} | 0: {verdict(len(fig['kv_inherited']))} |",
        f"| registry states no operation explains | {len(fig['unexpected'])} | 0: {verdict(len(fig['unexpected']))} |",
        f"| peak RSS of the runtime (VmHWM, max over processes) | {fig['peak_rss_kb'] / 1024:.0f} MiB | — |",
        f"| … first process / last process | {first_hwm / 1024:.0f} / {last_hwm / 1024:.0f} MiB | — |",
        f"| data dir at the end | {fig['data_dir_bytes'] / 1024 / 1024:.1f} MiB | — |",
        f"| runtime log lines: ERROR / WARN / panics | {logs['error']} / {logs['warn']} / {logs['panic']} | — |",
        f"| SIGTERM at the end: exit status, time | {clean.get('sigterm_exit')}, {clean.get('sigterm_s', 0):.2f} s | 0 |",
        "",
        "By stream (`ok`: 2xx with the right answer; latency of those):",
        "",
        "| stream | sent | ok | 503/429 designed | 5xx | 4xx | wrong | during a restart | cut by a kill | transport | ok p50 / p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, k in fig["kinds"].items():
        designed = k["designed-503-restart"] + k["designed-503-up"] + k["designed-429"]
        lat = (f"{k['ok_p50_s'] * 1e3:.0f} / {k['ok_p99_s'] * 1e3:.0f} ms"
               if k["ok_p50_s"] is not None else "—")
        lines.append(f"| {kind} | {k['sent']} | {k['ok']} | {designed} | {k['5xx']} | {k['4xx']} "
                     f"| {k['wrong']} | {k['restart']} | {k['cut']} "
                     f"| {k['transport'] + k['refused-up']} | {lat} |")
    found = []
    for f in fig["failed_opens"]:
        found.append(f"- Failed start (generation {f['generation']}, {f['after']}): {f['reason']}.")
    for f in fig["lost"]:
        found.append(f"- Lost: `{f['function']}` {f['op']} {f.get('marker') or f.get('revision')} "
                     f"(acknowledged in generation {f['acked_in_generation']}): {f['how']}, "
                     f"found {f['found']}.")
    for f in fig["stale_serving"]:
        found.append(f"- Stale serving {f['found']}: `tb` served {f['serving']!r}, current "
                     f"{f['current']!r}.")
    for f in fig["kv_inherited"]:
        found.append(f"- kv inherited: `scratch` deployed again ({f['deploy']}) read "
                     f"{f['value']!r}.")
    for f in fig["unexpected"]:
        found.append(f"- {f['what']} ({f.get('function', '')}, {f['found']}).")
    for line in fig["log_examples"][:5]:
        found.append(f"- Runtime log: `{line.replace('|', '/')}`")
    for key, n in sorted(fig["finding_counts"].items()):
        examples = [x for x in fig["findings"] if f"{x['kind']} {x['class']}" == key]
        ex = examples[0]["detail"] if examples else ""
        ex = (ex or "").replace("|", "\\|").replace("\n", " ")[:400]
        found.append(f"- {n} × {key}; first: `{ex}`")
    lines += ["", "Found in this run:" if found else "Found in this run: nothing.", ""]
    lines += found
    lines += ["", f"Every figure, with each restart and each process's RSS: "
              f"`{args.json_out}` (the run's work dir, with the runtime's logs).", END]
    return "\n".join(lines) + "\n"


def write_section(path, section):
    text = open(path).read() if os.path.exists(path) else "# Reliability\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slmfn", required=True, help="the runtime binary")
    p.add_argument("--testbed", required=True, help="testbed.wasm (tests/guests)")
    p.add_argument("--agent", required=True, help="ci_triage.wasm (functions/ci-triage)")
    p.add_argument("--agent-manifest", required=True, help="functions/ci-triage/fn.toml")
    p.add_argument("--agent-logs", required=True, help="functions/ci-triage/logs")
    p.add_argument("--model", required=True, help="the default model's GGUF")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--kill-every", type=float, default=30.0, help="seconds between kills (±20 %%)")
    p.add_argument("--admin-every", type=float, nargs=2, default=[1.0, 3.0], metavar=("MIN", "MAX"))
    p.add_argument("--testbed-workers", type=int, default=2)
    p.add_argument("--testbed-pause", type=float, default=0.02)
    p.add_argument("--agent-workers", type=int, default=1)
    p.add_argument("--openai-workers", type=int, default=1)
    p.add_argument("--max-requests", type=int, default=500_000, help="a bound on requests sent")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--work", help="work dir (default: a new one under $TMPDIR)")
    p.add_argument("--doc", help="docs/reliability.md to write the results into")
    p.add_argument("--write", action="store_true", help="write the doc even for a run under 10 min")
    p.add_argument("--keep-data", action="store_true", help="keep the data dir")
    args = p.parse_args()
    work = args.work or os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                     time.strftime("slmfn-soak-%Y%m%d-%H%M%S"))
    os.makedirs(work, exist_ok=True)
    args.json_out = os.path.join(work, "results.json")
    soak = Soak(args, work)
    # Bounded in time whatever happens: traffic, then at most this much for the rest.
    hard = args.minutes * 60 + 900

    def watchdog():
        time.sleep(hard)
        say(f"watchdog: still running after {hard:.0f} s; killing the runtime")
        soak.rt.shutdown_quietly()
        os._exit(3)
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        soak.run()
    except BaseException:
        soak.stop.set()
        soak.rt.shutdown_quietly()
        raise
    fig = soak.figures()
    with open(args.json_out, "w") as f:
        json.dump(fig, f, indent=1, default=str)
    section = render(args, fig)
    print(section)
    if args.doc and (args.write or args.minutes >= 10):
        write_section(args.doc, section)
        say(f"wrote {args.doc}")
    elif args.doc:
        say(f"a {args.minutes:g}-minute trial: {args.doc} left as it is (--write writes it)")
    c = fig["classes"]
    bad = (c["5xx"] or c["4xx"] or c["wrong"] or c["transport"] or c["refused-up"]
           or fig["lost"] or fig["failed_opens"] or fig["aborted"] or fig["stale_serving"]
           or fig["kv_inherited"] or fig["unexpected"]
           or any(x.get("sigterm_exit") != 0 for x in fig["clean"]))
    if not bad and not args.keep_data:
        shutil.rmtree(soak.rt.data, ignore_errors=True)
    say(f"work dir: {work} ({'data dir kept' if bad or args.keep_data else 'data dir removed'})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
