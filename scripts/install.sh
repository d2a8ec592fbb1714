#!/usr/bin/env bash
# install.sh: build keyvol and keyvol-snap in release mode and install them
# with their shell completions, man pages and systemd units. Idempotent:
# running it again installs the same files (unchanged files are not
# rewritten).
#
#   ./scripts/install.sh                       # into /usr/local, units into /etc/systemd/system
#   PREFIX=/usr DESTDIR=/tmp/pkg ./scripts/install.sh   # staged, e.g. for a package
#
# Env: PREFIX (default /usr/local), DESTDIR (staging root, default none),
#      UNITDIR (default /etc/systemd/system), KEYVOL_HOME (the home baked
#      into the units, default /var/lib/keyvol), CARGO_TARGET_DIR,
#      KEYVOL_BIN_DIR (install the keyvol and keyvol-snap found there
#      instead of building release binaries).
# Installs:
#   $PREFIX/bin/keyvol, $PREFIX/bin/keyvol-snap
#   $PREFIX/share/bash-completion/completions/{keyvol,keyvol-snap}
#   $PREFIX/share/zsh/site-functions/{_keyvol,_keyvol-snap}
#   $PREFIX/share/fish/vendor_completions.d/{keyvol,keyvol-snap}.fish
#   $PREFIX/share/man/man1/keyvol*.1 (one page per subcommand)
#   $UNITDIR/keyvol-volumes.service, $UNITDIR/keyvol-attach@.service
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
UNITDIR="${UNITDIR:-/etc/systemd/system}"
UNIT_HOME="${KEYVOL_HOME:-/var/lib/keyvol}"
target="${CARGO_TARGET_DIR:-$PWD/target}"

case "$PREFIX" in /*) ;; *) echo "install: PREFIX must be absolute (got $PREFIX)" >&2; exit 2 ;; esac
case "$UNITDIR" in /*) ;; *) echo "install: UNITDIR must be absolute (got $UNITDIR)" >&2; exit 2 ;; esac

if [ -n "${KEYVOL_BIN_DIR:-}" ]; then
  # Binaries built already (a package build, the tests): install those.
  built="$KEYVOL_BIN_DIR"
else
  echo "install: building release binaries"
  cargo build --release --locked -p keyvol -p keyvol-snap --bins
  built="$target/release"
fi

root="$DESTDIR$PREFIX"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

put() { # put MODE SRC DEST: install unless DEST already has the same bytes
  install -D -C -m "$1" "$2" "$3"
}

for b in keyvol keyvol-snap; do
  put 0755 "$built/$b" "$root/bin/$b"
  "$built/$b" completion bash >"$stage/$b.bash"
  "$built/$b" completion zsh >"$stage/_$b"
  "$built/$b" completion fish >"$stage/$b.fish"
  put 0644 "$stage/$b.bash" "$root/share/bash-completion/completions/$b"
  put 0644 "$stage/_$b" "$root/share/zsh/site-functions/_$b"
  put 0644 "$stage/$b.fish" "$root/share/fish/vendor_completions.d/$b.fish"
  "$built/$b" man --out "$stage/man" >/dev/null
done
for page in "$stage"/man/*.1; do
  put 0644 "$page" "$root/share/man/man1/$(basename "$page")"
done

# The units run the installed binary (without DESTDIR) for the home given.
KEYVOL_HOME="$UNIT_HOME" "$built/keyvol" host install-units \
  --dir "$stage/units" --keyvol-bin "$PREFIX/bin/keyvol" >/dev/null
for unit in "$stage"/units/*; do
  put 0644 "$unit" "$DESTDIR$UNITDIR/$(basename "$unit")"
done

echo "install: done (DESTDIR=${DESTDIR:-none}, PREFIX=$PREFIX, UNITDIR=$UNITDIR)"
echo "install: next: systemctl daemon-reload && systemctl enable --now keyvol-volumes.service"
