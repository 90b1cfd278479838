#!/usr/bin/env bash
# The soak (bench/soak.py): steady S1 load with a SIGHUP reload every minute for 30 minutes;
# RSS must stay within 10 % after warm-up and every answer must be a 200. Arguments are passed
# on (e.g. --minutes 5). Needs wrk (installed here as for the benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
scripts/install-onnxruntime.sh
cargo build --release --locked --bin mlapp
exec python3 bench/soak.py "$@"
