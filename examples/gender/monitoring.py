#!/usr/bin/env python3
"""Data for mlapp's model monitoring: a training baseline, live-like traffic with and without
drift, and the statistics they should produce, computed here independently of mlapp.

Writes, under examples/gender/monitoring/:
  train.csv          2000 training-split rows, the pipeline's 41 raw columns with a header;
                     ~1% of device_age_months left empty so completeness < 1 is exercised
  train_tensor.csv   the same rows as the 64-feature float matrix of the tensor models
  current.csv        1000 test-split rows: same distribution, nothing should drift
  drifted.csv        1000 other test-split rows with three deliberate changes: n_apps x 1.6,
                     brand "nothing" (unseen) in 25% of rows, screen_inches empty in 30%
  golden.json        pandas/numpy/scipy statistics of the three files and the K-S / L-inf
                     distances of current and drifted from train

Usage: python monitoring.py [--mlapp PATH]   with --mlapp, also runs `PATH baseline` for every
       example model (train.csv for the pipelines, train_tensor.csv for the others)
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import FLOAT_RAW, INT_COLUMNS, SEED, STRING_COLUMNS, csv_text, f32, numeric_matrix, training_split, write  # noqa: E402

OUT = os.path.join(HERE, "monitoring")
INPUT_NAMES = STRING_COLUMNS + INT_COLUMNS + FLOAT_RAW
N_TRAIN, N_LIVE = 2000, 1000
QUANTILES = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
N_BUCKETS = 10


def cell(col, v):
    """The text pipeline_payloads writes for a value, so files look like served payloads."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""  # missing
    if col in STRING_COLUMNS:
        return str(v)
    if col in INT_COLUMNS:
        return str(int(v))
    return f32(float(np.float32(v)))


def raw_rows(df):
    return [[cell(c, r[c]) for c in INPUT_NAMES] for _, r in df[INPUT_NAMES].iterrows()]


def blank(df, col, rng, share):
    """Empty `col` in exactly `share` of the rows, picked by the rng."""
    idx = rng.choice(len(df), int(round(share * len(df))), replace=False)
    df[col] = df[col].astype(object)
    df.iloc[idx, df.columns.get_loc(col)] = None
    return df


def inferred_type(texts):
    # Deequ's rule on the text of present cells: String beats Fractional beats Integral.
    for t in texts:
        try:
            float(t)
        except ValueError:
            return "String"
    return "Fractional" if any(ch in t for t in texts for ch in ".eE") else "Integral"


def profile(path):
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    text = pd.read_csv(path, dtype=str, keep_default_na=False)  # the cells as written
    feats = []
    for c in df.columns:
        present = df[c].dropna()
        f = {"name": c, "inferred_type": inferred_type([t for t in text[c] if t != ""]),
             "num_present": int(len(present)), "num_missing": int(df[c].isna().sum())}
        if f["inferred_type"] == "String":
            counts = present.astype(str).value_counts()
            f["distinct_count"] = int(len(counts))
            f["top"] = {k: int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
        else:
            v = present.to_numpy(np.float64)
            lo, hi = float(v.min()), float(v.max())
            f.update(mean=float(v.mean()), sum=float(v.sum()), std_dev=float(v.std(ddof=0)), min=lo, max=hi,
                     quantiles={str(q): float(np.quantile(v, q, method="inverted_cdf")) for q in QUANTILES},
                     buckets=[int(n) for n in np.histogram(v, bins=N_BUCKETS, range=(lo, hi))[0]])
        feats.append(f)
    return {"item_count": int(len(df)), "features": feats}, df


def distances(base, base_types, other):
    out = {}
    for c, t in base_types.items():
        a, b = base[c].dropna(), other[c].dropna()
        if t == "String":  # L-inf between category shares, over the union of categories
            pa, pb = a.astype(str).value_counts(normalize=True), b.astype(str).value_counts(normalize=True)
            cats = pa.index.union(pb.index)
            out[c] = float(np.abs(pa.reindex(cats, fill_value=0) - pb.reindex(cats, fill_value=0)).max())
        else:  # exact two-sample Kolmogorov-Smirnov statistic
            out[c] = float(ks_2samp(a.to_numpy(np.float64), b.to_numpy(np.float64)).statistic)
    return out


def run_baselines(mlapp):
    root = os.path.normpath(os.path.join(HERE, "..", ".."))
    rel = os.path.relpath(OUT, root)
    mlapp = os.path.abspath(mlapp)
    # xgboost has no config, so mlapp names its columns input_0..63: feed it the rows headerless.
    with open(os.path.join(OUT, "train_tensor.csv"), encoding="utf-8") as f:
        headerless = f.read().split("\n", 1)[1]
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, encoding="utf-8", newline="") as tmp:
        tmp.write(headerless)
    try:
        for m in ["pipeline", "pipeline_strict", "logreg", "mlp", "agereg", "xgboost"]:
            model = f"examples/gender/models/{m}"
            data = (f"{rel}/train.csv" if m.startswith("pipeline") else
                    tmp.name if m == "xgboost" else f"{rel}/train_tensor.csv")
            cmd = [mlapp, "baseline", "--model-dir", model, "--input", data, "--output", f"{model}/baseline"]
            if m == "xgboost":
                cmd.append("--no-header")
            print("running", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True, cwd=root)  # agereg: mlapp ignores the extra device_age_months
    finally:
        os.unlink(tmp.name)


def main():
    args = sys.argv[1:]
    mlapp = args[args.index("--mlapp") + 1] if "--mlapp" in args else None
    rng = np.random.default_rng(SEED + 1)  # a stream of its own, apart from generate.py's
    df_tr, df_te, _, _ = training_split()
    train = df_tr.iloc[:N_TRAIN].copy()
    current = df_te.iloc[:N_LIVE].copy()
    drifted = df_te.iloc[N_LIVE:2 * N_LIVE].copy()

    # The tensor models get complete rows; only the raw file has holes.
    x, names = numeric_matrix(train)
    write(os.path.join(OUT, "train_tensor.csv"), csv_text([[f32(v) for v in r] for r in x], names))
    write(os.path.join(OUT, "train.csv"), csv_text(raw_rows(blank(train, "device_age_months", rng, 0.01)), INPUT_NAMES))
    write(os.path.join(OUT, "current.csv"), csv_text(raw_rows(current), INPUT_NAMES))

    # Three changes and nothing else: a shifted number, an unseen category, a rising missing rate.
    drifted["n_apps"] = drifted["n_apps"] * 1.6
    new_brand = rng.choice(len(drifted), N_LIVE // 4, replace=False)
    drifted.iloc[new_brand, drifted.columns.get_loc("brand")] = "nothing"
    drifted = blank(drifted, "screen_inches", rng, 0.30)
    write(os.path.join(OUT, "drifted.csv"), csv_text(raw_rows(drifted), INPUT_NAMES))

    golden, frames = {}, {}
    for name in ["train", "current", "drifted"]:
        golden[name], frames[name] = profile(os.path.join(OUT, f"{name}.csv"))
    types = {f["name"]: f["inferred_type"] for f in golden["train"]["features"]}
    golden["distance"] = {k: distances(frames["train"], types, frames[k]) for k in ["current", "drifted"]}
    write(os.path.join(OUT, "golden.json"), json.dumps(golden, indent=1, ensure_ascii=False) + "\n")

    for f in sorted(os.listdir(OUT)):
        print(f"wrote monitoring/{f} ({os.path.getsize(os.path.join(OUT, f))} bytes)", file=sys.stderr)
    if mlapp:
        run_baselines(mlapp)


if __name__ == "__main__":
    main()
