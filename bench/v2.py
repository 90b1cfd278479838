#!/usr/bin/env python3
"""The Open Inference Protocol (issue 15) against /invocations, in one run, on one server
(the XGBoost example, 64 FP32 features):

- S1's load (1 row per request, 32 connections): /invocations with a JSON body
  ({"instances": [[...]]}) against /v2/models/xgboost/infer with a V2 JSON body;
- 100 rows per request, 8 connections (S3's load): /invocations JSON, V2 JSON, and V2 with
  the binary tensor data extension (the rows as little-endian FP32 after the JSON header,
  the outputs asked for as binary).

Rounds interleave the variants (this 2-vCPU VM drifts 5-10 % from minute to minute), and the
report gives each round's ratios and their medians. Run with `bench/v2.sh`. Standard library
only.
"""
import json
import os
import statistics
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "10"))
OUT = os.environ.get("OUT", os.path.join(run.REPO, "bench", "results", "v2.json"))
PATH = "/v2/models/xgboost/infer"


def binary_bodies(tmp, rows):
    """64 V2 requests of `rows` rows each, with the tensor as binary data, as wrk.lua reads
    them (BODIES): the rows taken in turn from the example, as the JSON variants take them."""
    lines = [json.loads(l) for l in open(os.path.join(run.PAYLOADS, "xgboost", "rows.jsonl"))
             if l.strip()]
    out = os.path.join(tmp, f"bodies-{rows}")
    os.makedirs(out, exist_ok=True)
    at = 0
    for k in range(1, 65):
        picked = [lines[(at + r) % len(lines)] for r in range(rows)]
        at += rows
        data = b"".join(struct.pack(f"<{len(p)}f", *p) for p in picked)
        header = json.dumps({
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, len(picked[0])],
                        "parameters": {"binary_data_size": len(data)}}],
            "parameters": {"binary_data_output": True},
        }).encode()
        with open(os.path.join(out, str(k)), "wb") as f:
            f.write(header + data)
        with open(os.path.join(out, f"{k}.len"), "w") as f:
            f.write(str(len(header)))
    return out


def variants(tmp):
    jsonl = "xgboost/rows.jsonl"
    inv = dict(file=jsonl, ctype="application/json", wrap="instances")
    v2 = dict(file=jsonl, ctype="application/json", wrap="v2", path=PATH)
    return {
        "S1 /invocations JSON": dict(inv, rows=1, conns=32),
        "S1 V2 JSON": dict(v2, rows=1, conns=32),
        "100 rows /invocations JSON": dict(inv, rows=100, conns=8),
        "100 rows V2 JSON": dict(v2, rows=100, conns=8),
        "100 rows V2 binary": dict(file=jsonl, ctype="application/octet-stream", rows=100,
                                   conns=8, path=PATH, bodies=binary_bodies(tmp, 100)),
    }


def main():
    res = {"machine": run.machine(), "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        todo = variants(tmp)
        server = run.Server("mlapp", "xgboost", 18400, [], tmp)
        try:
            for i in range(ROUNDS):
                got = {}
                # Each pair runs in both orders over the rounds: the machine drifts within
                # a round too.
                order = list(todo.items())
                if i % 2:
                    order.reverse()
                for name, sc in order:
                    run.wrk(18400, sc, 2)
                    r = run.wrk(18400, sc, SECONDS)
                    got[name] = {"rps": r["rps"], "rows_s": r["rows_s"],
                                 "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                                 "errors": r["errors"]}
                    run.log(f"round {i + 1} {name}: {r['rps']:,.0f} req/s, "
                            f"p99 {r['p99_us'] / 1000:.2f} ms, {r['errors']} errors")
                res["rounds"].append(got)
        finally:
            server.stop()
    ratio = lambda a, b: [r[a]["rps"] / r[b]["rps"] for r in res["rounds"]]
    res["median"] = {
        "S1 V2 JSON ÷ /invocations JSON": statistics.median(ratio("S1 V2 JSON", "S1 /invocations JSON")),
        "100 rows V2 JSON ÷ /invocations JSON": statistics.median(
            ratio("100 rows V2 JSON", "100 rows /invocations JSON")),
        "100 rows V2 binary ÷ /invocations JSON": statistics.median(
            ratio("100 rows V2 binary", "100 rows /invocations JSON")),
        "100 rows V2 binary ÷ V2 JSON": statistics.median(
            ratio("100 rows V2 binary", "100 rows V2 JSON")),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(res, f, indent=1)
    for k, v in res["median"].items():
        print(f"{k}: {v:.2f}")
    print(f"results: {OUT}")


if __name__ == "__main__":
    main()
