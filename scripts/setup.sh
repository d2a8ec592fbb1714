#!/usr/bin/env bash
# Idempotent set-up of everything keyvol's tests, quickstart and benchmarks
# need on a fresh Debian machine: system packages from apt, Python tools
# from PyPI. Nothing is fetched from anywhere else.
set -euo pipefail

APT_PACKAGES=(
  fuse3 fuse2fs e2fsprogs xfsprogs util-linux openssl fio
  qemu-utils qemu-system-common gocryptfs kmod python3-venv
  bash-completion man-db groff-base systemd
)
# Pinned: the tests check keyvol against these clients' service models,
# which change with every release.
PY_PACKAGES=(cryptography==50.0.2 boto3==1.44.8 botocore==1.44.8 awscli==1.46.3 "moto[server]==5.2.5")

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python tools live in a venv of the project's own, so the system Python stays untouched.
VENV="${KEYVOL_VENV:-$HOME/.cache/keyvol-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
pinned_ok() {
  "$VENV/bin/python" - "${PY_PACKAGES[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name.split("[")[0]) != want:
        sys.exit(1)
PY
}
if ! pinned_ok; then
  echo "setup: installing ${PY_PACKAGES[*]} into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

# fsx (the Rust port of the File System eXerciser, from crates.io) for the
# device-file test with mmap operations.
if [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/fsx" ]; then
  echo "setup: installing fsx"
  cargo install --quiet --locked fsx --version 0.3.2
fi

# /dev/fuse and the loop driver, when the machine allows it.
if [ ! -e /dev/fuse ]; then $SUDO modprobe fuse 2>/dev/null || true; fi
if [ ! -e /dev/loop-control ]; then $SUDO modprobe loop 2>/dev/null || true; fi
echo "setup: done (python venv: $VENV)"
