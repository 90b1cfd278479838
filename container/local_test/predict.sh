#!/usr/bin/env bash
# Sends a payload file to a running container's /invocations, as AWS's sample does.
#
#   container/local_test/predict.sh [PAYLOAD] [CONTENT_TYPE] [ACCEPT]
#
# PAYLOAD defaults to the bundled example's CSV rows; CONTENT_TYPE to what the file's
# extension says (.csv text/csv, .json application/json, .jsonl application/jsonlines,
# .npy application/x-npy); ACCEPT to application/json. MLAPP_URL overrides
# http://localhost:8080.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
payload=${1:-$repo/examples/gender/payloads/pipeline/rows.csv}
case "$payload" in
*.csv) guessed=text/csv ;;
*.jsonl) guessed=application/jsonlines ;;
*.json) guessed=application/json ;;
*.npy) guessed=application/x-npy ;;
*) guessed=text/csv ;;
esac
content_type=${2:-$guessed}
accept=${3:-application/json}
url=${MLAPP_URL:-http://localhost:8080}
curl --fail-with-body -sS --data-binary @"$payload" \
    -H "Content-Type: $content_type" -H "Accept: $accept" "$url/invocations"
echo
