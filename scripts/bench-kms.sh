#!/usr/bin/env bash
# In-process KMS operations per second (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench kms 2>/dev/null
