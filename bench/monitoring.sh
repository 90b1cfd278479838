#!/usr/bin/env bash
# What capture at 100 % and live monitoring cost on S1 and on a 1M-row transform, and how long
# `mlapp baseline` takes on 1M rows (bench/monitoring.py). Needs wrk, ONNX Runtime, numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/install-onnxruntime.sh
cargo build --release --locked --bin mlapp
exec python3 bench/monitoring.py "$@"
