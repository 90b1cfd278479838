"""Self-made functions around the example models, and what they must answer.

Builds, from the models and payloads generate.py made:
  models/logreg_steps/      logreg with every numeric `before` step (two derived features the
                            client no longer sends) and every `after` step
  models/pipeline_steps/    the scikit-learn pipeline with text steps (trim, fill a missing city)
  models/chain/             preprocess.onnx (winsorize) -> logreg -> postprocess.onnx
                            (temperature-scaled probabilities), wired by name
  models/ensemble/          logreg and the MLP, probabilities averaged with weights 1 and 3
  models/logreg_wasm/       logreg behind a WebAssembly function (functions/clamp.wat, written
                            by hand) that clamps the hours of use to [0, 3]
  models/segments/          a five-class softmax over the same features whose answers list
                            their top 3 classes and carry constant fields (the model version)
  payloads/<name>/          its request rows, some values missing, some text untidy
  golden/<name>.json        the answers: the steps done here in numpy, the graph run by Python
                            onnxruntime, so mlapp's steps are checked against an independent
                            implementation

Needs numpy, onnx and onnxruntime only (no training): python functions.py
"""
import json
import math
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
# Rounding of logreg_steps' answers: 4 puts a probability of the golden rows within 1e-6 of
# a tie (0.33875087), which float32 noise on another CPU could round the other way.
DECIMALS = 3
CATEGORIES = ["games", "social", "beauty", "sports", "finance", "shopping", "news", "video"]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def f32(v):
    return str(np.float32(v))


def cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f32(v)
    return str(v)


def csv_line(values):
    out = []
    for v in values:
        t = cell(v)
        out.append('"' + t.replace('"', '""') + '"' if any(c in t for c in ',"\n') or t != t.strip() else t)
    return ",".join(out)


def payloads(name, names, rows):
    """rows: lists of values in `names` order; None is a missing value."""
    d = os.path.join(HERE, "payloads", name)
    write(f"{d}/rows.csv", "".join(csv_line(r) + "\n" for r in rows))
    write(f"{d}/rows_header.csv", csv_line(names) + "\n" + "".join(csv_line(r) + "\n" for r in rows))
    write(f"{d}/instances.json", json.dumps({"instances": rows}, ensure_ascii=False))
    recs = [dict(zip(names, r)) for r in rows]
    write(f"{d}/records.json", json.dumps({"instances": recs}, ensure_ascii=False))
    write(f"{d}/rows.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write(f"{d}/records.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))


def copy_model(src, dst, config):
    d = os.path.join(HERE, "models", dst)
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "models", src, "model.onnx"), os.path.join(d, "model.onnx"))
    write(os.path.join(d, "mlapp.json"), json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])


def logreg_steps():
    base = json.load(open(os.path.join(HERE, "models", "logreg", "mlapp.json")))
    names = base["feature_names"]
    derived = {
        "total_hours": " + ".join(f"hours_{c}" for c in CATEGORIES),
        "night_share": " + ".join(f"active_h{h:02d}" for h in range(6)),
    }
    steps = {
        "before": [
            {"step": "derive", "feature": "total_hours", "expression": derived["total_hours"]},
            {"step": "derive", "feature": "night_share", "expression": derived["night_share"]},
            {"step": "fill_missing", "values": {"n_apps": 40, "screen_inches": 7.5}},
            {"step": "clip", "features": ["screen_inches"], "min": 4.5, "max": 6.7},
            {"step": "log", "features": ["hours_games", "hours_video"], "offset": 1},
            {"step": "scale", "features": ["device_age_months"], "center": 12, "scale": 2},
            {"step": "bucketize", "features": ["price_tier"], "boundaries": [1.5, 2.5, 3.5, 4.5]},
        ],
        "after": [
            {"step": "rename_labels", "labels": {"female": "F", "male": "M"}},
            {"step": "class_thresholds", "thresholds": [{"class": "M", "at_least": 0.4}]},
            {"step": "round", "decimals": DECIMALS},
        ],
    }
    config = dict(base, steps=steps)
    sess = copy_model("logreg", "logreg_steps", config)
    src = read_jsonl(os.path.join(HERE, "payloads", "logreg", "records.jsonl"))
    sent = [n for n in names if n not in derived]
    rows = []
    for i, r in enumerate(src):
        row = [r[n] for n in sent]
        if i % 4 == 1:
            row[sent.index("n_apps")] = None
        if i % 5 == 2:
            row[sent.index("screen_inches")] = None
        # Values at the edges of the steps: below the clip's min, on a bucket boundary.
        if i == 3:
            row[sent.index("screen_inches")] = 4.0
        if i == 4:
            row[sent.index("price_tier")] = 2.5
        rows.append(row)
    payloads("logreg_steps", sent, rows)

    # The steps, done here: every value as the float32 the request decodes to, each step
    # computed in float64 and stored back as float32, as a float32 model input holds it.
    x = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float32)
    col = {n: i for i, n in enumerate(sent)}
    full = np.zeros((len(rows), len(names)), dtype=np.float32)
    for j, n in enumerate(names):
        if n in col:
            full[:, j] = x[:, col[n]]
    j = names.index
    f = full.astype(np.float64)
    full[:, j("total_hours")] = sum(f[:, j(f"hours_{c}")] for c in CATEGORIES)
    full[:, j("night_share")] = sum(f[:, j(f"active_h{h:02d}")] for h in range(6))
    for n, v in {"n_apps": 40, "screen_inches": 7.5}.items():
        c = full[:, j(n)]
        c[np.isnan(c)] = v
    full[:, j("screen_inches")] = np.clip(full[:, j("screen_inches")].astype(np.float64), 4.5, 6.7)
    for n in ["hours_games", "hours_video"]:
        y = full[:, j(n)].astype(np.float64) + 1
        full[:, j(n)] = np.where(y > 0, np.log(np.where(y > 0, y, 1)), np.nan)
    full[:, j("device_age_months")] = (full[:, j("device_age_months")].astype(np.float64) - 12) / 2
    full[:, j("price_tier")] = np.searchsorted([1.5, 2.5, 3.5, 4.5], full[:, j("price_tier")].astype(np.float64), side="right")

    _, prob = sess.run(None, {"input": full})
    classes = ["F", "M"]
    labels = ["M" if p[1] >= 0.4 else classes[int(np.argmax(p))] for p in prob]
    # numpy rounds halves to even, as mlapp does. No value may sit within float32 noise of a
    # rounding tie, or another CPU could round it the other way.
    scale = 10.0 ** DECIMALS
    for p in prob.reshape(-1):
        frac = abs(float(p) * scale - math.floor(float(p) * scale) - 0.5)
        assert frac > 0.01, f"{p} is too close to a rounding tie at {DECIMALS} decimals"
    probs = [[float(np.round(float(p), DECIMALS)) for p in row] for row in prob]
    gold = {"kind": "classifier", "labels": labels, "probabilities": probs}
    write(os.path.join(HERE, "golden", "logreg_steps.json"), json.dumps(gold, indent=1) + "\n")


def pipeline_steps():
    base = json.load(open(os.path.join(HERE, "models", "pipeline", "mlapp.json")))
    steps = {
        "before": [
            {"step": "normalize_text", "features": ["city", "country"], "lowercase": False},
            {"step": "fill_missing", "values": {"city": "Lagos", "n_apps": 45}},
        ],
    }
    sess = copy_model("pipeline", "pipeline_steps", dict(base, steps=steps))
    src = read_jsonl(os.path.join(HERE, "payloads", "pipeline", "records.jsonl"))
    names = [i.name for i in sess.get_inputs()]
    rows = []
    for i, r in enumerate(src):
        r = dict(r)
        if i % 3 == 0:
            r["city"] = f"  {r['city']} "
        if i % 4 == 1:
            r["country"] = f"{r['country']}\t"
        if i % 5 == 2:
            r["city"] = None
        if i % 6 == 3:
            r["n_apps"] = None
        rows.append([r[n] for n in names])
    payloads("pipeline_steps", names, rows)

    feed = {}
    for k, inp in enumerate(sess.get_inputs()):
        vals = [r[k] for r in rows]
        if inp.type == "tensor(string)":
            vals = ["" if v is None else v.strip() for v in vals]
            if inp.name == "city":
                vals = [v or "Lagos" for v in vals]
            feed[inp.name] = np.array(vals, dtype=object).reshape(-1, 1)
        elif inp.type == "tensor(int64)":
            feed[inp.name] = np.array(vals, dtype=np.int64).reshape(-1, 1)
        else:
            a = np.array([np.nan if v is None else v for v in vals], dtype=np.float32)
            if inp.name == "n_apps":
                a[np.isnan(a)] = 45
            feed[inp.name] = a.reshape(-1, 1)
    lab, prob = sess.run(None, feed)
    gold = {"kind": "classifier", "labels": [str(v) for v in lab],
            "probabilities": [[float(p) for p in row] for row in prob]}
    write(os.path.join(HERE, "golden", "pipeline_steps.json"), json.dumps(gold, indent=1) + "\n")


def save_graph(path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, os.path.basename(path), inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def logreg_rows():
    x = np.array(json.load(open(os.path.join(HERE, "payloads", "logreg", "instances.json")))["instances"],
                 dtype=np.float32)
    return x


def copy_payloads(src, dst):
    d = os.path.join(HERE, "payloads", dst)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(HERE, "payloads", src), d)


def chain():
    base = json.load(open(os.path.join(HERE, "models", "logreg", "mlapp.json")))
    d = os.path.join(HERE, "models", "chain")
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "models", "logreg", "model.onnx"), os.path.join(d, "model.onnx"))
    # Winsorize each feature at the 1st and 99th percentiles of the training rows.
    train = np.loadtxt(os.path.join(HERE, "monitoring", "train_tensor.csv"), delimiter=",", skiprows=1,
                       dtype=np.float64)
    lo = np.percentile(train, 1, axis=0).astype(np.float32)
    hi = np.percentile(train, 99, axis=0).astype(np.float32)
    save_graph(os.path.join(d, "preprocess.onnx"),
               [helper.make_node("Max", ["raw", "lo"], ["floored"]),
                helper.make_node("Min", ["floored", "hi"], ["input"])],
               [helper.make_tensor_value_info("raw", TensorProto.FLOAT, [None, 64])],
               [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
               [numpy_helper.from_array(lo, "lo"), numpy_helper.from_array(hi, "hi")])
    # Temperature scaling of the model's probabilities with a prior shift towards "male", and
    # the label they give (which differs from the model's own on some rows).
    save_graph(os.path.join(d, "postprocess.onnx"),
               [helper.make_node("Log", ["probabilities"], ["logp"]),
                helper.make_node("Div", ["logp", "temperature"], ["tempered"]),
                helper.make_node("Add", ["tempered", "prior"], ["scaled"]),
                helper.make_node("Softmax", ["scaled"], ["calibrated"], axis=1),
                helper.make_node("ArgMax", ["calibrated"], ["predicted"], axis=1, keepdims=0)],
               [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
               [helper.make_tensor_value_info("predicted", TensorProto.INT64, [None]),
                helper.make_tensor_value_info("calibrated", TensorProto.FLOAT, [None, 2])],
               [numpy_helper.from_array(np.array(1.5, dtype=np.float32), "temperature"),
                numpy_helper.from_array(np.array([0.0, 0.6], dtype=np.float32), "prior")])
    config = {"feature_names": base["feature_names"], "class_labels": base["class_labels"],
              "graphs": {"chain": ["model.onnx", "postprocess.onnx", "preprocess.onnx"]}}
    write(os.path.join(d, "mlapp.json"), json.dumps(config, indent=2) + "\n")
    copy_payloads("logreg", "chain")

    run = lambda name, feed: ort.InferenceSession(os.path.join(d, name), providers=["CPUExecutionProvider"]).run(None, feed)
    (x,) = run("preprocess.onnx", {"raw": logreg_rows()})
    _, prob = run("model.onnx", {"input": x})
    predicted, calibrated = run("postprocess.onnx", {"probabilities": prob})
    own, _ = run("model.onnx", {"input": x})
    assert (own != predicted).any(), "the chain's answer must differ from the model's own"
    gold = {"kind": "classifier", "labels": [base["class_labels"][int(k)] for k in predicted],
            "probabilities": [[float(p) for p in row] for row in calibrated]}
    write(os.path.join(HERE, "golden", "chain.json"), json.dumps(gold, indent=1) + "\n")


def ensemble():
    base = json.load(open(os.path.join(HERE, "models", "logreg", "mlapp.json")))
    d = os.path.join(HERE, "models", "ensemble")
    os.makedirs(d, exist_ok=True)
    for m in ["logreg", "mlp"]:
        shutil.copyfile(os.path.join(HERE, "models", m, "model.onnx"), os.path.join(d, f"{m}.onnx"))
    weights = [1, 3]
    config = {"feature_names": base["feature_names"], "class_labels": base["class_labels"],
              "graphs": {"ensemble": {"members": ["logreg.onnx", "mlp.onnx"], "weights": weights}}}
    write(os.path.join(d, "mlapp.json"), json.dumps(config, indent=2) + "\n")
    copy_payloads("logreg", "ensemble")
    x = logreg_rows()
    _, p_lr = ort.InferenceSession(os.path.join(d, "logreg.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    _, zipmap = ort.InferenceSession(os.path.join(d, "mlp.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    p_mlp = np.array([[m[0], m[1]] for m in zipmap], dtype=np.float64)
    mean = (weights[0] * p_lr.astype(np.float64) + weights[1] * p_mlp) / sum(weights)
    gold = {"kind": "classifier", "labels": [base["class_labels"][int(k)] for k in mean.argmax(axis=1)],
            "probabilities": [[float(np.float32(p)) for p in row] for row in mean]}
    write(os.path.join(HERE, "golden", "ensemble.json"), json.dumps(gold, indent=1) + "\n")


def logreg_wasm():
    base = json.load(open(os.path.join(HERE, "models", "logreg", "mlapp.json")))
    hours = [f"hours_{c}" for c in CATEGORIES]
    config = dict(base, steps={"before": [
        {"step": "wasm", "module": "functions/clamp.wat", "features": hours}]})
    sess = copy_model("logreg", "logreg_wasm", config)
    copy_payloads("logreg", "logreg_wasm")
    x = logreg_rows()
    idx = [base["feature_names"].index(h) for h in hours]
    x[:, idx] = np.clip(x[:, idx].astype(np.float64), 0, 3)
    _, prob = sess.run(None, {"input": x})
    gold = {"kind": "classifier", "labels": [base["class_labels"][int(k)] for k in prob.argmax(axis=1)],
            "probabilities": [[float(p) for p in row] for row in prob]}
    write(os.path.join(HERE, "golden", "logreg_wasm.json"), json.dumps(gold, indent=1) + "\n")


SEGMENTS = ["commuter", "gamer", "parent", "shopper", "student"]
SEGMENTS_FIELDS = {"model_version": "segments-2026.12", "calibrated": False, "top": 3}


def segments():
    """A multi-class model, so that top_k has classes to choose among and order."""
    base = json.load(open(os.path.join(HERE, "models", "logreg", "mlapp.json")))
    d = os.path.join(HERE, "models", "segments")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(2026)
    x = logreg_rows()
    # Weights scaled by each feature's spread, so every feature moves the scores a little,
    # centred on their means, so that the classes compete.
    spread = x.astype(np.float64).std(axis=0) + 1e-3
    w64 = rng.normal(0, 0.15, (64, len(SEGMENTS))) / spread[:, None]
    b = (rng.normal(0, 0.3, len(SEGMENTS)) - x.astype(np.float64).mean(axis=0) @ w64).astype(np.float32)
    w = w64.astype(np.float32)
    save_graph(os.path.join(d, "model.onnx"),
               [helper.make_node("MatMul", ["input", "w"], ["xw"]),
                helper.make_node("Add", ["xw", "b"], ["scores"]),
                helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
                helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)],
               [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
               [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(SEGMENTS)])],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    config = {"feature_names": base["feature_names"], "class_labels": SEGMENTS,
              "steps": {"after": [{"step": "top_k", "k": 3},
                                  {"step": "fields", "fields": SEGMENTS_FIELDS}]}}
    write(os.path.join(d, "mlapp.json"), json.dumps(config, indent=2) + "\n")
    copy_payloads("logreg", "segments")
    label, prob = ort.InferenceSession(os.path.join(d, "model.onnx"),
                                       providers=["CPUExecutionProvider"]).run(None, {"input": x})
    top = []
    for row in prob:
        order = sorted(range(len(row)), key=lambda k: -float(row[k]))[:3]
        # The order must not hang on float32 noise: no two listed scores within 1e-5.
        ranked = sorted(row, reverse=True)
        assert all(ranked[i] - ranked[i + 1] > 1e-5 for i in range(3)), row
        top.append([[SEGMENTS[k], float(row[k])] for k in order])
    assert len({t[0][0] for t in top}) >= 3, "the top class must vary over the rows"
    gold = {"kind": "top_k", "labels": [SEGMENTS[int(k)] for k in label], "top": top,
            "fields": SEGMENTS_FIELDS}
    write(os.path.join(HERE, "golden", "segments.json"), json.dumps(gold, indent=1) + "\n")


def cycle_fixture():
    """Two graphs that each take what the other makes, for the test of a chain's cycle."""
    d = os.path.join(HERE, "..", "..", "tests", "fixtures", "cycle")
    os.makedirs(d, exist_ok=True)
    for name, src, dst in [("a.onnx", "x", "y"), ("b.onnx", "y", "x")]:
        save_graph(os.path.join(d, name), [helper.make_node("Identity", [src], [dst])],
                   [helper.make_tensor_value_info(src, TensorProto.FLOAT, [None, 2])],
                   [helper.make_tensor_value_info(dst, TensorProto.FLOAT, [None, 2])], [])


if __name__ == "__main__":
    cycle_fixture()
    logreg_steps()
    pipeline_steps()
    chain()
    ensemble()
    logreg_wasm()
    segments()
