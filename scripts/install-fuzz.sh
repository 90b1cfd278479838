#!/usr/bin/env bash
# Installs what `make fuzz` needs (FUZZING.md): cargo-fuzz, which builds the fuzz targets with
# libFuzzer, and a C++ compiler, which libfuzzer-sys needs to build libFuzzer itself.
# cargo-fuzz passes nightly-only flags to rustc; scripts/fuzz.sh sets RUSTC_BOOTSTRAP=1 so
# that the stable toolchain accepts them, and builds without a sanitizer (safe Rust needs
# none for the bugs fuzzing looks for here: panics, overflows, hangs, broken invariants).
set -euo pipefail
version=0.13.2
if ! command -v c++ >/dev/null 2>&1; then
    apt-get install -y -qq g++ || (apt-get update -qq && apt-get install -y -qq g++)
fi
if cargo fuzz --version 2>/dev/null | grep -q "$version"; then
    exit 0
fi
cargo install --locked --version "$version" cargo-fuzz
cargo fuzz --version
