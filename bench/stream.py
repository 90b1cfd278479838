#!/usr/bin/env python3
"""The streaming scorer (issue 11) against the ONNX Runtime floor, in one run.

Every ratio is taken within one round, the floor measured right before what is compared
with it, and the rounds are repeated (ROUNDS, default 3), because this shared 2-vCPU machine
moves by 5-10 % between minutes: one ratio from two different minutes says little.

Per round:
  - S4 (10,000-row CSV requests, 2 connections): the floor at batch 10,000 on the same rows,
    then mlapp, then (with MLAPP_BEFORE) the binary before the change.
  - S1 (1-row requests, 32 connections): mlapp and the before binary.
  - `mlapp transform` on 1,000,000 rows: the floor on the same rows, mlapp, the before binary.
Then, once: a 100 MB body through POST /invocations in batch mode (peak RSS against the body),
and 1 GB through the two streaming entry points that take input of any size: a 1 GB
`mlapp transform` file and a 1 GB chunked Batch Transform body (MaxPayloadInMB=0), each with
its peak RSS.

mlapp runs with live monitoring off (MLAPP_MONITORING=off, unless set): the scorer alone.

Run with `bench/stream.sh` (builds what it needs); results in bench/results/stream.json.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batch  # noqa: E402  (data generation, peak RSS of a command)
import run  # noqa: E402  (servers, wrk, floor, RSS sampling)

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "8"))
ROWS = int(os.environ.get("BATCH_ROWS", "1000000"))
GB = float(os.environ.get("BIG_GB", "1"))
BEFORE = os.environ.get("MLAPP_BEFORE")


def serve_load(binary, scenario, port, tmp):
    """req/s, rows/s and p99 of one wrk run against `binary` serving the scenario's model."""
    sc = run.SCENARIOS[scenario]
    if binary != run.MLAPP:
        os.environ["MLAPP_BEFORE"] = binary
    stack = "mlapp" if binary == run.MLAPP else "mlapp-before"
    server = run.Server(stack, sc["model"], port, sc.get("args", []), tmp)
    try:
        run.wrk(port, sc, 2)
        with run.PeakRss(server.proc.pid) as rss:
            r = run.wrk(port, sc, SECONDS)
        return {"rps": r["rps"], "rows_s": r["rows_s"], "p99_ms": r["p99_us"] / 1e3,
                "errors": r["errors"], "peak_rss": rss.peak}
    finally:
        server.stop()


def transform_run(binary, data, out):
    subprocess.run(["rm", "-rf", out], check=True)
    took, rss = batch.peak_rss_of([binary, "transform", "--model-dir", batch.MODEL,
                                   "--input", data, "--output", out],
                                  dict(os.environ, RUST_LOG="warn"))
    return {"seconds": took, "rows_s": ROWS / took, "peak_rss": rss}


def main():
    # The scorer alone: live monitoring is on by default for the example model (it carries a
    # baseline/), and what it costs is bench/monitoring.py's to measure. Set it to measure both.
    os.environ.setdefault("MLAPP_MONITORING", "off")
    out = {"machine": run.machine(), "rounds": [], "seconds_per_run": SECONDS,
           "monitoring": os.environ["MLAPP_MONITORING"]}
    tmp = tempfile.mkdtemp(prefix="mlapp-stream-")
    os.chmod(tmp, 0o755)
    data = os.path.join(tmp, "in", "rows.csv")
    os.makedirs(os.path.dirname(data))
    run.log(f"writing {ROWS:,} rows")
    subprocess.run([batch.PANDAS_PY, "-c", batch.MAKE_DATA, str(ROWS), data,
                    os.path.join(run.PAYLOADS, "xgboost", "rows.csv")], check=True)
    port = 18300
    try:
        for n in range(ROUNDS):
            r = {}
            run.log(f"round {n + 1}: S4 floor, mlapp, before")
            r["s4_floor"] = run.floor("xgboost", 4, batches="10000")[10000]["rows_per_s"]
            for name, binary in [("mlapp", run.MLAPP), ("before", BEFORE)]:
                if binary:
                    port += 1
                    r[f"s4_{name}"] = serve_load(binary, "S4", port, tmp)
                    port += 1
                    r[f"s1_{name}"] = serve_load(binary, "S1", port, tmp)
            run.log(f"round {n + 1}: transform floor, mlapp, before")
            r["t_floor"] = run.floor("xgboost", 4, rows_file=data, batches="10000")[10000]["rows_per_s"]
            r["t_mlapp"] = transform_run(run.MLAPP, data, os.path.join(tmp, "out"))
            if BEFORE:
                r["t_before"] = transform_run(BEFORE, data, os.path.join(tmp, "out"))
            out["rounds"].append(r)
            run.log(f"  S4 {r['s4_mlapp']['rows_s'] / r['s4_floor']:.0%} of floor, transform "
                    f"{r['t_mlapp']['rows_s'] / r['t_floor']:.0%} of floor")

        run.log("100 MB body, batch mode")
        body = os.path.join(tmp, "body.csv")
        with open(data, "rb") as src, open(body, "wb") as dst:
            dst.write(src.read(100 * 10**6).rsplit(b"\n", 1)[0] + b"\n")
        out["body_100mb"] = batch.body_peak(run.MLAPP, body, {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"},
                                      18390, False)
        if BEFORE:
            out["body_100mb_before"] = batch.body_peak(BEFORE, body,
                                                 {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"}, 18391, False)
        os.remove(body)

        run.log(f"{GB:g} GB through mlapp transform and a chunked batch body")
        big_dir = os.path.join(tmp, "big")
        os.makedirs(big_dir)
        big = os.path.join(big_dir, "big.csv")
        want = int(GB * 10**9)
        with open(data, "rb") as src:
            whole = src.read()
        with open(big, "wb") as dst:
            written = 0
            while written < want:
                # Whole copies, then whole lines up to the size.
                part = whole[: want - written]
                if len(part) < len(whole):
                    part = part[: part.rfind(b"\n") + 1]
                if not part:
                    break
                dst.write(part)
                written += len(part)
        with open(big, "rb") as f:
            big_rows = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
        took, rss = batch.peak_rss_of([run.MLAPP, "transform", "--model-dir", batch.MODEL,
                                       "--input", big_dir, "--output", os.path.join(tmp, "bigout")],
                                      dict(os.environ, RUST_LOG="warn"))
        out["big_transform"] = {"bytes": os.path.getsize(big), "rows": big_rows, "seconds": took,
                                "peak_rss": rss}
        subprocess.run(["rm", "-rf", os.path.join(tmp, "bigout")], check=True)
        out["big_stream"] = batch.body_peak(run.MLAPP, big, {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"},
                                      18392, True)
        assert out["big_stream"]["answer_lines"] == big_rows, out["big_stream"]
    finally:
        subprocess.run(["rm", "-rf", tmp])
    path = os.path.join(run.REPO, "bench", "results", "stream.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(report(out))


def report(out):
    rounds = out["rounds"]
    med = statistics.median
    lines = [f"Machine: {out['machine']}. {len(rounds)} rounds, {out['seconds_per_run']} s per load run; "
             f"mlapp's live monitoring: {out.get('monitoring', 'auto')}.", ""]
    lines.append("| round | ORT floor, S4 rows | S4 mlapp rows/s | S4 ÷ floor | S4 before ÷ floor | S1 mlapp req/s | S1 before req/s | S1 after ÷ before | floor, 1M rows | transform rows/s | transform ÷ floor | before ÷ floor |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cols = {k: [] for k in ["s4", "s4b", "s1", "t", "tb"]}
    for i, r in enumerate(rounds, 1):
        s4 = r["s4_mlapp"]["rows_s"] / r["s4_floor"]
        t = r["t_mlapp"]["rows_s"] / r["t_floor"]
        cols["s4"].append(s4)
        cols["t"].append(t)
        row = [str(i), f"{r['s4_floor']:,.0f}", f"{r['s4_mlapp']['rows_s']:,.0f}", f"{s4:.0%}"]
        if "s4_before" in r:
            b = r["s4_before"]["rows_s"] / r["s4_floor"]
            s1 = r["s1_mlapp"]["rps"] / r["s1_before"]["rps"]
            cols["s4b"].append(b)
            cols["s1"].append(s1)
            row += [f"{b:.0%}", f"{r['s1_mlapp']['rps']:,.0f}", f"{r['s1_before']['rps']:,.0f}", f"{s1:.2f}"]
        else:
            row += ["", f"{r['s1_mlapp']['rps']:,.0f}", "", ""]
        row += [f"{r['t_floor']:,.0f}", f"{r['t_mlapp']['rows_s']:,.0f}", f"{t:.0%}"]
        if "t_before" in r:
            tb = r["t_before"]["rows_s"] / r["t_floor"]
            cols["tb"].append(tb)
            row.append(f"{tb:.0%}")
        else:
            row.append("")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"Medians: S4 {med(cols['s4']):.0%} of the floor"
                 + (f" (before: {med(cols['s4b']):.0%})" if cols["s4b"] else "")
                 + f"; transform {med(cols['t']):.0%} of the floor"
                 + (f" (before: {med(cols['tb']):.0%})" if cols["tb"] else "")
                 + (f"; S1 after ÷ before {med(cols['s1']):.2f}" if cols["s1"] else "") + ".")
    b = out["body_100mb"]
    lines.append(f"100 MB body (batch mode): {b['seconds']:.1f} s, peak RSS {b['peak_rss'] / 2**20:.0f} MiB = "
                 f"{b['peak_rss'] / b['bytes']:.2f}× the body (idle {b['idle_rss'] / 2**20:.0f} MiB)"
                 + (f"; before: {out['body_100mb_before']['peak_rss'] / 2**20:.0f} MiB" if "body_100mb_before" in out else "") + ".")
    t, s = out["big_transform"], out["big_stream"]
    lines.append(f"{t['bytes'] / 1e9:.2f} GB file ({t['rows']:,} rows) through mlapp transform: {t['seconds']:.1f} s, "
                 f"peak RSS {t['peak_rss'] / 2**20:.0f} MiB.")
    lines.append(f"The same {s['bytes'] / 1e9:.2f} GB as one chunked Batch Transform body: {s['seconds']:.1f} s, "
                 f"{s['answer_lines']:,} answer lines, peak RSS {s['peak_rss'] / 2**20:.0f} MiB (idle {s['idle_rss'] / 2**20:.0f} MiB).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
