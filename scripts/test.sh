#!/usr/bin/env bash
# Everything CI checks: set-up, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export KEYVOL_VENV="${KEYVOL_VENV:-$HOME/.cache/keyvol-venv}"
export PATH="$KEYVOL_VENV/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The bench-only null-cipher build (scripts/bench-volume.sh) must keep compiling.
cargo clippy --lib --features bench-null-cipher -- -D warnings
cargo build --workspace --bins
# FUSE and loop-device tests share kernel resources: run test binaries one
# at a time, tests inside each on two threads.
cargo test --workspace --no-fail-fast -- --test-threads=2
