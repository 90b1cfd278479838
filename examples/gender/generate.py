#!/usr/bin/env python3
"""Synthetic "mobile device -> owner's gender" data set, models, ONNX exports and golden files.

The data is shaped like the first user's: geo (country, city), device (OS, brand, price tier,
screen, age), language, hours per app category and an active-hour histogram. Everything is
seeded, so a rerun with the same package versions reproduces the committed files.

Writes, under examples/gender/:
  models/<name>/model.onnx (+ mlapp.json)   the models mlapp serves
  payloads/<name>/...                       request bodies in every content type mlapp accepts
  golden/<name>.json                        what Python onnxruntime answers for those rows
  metrics.json                              precision / recall / F1 / ROC-AUC on a held-out split

Also writes models/pipeline_strict (the pipeline with scikit-learn's default OneHotEncoder(),
which refuses unknown categories, and warm-up rows shipped beside it) and the fixed-batch
fixtures tests/fixtures/logreg_fixed (logreg re-exported with a batch of 1) and
tests/fixtures/fixed_reshape (a batch of 2 flattened into one output).

Usage: python generate.py           everything (needs requirements.txt)
       python generate.py --added   only pipeline_strict and logreg_fixed: the other files are
                                    left untouched (a full run is not byte-reproducible:
                                    skl2onnx names every graph with a random id, and the MLP and
                                    Ridge results differ in their last bits between runs)
"""

import csv
import io
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from xgboost import XGBClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261127
N_ROWS = 20000
N_GOLDEN = 25
CLASSES = ["female", "male"]

COUNTRIES = {
    "US": (["New York", "Los Angeles", "Washington, D.C."], "en"),
    "IN": (["Mumbai", "Delhi", "Bengaluru"], "hi"),
    "BR": (["São Paulo", "Rio de Janeiro", "Recife"], "pt"),
    "ID": (["Jakarta", "Surabaya", "Bandung"], "id"),
    "NG": (["Lagos", "Abuja", "Ibadan"], "yo"),
    "DE": (["Berlin", "München", "Hamburg"], "de"),
}
LANGUAGES = ["en", "hi", "pt", "id", "yo", "de"]
OSES = ["android", "ios", "kaios"]
BRANDS = ["samsung", "apple", "xiaomi", "oppo", "vivo", "tecno", "huawei", "motorola"]
APP_CATEGORIES = ["games", "social", "beauty", "sports", "finance", "shopping", "news", "video"]
HOURS = [f"active_h{h:02d}" for h in range(24)]
STRING_COLUMNS = ["country", "city", "os", "brand", "language"]
INT_COLUMNS = ["price_tier"]
FLOAT_RAW = ["n_apps", "screen_inches", "device_age_months"] + [f"hours_{c}" for c in APP_CATEGORIES] + HOURS


def make_raw(rng, n):
    country = rng.choice(list(COUNTRIES), n, p=[0.25, 0.25, 0.15, 0.15, 0.1, 0.1])
    city = np.array([rng.choice(COUNTRIES[c][0]) for c in country])
    language = np.array([COUNTRIES[c][1] if rng.random() < 0.8 else rng.choice(LANGUAGES) for c in country])
    os_ = rng.choice(OSES, n, p=[0.7, 0.27, 0.03])
    brand = np.where(os_ == "ios", "apple", rng.choice([b for b in BRANDS if b != "apple"], n))
    price_tier = np.where(brand == "apple", rng.integers(3, 6, n), rng.integers(1, 5, n)).astype(np.int64)
    female = rng.random(n) < 0.5  # the latent truth, later blurred by noise
    hours = {}
    lean = {"games": -0.5, "social": 0.3, "beauty": 0.9, "sports": -0.8, "finance": -0.2,
            "shopping": 0.5, "news": -0.1, "video": 0.0}
    for cat in APP_CATEGORIES:
        base = rng.gamma(2.0, 0.5, n)
        hours[f"hours_{cat}"] = base * np.exp(np.where(female, lean[cat], -lean[cat]) * 0.6 + rng.normal(0, 0.5, n))
    peak = np.where(female, 20.0, 22.0) + rng.normal(0, 2.5, n)
    h = np.arange(24)[None, :]
    dist = np.minimum(np.abs(h - peak[:, None]), 24 - np.abs(h - peak[:, None]))
    hist = np.exp(-dist ** 2 / 18.0) + rng.random((n, 24)) * 0.3
    hist /= hist.sum(axis=1, keepdims=True)
    df = pd.DataFrame({
        "country": country, "city": city, "os": os_, "brand": brand, "language": language,
        "price_tier": price_tier,
        "n_apps": rng.poisson(np.where(female, 48, 42)).astype(float),
        "screen_inches": np.round(rng.normal(np.where(brand == "apple", 6.1, 6.5), 0.3), 2),
        "device_age_months": np.round(rng.gamma(2.0, 9.0, n), 1),
        **hours,
    })
    for i, col in enumerate(HOURS):
        df[col] = hist[:, i]
    # Observed label: the latent truth flipped for 12% of devices (shared phones, wrong sign-ups).
    y = np.where(rng.random(n) < 0.12, ~female, female)
    return df, np.where(y, 0, 1)  # 0 = female, 1 = male (CLASSES order)


def numeric_matrix(df):
    """The 64-feature float matrix the single-tensor models take, with its feature names."""
    cols, names = [], []
    for c in [f"hours_{c}" for c in APP_CATEGORIES] + HOURS + ["price_tier", "n_apps", "screen_inches", "device_age_months"]:
        cols.append(df[c].to_numpy(float)); names.append(c)
    for col, values in [("os", OSES), ("brand", BRANDS), ("country", list(COUNTRIES)), ("language", LANGUAGES)]:
        for v in values:
            cols.append((df[col] == v).to_numpy(float)); names.append(f"{col}_{v}")
    hist = df[HOURS].to_numpy(float)
    extra = {
        "total_hours": df[[f"hours_{c}" for c in APP_CATEGORIES]].sum(axis=1).to_numpy(float),
        "night_share": hist[:, 0:6].sum(axis=1), "morning_share": hist[:, 6:12].sum(axis=1),
        "afternoon_share": hist[:, 12:18].sum(axis=1), "evening_share": hist[:, 18:24].sum(axis=1),
    }
    for k, v in extra.items():
        cols.append(v); names.append(k)
    x = np.stack(cols, axis=1).astype(np.float32)
    assert x.shape[1] == 64, x.shape
    return x, names


def f32(v):
    return str(np.float32(v))  # shortest text that reads back as the same float32


def write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
        f.write(data)


def csv_text(rows, header=None):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def save_model(name, onx, config):
    d = os.path.join(HERE, "models", name)
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "model.onnx"), onx.SerializeToString(), "wb")
    if config is not None:
        write(os.path.join(d, "mlapp.json"), json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])


def tensor_payloads(name, x, names):
    """Payloads for a model with one [N, F] float input."""
    rows = [[f32(v) for v in r] for r in x]
    d = os.path.join(HERE, "payloads", name)
    write(f"{d}/rows.csv", csv_text(rows))
    write(f"{d}/rows_header.csv", csv_text(rows, names))
    as_num = [[float(np.float32(v)) for v in r] for r in x]
    write(f"{d}/instances.json", json.dumps({"instances": as_num}))
    write(f"{d}/records.json", json.dumps({"instances": [dict(zip(names, r)) for r in as_num]}))
    write(f"{d}/bare.json", json.dumps(as_num))
    write(f"{d}/rows.jsonl", "".join(json.dumps(r) + "\n" for r in as_num))
    write(f"{d}/records.jsonl", "".join(json.dumps(dict(zip(names, r))) + "\n" for r in as_num))
    buf = io.BytesIO(); np.save(buf, x.astype(np.float32)); write(f"{d}/rows_f32.npy", buf.getvalue(), "wb")
    buf = io.BytesIO(); np.save(buf, x.astype(np.float64)); write(f"{d}/rows_f64.npy", buf.getvalue(), "wb")


def pipeline_payloads(name, df, input_names):
    d = os.path.join(HERE, "payloads", name)

    def cell(col, v):
        if col in STRING_COLUMNS:
            return str(v)
        if col in INT_COLUMNS:
            return int(v)
        return float(np.float32(v))

    recs = [{c: cell(c, r[c]) for c in input_names} for _, r in df.iterrows()]
    text_rows = [[str(r[c]) if not isinstance(r[c], float) else f32(r[c]) for c in input_names] for r in recs]
    write(f"{d}/rows.csv", csv_text(text_rows))
    write(f"{d}/rows_header.csv", csv_text(text_rows, input_names))
    write(f"{d}/instances.json", json.dumps({"instances": [[r[c] for c in input_names] for r in recs]}, ensure_ascii=False))
    write(f"{d}/records.json", json.dumps({"instances": recs}, ensure_ascii=False))
    write(f"{d}/inputs.json", json.dumps({"inputs": {c: [r[c] for r in recs] for c in input_names}}, ensure_ascii=False))
    write(f"{d}/bare.json", json.dumps([[r[c] for c in input_names] for r in recs], ensure_ascii=False))
    write(f"{d}/rows.jsonl", "".join(json.dumps([r[c] for c in input_names], ensure_ascii=False) + "\n" for r in recs))
    write(f"{d}/records.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))


def pipeline_feed(df, input_names):
    feed = {}
    for c in input_names:
        if c in STRING_COLUMNS:
            feed[c] = df[c].astype(str).to_numpy().reshape(-1, 1).astype(object)
        elif c in INT_COLUMNS:
            feed[c] = df[c].to_numpy(np.int64).reshape(-1, 1)
        else:
            feed[c] = df[c].to_numpy(np.float32).reshape(-1, 1)
    return feed


def classifier_golden(labels, probs, class_labels):
    labels = [class_labels[int(v)] if class_labels and not isinstance(v, str) else (v if isinstance(v, str) else int(v)) for v in labels]
    return {"kind": "classifier", "labels": labels, "probabilities": [[float(p) for p in row] for row in probs]}


def report(name, y_true, proba):
    pred = (proba >= 0.5).astype(int)
    return {"model": name, "precision": precision_score(y_true, pred), "recall": recall_score(y_true, pred),
            "f1": f1_score(y_true, pred), "roc_auc": roc_auc_score(y_true, proba)}


def fragile_model():
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "fragile",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4, None])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [4, -1])],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onx.ir_version = 8
    d = os.path.join(HERE, "..", "..", "tests", "fixtures", "fragile")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "model.onnx"), onx.SerializeToString(), "wb")


def strict_pipeline(df_tr, y_tr, gold_df):
    """The pipeline with the default OneHotEncoder() (handle_unknown="error"): ONNX Runtime fails
    the run on any category it was not trained on, so made-up warm-up values cannot run it.
    Its folder ships warmup.jsonl, real rows mlapp warms up with."""
    input_names = STRING_COLUMNS + INT_COLUMNS + FLOAT_RAW
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(), STRING_COLUMNS),
        ("num", StandardScaler(), INT_COLUMNS + FLOAT_RAW),
    ])
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000))])
    pipe.fit(df_tr[input_names], np.array(CLASSES)[y_tr])
    types = [(c, StringTensorType([None, 1]) if c in STRING_COLUMNS else
              Int64TensorType([None, 1]) if c in INT_COLUMNS else FloatTensorType([None, 1])) for c in input_names]
    onx = convert_sklearn(pipe, initial_types=types, options={id(pipe): {"zipmap": False}},
                          target_opset={"": 17, "ai.onnx.ml": 3})
    zeros = [a.i for n in onx.graph.node if n.op_type == "OneHotEncoder" for a in n.attribute if a.name == "zeros"]
    assert zeros and not any(zeros), "the fixture must refuse unknown categories"
    sess = save_model("pipeline_strict", onx, {"class_labels": list(pipe.classes_)})
    lab, prob = sess.run(None, pipeline_feed(gold_df, input_names))
    golden = classifier_golden(list(lab), prob, None)
    write(os.path.join(HERE, "golden", "pipeline_strict.json"), json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    pipeline_payloads("pipeline_strict", gold_df, input_names)
    warm = df_tr[input_names].iloc[:8]
    write(os.path.join(HERE, "models", "pipeline_strict", "warmup.jsonl"),
          "".join(json.dumps({c: (str(r[c]) if c in STRING_COLUMNS else int(r[c]) if c in INT_COLUMNS
                                  else float(np.float32(r[c]))) for c in input_names}, ensure_ascii=False) + "\n"
                  for _, r in warm.iterrows()))
    try:
        sess.run(None, {c: (np.array([["warmup"]], dtype=object) if c in STRING_COLUMNS else
                            np.zeros((1, 1), np.int64) if c in INT_COLUMNS else np.zeros((1, 1), np.float32))
                        for c in input_names})
    except Exception as e:  # what mlapp's synthetic warm-up meets
        assert "Unknown Category" in str(e), e
    else:
        raise AssertionError("made-up categories must fail this model")


def fixed_batch_logreg():
    """The committed logreg graph with its batch dimension fixed to 1, as exports without
    dynamic axes have it: ONNX Runtime refuses any other number of rows."""
    import onnx
    src = os.path.join(HERE, "models", "logreg")
    onx = onnx.load(os.path.join(src, "model.onnx"))
    for v in list(onx.graph.input) + list(onx.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    d = os.path.join(HERE, "..", "..", "tests", "fixtures", "logreg_fixed")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "model.onnx"), onx.SerializeToString(), "wb")
    with open(os.path.join(src, "mlapp.json"), encoding="utf-8") as f:
        write(os.path.join(d, "mlapp.json"), f.read())
    fixed = ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(os.path.join(src, "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.loadtxt(os.path.join(HERE, "payloads", "logreg", "rows.csv"), delimiter=",", dtype=np.float32)
    for row in x:
        a, b = fixed.run(None, {"input": row[None, :]}), dynamic.run(None, {"input": row[None, :]})
        assert a[0][0] == b[0][0] and np.allclose(a[1], b[1], rtol=0, atol=1e-6)
    try:
        fixed.run(None, {"input": x[:2]})
    except Exception:
        pass
    else:
        raise AssertionError("the fixed-batch fixture must refuse 2 rows")


def fixed_batch_reshape():
    """A graph with a fixed batch of 2 whose output does not follow the rows (it flattens
    them into one row of 4): mlapp cannot split or join its runs, so it must say
    SINGLE_RECORD."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "fixed_reshape",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onx.ir_version = 8
    d = os.path.join(HERE, "..", "..", "tests", "fixtures", "fixed_reshape")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "model.onnx"), onx.SerializeToString(), "wb")


def training_split():
    rng = np.random.default_rng(SEED)
    df, y = make_raw(rng, N_ROWS)
    return train_test_split(df, y, test_size=0.25, random_state=SEED, stratify=y)


def added():
    df_tr, df_te, y_tr, _ = training_split()
    strict_pipeline(df_tr, y_tr, df_te.iloc[:N_GOLDEN])
    fixed_batch_logreg()
    fixed_batch_reshape()


def main():
    df_tr, df_te, y_tr, y_te = training_split()
    x_tr, names = numeric_matrix(df_tr)
    x_te, _ = numeric_matrix(df_te)
    gold_df = df_te.iloc[:N_GOLDEN]
    x_gold = x_te[:N_GOLDEN]
    metrics = []
    tensor_cfg = {"feature_names": names, "class_labels": CLASSES}

    # 1. Logistic regression on the 64 engineered features: label + probabilities tensor.
    logreg = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))]).fit(x_tr, y_tr)
    metrics.append(report("logreg", y_te, logreg.predict_proba(x_te)[:, 1]))
    onx = convert_sklearn(logreg, initial_types=[("input", FloatTensorType([None, 64]))],
                          options={id(logreg): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    sess = save_model("logreg", onx, tensor_cfg)
    lab, prob = sess.run(None, {"input": x_gold})
    goldens = {"logreg": classifier_golden(lab, prob, CLASSES)}
    tensor_payloads("logreg", x_gold, names)

    # 2. XGBoost, 200 trees of depth 6, no config file at all (integer classes, keys "0"/"1").
    update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    xgb = XGBClassifier(n_estimators=200, max_depth=6, learning_rate=0.1, subsample=0.9, random_state=SEED,
                        tree_method="hist", n_jobs=2).fit(x_tr, y_tr)
    metrics.append(report("xgboost", y_te, xgb.predict_proba(x_te)[:, 1]))
    onx = convert_sklearn(xgb, initial_types=[("input", FloatTensorType([None, 64]))],
                          options={id(xgb): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    sess = save_model("xgboost", onx, None)
    lab, prob = sess.run(None, {"input": x_gold})
    goldens["xgboost"] = classifier_golden(lab, prob, None)
    # Without a config file mlapp names the columns of input "input" input_0, input_1, ...
    tensor_payloads("xgboost", x_gold, [f"input_{i}" for i in range(64)])

    # 3. MLP with ZipMap: probabilities come out as seq(map(int64, float)).
    mlp = Pipeline([("scale", StandardScaler()),
                    ("clf", MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, early_stopping=True,
                                          random_state=SEED))]).fit(x_tr, y_tr)
    metrics.append(report("mlp", y_te, mlp.predict_proba(x_te)[:, 1]))
    onx = convert_sklearn(mlp, initial_types=[("input", FloatTensorType([None, 64]))],
                          target_opset={"": 17, "ai.onnx.ml": 3})
    sess = save_model("mlp", onx, tensor_cfg)
    lab, zipmap = sess.run(None, {"input": x_gold})
    prob = [[m[0], m[1]] for m in zipmap]
    goldens["mlp"] = classifier_golden(lab, prob, CLASSES)
    tensor_payloads("mlp", x_gold, names)

    # 4. scikit-learn pipeline on raw columns: one [N, 1] input per column, strings included.
    input_names = STRING_COLUMNS + INT_COLUMNS + FLOAT_RAW
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), STRING_COLUMNS),
        ("num", StandardScaler(), INT_COLUMNS + FLOAT_RAW),
    ])
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000))])
    y_tr_s, y_te_s = np.array(CLASSES)[y_tr], np.array(CLASSES)[y_te]
    pipe.fit(df_tr[input_names], y_tr_s)
    metrics.append(report("pipeline", y_te, pipe.predict_proba(df_te[input_names])[:, 1]))
    types = [(c, StringTensorType([None, 1]) if c in STRING_COLUMNS else
              Int64TensorType([None, 1]) if c in INT_COLUMNS else FloatTensorType([None, 1])) for c in input_names]
    onx = convert_sklearn(pipe, initial_types=types, options={id(pipe): {"zipmap": False}},
                          target_opset={"": 17, "ai.onnx.ml": 3})
    sess = save_model("pipeline", onx, {"class_labels": list(pipe.classes_)})
    lab, prob = sess.run(None, pipeline_feed(gold_df, input_names))
    goldens["pipeline"] = classifier_golden(list(lab), prob, None)
    pipeline_payloads("pipeline", gold_df, input_names)

    # 5. A regressor (device age from usage), so the regression output path has a fixture too.
    reg = Ridge(alpha=1.0).fit(np.delete(x_tr, names.index("device_age_months"), axis=1), df_tr["device_age_months"])
    keep = [n for n in names if n != "device_age_months"]
    onx = convert_sklearn(reg, initial_types=[("input", FloatTensorType([None, 63]))], target_opset={"": 17})
    sess = save_model("agereg", onx, {"feature_names": keep})
    x_reg = np.delete(x_gold, names.index("device_age_months"), axis=1)
    (val,) = sess.run(None, {"input": x_reg})
    goldens["agereg"] = {"kind": "regressor", "values": [float(v) for v in val.reshape(-1)]}
    tensor_payloads("agereg", x_reg, keep)

    # 6. A deliberately fragile graph for the server's error tests: it reshapes its input to
    # 4 rows, so it runs for a multiple of 2 rows (warm-up uses 8) and fails in ONNX Runtime
    # for an odd number of rows, which is how a model that breaks at run time looks.
    fragile_model()
    strict_pipeline(df_tr, y_tr, gold_df)
    fixed_batch_logreg()
    fixed_batch_reshape()

    for name, g in goldens.items():
        write(os.path.join(HERE, "golden", f"{name}.json"), json.dumps(g, indent=1, ensure_ascii=False) + "\n")
    write(os.path.join(HERE, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    for m in metrics:
        print(f"{m['model']:>9}: precision {m['precision']:.3f} recall {m['recall']:.3f} "
              f"F1 {m['f1']:.3f} ROC-AUC {m['roc_auc']:.3f}", file=sys.stderr)


if __name__ == "__main__":
    added() if sys.argv[1:] == ["--added"] else main()
