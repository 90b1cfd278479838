#!/usr/bin/env bash
# Self-made functions against the plain model (bench/functions.py): S1 and S3 on logreg, on
# logreg behind three declarative steps, and on logreg behind a WebAssembly function, in
# interleaved rounds. Needs wrk and ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/install-onnxruntime.sh
cargo build --release --locked --bin mlapp
exec python3 bench/functions.py "$@"
