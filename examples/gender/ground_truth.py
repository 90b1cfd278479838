#!/usr/bin/env python3
"""Late ground truth for the portal's evaluation (POST /api/providers/prediction/evaluate).

A month of devices (ids and the 64 features of the logreg model) and, for them, the owners'
true gender as it arrives later (the observed label of generate.py's data). The expected
metrics are computed here, independently of mlapp: the model scored by Python onnxruntime on
the same rows, the metrics by scikit-learn.

Writes, under examples/gender/ground_truth/:
  devices.csv    device_id + 64 features, no header (the job's input, id_columns [0])
  truth.csv      device_id,label with a header (the ground truth)
  metrics.json   scikit-learn's confusion matrix, precision, recall, F1, accuracy, ROC-AUC

Usage: python ground_truth.py   (needs requirements.txt; seeded, so reruns give the same files)
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import CLASSES, f32, make_raw, numeric_matrix  # noqa: E402

N = 2000
SEED = 20261202


def main():
    out = os.path.join(HERE, "ground_truth")
    os.makedirs(out, exist_ok=True)
    df, y = make_raw(np.random.default_rng(SEED), N)
    x, _ = numeric_matrix(df)
    ids = [f"dev-{i:05d}" for i in range(N)]
    with open(os.path.join(out, "devices.csv"), "w") as f:
        for i, row in zip(ids, x):
            f.write(i + "," + ",".join(f32(v) for v in row) + "\n")
    truth = [CLASSES[k] for k in y]
    with open(os.path.join(out, "truth.csv"), "w") as f:
        f.write("device_id,label\n")
        for i, t in zip(ids, truth):
            f.write(f"{i},{t}\n")
    # Score what the file says (float32 text read back), as mlapp will.
    x_read = np.array([[np.float32(v) for v in f32_row] for f32_row in
                       ([f32(v) for v in row] for row in x)], dtype=np.float32)
    sess = ort.InferenceSession(os.path.join(HERE, "models", "logreg", "model.onnx"))
    labels, probs = sess.run(None, {"input": x_read})
    predicted = [CLASSES[int(k)] for k in labels]
    score = probs[:, 1].astype(np.float64)
    actual = np.array(truth)
    metrics = {
        "positive_label": "male",
        "rows": N,
        "confusion_matrix": {
            # actual -> predicted, as Model Monitor keys it
            a: {p: int(n) for p, n in zip(CLASSES, r)}
            for a, r in zip(CLASSES, confusion_matrix(actual, predicted, labels=CLASSES))
        },
        "accuracy": accuracy_score(actual, predicted),
        "precision": precision_score(actual, predicted, pos_label="male"),
        "recall": recall_score(actual, predicted, pos_label="male"),
        "f1": f1_score(actual, predicted, pos_label="male"),
        "auc": roc_auc_score(actual == "male", score),
        "onnxruntime": ort.__version__,
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
