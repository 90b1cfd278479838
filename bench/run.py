#!/usr/bin/env python3
"""mlapp against the reference stacks, side by side in one run (see bench/README.md).

Starts each server on loopback, drives it with wrk (bench/wrk.lua: rotating bodies, one JSON
line of results), samples the resident memory of its whole process tree, and prints a
Markdown report with mlapp / reference ratios. Standard library only.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SHARED_BENCH", os.path.join(REPO, "..", "shared", "bench"))
MLAPP = os.path.join(REPO, "target", "release", "mlapp")
TRIVIAL = os.path.join(REPO, "target", "release", "examples", "trivial_http")
FLOOR = os.path.join(REPO, "target", "release", "examples", "ort_floor")
MODELS = os.path.join(REPO, "examples", "gender", "models")
PAYLOADS = os.path.join(REPO, "examples", "gender", "payloads")
WRK_LUA = os.path.join(REPO, "bench", "wrk.lua")

# name: (model, payload file, rows per request, connections, content type, wrap, mlapp args, stacks)
SCENARIOS = {
    "S1": dict(model="xgboost", file="xgboost/rows.csv", rows=1, conns=32, ctype="text/csv",
               stacks=["mlapp", "fastapi", "aws", "trivial"], what="1 CSV row/request, c=32, XGBoost"),
    "S2": dict(model="pipeline", file="pipeline/records.jsonl", rows=1, conns=32,
               ctype="application/json", wrap="instances", stacks=["mlapp"],
               what="1 JSON record/request, c=32, 41-input sklearn pipeline"),
    "S3": dict(model="xgboost", file="xgboost/rows.csv", rows=100, conns=8, ctype="text/csv",
               stacks=["mlapp", "fastapi", "aws"], what="100 CSV rows/request, c=8, XGBoost"),
    "S4": dict(model="xgboost", file="xgboost/rows.csv", rows=10000, conns=2, ctype="text/csv",
               args=["--max-payload-mb", "100"], stacks=["mlapp", "fastapi", "aws"],
               what="10,000 CSV rows/request, c=2, XGBoost"),
    "S5": dict(model="xgboost", file="xgboost/rows.csv", rows=100, conns=512, ctype="text/csv",
               args=["--queue-capacity", "32"], stacks=["mlapp", "fastapi", "aws"], count=True,
               what="overload: 100 CSV rows/request, c=512, mlapp queue of 32"),
}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def tree_rss(pid):
    """Resident memory of pid and all its descendants, in bytes."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakRss:
    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._t.join()


class Server:
    def __init__(self, stack, model, port, extra_args, tmp):
        self.stack, self.port = stack, port
        model_dir = os.path.join(MODELS, model)
        env = dict(os.environ, MODEL_DIR=model_dir, PORT=str(port), RUST_LOG="warn")
        cwd = REPO
        if stack in ("mlapp", "mlapp-before"):
            # mlapp-before: an earlier build (MLAPP_BEFORE=path) in the same run, so that a
            # change is judged by a ratio measured side by side.
            binary = MLAPP if stack == "mlapp" else os.environ["MLAPP_BEFORE"]
            cmd = [binary, "serve", "--model-dir", model_dir, "--host", "127.0.0.1",
                   "--port", str(port)] + extra_args
        elif stack == "trivial":
            cmd = [TRIVIAL, str(port)]
        elif stack == "fastapi":
            cwd = os.path.join(SHARED, "fastapi_onnx")
            cmd = [os.path.join(REPO, ".venv-bench-fastapi", "bin", "uvicorn"), "app:app",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", str(os.cpu_count()),
                   "--log-level", "warning"]
        elif stack == "aws":
            # A copy of the sample whose nginx accepts Batch Transform sized bodies (its
            # 5 MB client_max_body_size would refuse S4 before the model is reached).
            here = os.path.join(tmp, "aws_sample_onnx")
            if not os.path.isdir(here):
                shutil.copytree(os.path.join(SHARED, "aws_sample_onnx"), here)
                conf = os.path.join(here, "nginx.conf")
                with open(conf) as f:
                    text = f.read().replace("client_max_body_size 5m", "client_max_body_size 100m")
                with open(conf, "w") as f:
                    f.write(text)
            env["SOCK"] = os.path.join(tmp, f"gunicorn-{port}.sock")
            cmd = [os.path.join(REPO, ".venv-bench-aws", "bin", "python"), os.path.join(here, "serve")]
        else:
            raise ValueError(stack)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(tmp, f"{stack}-{port}.log"), "w"),
                                     start_new_session=True)
        self.ready_s = self.wait_ready()

    def wait_ready(self, limit=60):
        until = time.monotonic() + limit
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.stack} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.stack} not ready after {limit} s")

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wrk(port, sc, seconds):
    threads = 2 if sc["conns"] > 64 else 1
    env = dict(os.environ, FILE=os.path.join(PAYLOADS, sc["file"]), ROWS=str(sc["rows"]),
               CTYPE=sc["ctype"])
    if sc.get("wrap"):
        env["WRAP"] = sc["wrap"]
    if sc.get("count"):
        env["COUNT_STATUS"] = "1"
    for key in ("path", "bodies"):
        if sc.get(key):
            env["URL_PATH" if key == "path" else "BODIES"] = sc[key]
    cmd = ["wrk", f"-t{threads}", f"-c{sc['conns']}", f"-d{seconds}s", "--timeout", "30s",
           "-s", WRK_LUA, f"http://127.0.0.1:{port}/invocations"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    good = r["requests"] - r["non_2xx"] if not sc.get("count") else r["ok"]
    r["rows_s"] = good * sc["rows"] / secs
    r["errors"] = r["non_2xx"] + r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    return r


class PingProbe:
    """GET /ping every 20 ms on its own connection while the load runs (SageMaker's health
    check, which must not wait behind inference: it allows 2 s); latencies in ms."""

    def __init__(self, port, on):
        self.port, self.on, self.ms = port, on, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                conn.request("GET", "/ping")
                conn.getresponse().read()
                self.ms.append((time.perf_counter() - t) * 1e3)
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self.ms.append(10_000.0)
            self._stop.wait(0.02)

    def summary(self):
        if not self.ms:
            return None
        xs = sorted(self.ms)
        at = lambda p: round(xs[min(len(xs) - 1, int(p * len(xs)))], 2)
        return {"n": len(xs), "p50": at(0.5), "p99": at(0.99), "max": round(xs[-1], 2)}

    def __enter__(self):
        if self.on:
            self._t.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        if self.on:
            self._t.join()


def accepted_p99_ms(port):
    """p99 of answered (2xx) /invocations requests from mlapp's own histogram (bucket bound)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    prefix = 'mlapp_http_request_duration_seconds_bucket{route="/invocations",code="2xx",le="'
    buckets = []
    for line in text.splitlines():
        if line.startswith(prefix):
            le, count = line[len(prefix):].split('"} ')
            buckets.append((float(le), float(count)))
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if total and count >= 0.99 * total:
            return le * 1e3
    return None


def floor(model, seconds, rows_file=None, batches="1,100,10000"):
    """rows/s of Session::run alone, by batch size, on rows of rows_file (default: the
    example payload the HTTP scenarios send)."""
    rows_file = rows_file or os.path.join(PAYLOADS, "xgboost", "rows.csv")
    out = subprocess.run([FLOOR, os.path.join(MODELS, model), rows_file, str(seconds),
                          str(os.cpu_count()), batches],
                         capture_output=True, text=True, check=True).stdout
    return {r["batch"]: r for r in map(json.loads, out.splitlines())}


def startup(model, tmp):
    """Seconds from spawn to /ping 200, and idle RSS after a few requests."""
    port = 18180
    s = Server("mlapp", model, port, [], tmp)
    try:
        time.sleep(0.5)
        return s.ready_s, tree_rss(s.proc.pid)
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--scenarios", default="S1,S2,S3,S4,S5")
    ap.add_argument("--stacks", default="mlapp,fastapi,aws,trivial")
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "results", "latest.json"))
    args = ap.parse_args()
    stacks = args.stacks.split(",")
    results = {"machine": machine(), "seconds": args.seconds, "runs": []}
    tmp = tempfile.mkdtemp(prefix="mlapp-bench-")
    os.chmod(tmp, 0o755)  # nginx workers (not root) must reach the gunicorn socket in it
    port = 18100
    try:
        log("in-process ONNX Runtime floor")
        results["floor"] = floor("xgboost", 3)
        results["startup"] = {}
        for model in ["logreg", "xgboost", "mlp", "pipeline", "agereg"]:
            ready, rss = startup(model, tmp)
            results["startup"][model] = {"ready_s": ready, "idle_rss": rss}
        for name in args.scenarios.split(","):
            sc = SCENARIOS[name]
            wanted = sc["stacks"] + (["mlapp-before"] if os.environ.get("MLAPP_BEFORE") else [])
            for stack in [s for s in wanted if s in stacks or s == "mlapp-before"]:
                port += 1
                log(f"{name} {stack}: {sc['what']}")
                mlapp = stack in ("mlapp", "mlapp-before")
                server = Server(stack, sc["model"], port,
                                sc.get("args", []) if mlapp else [], tmp)
                try:
                    wrk(port, sc, args.warmup)
                    with PeakRss(server.proc.pid) as rss, PingProbe(port, mlapp) as ping:
                        r = wrk(port, sc, args.seconds)
                    r.update(scenario=name, stack=stack, peak_rss=rss.peak)
                    if mlapp:
                        r["ping_ms"] = ping.summary()
                    if stack == "mlapp" and sc.get("count"):
                        r["accepted_p99_ms"] = accepted_p99_ms(port)
                    results["runs"].append(r)
                    log(f"  {r['rps']:.0f} req/s, {r['rows_s']:.0f} rows/s, p99 {r['p99_us']/1e3:.2f} ms, "
                        f"errors {r['errors']}, peak RSS {rss.peak/2**20:.0f} MiB")
                finally:
                    server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(report(results))


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, {os.uname().sysname} {os.uname().release}"


def report(res):
    runs = {(r["scenario"], r["stack"]): r for r in res["runs"]}
    out = [f"Machine: {res['machine']}. wrk on the same machine, {res['seconds']} s per run.", ""]
    out.append("| scenario | stack | req/s | rows/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, stack), r in runs.items():
        errs = str(r["errors"])
        if name == "S5":
            errs = f"{r['errors']} (429: {r['s429']}, 503: {r['s503']}, other 5xx: {r['s5xx']}, other: {r['sother'] + r['connect_errors'] + r['read_errors'] + r['timeouts']})"
        out.append(f"| {name} | {stack} | {r['rps']:,.0f} | {r['rows_s']:,.0f} | {r['p50_us']/1e3:.2f} | "
                   f"{r['p99_us']/1e3:.2f} | {r['p999_us']/1e3:.2f} | {errs} | {r['peak_rss']/2**20:.0f} |")
    out += ["", "Ratios (mlapp ÷ reference, same run):", ""]
    for name in sorted({n for n, _ in runs}):
        m = runs.get((name, "mlapp"))
        if not m:
            continue
        parts = []
        for ref in ["fastapi", "aws"]:
            r = runs.get((name, ref))
            if r and r["rows_s"] > 0:
                parts.append(f"{m['rows_s'] / r['rows_s']:.1f}× {ref} rows/s")
        t = runs.get((name, "trivial"))
        if t:
            parts.append(f"{100 * m['rps'] / t['rps']:.0f}% of the trivial-handler ceiling ({t['rps']:,.0f} req/s)")
        fl = res["floor"]
        batch = {"S1": 1, "S2": None, "S3": 100, "S4": 10000, "S5": 100}.get(name)
        if batch in fl:
            parts.append(f"{100 * m['rows_s'] / fl[batch]['rows_per_s']:.0f}% of the in-process ORT floor at batch {batch} ({fl[batch]['rows_per_s']:,.0f} rows/s, {os.cpu_count()} threads)")
        if m.get("accepted_p99_ms") is not None:
            parts.append(f"server-side p99 of answered requests ≤ {m['accepted_p99_ms']:g} ms")
        b = runs.get((name, "mlapp-before"))
        if b and b["rps"] > 0:
            parts.append(f"{m['rps'] / b['rps']:.2f}× the before build's req/s (p99 {m['p99_us']/1e3:.2f} vs {b['p99_us']/1e3:.2f} ms)")
        if m.get("ping_ms"):
            p = m["ping_ms"]
            parts.append(f"/ping under this load p50 {p['p50']} ms, p99 {p['p99']} ms, max {p['max']} ms ({p['n']} pings)")
        if not parts:
            parts.append("no reference stack can serve this model (41 inputs, strings)")
        out.append(f"- {name}: " + "; ".join(parts))
    out += ["", "Start-up (spawn to /ping 200) and idle RSS, mlapp:", ""]
    for model, s in res["startup"].items():
        out.append(f"- {model}: {s['ready_s']*1e3:.0f} ms, {s['idle_rss']/2**20:.0f} MiB")
    return "\n".join(out)


if __name__ == "__main__":
    main()
