#!/usr/bin/env python3
"""Self-made functions (issue 16) against the plain model, in one run: three servers of the
logreg example (64 float features, 1 CSV row per request at 32 connections for S1, 100 rows
at 8 for S3):

- plain: the model as it is;
- 3 steps: the same model behind three declarative steps (fill_missing, clip, log) on the
  rows before it;
- wasm: the same model behind a WebAssembly function (examples/gender/models/logreg_wasm,
  clamp.wat over 8 features);
- plain, workers: the plain model with --inline-budget-ms 0. A model with a function is
  scored on the worker threads only (a call may run to its 2 s limit, which an HTTP thread
  must not wait out), so this is the plain model on the same path, which tells the
  function's own cost apart from the path's.

Rounds interleave the variants (this 2-vCPU VM drifts 5-10 % from minute to minute, so the
order is reversed every other round); the report gives each round's ratios and their
medians. Run with `bench/functions.sh`. Standard library only.
"""
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "10"))
OUT = os.environ.get("OUT", os.path.join(run.REPO, "bench", "results", "functions.json"))
STEPS = [
    {"step": "fill_missing", "values": {"n_apps": 40}},
    {"step": "clip", "features": ["screen_inches"], "min": 4.5, "max": 6.7},
    {"step": "log", "features": ["hours_games"], "offset": 1},
]


def steps_model(tmp):
    d = os.path.join(tmp, "logreg_3steps")
    os.makedirs(d)
    src = os.path.join(run.MODELS, "logreg")
    shutil.copyfile(os.path.join(src, "model.onnx"), os.path.join(d, "model.onnx"))
    config = json.load(open(os.path.join(src, "mlapp.json")))
    config["steps"] = {"before": STEPS}
    with open(os.path.join(d, "mlapp.json"), "w") as f:
        json.dump(config, f)
    return d


def main():
    res = {"machine": run.machine(), "steps": STEPS, "rounds": []}
    loads = {"S1": dict(file="logreg/rows.csv", ctype="text/csv", rows=1, conns=32),
             "S3": dict(file="logreg/rows.csv", ctype="text/csv", rows=100, conns=8)}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"plain": ("logreg", []), "3 steps": (steps_model(tmp), []),
                  "wasm": ("logreg_wasm", []),
                  "plain, workers": ("logreg", ["--inline-budget-ms", "0"])}
        servers = {}
        try:
            for k, (name, (model, args)) in enumerate(models.items()):
                # Monitoring off for all: the logreg folder has a baseline (which turns it on)
                # and the others do not.
                args = args + ["--monitoring", "off"]
                servers[name] = (18500 + k, run.Server("mlapp", model, 18500 + k, args, tmp))
            for i in range(ROUNDS):
                got = {}
                order = [(s, m) for s in loads for m in models]
                if i % 2:
                    order.reverse()
                for scenario, name in order:
                    port = servers[name][0]
                    sc = loads[scenario]
                    run.wrk(port, sc, 2)
                    r = run.wrk(port, sc, SECONDS)
                    got[f"{scenario} {name}"] = {
                        "rps": r["rps"], "rows_s": r["rows_s"], "p50_ms": r["p50_us"] / 1000,
                        "p99_ms": r["p99_us"] / 1000, "errors": r["errors"]}
                    run.log(f"round {i + 1} {scenario} {name}: {r['rps']:,.0f} req/s, "
                            f"p99 {r['p99_us'] / 1000:.2f} ms, {r['errors']} errors")
                res["rounds"].append(got)
        finally:
            for _, s in servers.values():
                s.stop()
    ratio = lambda a, b: [r[a]["rps"] / r[b]["rps"] for r in res["rounds"]]
    res["median"] = {f"{s} {v} ÷ {b}": statistics.median(ratio(f"{s} {v}", f"{s} {b}"))
                     for s in loads
                     for v, b in (("3 steps", "plain"), ("wasm", "plain"),
                                  ("wasm", "plain, workers"), ("plain, workers", "plain"))}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(res, f, indent=1)
    for k, v in res["median"].items():
        print(f"{k}: {v:.3f}")
    print(f"results: {OUT}")


if __name__ == "__main__":
    main()
