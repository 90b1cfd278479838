#!/usr/bin/env bash
# Puts moto's standalone S3 server at .tools/moto/bin/moto_server, for the tests that load
# models from S3 and write transform outputs to it (tests/integration/s3.rs starts one per
# test on a loopback port). moto comes from PyPI, pinned; it speaks S3's REST API, ETags,
# multipart uploads and, with INITIAL_NO_AUTH_ACTION_COUNT=0, rejects unknown keys as S3 does.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/moto
if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c 'import moto' 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.5'
"$venv/bin/python" -c 'import moto; print("moto", moto.__version__)'
