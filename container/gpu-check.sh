#!/usr/bin/env bash
# Checks mlapp's CUDA path on a machine with an NVIDIA GPU: `--device cuda` loads the MLP
# example on CUDAExecutionProvider (ORT's placement lines say so), its answers equal Python
# onnxruntime's (CPU) golden outputs, a tree ensemble (no CUDA kernels in ONNX Runtime) is
# refused by `--device cuda` and served on the CPU by `--device auto`, and `mlapp transform`
# scores 200,000 rows on CUDA and on the CPU for a timing.
#
#   container/gpu-check.sh MLAPP_BINARY ORT_GPU_DIR [CUDA_LIB_DIRS]
#
# ORT_GPU_DIR holds onnxruntime-gpu 1.31.1's capi/ libraries; CUDA_LIB_DIRS (':'-separated)
# the CUDA 13 user-space libraries, by default found among the Python environment's nvidia-*
# wheels. The GPU image (container/Dockerfile.gpu) carries all of these itself.
set -euo pipefail
bin=$1
ort=$2
libs=${3:-}
if [ -z "$libs" ]; then
    libs=$(python3 -c '
import os, sys, site
want = {"libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10",
        "libcufft.so.12", "libnvrtc.so.13", "libcudnn.so.9", "libnvJitLink.so.13"}
dirs = []
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for d, _, files in os.walk(os.path.join(root, "nvidia")):
        if want & set(files) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))')
fi
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
echo "== CUDA libraries from: $LD_LIBRARY_PATH"
export ORT_DYLIB_PATH=$ort/libonnxruntime.so.1.31.1 RUST_LOG=info,ort=warn

port=18181
# Starts mlapp on model $1 with --device $2; 0 once /ping is 200, 1 once the load failed.
serve() {
    "$bin" serve --host 127.0.0.1 --port $port --model-dir "examples/gender/models/$1" --device "$2" --workers 1 &
    pid=$!
    for _ in $(seq 1 300); do
        ping=$(curl -sS "http://127.0.0.1:$port/ping" 2>/dev/null || true)
        case "$ping" in
        *'"ready"'*) return 0 ;;
        *'"failed"'*) return 1 ;;
        esac
        sleep 0.2
    done
    return 1
}

echo "== --device cuda, MLP"
serve mlp cuda
curl -fsS "http://127.0.0.1:$port/ping"; echo
curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^mlapp_execution_provider_info'
curl -fsS --data-binary @examples/gender/payloads/mlp/rows.csv -H 'Content-Type: text/csv' \
    -H 'Accept: text/csv' "http://127.0.0.1:$port/invocations" >/tmp/mlp_cuda.csv
python3 - <<'PY'
import json
gold = json.load(open("examples/gender/golden/mlp.json"))
lines = open("/tmp/mlp_cuda.csv").read().split("\n")
worst = 0.0
for i, line in enumerate(lines):
    label, *probs = line.split(",")
    assert label == str(gold["labels"][i]), (i, label, gold["labels"][i])
    for p, q in zip(map(float, probs), gold["probabilities"][i]):
        worst = max(worst, abs(p - q))
print(f"MLP on CUDA: {len(lines)} rows, labels equal, largest probability difference {worst:.2e}")
assert worst < 1e-5, worst
PY
kill $pid; wait $pid || true

echo "== --device cuda, XGBoost (tree ensemble): must be refused"
serve xgboost cuda || true
curl -sS "http://127.0.0.1:$port/ping"; echo
kill $pid 2>/dev/null; wait $pid 2>/dev/null || true

echo "== --device auto, XGBoost: served on the CPU"
serve xgboost auto
curl -fsS "http://127.0.0.1:$port/ping"; echo
kill $pid; wait $pid || true

echo "== mlapp transform, 200,000 rows of the MLP, CUDA then CPU"
mkdir -p /tmp/gpucheck/in
python3 -c '
rows = open("examples/gender/payloads/mlp/rows.csv").read().split()
open("/tmp/gpucheck/in/x.csv", "w").write("\n".join(rows[i % len(rows)] for i in range(200000)))'
for device in cuda cpu; do
    rm -rf "/tmp/gpucheck/out-$device"
    start=$(date +%s%N)
    "$bin" transform --model-dir examples/gender/models/mlp --device $device --workers 2 \
        --input /tmp/gpucheck/in --output "/tmp/gpucheck/out-$device" 2>&1 | tail -n 1
    echo "$device: $(( ($(date +%s%N) - start) / 1000000 )) ms"
done
cmp /tmp/gpucheck/out-cuda/x.csv.out /tmp/gpucheck/out-cpu/x.csv.out &&
    echo "CUDA and CPU outputs are byte-identical" ||
    echo "CUDA and CPU outputs differ (see the probability check above for the size)"
