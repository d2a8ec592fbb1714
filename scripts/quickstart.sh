#!/usr/bin/env bash
# The main job, end to end, on the embedded default in a fresh temporary
# home: a customer master key, secrets encrypted under it, a large file
# envelope-encrypted, the key rotated and old ciphertext still readable;
# volumes, snapshots, sharing and restores, and the same through aws ec2
# against `keyvol serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
cargo build --quiet --workspace --bins
KEYVOL="${CARGO_TARGET_DIR:-$PWD/target}/debug/keyvol"
export KEYVOL_HOME="$(mktemp -d /tmp/keyvol-quickstart.XXXXXX)"
WORK="$(mktemp -d /tmp/keyvol-quickstart-work.XXXXXX)"
cleanup_volumes() {
  # Leave no mount, loop device or daemon behind, even after a failure.
  for m in "$WORK"/mnt*; do
    if mountpoint -q "$m" 2>/dev/null; then "$KEYVOL" volume unmount "$m" >/dev/null 2>&1 || umount -l "$m"; fi
  done
  for v in $("$KEYVOL" volume list --query Volumes --output text 2>/dev/null | grep -o 'vol-[0-9a-f]*' | sort -u); do
    "$KEYVOL" volume detach "$v" --force >/dev/null 2>&1 || true
  done
  if [ -n "${SERVE_PID:-}" ]; then kill "$SERVE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup_volumes EXIT
step() { printf '\n== %s\n' "$*"; }
kv() { echo "+ keyvol $*" >&2; "$KEYVOL" "$@"; }

step "A fresh home at $KEYVOL_HOME (account 111122223333, region us-east-1, profile default)"
KEY_ID=$(kv kms create-key --description "quickstart key" --tags TagKey=project,TagValue=quickstart \
  --query KeyMetadata.KeyId --output text)
echo "created CMK $KEY_ID"
kv kms create-alias --alias-name alias/quickstart --target-key-id "$KEY_ID"
kv kms describe-key --key-id alias/quickstart --query KeyMetadata --output table

step "Encrypt and decrypt a secret (encryption context is bound as AAD)"
printf 'database password: hunter2' > "$WORK/secret.txt"
kv kms encrypt --key-id alias/quickstart --plaintext "fileb://$WORK/secret.txt" \
  --encryption-context app=billing --query CiphertextBlob --output text | base64 -d > "$WORK/secret.enc"
echo "ciphertext: $(stat -c %s "$WORK/secret.enc") bytes"
kv kms decrypt --ciphertext-blob "fileb://$WORK/secret.enc" --encryption-context app=billing \
  --query Plaintext --output text | base64 -d > "$WORK/secret.out"
cmp "$WORK/secret.txt" "$WORK/secret.out" && echo "decrypted: $(cat "$WORK/secret.out")"
if kv kms decrypt --ciphertext-blob "fileb://$WORK/secret.enc" --encryption-context app=other 2>"$WORK/err"; then
  echo "wrong context decrypted?!" >&2; exit 1
fi
echo "with the wrong context: $(tr -d '\n' < "$WORK/err")"

step "Envelope-encrypt a 5 MiB file (data key from GenerateDataKey, 64 KiB authenticated chunks)"
head -c $((5 * 1024 * 1024)) /dev/urandom > "$WORK/big.bin"
kv envelope encrypt --key-id alias/quickstart --in "$WORK/big.bin" --out "$WORK/big.enc" --encryption-context file=big.bin
kv envelope decrypt --in "$WORK/big.enc" --out "$WORK/big.out"
cmp "$WORK/big.bin" "$WORK/big.out" && echo "envelope round trip: identical"

step "Rotate the key; the old ciphertext still decrypts, new ones use the new material"
kv kms rotate-key-on-demand --key-id "$KEY_ID"
kv kms enable-key-rotation --key-id "$KEY_ID" --rotation-period-in-days 90
kv kms get-key-rotation-status --key-id "$KEY_ID"
kv kms decrypt --ciphertext-blob "fileb://$WORK/secret.enc" --encryption-context app=billing \
  --query Plaintext --output text | base64 -d
echo
kv kms list-key-rotations --key-id "$KEY_ID" --output text

step "An encrypted volume: AES-256-XTS sectors under a data key wrapped by the CMK"
VOL=$(kv volume create --size 256MiB --kms-key-id alias/quickstart --query VolumeId --output text)
echo "created $VOL"
kv volume describe "$VOL" --query EncryptionContext
if [ "$(id -u)" -eq 0 ] && [ -e /dev/fuse ]; then
  MNT="$WORK/mnt"
  kv volume mount "$VOL" "$MNT" --query Mount
  mkdir -p "$MNT/docs"
  cp "$WORK/secret.txt" "$MNT/docs/"
  head -c $((20 * 1024 * 1024)) /dev/urandom > "$MNT/docs/random.bin"
  sha256sum "$MNT/docs/random.bin" | cut -d' ' -f1 > "$WORK/random.sha"
  sync
  kv volume status --output text
  kv volume unmount "$MNT" --query StepsUndone
  if grep -q "hunter2" "$KEYVOL_HOME/volumes/us-east-1/$VOL.img"; then
    echo "plaintext found in the backing file!" >&2; exit 1
  fi
  echo "backing file: $(du -h --apparent-size "$KEYVOL_HOME/volumes/us-east-1/$VOL.img" | cut -f1) apparent, $(du -h "$KEYVOL_HOME/volumes/us-east-1/$VOL.img" | cut -f1) allocated, no plaintext in it"
  kv volume mount "$VOL" "$MNT" --query Mount.Formatted
  test "$(sha256sum "$MNT/docs/random.bin" | cut -d' ' -f1)" = "$(cat "$WORK/random.sha")"
  echo "after unmount, detach and re-mount: $(cat "$MNT/docs/secret.txt")"
  kv volume unmount "$MNT" --query Unmounted
else
  echo "(mounting needs root and /dev/fuse: skipped here; run as root to see it)"
fi

step "Asymmetric keys: sign in keyvol, verify anywhere with openssl and the downloaded public key"
SIGN_KEY=$(kv kms create-key --key-spec RSA_2048 --key-usage SIGN_VERIFY --query KeyMetadata.KeyId --output text)
kv kms get-public-key --key-id "$SIGN_KEY" --query PublicKey --output text | base64 -d > "$WORK/sign-pub.der"
printf 'release v1.0 checksum: %s\n' "$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)" > "$WORK/release.txt"
kv kms sign --key-id "$SIGN_KEY" --message "fileb://$WORK/release.txt" --message-type RAW \
  --signing-algorithm RSASSA_PKCS1_V1_5_SHA_256 --query Signature --output text | base64 -d > "$WORK/release.sig"
openssl dgst -sha256 -verify <(openssl pkey -pubin -inform DER -in "$WORK/sign-pub.der") \
  -signature "$WORK/release.sig" "$WORK/release.txt"

# ---- The snapshot story: share, re-encrypting copy across accounts and
# regions, restore, and the source key destroyed. It mounts filesystems.
if [ "$(id -u)" -ne 0 ] || [ ! -e /dev/fuse ]; then
  echo "(the snapshot story mounts volumes: it needs root and /dev/fuse; skipped here)"
  step "Done. State is in $KEYVOL_HOME"
  exit 0
fi
SNAPBIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/keyvol-snap"
snap() { echo "+ keyvol-snap $*" >&2; "$SNAPBIN" "$@"; }
jf() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if k.isdigit() else v[k]
print(v)' "$1"; }
MNT_A="$WORK/mnt-a"; MNT_B="$WORK/mnt-b"
cleanup() {
  "$KEYVOL" volume unmount "$MNT_A" >/dev/null 2>&1 || true
  "$KEYVOL" --profile b --region us-west-2 volume unmount "$MNT_B" >/dev/null 2>&1 || true
  if [ -n "${VOL_B:-}" ]; then "$KEYVOL" --profile b --region us-west-2 volume detach "$VOL_B" --force >/dev/null 2>&1 || true; fi
  cleanup_volumes
}
trap cleanup EXIT

step "Account A (111122223333) makes a CMK and a 256 MiB volume, mounts it, writes files"
kv iam create-account --account-id 444455556666 --profile-name b >/dev/null
KEY_A=$(kv kms create-key --description "snapshot source key" --query KeyMetadata.Arn --output text)
VOL_A=$(kv volume create --size 256MiB --kms-key-id "$KEY_A" | jf VolumeId)
kv volume mount "$VOL_A" "$MNT_A" | jf Mount
mkdir -p "$MNT_A/docs"
for i in 1 2 3 4 5; do head -c $((i * 300000)) /dev/urandom > "$MNT_A/docs/file$i.bin"; done
echo "hello from account A" > "$MNT_A/hello.txt"
(cd "$MNT_A" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum) > "$WORK/files.sha256"
sync
echo "wrote $(wc -l < "$WORK/files.sha256") files"

step "Snapshot the volume while it is mounted (point in time, fsfreeze around the cut when root)"
FREEZE=(); [ "$(id -u)" -eq 0 ] && FREEZE=(--freeze "$MNT_A")
SNAP_A=$(snap create "$VOL_A" --description "quickstart" "${FREEZE[@]}" --wait | jf SnapshotId)
snap describe "$SNAP_A"
kv volume unmount "$MNT_A" >/dev/null

step "Share it with account B (444455556666) and let B decrypt through the key policy"
snap share "$SNAP_A" --account 444455556666
cat > "$WORK/policy.json" <<'POLICY'
{"Version": "2012-10-17", "Statement": [
 {"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
 {"Sid": "SnapshotReaders", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
  "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}]}
POLICY
kv kms put-key-policy --key-id "$KEY_A" --policy-name default --policy "file://$WORK/policy.json"
snap --profile b describe-snapshots --restorable-by self | jf Snapshots.0.SnapshotId

step "B copies it under B's own key in us-west-2 (every chunk re-encrypted under a new data key)"
KEY_B=$(kv --profile b --region us-west-2 kms create-key --description "B's key" --query KeyMetadata.Arn --output text)
COPY_B=$(snap --profile b --region us-west-2 copy "$SNAP_A" --source-region us-east-1 --kms-key-id "$KEY_B" --wait | jf SnapshotId)
snap --profile b --region us-west-2 describe "$COPY_B"

step "B restores the copy as a volume of its own (hydrated lazily from the snapshot)"
VOL_B=$(snap --profile b --region us-west-2 restore "$COPY_B" | jf VolumeId)
echo "restored $VOL_B"

step "A schedules its key for deletion; eight days later the key is destroyed"
kv kms schedule-key-deletion --key-id "$KEY_A" --pending-window-in-days 7 | jf KeyState
export KEYVOL_TIME_OFFSET=8d
if "$KEYVOL" volume attach "$VOL_A" 2>"$WORK/err"; then echo "A's volume still opens?!" >&2; exit 1; fi
echo "A's own volume: $(tr -d '\n' < "$WORK/err")"

step "B's restored volume still mounts, fsck is clean and every file matches"
DEV_B=$(kv --profile b --region us-west-2 volume attach "$VOL_B" | jf Attachments.0.Device)
e2fsck -fn "$DEV_B"
kv --profile b --region us-west-2 volume mount "$VOL_B" "$MNT_B" | jf Mount
(cd "$MNT_B" && sha256sum -c "$WORK/files.sha256")
kv --profile b --region us-west-2 volume unmount "$MNT_B" >/dev/null
unset KEYVOL_TIME_OFFSET
step "The same through the AWS tools: keyvol serve answers aws ec2 / aws sts (SigV4, IAM, audit)"
"$KEYVOL" serve --listen 127.0.0.1:0 > "$WORK/serve.json" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do [ -s "$WORK/serve.json" ] && break; sleep 0.1; done
ENDPOINT=$(jf Endpoint < "$WORK/serve.json")
OPS=$(kv iam create-user --user-name ops --profile-name ops)
cat > "$WORK/ops-policy.json" <<'JSON'
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["ec2:*", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt", "kms:CreateGrant"], "Resource": "*"},
  {"Effect": "Deny", "Action": "ec2:DeleteVolume", "Resource": "*", "Condition": {"StringEquals": {"ec2:ResourceTag/keep": "yes"}}}]}
JSON
kv iam put-user-policy --user-name ops --policy-name ec2 --policy-document "file://$WORK/ops-policy.json"
AWS="${KEYVOL_VENV:-$HOME/.cache/keyvol-venv}/bin/aws"
awsx() {
  echo "+ aws $*" >&2
  AWS_ACCESS_KEY_ID=$(echo "$OPS" | jf AccessKey.AccessKeyId) \
  AWS_SECRET_ACCESS_KEY=$(echo "$OPS" | jf AccessKey.SecretAccessKey) \
  AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER="" \
    "$AWS" --endpoint-url "$ENDPOINT" "$@"
}
awsx sts get-caller-identity --output text
VOL_E=$(awsx ec2 create-volume --size 1 --availability-zone us-east-1a --encrypted \
  --tag-specifications 'ResourceType=volume,Tags=[{Key=keep,Value=yes}]' --query VolumeId --output text)
awsx ec2 wait volume-available --volume-ids "$VOL_E"
# This machine is the volume host (an instance of the account): attach there.
HOST_E=$(awsx ec2 describe-instances --query 'Reservations[0].Instances[0].InstanceId' --output text)
awsx ec2 attach-volume --volume-id "$VOL_E" --instance-id "$HOST_E" --device /dev/sdf \
  --query State --output text
awsx ec2 wait volume-in-use --volume-ids "$VOL_E"
MNT_E="$WORK/mnt-ec2"
kv --profile ops volume mount "$VOL_E" "$MNT_E" | jf Mount
echo "written through a volume made by aws ec2" > "$MNT_E/hello.txt"
sync
kv --profile ops volume unmount "$MNT_E" >/dev/null
SNAP_E=$(awsx ec2 create-snapshot --volume-id "$VOL_E" --description "made by aws ec2" --query SnapshotId --output text)
awsx ec2 wait snapshot-completed --snapshot-ids "$SNAP_E"
awsx ec2 describe-snapshots --snapshot-ids "$SNAP_E" --query 'Snapshots[0].[SnapshotId,State,VolumeSize,Description]' --output text
# Unmount left the attachment made by attach-volume; detach-volume ends it.
awsx ec2 detach-volume --volume-id "$VOL_E" --query State --output text
awsx ec2 wait volume-available --volume-ids "$VOL_E"
if awsx ec2 delete-volume --volume-id "$VOL_E" 2>"$WORK/denied.txt"; then
  echo "the policy's Deny did not hold" >&2; exit 1
fi
grep -o 'UnauthorizedOperation' "$WORK/denied.txt"
kv kms audit list --event-name DeleteVolume --max-items 1 --query 'Events[0].[eventSource,errorCode,sourceIPAddress]' --output text
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=

step "Every call is in the hash-chained audit log"
kv kms audit list --key-id "$KEY_ID" --max-items 1 --query 'Events[0]'
kv kms audit verify
kv kms usage

step "Done. State is in $KEYVOL_HOME"
