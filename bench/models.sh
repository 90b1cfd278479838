#!/usr/bin/env bash
# Many models in one server: 50 models on a multi-model endpoint (req/s spread over them,
# RSS, load times), a model's first-use load, and S1 with a shadow at 0, 10 and 100 %
# (bench/models.py). Needs wrk and ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/install-onnxruntime.sh
cargo build --release --locked --bin mlapp
exec python3 bench/models.py "$@"
