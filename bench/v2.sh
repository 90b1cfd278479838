#!/usr/bin/env bash
# The Open Inference Protocol against /invocations (bench/v2.py): S1's load through V2 JSON
# and /invocations JSON, and 100-row requests as V2 JSON, V2 binary tensor data and
# /invocations JSON, in interleaved rounds. Needs wrk and ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/install-onnxruntime.sh
cargo build --release --locked --bin mlapp
exec python3 bench/v2.py "$@"
