#!/usr/bin/env bash
# One command for the serving benchmark: installs and builds what it needs (setup.sh), then
# runs bench/run.py (arguments are passed on, e.g. --scenarios S1 --seconds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/setup.sh
exec python3 bench/run.py "$@"
