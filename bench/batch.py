#!/usr/bin/env python3
"""Batch benchmarks (issue 4), side by side in one run:

1. `mlapp transform` on a 1,000,000-row x 64-feature CSV with the XGBoost example, against
   the in-process ONNX Runtime floor on the same cores and against the reference stack's way
   (pandas + onnxruntime in one Python process, all cores): rows/s and peak RSS.
2. One ~100 MB MultiRecord CSV body through POST /invocations in batch mode: answered with
   one line per row, and the server's peak RSS against the body size.

Run with `bench/batch.sh` (or `make bench-batch`), which installs and builds what it needs.
Standard library only here; the data and reference steps run in the AWS sample's virtualenv
(numpy, pandas, onnxruntime).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the servers, RSS sampling and paths of the main harness)

ROWS = int(os.environ.get("BATCH_ROWS", "1000000"))
BODY_MB = int(os.environ.get("BODY_MB", "100"))
PANDAS_PY = os.path.join(run.REPO, ".venv-bench-aws", "bin", "python")
MODEL = os.path.join(run.MODELS, "xgboost")

# Varied rows (each example row scaled by a random factor per cell), so that tree models do
# not coast on 25 distinct inputs.
MAKE_DATA = r"""
import sys, numpy as np
rows, path = int(sys.argv[1]), sys.argv[2]
base = np.loadtxt(sys.argv[3], delimiter=",", dtype=np.float32, ndmin=2)
rng = np.random.default_rng(7)
with open(path, "w") as f:
    step = 100_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        x = base[np.arange(start, start + n) % len(base)] * rng.uniform(0.5, 1.5, (n, base.shape[1])).astype(np.float32)
        np.savetxt(f, x, delimiter=",", fmt="%.7g")
"""

# The reference stack's approach: the AWS sample's pandas parsing and CSV writing, one
# onnxruntime session using every core, in one process.
PANDAS = r"""
import sys, time, resource, numpy as np, pandas as pd, onnxruntime as ort, glob, os
src, dst, model_dir = sys.argv[1:4]
opts = ort.SessionOptions(); opts.intra_op_num_threads = os.cpu_count()
s = ort.InferenceSession(sorted(glob.glob(os.path.join(model_dir, "*.onnx")))[0], opts, providers=["CPUExecutionProvider"])
t = time.time()
x = pd.read_csv(src, header=None).to_numpy(dtype=np.float32)
out = s.run(None, {s.get_inputs()[0].name: x})[-1]
pd.DataFrame(out).to_csv(dst, header=False, index=False)
print(f'{{"rows": {len(x)}, "seconds": {time.time() - t}, "peak_rss": {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}}')
"""


def peak_rss_of(cmd, env):
    """Runs cmd to its end; returns (seconds, peak RSS of its process tree in bytes)."""
    t = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with run.PeakRss(proc.pid) as peak:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:].decode(errors='replace')}")
    return time.time() - t, peak.peak


def body_peak(binary, body_path, env, port, chunked):
    """Sends one CSV body to a batch-mode server (`env` added to its environment), read whole
    or, if `chunked`, with Transfer-Encoding: chunked; the answer's line count, the time and
    the server's idle and peak RSS."""
    server = subprocess.Popen([binary, "serve", "--model-dir", MODEL, "--host", "127.0.0.1",
                               "--port", str(port)],
                              env=dict(os.environ, RUST_LOG="warn", SAGEMAKER_BATCH="true", **env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until = time.time() + 30
        while time.time() < until:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        idle = run.tree_rss(server.pid)
        with run.PeakRss(server.pid) as peak:
            t = time.time()
            with open(body_path, "rb") as f:
                data = iter(lambda: f.read(1 << 20), b"") if chunked else f.read()
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations", data=data,
                    headers={"Content-Type": "text/csv", "Accept": "text/csv"})
                lines = 0
                with urllib.request.urlopen(req, timeout=1800) as r:
                    while block := r.read(1 << 20):
                        lines += block.count(b"\n")
            took = time.time() - t
        return {"bytes": os.path.getsize(body_path), "seconds": took, "idle_rss": idle,
                "peak_rss": peak.peak, "answer_lines": lines + 1}
    finally:
        server.terminate()
        server.wait()


def main():
    out = {"machine": run.machine(), "rows": ROWS}
    tmp = tempfile.mkdtemp(prefix="mlapp-batch-")
    data = os.path.join(tmp, "in", "rows.csv")
    os.makedirs(os.path.dirname(data))
    run.log(f"writing {ROWS:,} rows")
    subprocess.run([PANDAS_PY, "-c", MAKE_DATA, str(ROWS), data,
                    os.path.join(run.PAYLOADS, "xgboost", "rows.csv")], check=True)
    size = os.path.getsize(data)
    out["file_mb"] = size / 2**20

    run.log("ORT floor, batch 10,000, on the same rows")
    floor = run.floor("xgboost", 5, rows_file=data, batches="10000")
    out["floor_rows_s"] = floor[10000]["rows_per_s"]

    run.log("mlapp transform")
    took, rss = peak_rss_of([run.MLAPP, "transform", "--model-dir", MODEL, "--input", data,
                             "--output", os.path.join(tmp, "out")],
                            dict(os.environ, RUST_LOG="warn"))
    lines = sum(1 for _ in open(os.path.join(tmp, "out", "rows.csv.out")))
    assert lines == ROWS, f"{lines} answer lines for {ROWS} rows"
    out["mlapp"] = {"seconds": took, "rows_s": ROWS / took, "peak_rss": rss}

    run.log("pandas + onnxruntime, one process")
    done = subprocess.run([PANDAS_PY, "-c", PANDAS, data, os.path.join(tmp, "pandas.out"), MODEL],
                          capture_output=True, text=True, check=True)
    ref = json.loads(done.stdout.strip().splitlines()[-1])
    out["pandas"] = {"seconds": ref["seconds"], "rows_s": ref["rows"] / ref["seconds"],
                     "peak_rss": ref["peak_rss"]}

    run.log(f"one {BODY_MB} MB body through POST /invocations")
    body_path = os.path.join(tmp, "body.csv")
    with open(data, "rb") as src, open(body_path, "wb") as dst:
        dst.write(src.read(BODY_MB * 10**6).rsplit(b"\n", 1)[0] + b"\n")
    body_rows = sum(1 for _ in open(body_path, "rb"))
    b = body_peak(run.MLAPP, body_path, {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(BODY_MB + 1)},
                  18190, chunked=False)
    assert b["answer_lines"] == body_rows, f"{b['answer_lines']} answer lines for {body_rows} rows"
    out["body"] = dict(b, rows=body_rows, peak_over_body=b["peak_rss"] / b["bytes"])
    subprocess.run(["rm", "-rf", tmp])
    path = os.path.join(run.REPO, "bench", "results", "batch.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    m, p, b = out["mlapp"], out["pandas"], out["body"]
    print(f"Machine: {out['machine']}. {ROWS:,} rows x 64 features, {out['file_mb']:.0f} MiB of CSV.\n")
    print("| what | rows/s | seconds | peak RSS MiB |\n|---|---:|---:|---:|")
    print(f"| mlapp transform | {m['rows_s']:,.0f} | {m['seconds']:.1f} | {m['peak_rss'] / 2**20:.0f} |")
    print(f"| pandas + onnxruntime, one process | {p['rows_s']:,.0f} | {p['seconds']:.1f} | {p['peak_rss'] / 2**20:.0f} |")
    print(f"| ORT floor (Session::run only, batch 10,000, {os.cpu_count()} threads) | {out['floor_rows_s']:,.0f} | | |")
    print(f"\nmlapp transform: {100 * m['rows_s'] / out['floor_rows_s']:.0f}% of the ORT floor, "
          f"{m['rows_s'] / p['rows_s']:.1f}x pandas + onnxruntime.")
    print(f"{b['bytes'] / 1e6:.0f} MB body ({b['rows']:,} rows) through POST /invocations: {b['seconds']:.1f} s, "
          f"peak RSS {b['peak_rss'] / 2**20:.0f} MiB = {b['peak_over_body']:.2f}x the body (idle {b['idle_rss'] / 2**20:.0f} MiB).")
    per_hour = m["rows_s"] * 3600
    print(f"300 million rows on this 2-CPU machine: {3e8 / m['rows_s'] / 60:.0f} min "
          f"({per_hour / 1e6:.0f} M rows per hour).")


if __name__ == "__main__":
    main()
