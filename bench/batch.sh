#!/usr/bin/env bash
# The batch benchmark: mlapp transform on 1,000,000 rows against pandas + onnxruntime and the
# ORT floor, and one 100 MB body through POST /invocations (bench/batch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/setup.sh
exec python3 bench/batch.py "$@"
