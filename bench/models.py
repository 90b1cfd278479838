#!/usr/bin/env python3
"""Many models in one server (issue 14), in one run:

1. A multi-model endpoint (SAGEMAKER_MULTI_MODEL=true) with 50 small models loaded by
   POST /models (25 copies of the logistic regression, 25 of the XGBoost model, each its own
   sessions and queue): the time of each load, the server's RSS before and after, then S1's
   load (1 CSV row per request, 32 connections) spread over the 50 models in turn, against
   S1 on a single-model server in the same run (interleaved rounds): requests/s and p99.
2. The time to load a model on first use: /invocations with X-Amzn-SageMaker-Target-Model
   naming a model of the repository not loaded yet, against the next (warm) request.
3. S1 with a shadow challenger (the XGBoost model itself: a challenger as costly as the
   served model) scoring 0 %, 10 % and 100 % of requests, interleaved: requests/s and p99.

Run with `bench/models.sh`. Standard library only.
"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "10"))
N_MODELS = int(os.environ.get("N_MODELS", "50"))
# Parts of the run (all by default): first_use, mme (with single, its reference), shadow.
PARTS = os.environ.get("PARTS", "first_use,mme,shadow").split(",")
OUT = os.environ.get("OUT", os.path.join(run.REPO, "bench", "results", "models.json"))
XGB = os.path.join(run.MODELS, "xgboost")
LOGREG = os.path.join(run.MODELS, "logreg")


def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.monotonic() - t


def mme_server(port, tmp, extra=None, env=None):
    os.environ.update(env or {})
    try:
        # run.Server passes the model folder; in multi-model mode it is not loaded.
        return run.Server("mlapp", "xgboost", port,
                          ["--model-roots", run.REPO] + (extra or []), tmp)
    finally:
        for k in env or {}:
            os.environ.pop(k, None)


def s1(port, models=0):
    sc = dict(run.SCENARIOS["S1"])
    if models:
        os.environ["MODELS"] = str(models)
    try:
        run.wrk(port, sc, 2)
        r = run.wrk(port, sc, SECONDS)
    finally:
        os.environ.pop("MODELS", None)
    return {"rps": r["rps"], "p99_ms": r["p99_us"] / 1000, "p50_ms": r["p50_us"] / 1000,
            "errors": r["errors"]}


def mme_round(tmp, port):
    server = mme_server(port, tmp, env={"SAGEMAKER_MULTI_MODEL": "true"})
    try:
        base = f"http://127.0.0.1:{port}"
        rss_empty = run.tree_rss(server.proc.pid)
        loads = []
        for i in range(N_MODELS):
            url = LOGREG if i % 2 == 0 else XGB
            body = json.dumps({"model_name": f"m{i}", "url": url}).encode()
            status, took = call("POST", f"{base}/models", body, {"Content-Type": "application/json"})
            if status != 200:
                raise RuntimeError(f"load m{i}: {status}")
            loads.append(took)
        rss_loaded = run.tree_rss(server.proc.pid)
        with run.PeakRss(server.proc.pid) as peak:
            r = s1(port, N_MODELS)
        with urllib.request.urlopen(f"{base}/metrics") as m:
            text = m.read().decode()
        estimate = next(float(l.split()[1]) for l in text.splitlines()
                        if l.startswith("mlapp_models_memory_estimate_bytes "))
        r.update(rss_empty_mib=rss_empty / 2**20, rss_loaded_mib=rss_loaded / 2**20,
                 rss_peak_mib=peak.peak / 2**20, estimate_mib=estimate / 2**20,
                 load_s_median=statistics.median(loads), load_s_max=max(loads))
        return r
    finally:
        server.stop()


def single_round(tmp, port, extra=None):
    server = run.Server("mlapp", "xgboost", port, extra or [], tmp)
    try:
        with run.PeakRss(server.proc.pid) as peak:
            r = s1(port)
        r["rss_peak_mib"] = peak.peak / 2**20
        # What became of the shadowed requests: compared, or timed out / skipped when the
        # CPUs were busy with the served model.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as m:
            for line in m.read().decode().splitlines():
                if line.startswith("mlapp_shadow_requests_total{"):
                    outcome = line.split('"')[1]
                    r[f"shadow_{outcome}"] = float(line.split()[-1])
        return r
    finally:
        server.stop()


def first_use(tmp, port):
    repo = os.path.join(tmp, "repository")
    os.makedirs(repo, exist_ok=True)
    server = mme_server(port, tmp, ["--model-repository", repo])
    try:
        base = f"http://127.0.0.1:{port}/invocations"
        with open(os.path.join(run.PAYLOADS, "xgboost", "rows.csv"), "rb") as f:
            row = f.readline()
        out = []
        for i in range(5):
            shutil.copytree(XGB, os.path.join(repo, f"late{i}"))
            # A name the last listing lacked is listed again at most once a second.
            time.sleep(1.1)
            h = {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": f"late{i}.tar.gz"}
            s_cold, cold = call("POST", base, row, h)
            s_warm, warm = call("POST", base, row, h)
            if (s_cold, s_warm) != (200, 200):
                raise RuntimeError(f"first use late{i}: {s_cold}, {s_warm}")
            out.append({"cold_s": cold, "warm_s": warm})
        return out
    finally:
        server.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="mlapp-models-")
    res = {"machine": run.machine(), "rounds": ROUNDS, "models": N_MODELS,
           "mme": [], "single": [], "shadow": []}
    port = 18500
    if "first_use" in PARTS:
        run.log("first use: a repository model loaded by its first request")
        res["first_use"] = first_use(tmp, port)
    for r in range(ROUNDS):
        port += 1
        if "mme" in PARTS:
            run.log(f"round {r + 1}: S1 on one model")
            res["single"].append(single_round(tmp, port))
            port += 1
            run.log(f"round {r + 1}: {N_MODELS} models loaded, S1 spread over them")
            res["mme"].append(mme_round(tmp, port))
        for pct in (0, 10, 100) if "shadow" in PARTS else ():
            port += 1
            run.log(f"round {r + 1}: S1 with a shadow at {pct} %")
            extra = [] if pct == 0 else ["--shadow-model-uri", XGB, "--shadow-percent", str(pct)]
            res["shadow"].append(dict(percent=pct, **single_round(tmp, port, extra)))

    def med(rows, key, **match):
        xs = sorted(x[key] for x in rows if all(x.get(k) == v for k, v in match.items()))
        return xs[len(xs) // 2]

    s = {}
    if "mme" in PARTS:
        s.update({
            "single_rps": med(res["single"], "rps"), "single_p99_ms": med(res["single"], "p99_ms"),
            "mme_rps": med(res["mme"], "rps"), "mme_p99_ms": med(res["mme"], "p99_ms"),
            "mme_rss_empty_mib": med(res["mme"], "rss_empty_mib"),
            "mme_rss_loaded_mib": med(res["mme"], "rss_loaded_mib"),
            "mme_rss_peak_mib": med(res["mme"], "rss_peak_mib"),
            "mme_estimate_mib": med(res["mme"], "estimate_mib"),
            "mme_load_s_median": med(res["mme"], "load_s_median"),
        })
        s["mme_ratio"] = s["mme_rps"] / s["single_rps"]
    if "first_use" in PARTS:
        s["first_use_cold_s_median"] = statistics.median(x["cold_s"] for x in res["first_use"])
        s["first_use_warm_s_median"] = statistics.median(x["warm_s"] for x in res["first_use"])
    if "shadow" in PARTS:
        for pct in (0, 10, 100):
            s[f"shadow{pct}_rps"] = med(res["shadow"], "rps", percent=pct)
            s[f"shadow{pct}_p99_ms"] = med(res["shadow"], "p99_ms", percent=pct)
        s["shadow10_ratio"] = s["shadow10_rps"] / s["shadow0_rps"]
        s["shadow100_ratio"] = s["shadow100_rps"] / s["shadow0_rps"]
    res["summary"] = s
    print(json.dumps(res, indent=1))
    with open(OUT, "w") as f:
        json.dump(res, f, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
