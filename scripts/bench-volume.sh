#!/usr/bin/env bash
# Volume data-path benchmark (root): sector crypto vs openssl, then fio and
# an untar of ~9000 files on ext4 over
#   keyvol      : keyvol's FUSE device -> loop (--direct-io=on, 4096) -> ext4
#   keyvol-null : the same daemon built with the bench-only feature
#                 `bench-null-cipher` (sectors copied, not encrypted): the
#                 architecture's ceiling, so keyvol / keyvol-null is the cost
#                 of encryption
#   plainloop   : a plain sparse file -> loop (--direct-io=on, 4096) -> ext4
#                 (no page cache under the loop: the raw-disk ceiling)
#   plainloop-buffered : the same loop without direct I/O (the page-cache
#                 behaviour of keyvol's backing file: what FUSE costs)
#   qemu-raw    : qemu-storage-daemon FUSE export of a raw image (no crypto,
#                 another FUSE design) -> loop (--direct-io=on) -> ext4
#   qemu-luks   : qemu-storage-daemon FUSE export of a LUKS image (aes-xts-plain64) -> loop -> ext4
#   gocryptfs   : gocryptfs directory (fio and untar inside it)
# fio: seq = 1 MiB direct libaio iodepth 4; rand = 4 KiB iodepth 16.
# Env: BENCH_SIZE_MIB (volume size, 2048), BENCH_RUNTIME (s per fio run, 8),
#      BENCH_TARGETS (default "keyvol keyvol-null plainloop plainloop-buffered
#      qemu-raw qemu-luks gocryptfs"), BENCH_ROUNDS (1: rounds of all
#      targets, in the given order in odd rounds and reversed in even ones;
#      the ratios use each figure's median over the rounds, since one fio run
#      on a VM can differ from the next by more than the effect measured).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-volume: needs root (loop devices, mounts)" >&2
  exit 2
fi
SIZE_MIB="${BENCH_SIZE_MIB:-2048}"
RT="${BENCH_RUNTIME:-8}"
ROUNDS="${BENCH_ROUNDS:-1}"
FIO_SIZE="$((SIZE_MIB / 2))M"
TARGETS="${BENCH_TARGETS:-keyvol keyvol-null plainloop plainloop-buffered qemu-raw qemu-luks gocryptfs}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
KEYVOL="$TARGET_DIR/release/keyvol"

WORK="$(mktemp -d /var/tmp/keyvol-bench.XXXXXX)"
# The null-cipher daemon: the same sources with the bench-only feature, kept
# under another name; the normal build is done last so that
# target/release/keyvol is always the real, encrypting one.
if [[ " $TARGETS " == *" keyvol-null "* ]]; then
  cargo build --release --quiet -p keyvol --bin keyvol --features bench-null-cipher
  cp "$KEYVOL" "$WORK/keyvol-bench-null-cipher"
fi
cargo build --release --quiet -p keyvol --bin keyvol
PIDS=()
MOUNTS=()
LOOPS=()
FUSE_FILES=()
# Undo in dependency order: filesystems, loop devices, FUSE exports, daemons.
cleanup() {
  set +e
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  for f in "${FUSE_FILES[@]}"; do umount "$f" 2>/dev/null || umount -l "$f"; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- a tarball of ~9000 small files (sizes 0..16 KiB), made once ----------
python3 - "$WORK/tree.tar" <<'EOF'
import io, random, sys, tarfile
rnd = random.Random(1)
with tarfile.open(sys.argv[1], "w") as tar:
    for i in range(9000):
        data = rnd.randbytes(rnd.choice([0, 100, 700, 2000, 4096, 9000, 16384]))
        info = tarfile.TarInfo(f"tree/d{i % 60}/e{i % 7}/f{i}.dat")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
EOF

# ---- sector crypto vs openssl ------------------------------------------------
echo "-- sector crypto (one core; keyvol: in place, tweak set per sector)"
crypto="$(cargo bench --quiet --bench xts 2>/dev/null)"
ossl_k="$(openssl speed -evp aes-256-xts -bytes 4096 -seconds 2 2>/dev/null | awk '/^AES-256-XTS/ {print $2}' | tr -d k)"
python3 - "$crypto" "$ossl_k" <<'EOF'
import sys
ours = dict(l.split() for l in sys.argv[1].splitlines() if l.startswith("xts_"))
ossl = float(sys.argv[2]) * 1000 / 1e9
print(f"{'openssl aes-256-xts, 4 KiB':<34} {ossl:6.2f} GB/s")
for unit, label in (("4k", "4 KiB per call"), ("1m", "1 MiB per call")):
    e = float(ours[f"xts_encrypt_{unit}_gbps"])
    d = float(ours[f"xts_decrypt_{unit}_gbps"])
    print(f"{'keyvol XTS, ' + label:<34} encrypt {e:6.2f} GB/s ({e / ossl:.2f}x openssl)  "
          f"decrypt {d:6.2f} GB/s ({d / ossl:.2f}x openssl)")
EOF

# ---- helpers ---------------------------------------------------------------
# fio_one TARGET_FILE RW BS DEPTH -> "MB/s IOPS"
fio_one() {
  # Cold caches for every run: the backing files of FUSE daemons would
  # otherwise serve reads from the page cache that a direct-I/O loop skips.
  sync
  echo 3 >/proc/sys/vm/drop_caches
  fio --name=b --filename="$1" --rw="$2" --bs="$3" --iodepth="$4" --ioengine=libaio \
    --direct=1 --size="$FIO_SIZE" --runtime="$RT" --time_based --group_reporting \
    --output-format=json --output="$WORK/fio.json" >/dev/null
  python3 - "$WORK/fio.json" "$2" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
k = "read" if "read" in sys.argv[2] else "write"
print(f'{j[k]["bw_bytes"] / 1e6:.0f} {j[k]["iops"]:.0f}')
EOF
}

# loop_ext4 FILE MOUNTPOINT [DIO]: loop device (direct I/O unless DIO=off),
# ext4, mount.
loop_ext4() {
  local l
  l="$(losetup --find --show --direct-io="${3:-on}" --sector-size 4096 "$1")"
  LOOPS+=("$l")
  mkfs.ext4 -q -F "$l"
  mkdir -p "$2"
  mount "$l" "$2"
  MOUNTS+=("$2")
}

# wait_for FILE: until a FUSE export shows up with the expected size.
wait_for_size() {
  for _ in $(seq 100); do
    [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "bench-volume: $1 did not appear" >&2
  return 1
}

declare -A R
# run_suite NAME DIR: fio + untar in DIR (a mounted filesystem or directory).
run_suite() {
  local name="$1" dir="$2" f="$2/fio.dat"
  read -r R[$name.sw_mb] _ <<<"$(fio_one "$f" write 1M 4)"
  read -r R[$name.sr_mb] _ <<<"$(fio_one "$f" read 1M 4)"
  read -r _ R[$name.rr_iops] <<<"$(fio_one "$f" randread 4k 16)"
  read -r _ R[$name.rw_iops] <<<"$(fio_one "$f" randwrite 4k 16)"
  rm -f "$f"
  sync
  local t0 t1
  t0="$(date +%s.%N)"
  tar -xf "$WORK/tree.tar" -C "$dir"
  sync
  t1="$(date +%s.%N)"
  R[$name.untar_s]="$(python3 -c "print(f'{$t1 - $t0:.2f}')")"
  printf "%-10s seq write %5s MB/s  seq read %5s MB/s  rand read %6s IOPS  rand write %6s IOPS  untar+sync %6s s\n" \
    "$name" "${R[$name.sw_mb]}" "${R[$name.sr_mb]}" "${R[$name.rr_iops]}" "${R[$name.rw_iops]}" "${R[$name.untar_s]}"
}

echo "-- filesystems (volume ${SIZE_MIB} MiB, fio file ${FIO_SIZE}, ${RT}s per fio run, ${ROUNDS} round(s))"
FIGURES="sw_mb sr_mb rr_iops rw_iops untar_s"
for round in $(seq 1 "$ROUNDS"); do
  [ "$ROUNDS" = 1 ] || echo "   round $round"
  order="$TARGETS"
  if [ $((round % 2)) = 0 ]; then order="$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
  # Every round works in paths of its own (mounts stay until the end).
  rs=".r$round"
  for t in $order; do
    case "$t" in
      keyvol | keyvol-null)
        # The real product path: a volume of a fresh home, attached by the
        # keyvol daemon (data key unwrapped through the KMS). keyvol-null runs
        # the same path with the null-cipher build.
        kv="$KEYVOL"
        [ "$t" = keyvol ] || kv="$WORK/keyvol-bench-null-cipher"
        export KEYVOL_HOME="$WORK/$t$rs.home"
        VOL="$("$kv" volume create --size "${SIZE_MIB}MiB" --query VolumeId --output text)"
        "$kv" volume attach "$VOL" --device "$WORK/$t$rs.dev" >/dev/null
        KV_PID="$("$kv" volume status --query 'Attachments[0].Pid' --output text)"
        loop_ext4 "$WORK/$t$rs.dev" "$WORK/$t$rs.mnt"
        run_suite "$t" "$WORK/$t$rs.mnt"
        R[$t.rss_mib]="$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$KV_PID/status")"
        echo "           $t daemon peak RSS ${R[$t.rss_mib]} MiB"
        # detach --force unmounts and frees the loop device first.
        "$kv" volume detach "$VOL" --force >/dev/null
        unset KEYVOL_HOME
        ;;
      plainloop)
        truncate -s "${SIZE_MIB}M" "$WORK/plain$rs.img"
        loop_ext4 "$WORK/plain$rs.img" "$WORK/plain$rs.mnt"
        run_suite plainloop "$WORK/plain$rs.mnt"
        ;;
      plainloop-buffered)
        truncate -s "${SIZE_MIB}M" "$WORK/plainbuf$rs.img"
        loop_ext4 "$WORK/plainbuf$rs.img" "$WORK/plainbuf$rs.mnt" off
        run_suite plainloop-buffered "$WORK/plainbuf$rs.mnt"
        ;;
      qemu-raw)
        truncate -s "${SIZE_MIB}M" "$WORK/raw$rs.img"
        touch "$WORK/raw$rs.dev"
        qemu-storage-daemon \
          --blockdev driver=file,node-name=f1,filename="$WORK/raw$rs.img",cache.direct=off \
          --export type=fuse,id=e1,node-name=f1,mountpoint="$WORK/raw$rs.dev",writable=on \
          >"$WORK/qsd-raw$rs.log" 2>&1 &
        PIDS+=("$!")
        wait_for_size "$WORK/raw$rs.dev" $((SIZE_MIB * 1048576))
        FUSE_FILES+=("$WORK/raw$rs.dev")
        # fio straight on the exported file, no ext4: qemu's raw FUSE export
        # corrupts data under concurrent direct writes (shared/PERF_NOTES.md),
        # so ext4 over it fails with "Bad message"; no untar figure.
        read -r R[qemu-raw.sw_mb] _ <<<"$(fio_one "$WORK/raw$rs.dev" write 1M 4)"
        read -r R[qemu-raw.sr_mb] _ <<<"$(fio_one "$WORK/raw$rs.dev" read 1M 4)"
        read -r _ R[qemu-raw.rr_iops] <<<"$(fio_one "$WORK/raw$rs.dev" randread 4k 16)"
        read -r _ R[qemu-raw.rw_iops] <<<"$(fio_one "$WORK/raw$rs.dev" randwrite 4k 16)"
        R[qemu-raw.untar_s]=0
        printf "%-10s seq write %5s MB/s  seq read %5s MB/s  rand read %6s IOPS  rand write %6s IOPS  (raw file, no ext4, no untar)\n" \
          qemu-raw "${R[qemu-raw.sw_mb]}" "${R[qemu-raw.sr_mb]}" "${R[qemu-raw.rr_iops]}" "${R[qemu-raw.rw_iops]}"
        ;;
      qemu-luks)
        qemu-img create -q -f luks --object secret,id=s0,data=bench-pass \
          -o key-secret=s0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,iter-time=10 \
          "$WORK/luks$rs.img" "${SIZE_MIB}M"
        touch "$WORK/luks$rs.dev"
        qemu-storage-daemon --object secret,id=s0,data=bench-pass \
          --blockdev driver=file,node-name=f0,filename="$WORK/luks$rs.img",cache.direct=off \
          --blockdev driver=luks,node-name=l0,file=f0,key-secret=s0 \
          --export type=fuse,id=e0,node-name=l0,mountpoint="$WORK/luks$rs.dev",writable=on \
          >"$WORK/qsd$rs.log" 2>&1 &
        QSD_PID=$!
        PIDS+=("$QSD_PID")
        wait_for_size "$WORK/luks$rs.dev" $((SIZE_MIB * 1048576 - 16 * 1048576))
        FUSE_FILES+=("$WORK/luks$rs.dev")
        loop_ext4 "$WORK/luks$rs.dev" "$WORK/luks$rs.mnt"
        run_suite qemu-luks "$WORK/luks$rs.mnt"
        R[qemu-luks.rss_mib]="$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$QSD_PID/status")"
        echo "           qemu-storage-daemon peak RSS ${R[qemu-luks.rss_mib]} MiB"
        ;;
      gocryptfs)
        mkdir -p "$WORK/gc$rs.cipher" "$WORK/gc$rs.mnt"
        gocryptfs -q -init -extpass "echo bench-pass" -scryptn 10 "$WORK/gc$rs.cipher"
        gocryptfs -q -nosyslog -extpass "echo bench-pass" "$WORK/gc$rs.cipher" "$WORK/gc$rs.mnt"
        MOUNTS+=("$WORK/gc$rs.mnt")
        run_suite gocryptfs "$WORK/gc$rs.mnt"
        ;;
      *) echo "bench-volume: unknown target $t" >&2; exit 2 ;;
    esac
    for k in $FIGURES; do R[$t.$k.$round]="${R[$t.$k]}"; done
  done
done
# Each figure of a target: its median over the rounds.
if [ "$ROUNDS" -gt 1 ]; then
  echo "-- medians over $ROUNDS rounds"
  for t in $TARGETS; do
    for k in $FIGURES; do
      vals=()
      for round in $(seq 1 "$ROUNDS"); do vals+=("${R[$t.$k.$round]}"); done
      R[$t.$k]="$(python3 -c 'import statistics, sys; print(statistics.median(float(v) for v in sys.argv[1:]))' "${vals[@]}")"
    done
    printf "%-10s seq write %5.0f MB/s  seq read %5.0f MB/s  rand read %6.0f IOPS  rand write %6.0f IOPS  untar+sync %6.2f s\n" \
      "$t" "${R[$t.sw_mb]}" "${R[$t.sr_mb]}" "${R[$t.rr_iops]}" "${R[$t.rw_iops]}" "${R[$t.untar_s]}"
  done
fi

# ---- ratios ------------------------------------------------------------------
echo "-- keyvol relative to each peer (>1 = keyvol faster; untar: >1 = keyvol quicker)"
for peer in keyvol-null plainloop plainloop-buffered qemu-raw qemu-luks gocryptfs; do
  [ -n "${R[$peer.sw_mb]:-}" ] && [ -n "${R[keyvol.sw_mb]:-}" ] || continue
  python3 - "$peer" "${R[keyvol.sw_mb]}" "${R[$peer.sw_mb]}" "${R[keyvol.sr_mb]}" "${R[$peer.sr_mb]}" \
    "${R[keyvol.rr_iops]}" "${R[$peer.rr_iops]}" "${R[keyvol.rw_iops]}" "${R[$peer.rw_iops]}" \
    "${R[keyvol.untar_s]}" "${R[$peer.untar_s]}" <<'EOF'
import sys
p, *v = sys.argv[1:]
v = [float(x) for x in v]
r = lambda a, b: f"{a / b:.2f}" if a and b else "n/a"
print(f"vs {p:<18} seq write {r(v[0], v[1])}  seq read {r(v[2], v[3])}  "
      f"rand read {r(v[4], v[5])}  rand write {r(v[6], v[7])}  untar {r(v[9], v[8])}")
EOF
done
