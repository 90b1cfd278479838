#!/usr/bin/env bash
# PostgreSQL for the portal's tests (tests/integration/common/postgres.rs starts a private
# server on a loopback port per test): Debian's package, installed when it is missing.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq postgresql >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
# The package starts a cluster of its own; the tests do not use it.
service postgresql stop >/dev/null 2>&1 || true
compgen -G "/usr/lib/postgresql/*/bin/initdb"
