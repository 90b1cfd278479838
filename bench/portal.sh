#!/usr/bin/env bash
# The portal against `mlapp transform`, on one replica and on three sharing PostgreSQL
# (bench/portal.py). Needs only the release build, ONNX Runtime and Debian's PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
scripts/install-postgres.sh
cargo build --release --locked --bin mlapp
exec python3 bench/portal.py "$@"
