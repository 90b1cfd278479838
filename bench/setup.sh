#!/usr/bin/env bash
# What the benchmarks need: wrk and nginx from Debian, one virtualenv per reference stack
# (from ../shared/bench/*/requirements.txt), ONNX Runtime, and mlapp plus the bench helpers
# built in release mode. Sourced by run.sh and batch.sh from the repository root.
set -euo pipefail
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
