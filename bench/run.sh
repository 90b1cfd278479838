#!/usr/bin/env bash
# One command for the whole benchmark: installs wrk, nginx and the two reference stacks'
# Python environments, builds mlapp and the bench helpers in release mode, then runs
# bench/run.py (arguments are passed on, e.g. --scenarios S1 --seconds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_BENCH:-../shared/bench}
if [ ! -d "$shared/fastapi_onnx" ] || [ ! -d "$shared/aws_sample_onnx" ]; then
    echo "bench: the reference stacks are not at $shared (set SHARED_BENCH)" >&2
    exit 1
fi
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
fi
for stack in fastapi:fastapi_onnx aws:aws_sample_onnx; do
    venv=.venv-bench-${stack%%:*}
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q -r "$shared/${stack#*:}/requirements.txt"
    fi
done
scripts/install-onnxruntime.sh
cargo build --release --locked --bin mlapp --example trivial_http --example ort_floor
exec python3 bench/run.py "$@"
