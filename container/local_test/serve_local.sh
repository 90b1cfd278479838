#!/usr/bin/env bash
# Serves a model folder with the image exactly as SageMaker starts it (`docker run IMAGE serve`,
# the model read-only at /opt/ml/model), on http://localhost:8080.
#
#   container/local_test/serve_local.sh [IMAGE] [MODEL_DIR]
#
# IMAGE defaults to mlapp:latest, MODEL_DIR to the bundled example (examples/gender/models/
# pipeline). Extra settings go through the environment, e.g. MLAPP_DOCKER_ARGS="-e
# SAGEMAKER_MODEL_SERVER_WORKERS=2". Ctrl-C stops it the way SageMaker does (SIGTERM, drain).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
image=${1:-mlapp:latest}
model=$(realpath "${2:-$repo/examples/gender/models/pipeline}")
[ -d "$model" ] || { echo "error: $model is not a folder" >&2; exit 1; }
# shellcheck disable=SC2086 # MLAPP_DOCKER_ARGS is a list of arguments on purpose
exec docker run --rm -p 8080:8080 --stop-timeout 30 \
    -v "$model":/opt/ml/model:ro ${MLAPP_DOCKER_ARGS:-} "$image" serve
