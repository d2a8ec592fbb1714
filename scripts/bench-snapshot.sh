#!/usr/bin/env bash
# Snapshot benchmark (root: the volume is attached through FUSE) on a
# 1 GiB volume full of data, local snapshot store, release binaries:
#   full snapshot (attached volume, through the daemon), copy (decrypt +
#   re-encrypt every chunk into another region under another key), restore
#   (lazy: time to first read) and restore --hydrate (every chunk fetched,
#   verified, decrypted, re-encrypted, stored), and an incremental snapshot
#   after a 1% change vs the full one; then the full snapshot, the copy and
#   the restore again through keyvol serve's EC2 API (boto3), as ratios;
#   then a raw image uploaded as a snapshot and downloaded again through the
#   EBS direct APIs with the aws-sdk-ebs client (examples/ebs_transfer.rs,
#   16 requests in flight), against the 200 MB/s target and the CLI's full
#   snapshot of the same size.
#   Then (sections of their own): restic backup of the same 1 GiB of data
#   (Debian's restic, installed by this script when missing; repository on
#   the same disk) against the full snapshot; the snapshot after a kill -9
#   of the attach daemon (BENCH_CRASH_MIB volume full of data, 5 blocks
#   written during the kill: chunks cut and seconds); a snapshot while the
#   whole BENCH_BUSY_MIB volume is overwritten (the daemon's peak RSS, its
#   copy-before-write bound 64 MiB, and the restore checked by sha256).
# Env: BENCH_SIZE_MIB (volume size, 1024), BENCH_PARTS (default
#      "main restic crash busy"; main holds everything of the first list,
#      cli only its CLI paths: full, incremental, copy, restore, hydrate),
#      BENCH_CRASH_MIB (4096), BENCH_BUSY_MIB (4096), BENCH_BIN_DIR (the
#      keyvol binaries to measure, default $CARGO_TARGET_DIR/release).
#   Part "marks" (not in the default list): what the durable change marks
#   cost writers: fio on the device file right after a snapshot (every
#   chunk unmarked: the first write to each 8 MiB group waits for an
#   fdatasync of the change log) against the same run again (all marked);
#   BENCH_MARK_MIB (1024), BENCH_RUNTIME (s per random run, 5).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-snapshot: needs root (FUSE attach)" >&2
  exit 2
fi
SIZE_MIB="${BENCH_SIZE_MIB:-1024}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="${BENCH_BIN_DIR:-$TARGET/release}"
[ -x "$BIN/keyvol-snap" ] || cargo build --release --workspace --bins --quiet
KV="$BIN/keyvol"
SNAP="$BIN/keyvol-snap"
PARTS=" ${BENCH_PARTS:-main restic crash busy} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
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

attach() { "$KV" volume attach "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])'; }
# Fills a device with the same pseudo-random stream every time (pass $2).
fill() {
  (set +o pipefail
   openssl enc -aes-128-ctr -pass "pass:$2" -nosalt -pbkdf2 < /dev/zero 2>/dev/null \
     | head -c $(( $3 << 20 )) | dd of="$1" bs=1M iflag=fullblock conv=notrunc,fsync status=none)
}
daemon_pid() { "$KV" volume status | python3 -c 'import json,sys; print([a["Pid"] for a in json.load(sys.stdin)["Attachments"] if a["VolumeId"] == sys.argv[1]][0])' "$1"; }
scrape() { python3 - "$1" "$2" "$3" <<'PY'
import sys, urllib.request
addr, name, vol = sys.argv[1:4]
text = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
              if l.startswith(name + "{") and f'volume_id="{vol}"' in l)))
PY
}
free_addr() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print("127.0.0.1:%d" % s.getsockname()[1])'; }

target() { awk -v v="$1" -v t="$2" 'BEGIN { printf "target %s: %.2fx, %s", t, v / t, (v >= t ? "met" : "not met") }'; }

if part main || part cli; then
# The disk's own ceiling for what every path here must do: write 1 GiB to
# the store's filesystem durably. Sequential 512 KiB O_DIRECT writes, 8 in
# flight; and 512 KiB writes with an fdatasync each from 6 writers (a
# chunk store's pattern).
if command -v fio >/dev/null; then
  mkdir -p "$KEYVOL_HOME/fio"
  DISK=$(fio --name=disk --directory="$KEYVOL_HOME/fio" --size="${SIZE_MIB}M" --bs=512k --rw=write --direct=1 \
    --ioengine=libaio --iodepth=8 --output-format=json | python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"] / 1e6))')
  rm -f "$KEYVOL_HOME"/fio/*
  DISK_SYNC=$(fio --name=disk --directory="$KEYVOL_HOME/fio" --size=$((SIZE_MIB / 6))M --numjobs=6 --group_reporting --bs=512k \
    --rw=write --direct=1 --ioengine=psync --fdatasync=1 --output-format=json | python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"] / 1e6))')
  rm -rf "$KEYVOL_HOME/fio"
  echo "disk ceiling       : ${DISK} MB/s sequential O_DIRECT writes; ${DISK_SYNC} MB/s with an fdatasync per 512 KiB write (6 writers)"
fi
VOL=$("$KV" volume create --size "${SIZE_MIB}MiB" | field VolumeId); VOLS+=("$VOL")
DEV=$("$KV" volume attach "$VOL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
echo "volume $VOL (${SIZE_MIB} MiB) attached at $DEV; filling it with random data"
# (openssl dies of SIGPIPE when head has enough: not a failure.)
(set +o pipefail
 openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null \
   | head -c $((SIZE_MIB << 20)) | dd of="$DEV" bs=1M iflag=fullblock conv=notrunc,fsync status=none)

t0=$(now); S1=$("$SNAP" create "$VOL" --wait | field SnapshotId); t1=$(now)
FULL=$(secs "$t0" "$t1")
echo "full snapshot      : ${FULL} s  $(mbps "$SIZE_MIB" "$FULL") MB/s  ($(target "$(mbps "$SIZE_MIB" "$FULL")" 600); $S1)"

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
echo "copy (re-encrypt)  : ${COPY} s  $(mbps "$SIZE_MIB" "$COPY") MB/s  ($(target "$(mbps "$SIZE_MIB" "$COPY")" 450); $C, us-east-1 -> us-west-2)"

t0=$(now); R=$("$SNAP" --region us-west-2 restore "$C" | field VolumeId); VOLS+=("$R")
RDEV=$("$KV" --region us-west-2 volume attach "$R" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
dd if="$RDEV" of=/dev/null bs=4k count=1 skip=1000 iflag=direct status=none; t1=$(now)
T_FIRST0=$t0; T_FIRST1=$t1
echo "time to first read : $(secs "$t0" "$t1") s  (restore + attach + one 4 KiB read of a lazy volume)"
"$KV" --region us-west-2 volume detach "$R" >/dev/null

t0=$(now); R2=$("$SNAP" --region us-west-2 restore "$C" --hydrate | field VolumeId); t1=$(now); VOLS+=("$R2")
HYD=$(secs "$t0" "$t1")
echo "restore --hydrate  : ${HYD} s  $(mbps "$SIZE_MIB" "$HYD") MB/s  ($(target "$(mbps "$SIZE_MIB" "$HYD")" 500))"
RDEV=$("$KV" --region us-west-2 volume attach "$R2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
t0=$(now); H1=$(sha256sum < "$RDEV"); t1=$(now)
"$KV" --region us-west-2 volume detach "$R2" >/dev/null
DEV=$("$KV" volume attach "$VOL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
H0=$(sha256sum < "$DEV")
"$KV" volume detach "$VOL" >/dev/null
[ "$H0" = "$H1" ] && echo "restored volume     : identical to the source (sha256)" || { echo "restored volume differs!" >&2; exit 1; }
echo "store              : $(du -sh "$KEYVOL_HOME/snapshots" | cut -f1) for 2 snapshots + 1 copy"
fi

if part main; then

# The same through the service: keyvol serve's EC2 API driven by boto3
# (one Python process, describe polled every 20 ms as a tight waiter), on a
# second volume filled the same way. Ratio = CLI time / service time
# (>= 0.9 is the target: the control plane costs at most 10%).
VENV="${KEYVOL_VENV:-$HOME/.cache/keyvol-venv}"
OPS=$("$KV" iam create-user --user-name bench --profile-name bench)
POLICY="$KEYVOL_HOME/bench-policy.json"
echo '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","ebs:*","kms:*"],"Resource":"*"}]}' > "$POLICY"
"$KV" iam put-user-policy --user-name bench --policy-name all --policy-document "file://$POLICY" >/dev/null
"$KV" serve --listen 127.0.0.1:0 > "$KEYVOL_HOME/serve.json" 2>/dev/null &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null; cleanup' EXIT
for _ in $(seq 100); do [ -s "$KEYVOL_HOME/serve.json" ] && break; sleep 0.1; done
ENDPOINT=$(field Endpoint < "$KEYVOL_HOME/serve.json")
VOL2=$("$KV" volume create --size "${SIZE_MIB}MiB" | field VolumeId); VOLS+=("$VOL2")
DEV=$("$KV" volume attach "$VOL2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
(set +o pipefail
 openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null \
   | head -c $((SIZE_MIB << 20)) | dd of="$DEV" bs=1M iflag=fullblock conv=notrunc,fsync status=none)
SVC=$(AWS_ACCESS_KEY_ID=$(echo "$OPS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKey"]["AccessKeyId"])') \
  AWS_SECRET_ACCESS_KEY=$(echo "$OPS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKey"]["SecretAccessKey"])') \
  "$VENV/bin/python" - "$ENDPOINT" "$VOL2" "$KEY_W" <<'PY'
import json, sys, time
import boto3
endpoint, vol, key = sys.argv[1:4]
east = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
west = boto3.client("ec2", endpoint_url=endpoint, region_name="us-west-2")
def wait(c, sid):
    while True:
        s = c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        if s["State"] == "completed":
            return
        if s["State"] == "error":
            raise SystemExit(f"snapshot {sid} failed: {s}")
        time.sleep(0.02)
t0 = time.time(); sid = east.create_snapshot(VolumeId=vol)["SnapshotId"]; wait(east, sid); t1 = time.time()
cid = west.copy_snapshot(SourceRegion="us-east-1", SourceSnapshotId=sid, Encrypted=True, KmsKeyId=key)["SnapshotId"]
wait(west, cid); t2 = time.time()
rv = west.create_volume(SnapshotId=cid, AvailabilityZone="us-west-2a")["VolumeId"]; t3 = time.time()
print(json.dumps({"snapshot": t1 - t0, "copy": t2 - t1, "restore": t3 - t2, "volume": rv}))
PY
)
"$KV" volume detach "$VOL2" >/dev/null
S_SNAP=$(echo "$SVC" | field snapshot); S_COPY=$(echo "$SVC" | field copy); S_RV=$(echo "$SVC" | field volume); VOLS+=("$S_RV")
t0=$(now)
RDEV=$("$KV" --region us-west-2 volume attach "$S_RV" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attachments"][0]["Device"])')
dd if="$RDEV" of=/dev/null bs=4k count=1 skip=1000 iflag=direct status=none; t1=$(now)
S_FIRST=$(awk -v a="$(echo "$SVC" | field restore)" -v b="$(secs "$t0" "$t1")" 'BEGIN { printf "%.3f", a + b }')
"$KV" --region us-west-2 volume detach "$S_RV" >/dev/null
ratio() { awk -v cli="$1" -v svc="$2" 'BEGIN { printf "%.2f", cli / svc }'; }
echo "service snapshot   : $(printf %.3f "$S_SNAP") s  $(mbps "$SIZE_MIB" "$S_SNAP") MB/s  (CLI/service = $(ratio "$FULL" "$S_SNAP")x)"
echo "service copy       : $(printf %.3f "$S_COPY") s  $(mbps "$SIZE_MIB" "$S_COPY") MB/s  (CLI/service = $(ratio "$COPY" "$S_COPY")x)"
FIRST_CLI=$(secs "$T_FIRST0" "$T_FIRST1")
echo "service first read : ${S_FIRST} s  (CreateVolume + attach + one read; CLI/service = $(ratio "$FIRST_CLI" "$S_FIRST")x)"

# The EBS direct APIs with the SDK client: upload a raw image of random data
# (page-cached, as a backup tool's source would be), download the snapshot
# again and check it is the same image.
TRANSFER="$TARGET/release/examples/ebs_transfer"
[ -x "$TRANSFER" ] || cargo build --release --example ebs_transfer --quiet
IMG="$KEYVOL_HOME/bench.img"
(set +o pipefail
 openssl enc -aes-128-ctr -pass pass:ebs -nosalt -pbkdf2 < /dev/zero 2>/dev/null \
   | head -c $((SIZE_MIB << 20)) > "$IMG")
# Written back before the clock starts (it stays in the page cache).
sync "$IMG"
export AWS_ACCESS_KEY_ID=$(echo "$OPS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKey"]["AccessKeyId"])')
export AWS_SECRET_ACCESS_KEY=$(echo "$OPS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKey"]["SecretAccessKey"])')
# Each transfer starts on a written-back disk: the dirty pages of the steps
# before (volume fills, restores) would otherwise be flushed during it and
# compete with its reads and writes.
sync
UP=$("$TRANSFER" upload "$ENDPOINT" "$IMG" 16)
UP_S=$(echo "$UP" | field Seconds); UP_ID=$(echo "$UP" | field SnapshotId)
sync
DOWN=$("$TRANSFER" download "$ENDPOINT" "$UP_ID" "$KEYVOL_HOME/down.img" 16)
DOWN_S=$(echo "$DOWN" | field Seconds)
cmp -n $((SIZE_MIB << 20)) "$IMG" "$KEYVOL_HOME/down.img" || { echo "bench-snapshot: the downloaded image differs" >&2; exit 1; }
UP_MB=$(mbps "$SIZE_MIB" "$UP_S"); DOWN_MB=$(mbps "$SIZE_MIB" "$DOWN_S")
echo "ebs upload (SDK)   : $(printf %.3f "$UP_S") s  ${UP_MB} MB/s  (target 200 MB/s: $(awk -v m="$UP_MB" 'BEGIN{printf "%.2f", m/200}')x; CLI full snapshot/upload time = $(ratio "$FULL" "$UP_S")x)"
echo "ebs download (SDK) : $(printf %.3f "$DOWN_S") s  ${DOWN_MB} MB/s  (target 200 MB/s: $(awk -v m="$DOWN_MB" 'BEGIN{printf "%.2f", m/200}')x; CLI full snapshot/download time = $(ratio "$FULL" "$DOWN_S")x)"
fi

# restic: the same 1 GiB of data (the fill stream of the volume above),
# read by restic through the attached device file (plaintext, as a backup
# tool sees a volume), into a repository on the same disk; against keyvol's
# full snapshot of that volume measured here too.
if part restic; then
  if ! command -v restic >/dev/null; then
    echo "installing restic (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic >/dev/null; }
  fi
  VOLR=$("$KV" volume create --size "${SIZE_MIB}MiB" | field VolumeId); VOLS+=("$VOLR")
  DEVR=$(attach "$VOLR")
  fill "$DEVR" bench "$SIZE_MIB"
  sync
  t0=$(now); "$SNAP" create "$VOLR" --wait >/dev/null; t1=$(now)
  FULL_R=$(secs "$t0" "$t1")
  export RESTIC_REPOSITORY="$KEYVOL_HOME/restic-repo" RESTIC_PASSWORD=bench
  restic init --quiet >/dev/null
  sync
  t0=$(now); restic backup --quiet "$DEVR" >/dev/null; t1=$(now)
  RESTIC=$(secs "$t0" "$t1")
  "$KV" volume detach "$VOLR" >/dev/null
  echo "full snapshot      : ${FULL_R} s  $(mbps "$SIZE_MIB" "$FULL_R") MB/s  (same run as restic)"
  echo "restic backup      : ${RESTIC} s  $(mbps "$SIZE_MIB" "$RESTIC") MB/s  ($(restic version | cut -d' ' -f1-2), repository on the same disk)"
  echo "full snapshot vs restic: $(awk -v k="$FULL_R" -v r="$RESTIC" 'BEGIN { printf "%.2f", r / k }')x  (restic time / snapshot time; $(target "$(awk -v k="$FULL_R" -v r="$RESTIC" 'BEGIN { printf "%.2f", r / k }')" 2))"
fi

# After kill -9 of the attach daemon: a volume full of data, a full
# snapshot, 5 blocks written (2 fsynced, 3 not) with the daemon killed right
# after, attach again, and the next snapshot: how many chunks it cuts
# (reads) and how long it takes.
if part crash; then
  CMIB="${BENCH_CRASH_MIB:-4096}"
  VOLC=$("$KV" volume create --size "${CMIB}MiB" | field VolumeId); VOLS+=("$VOLC")
  DEVC=$(attach "$VOLC")
  fill "$DEVC" crash "$CMIB"
  "$SNAP" create "$VOLC" --wait >/dev/null
  for i in 0 1 2 3 4; do
    if [ "$i" -lt 2 ]; then sync_flag=conv=notrunc,fsync; else sync_flag=conv=notrunc; fi
    dd if=/dev/urandom of="$DEVC" bs=4k count=1 seek=$(( (i * 1637 + 11) * 128 % (CMIB * 256) )) "$sync_flag" status=none
  done
  kill -9 "$(daemon_pid "$VOLC")"
  for _ in $(seq 200); do
    [ "$("$KV" volume describe "$VOLC" | field State)" = available ] && break; sleep 0.05
  done
  MADDR=$(free_addr)
  DEVC=$(attach "$VOLC" --metrics "$MADDR")
  t0=$(now); "$SNAP" create "$VOLC" --wait >/dev/null; t1=$(now)
  CUT=$(scrape "$MADDR" keyvol_volume_snapshot_cut_chunks "$VOLC")
  echo "after kill -9      : $(secs "$t0" "$t1") s for the next snapshot of the ${CMIB} MiB volume ($CUT of $(( CMIB * 2 )) chunks cut and read; 5 blocks written)"
  "$KV" volume detach "$VOLC" >/dev/null
fi

# A snapshot while the whole volume is overwritten: create returns at the
# cut, the volume is overwritten at once, and the daemon must keep the old
# ciphertext of every chunk not yet read: its peak RSS (VmHWM) against the
# 64 MiB bound, and the restore checked against the volume at the cut.
if part busy; then
  BMIB="${BENCH_BUSY_MIB:-4096}"
  VOLB=$("$KV" volume create --size "${BMIB}MiB" | field VolumeId); VOLS+=("$VOLB")
  DEVB=$(attach "$VOLB")
  fill "$DEVB" busy1 "$BMIB"
  AT_CUT=$(sha256sum < "$DEVB")
  BPID=$(daemon_pid "$VOLB")
  t0=$(now)
  SB=$("$SNAP" create "$VOLB" | field SnapshotId)
  fill "$DEVB" busy2 "$BMIB"; t1=$(now)
  STATE=$("$SNAP" describe "$SB" | field State)
  "$SNAP" wait "$SB" >/dev/null; t2=$(now)
  HWM=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$BPID/status")
  SPILLED=$(grep "$SB" "$KEYVOL_HOME/volumes/us-east-1/$VOLB.log" | grep -o 'chunks=[0-9]*' | tail -1 || true)
  "$KV" volume detach "$VOLB" >/dev/null
  echo "busy snapshot      : ${BMIB} MiB overwritten in $(secs "$t0" "$t1") s during a snapshot of $(secs "$t0" "$t2") s (state after the overwrite: $STATE); daemon peak RSS ${HWM} MiB (bound 64 MiB); spilled ${SPILLED:-nothing}"
  RB=$("$SNAP" restore "$SB" | field VolumeId); VOLS+=("$RB")
  RDEVB=$(attach "$RB")
  [ "$(sha256sum < "$RDEVB")" = "$AT_CUT" ] && echo "busy snapshot      : restores to the volume at the cut (sha256)" \
    || { echo "bench-snapshot: the busy snapshot is not the volume at the cut" >&2; exit 1; }
  "$KV" volume detach "$RB" >/dev/null
fi

if part marks; then
  MMIB="${BENCH_MARK_MIB:-1024}"
  RT="${BENCH_RUNTIME:-5}"
  VOLM=$("$KV" volume create --size "${MMIB}MiB" | field VolumeId); VOLS+=("$VOLM")
  DEVM=$(attach "$VOLM")
  fio_run() {
    fio --name=m --filename="$DEVM" --ioengine=libaio --direct=1 --size="${MMIB}M" \
      --output-format=json "$@" | python3 -c 'import json,sys; w=json.load(sys.stdin)["jobs"][0]["write"]; print("%.0f %.0f" % (w["bw_bytes"] / 1e6, w["iops"]))'
  }
  "$SNAP" create "$VOLM" --wait >/dev/null
  read -r SEQ1 _ < <(fio_run --rw=write --bs=1M --iodepth=4)
  read -r SEQ2 _ < <(fio_run --rw=write --bs=1M --iodepth=4)
  "$SNAP" create "$VOLM" --wait >/dev/null
  read -r _ RND1 < <(fio_run --rw=randwrite --bs=4k --iodepth=16 --runtime="$RT" --time_based)
  read -r _ RND2 < <(fio_run --rw=randwrite --bs=4k --iodepth=16 --runtime="$RT" --time_based)
  "$KV" volume detach "$VOLM" >/dev/null
  echo "marks: seq write   : ${SEQ1} MB/s first after a snapshot, ${SEQ2} MB/s marked ($(awk -v a="$SEQ1" -v b="$SEQ2" 'BEGIN { printf "%.2f", a / b }')x; 1 MiB direct, iodepth 4, ${MMIB} MiB)"
  echo "marks: rand write  : ${RND1} IOPS first after a snapshot, ${RND2} IOPS marked ($(awk -v a="$RND1" -v b="$RND2" 'BEGIN { printf "%.2f", a / b }')x; 4 KiB direct, iodepth 16, ${RT} s)"
fi
