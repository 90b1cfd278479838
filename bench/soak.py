#!/usr/bin/env python3
"""Soak: steady S1 load (1 CSV row per request, XGBoost, 32 connections, through wrk.lua) on a
release mlapp for --minutes, with a SIGHUP reload every minute. Samples the server's RSS every
5 s and reports whether it stayed flat (within 10 % of its value after warm-up) and whether
every answer was a 200. Not part of `make test`: `make soak` (or bench/soak.sh) runs it.

The model is served from a copy of examples/gender/models/xgboost, so that each reload
really fetches, loads, warms and swaps a model beside the serving one."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLAPP = os.path.join(REPO, "target", "release", "mlapp")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def metric(port, series):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(series):
            total += float(line.rsplit(" ", 1)[1])
    return text, total


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--warmup-minutes", type=float, default=2)
    ap.add_argument("--reload-every", type=float, default=60)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--port", type=int, default=18300)
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "results", "soak.json"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mlapp-soak-")
    model = os.path.join(tmp, "xgboost")
    shutil.copytree(os.path.join(REPO, "examples", "gender", "models", "xgboost"), model)
    log = open(os.path.join(tmp, "mlapp.log"), "w")
    server = subprocess.Popen(
        [MLAPP, "serve", "--model-dir", model, "--host", "127.0.0.1", "--port", str(args.port),
         "--model-cache-dir", os.path.join(tmp, "cache")],
        env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL, stderr=log)
    try:
        until = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{args.port}/ping", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > until:
                sys.exit("mlapp did not become ready")
            time.sleep(0.1)

        seconds = int(args.minutes * 60)
        env = dict(os.environ, ROWS="1", CTYPE="text/csv",
                   FILE=os.path.join(REPO, "examples", "gender", "payloads", "xgboost", "rows.csv"))
        wrk = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "30s",
             "-s", os.path.join(REPO, "bench", "wrk.lua"), f"http://127.0.0.1:{args.port}/invocations"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        start = time.monotonic()
        samples, reloads, next_reload = [], 0, args.reload_every
        while wrk.poll() is None:
            t = time.monotonic() - start
            samples.append((round(t, 1), rss(server.pid)))
            if t >= next_reload:
                server.send_signal(signal.SIGHUP)
                reloads += 1
                next_reload += args.reload_every
            time.sleep(5)
        out = wrk.stdout.read()
        text, ok = metric(args.port, 'mlapp_http_requests_total{route="/invocations",status="200"')
        _, answered = metric(args.port, 'mlapp_http_requests_total{route="/invocations"')
        _, reloaded = metric(args.port, 'mlapp_model_reloads_total{result="success"}')
        _, failed = metric(args.port, 'mlapp_model_reloads_total{result="failure"}')
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    w = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    non2xx, requests = w["non_2xx"], w["requests"]
    sock = sum(w[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    after = [r for t, r in samples if t >= args.warmup_minutes * 60]
    base = after[0]
    drift = max(abs(r - base) for r in after) / base
    res = {
        "minutes": args.minutes, "connections": args.connections, "reloads_sent": reloads,
        "reloads_ok": reloaded, "reloads_failed": failed, "wrk_requests": requests,
        "server_200": ok, "server_answered": answered, "wrk_non_2xx": non2xx,
        "wrk_socket_errors": sock, "p99_ms": w["p99_us"] / 1e3,
        "rss_after_warmup_mib": round(base / 2**20, 1),
        "rss_min_mib": round(min(after) / 2**20, 1), "rss_max_mib": round(max(after) / 2**20, 1),
        "rss_last_mib": round(after[-1] / 2**20, 1), "rss_drift": round(drift, 4),
        "rps": round(requests / (args.minutes * 60)), "samples": samples,
    }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=1)
    summary = {k: v for k, v in res.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    good = drift <= 0.10 and non2xx == 0 and not sock and ok == answered and failed == 0
    print("soak:", "PASSED" if good else "FAILED")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
