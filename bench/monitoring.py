#!/usr/bin/env python3
"""What capture and live monitoring cost (issue 13), in one run, in interleaved rounds:

1. S1 (1 CSV row per request, 32 connections, XGBoost): `--monitoring off` and no capture,
   against live monitoring on (the model folder's baseline/) with capture of 100 % of requests
   to a local folder: requests/s and p99.
2. `mlapp transform` on 1,000,000 rows: the same two settings, rows/s.
3. `mlapp baseline` on the same 1,000,000 rows: seconds.

Run with `bench/monitoring.sh`. Standard library only (numpy, for the data, from the
examples' or the bench's virtualenv).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
import batch  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "10"))
ROWS = int(os.environ.get("BATCH_ROWS", "1000000"))
MODEL = os.path.join(run.MODELS, "xgboost")


def numpy_python():
    for py in [os.path.join(run.REPO, ".venv-examples", "bin", "python"),
               os.path.join(run.REPO, ".venv-bench-aws", "bin", "python"), sys.executable]:
        if os.path.exists(py) and subprocess.run([py, "-c", "import numpy"],
                                                 capture_output=True).returncode == 0:
            return py
    raise SystemExit("numpy is needed to write the data: make examples, or bench/setup.sh")


def settings(tmp, on, n):
    if not on:
        return ["--monitoring", "off"]
    cap = os.path.join(tmp, f"capture-{n}")
    return ["--monitoring", "on", "--capture-uri", cap, "--capture-percent", "100"]


def settle():
    """Writes back what earlier runs left dirty in the page cache (hundreds of MB of capture
    files), so that the kernel's writeback of one run's capture is not charged to the next
    run, which may be the other setting."""
    os.sync()
    time.sleep(1)


def s1(tmp, on, n, port):
    sc = run.SCENARIOS["S1"]
    settle()
    server = run.Server("mlapp", "xgboost", port, settings(tmp, on, n), tmp)
    try:
        warm = run.wrk(port, sc, 2)
        r = run.wrk(port, sc, SECONDS)
        cap = os.path.join(tmp, f"capture-{n}")
        if on:
            # The capture must keep up: count what it wrote once the server flushed at exit.
            server.stop()
            lines = 0
            for root, _, files in os.walk(cap):
                for f in files:
                    if f.endswith(".jsonl") and not f.startswith("."):
                        with open(os.path.join(root, f)) as fh:
                            lines += sum(1 for _ in fh)
            r["captured"] = lines
            # At 100 % with a sink that keeps up, every answered request is a record.
            answered = warm["requests"] - warm["non_2xx"] + r["requests"] - r["non_2xx"]
            r["lost"] = answered - lines
        return {"rps": r["rps"], "p99_ms": r["p99_us"] / 1000, "errors": r["errors"],
                "requests": r["requests"], "captured": r.get("captured"), "lost": r.get("lost")}
    finally:
        if server.proc.poll() is None:
            server.stop()


def transform(tmp, data, on, n):
    out = os.path.join(tmp, f"out-{n}")
    settle()
    took, rss = batch.peak_rss_of(
        [run.MLAPP, "transform", "--model-dir", MODEL, "--input", data, "--output", out]
        + settings(tmp, on, n), dict(os.environ, RUST_LOG="error"))
    shutil.rmtree(out)
    shutil.rmtree(os.path.join(tmp, f"capture-{n}"), ignore_errors=True)
    return {"seconds": took, "rows_s": ROWS / took, "peak_rss_mib": rss / 2**20}


def main():
    tmp = tempfile.mkdtemp(prefix="mlapp-monitoring-")
    data = os.path.join(tmp, "in", "rows.csv")
    os.makedirs(os.path.dirname(data))
    run.log(f"writing {ROWS:,} rows")
    subprocess.run([numpy_python(), "-c", batch.MAKE_DATA, str(ROWS), data,
                    os.path.join(run.PAYLOADS, "xgboost", "rows.csv")], check=True)
    res = {"machine": run.machine(), "rounds": ROUNDS, "s1": [], "transform": []}
    n = 0
    for r in range(ROUNDS):
        for on in (False, True):
            n += 1
            run.log(f"round {r + 1}: S1 monitoring {'on' if on else 'off'}")
            res["s1"].append(dict(on=on, **s1(tmp, on, n, 18000 + n)))
            run.log(f"round {r + 1}: transform monitoring {'on' if on else 'off'}")
            res["transform"].append(dict(on=on, **transform(tmp, data, on, n)))
    run.log("mlapp baseline on the same rows")
    t = time.monotonic()
    subprocess.run([run.MLAPP, "baseline", "--model-dir", MODEL, "--no-header", "--input", data,
                    "--output", os.path.join(tmp, "baseline")], check=True,
                   env=dict(os.environ, RUST_LOG="warn"))
    res["baseline_seconds"] = time.monotonic() - t

    summarize(res)
    print(json.dumps(res, indent=1))
    with open(os.path.join(run.REPO, "bench", "results", "monitoring.json"), "w") as f:
        json.dump(res, f, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)


def summarize(res):
    """Medians of each setting, their ratio, and the median of the rounds' own ratios (each
    round runs off, then on, within a minute, so its ratio is not moved by the machine's drift
    between minutes, which the medians of the two settings are)."""
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    def setting(kind, on, key):
        return med([x[key] for x in res[kind] if x["on"] == on])

    def paired(kind, key):
        runs = res[kind]
        return med([on[key] / off[key] for off, on in zip(runs[0::2], runs[1::2])])

    res["summary"] = {
        "s1_rps_off": setting("s1", False, "rps"), "s1_rps_on": setting("s1", True, "rps"),
        "s1_p99_ms_off": setting("s1", False, "p99_ms"),
        "s1_p99_ms_on": setting("s1", True, "p99_ms"),
        "transform_rows_s_off": setting("transform", False, "rows_s"),
        "transform_rows_s_on": setting("transform", True, "rows_s"),
        "transform_rss_mib_off": setting("transform", False, "peak_rss_mib"),
        "transform_rss_mib_on": setting("transform", True, "peak_rss_mib"),
        "baseline_seconds": res["baseline_seconds"],
        "s1_ratio_of_rounds": paired("s1", "rps"),
        "transform_ratio_of_rounds": paired("transform", "rows_s"),
    }
    s = res["summary"]
    s["s1_ratio"] = s["s1_rps_on"] / s["s1_rps_off"]
    s["transform_ratio"] = s["transform_rows_s_on"] / s["transform_rows_s_off"]


if __name__ == "__main__":
    main()
