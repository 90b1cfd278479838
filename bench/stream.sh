#!/usr/bin/env bash
# The streaming scorer against the ONNX Runtime floor, S1 before and after, and 100 MB / 1 GB
# inputs in bounded memory (bench/stream.py). MLAPP_BEFORE=<binary> adds the build before.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/setup.sh
exec python3 bench/stream.py "$@"
