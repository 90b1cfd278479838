#!/usr/bin/env bash
# Packs a model folder as SageMaker expects model.tar.gz: the files at the archive's root (no
# top folder), unpacked by SageMaker into /opt/ml/model. Uploads it when an S3 URI is given.
#
#   container/deploy/sagemaker/package_model.sh MODEL_DIR [s3://bucket/prefix/model.tar.gz]
set -euo pipefail
dir=${1:?usage: $0 MODEL_DIR [S3_URI]}
out=$(mktemp -d)/model.tar.gz
tar -C "$dir" -czf "$out" .
tar -tzf "$out"
echo "packed $out"
if [ -n "${2:-}" ]; then
    aws s3 cp "$out" "$2"
fi
