"""Triton's own HTTP client (tritonclient[http], from PyPI) against a running mlapp.

Usage: triton_v2.py URL REPO_ROOT MODEL[,MODEL...]

For every model: server and model health, model metadata, and infer with the example rows,
as binary tensor data (tritonclient's default) and as JSON, checked against the golden
predictions that Python onnxruntime made (examples/gender/golden). Then the protocol's error
cases, each of which must raise with the server's message and status, and answer the
protocol's error object. Exits non-zero on the first mismatch.
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

URL, ROOT, MODELS = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
HOST = URL.removeprefix("http://")
NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
         "BOOL": np.bool_, "BYTES": np.object_}

client = httpclient.InferenceServerClient(HOST)
assert client.is_server_live(), "server not live"
assert client.is_server_ready(), "server not ready"
server = client.get_server_metadata()
assert server["name"] == "mlapp" and "binary_tensor_data" in server["extensions"], server


def example_inputs(model, meta):
    """The example rows as the model's V2 inputs, typed and shaped as its metadata says."""
    payloads = f"{ROOT}/examples/gender/payloads/{model}"
    tensors = {}
    if len(meta["inputs"]) == 1:
        (spec,) = meta["inputs"]
        tensors[spec["name"]] = np.load(f"{payloads}/rows_f32.npy").astype(NUMPY[spec["datatype"]])
        return tensors
    columns = json.load(open(f"{payloads}/inputs.json", encoding="utf-8"))["inputs"]
    for spec in meta["inputs"]:
        values = columns[spec["name"]]
        if spec["datatype"] == "BYTES":
            arr = np.array([v.encode("utf-8") for v in values], dtype=np.object_)
        else:
            arr = np.array(values, dtype=NUMPY[spec["datatype"]])
        shape = [len(values) if d == -1 else d for d in spec["shape"]]
        tensors[spec["name"]] = arr.reshape(shape)
    return tensors


def check_answer(model, meta, result, golden, how):
    outputs = {o["name"]: o for o in meta["outputs"]}
    if golden["kind"] == "regressor":
        (name,) = outputs
        got = result.as_numpy(name).reshape(-1)
        assert np.allclose(got, golden["values"], rtol=1e-6, atol=1e-6), (model, how, got)
        return
    label = next(n for n, o in outputs.items() if len(o["shape"]) == 1)
    proba = next(n for n, o in outputs.items() if len(o["shape"]) == 2)
    labels = result.as_numpy(label)
    if outputs[label]["datatype"] == "BYTES":
        # Binary BYTES come back as bytes, JSON ones as str.
        labels = [x.decode("utf-8") if isinstance(x, bytes) else x for x in labels]
    else:
        labels = [int(x) for x in labels]
    assert labels == golden["labels"], (model, how, labels, golden["labels"])
    probs = result.as_numpy(proba)
    want = np.array(golden["probabilities"], dtype=np.float32)
    assert probs.shape == want.shape, (model, how, probs.shape, want.shape)
    assert np.allclose(probs, want, rtol=1e-5, atol=1e-6), (model, how, np.abs(probs - want).max())


def infer_inputs(tensors, meta, binary):
    types = {s["name"]: s["datatype"] for s in meta["inputs"]}
    inputs = []
    for name, arr in tensors.items():
        i = httpclient.InferInput(name, list(arr.shape), types[name])
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    return inputs


for model in MODELS:
    golden = json.load(open(f"{ROOT}/examples/gender/golden/{model}.json", encoding="utf-8"))
    meta = client.get_model_metadata(model)
    assert meta["name"] == model and meta["versions"] == ["1"], meta
    assert meta["platform"] == "onnxruntime_onnx", meta
    assert client.get_model_metadata(model, model_version="1") == meta
    tensors = example_inputs(model, meta)
    for binary in (True, False):
        how = "binary" if binary else "json"
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary)
                   for o in meta["outputs"]]
        result = client.infer(model, infer_inputs(tensors, meta, binary), outputs=outputs,
                              request_id=f"{model}-{how}")
        assert result.get_response()["id"] == f"{model}-{how}", result.get_response()
        assert result.get_response()["model_name"] == model
        check_answer(model, meta, result, golden, how)
    # No outputs named: tritonclient asks for every output as binary data.
    result = client.infer(model, infer_inputs(tensors, meta, True), model_version="1")
    check_answer(model, meta, result, golden, "all outputs")
    assert client.is_model_ready(model), model
    assert client.is_model_ready(model, model_version="1"), model
    print(f"{model}: metadata, readiness and infer (binary and JSON) match the golden answers")


def expect_error(call, status, *words):
    try:
        call()
    except InferenceServerException as e:
        message = e.message()
        assert str(e.status()) == str(status), (status, e.status(), message)
        for w in words:
            assert w in message, (w, message)
        return message
    raise AssertionError(f"no error; wanted {status} with {words}")


model = MODELS[0]
meta = client.get_model_metadata(model)
tensors = example_inputs(model, meta)
(spec,) = meta["inputs"] if len(meta["inputs"]) == 1 else meta["inputs"][:1]
name = spec["name"]
arr = tensors[name]

expect_error(lambda: client.infer("no-such-model", infer_inputs(tensors, meta, True)), 404,
             "no-such-model")
expect_error(lambda: client.get_model_metadata("no-such-model"), 404, "no-such-model")
assert not client.is_model_ready("no-such-model")
expect_error(lambda: client.infer(model, infer_inputs(tensors, meta, True), model_version="7"),
             404, 'version "7"')


def one(name, arr, datatype, binary=True):
    i = httpclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr, binary_data=binary)
    return i


if len(meta["inputs"]) == 1:
    for binary in (True, False):
        expect_error(lambda: client.infer(model, [one(name, arr.astype(np.float64), "FP64", binary)]),
                     422, name, "FP64", "FP32")
        expect_error(lambda: client.infer(model, [one(name, arr[:, :-1], "FP32", binary)]),
                     422, name, "shape", f"[rows, {arr.shape[1]}]")
    expect_error(lambda: client.infer(model, [one("extra", arr, "FP32")]), 422,
                 'unknown input "extra"', name)
expect_error(lambda: client.infer(model, []), 422, "missing input", name)
expect_error(
    lambda: client.infer(model, infer_inputs(tensors, meta, True),
                         outputs=[httpclient.InferRequestedOutput("no_such_output")]),
    422, 'unknown output "no_such_output"')


def raw(path, body, headers=None):
    req = urllib.request.Request(URL + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# The protocol's error object, exactly: {"error": "<message>"}.
for path, body, status in [
    (f"/v2/models/{model}/infer", b"{not json", 400),
    (f"/v2/models/{model}/infer", b'{"inputs": []}', 422),
    ("/v2/models/no-such-model/infer", b'{"inputs": []}', 404),
    (f"/v2/models/{model}/infer", json.dumps({"inputs": [
        {"name": name, "datatype": "FP32", "shape": [1, int(arr.shape[-1])],
         "data": ["x"] * int(arr.shape[-1])}]}).encode(), 400),
]:
    got, answer = raw(path, body, {"Content-Type": "application/json"})
    assert got == status, (path, body[:60], got, answer)
    error = json.loads(answer)
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"], error
print("errors: each answers its status and the protocol's error object")
