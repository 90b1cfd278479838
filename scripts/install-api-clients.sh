#!/usr/bin/env bash
# Puts other projects' own API clients in .tools/apiclients, for the tests that check mlapp's
# Open Inference Protocol and OpenAPI document with code nobody here wrote
# (tests/integration/v2.rs and openapi.rs): Triton's `tritonclient[http]`, `openapi-spec-validator`
# and the schema-driven fuzzer `schemathesis`, all from PyPI and pinned (numpy comes with
# tritonclient).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/apiclients
check='import tritonclient.http, openapi_spec_validator, schemathesis, numpy'
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
    'tritonclient[http]==2.73.0' 'openapi-spec-validator==0.9.0' 'schemathesis==4.32.5'
"$venv/bin/python" -c "$check; print('api clients ready')"
