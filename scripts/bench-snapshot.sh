#!/usr/bin/env bash
# Snapshot benchmark (root: the volume is attached through FUSE) on a
# 1 GiB volume full of data, local snapshot store, release binaries:
#   full snapshot (attached volume, through the daemon), copy (decrypt +
#   re-encrypt every chunk into another region under another key), restore
#   (lazy: time to first read) and restore --hydrate (every chunk fetched,
#   verified, decrypted, re-encrypted, stored), and an incremental snapshot
#   after a 1% change vs the full one.
# Env: BENCH_SIZE_MIB (volume size, 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-snapshot: needs root (FUSE attach)" >&2
  exit 2
fi
SIZE_MIB="${BENCH_SIZE_MIB:-1024}"
[ -x target/release/keyvol-snap ] || cargo build --release --workspace --bins --quiet
KV="$PWD/target/release/keyvol"
SNAP="$PWD/target/release/keyvol-snap"
export KEYVOL_HOME="$(mktemp -d /var/tmp/keyvol-bench-snap.XXXXXX)"
unset KEYVOL_SNAPSHOT_STORE KEYVOL_PROFILE KEYVOL_REGION KEYVOL_TIME_OFFSET
VOLS=()
cleanup() {
  set +e
  for v in "${VOLS[@]}"; do "$KV" volume detach "$v" --force >/dev/null 2>&1 || "$KV" --region us-west-2 volume detach "$v" --force >/dev/null 2>&1; done
  rm -rf "$KEYVOL_HOME"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mbps() { awk -v mib="$1" -v s="$2" 'BEGIN { printf "%.0f", mib * 1.048576 / s }'; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

VOL=$("$KV" volume create --size "${SIZE_MIB}MiB" | field VolumeId); VOLS+=("$VOL")
DEV=$("$KV" volume attach "$VOL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
echo "volume $VOL (${SIZE_MIB} MiB) attached at $DEV; filling it with random data"
# (openssl dies of SIGPIPE when head has enough: not a failure.)
(set +o pipefail
 openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null \
   | head -c $((SIZE_MIB << 20)) | dd of="$DEV" bs=1M iflag=fullblock conv=notrunc,fsync status=none)

t0=$(now); S1=$("$SNAP" create "$VOL" --wait | field SnapshotId); t1=$(now)
FULL=$(secs "$t0" "$t1")
echo "full snapshot      : ${FULL} s  $(mbps "$SIZE_MIB" "$FULL") MB/s  ($S1)"

# 1% change: one 4 KiB write in each of SIZE/100 MiB worth of scattered chunks.
NCH=$(( SIZE_MIB * 2 / 100 ))
for i in $(seq 0 $((NCH - 1))); do
  dd if=/dev/urandom of="$DEV" bs=4k count=1 seek=$(( (i * 97 % (SIZE_MIB * 2)) * 128 + 3 )) conv=notrunc status=none
done
sync "$DEV"
t0=$(now); S2=$("$SNAP" create "$VOL" --wait | field SnapshotId); t1=$(now)
INC=$(secs "$t0" "$t1")
NCHG=$("$SNAP" list-changed-blocks "$S1" "$S2" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ChangedBlocks"]))')
echo "incremental (1%)   : ${INC} s  (${NCHG} changed blocks; full/incremental = $(awk -v a="$FULL" -v b="$INC" 'BEGIN{printf "%.1f", a/b}')x)"
"$KV" volume detach "$VOL" >/dev/null

KEY_W=$("$KV" --region us-west-2 kms create-key | python3 -c 'import json,sys; print(json.load(sys.stdin)["KeyMetadata"]["Arn"])')
t0=$(now); C=$("$SNAP" --region us-west-2 copy "$S2" --source-region us-east-1 --kms-key-id "$KEY_W" --wait | field SnapshotId); t1=$(now)
COPY=$(secs "$t0" "$t1")
echo "copy (re-encrypt)  : ${COPY} s  $(mbps "$SIZE_MIB" "$COPY") MB/s  ($C, us-east-1 -> us-west-2)"

t0=$(now); R=$("$SNAP" --region us-west-2 restore "$C" | field VolumeId); VOLS+=("$R")
RDEV=$("$KV" --region us-west-2 volume attach "$R" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
dd if="$RDEV" of=/dev/null bs=4k count=1 skip=1000 iflag=direct status=none; t1=$(now)
echo "time to first read : $(secs "$t0" "$t1") s  (restore + attach + one 4 KiB read of a lazy volume)"
"$KV" --region us-west-2 volume detach "$R" >/dev/null

t0=$(now); R2=$("$SNAP" --region us-west-2 restore "$C" --hydrate | field VolumeId); t1=$(now); VOLS+=("$R2")
HYD=$(secs "$t0" "$t1")
echo "restore --hydrate  : ${HYD} s  $(mbps "$SIZE_MIB" "$HYD") MB/s"
RDEV=$("$KV" --region us-west-2 volume attach "$R2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
t0=$(now); H1=$(sha256sum < "$RDEV"); t1=$(now)
"$KV" --region us-west-2 volume detach "$R2" >/dev/null
DEV=$("$KV" volume attach "$VOL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
H0=$(sha256sum < "$DEV")
"$KV" volume detach "$VOL" >/dev/null
[ "$H0" = "$H1" ] && echo "restored volume     : identical to the source (sha256)" || { echo "restored volume differs!" >&2; exit 1; }
echo "store              : $(du -sh "$KEYVOL_HOME/snapshots" | cut -f1) for 2 snapshots + 1 copy"
