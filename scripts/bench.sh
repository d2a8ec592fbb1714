#!/usr/bin/env bash
# Benchmarks: ./scripts/bench.sh [kms|volume|snapshot|server]... (all when none given).
# Each part measures its peers in the same run and prints ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=(kms volume snapshot server)
./scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
for p in "${parts[@]}"; do
  if [ ! -x "scripts/bench-$p.sh" ]; then
    echo "bench: unknown part '$p' (kms, volume, snapshot, server)" >&2
    exit 2
  fi
  echo "== bench $p =="
  "scripts/bench-$p.sh"
done
