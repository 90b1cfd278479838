#!/usr/bin/env bash
# Puts Prometheus's promtool at .tools/bin/promtool, for the test that checks /metrics with
# Prometheus's own parser. It comes from Debian's `prometheus` package, unpacked rather
# than installed so that no Prometheus server is set up or started.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/bin/promtool
if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download prometheus
fi
dpkg-deb -x prometheus_*.deb root
cd - >/dev/null
mkdir -p .tools/bin
install -m 0755 "$work/root/usr/bin/promtool" "$dest"
"$dest" --version | head -1
