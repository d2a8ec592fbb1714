#!/usr/bin/env bash
# The main job, end to end, on the embedded default in a fresh temporary
# home: a customer master key, secrets encrypted under it, a large file
# envelope-encrypted, the key rotated and old ciphertext still readable.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
cargo build --quiet --workspace --bins
KEYVOL="$PWD/target/debug/keyvol"
export KEYVOL_HOME="$(mktemp -d /tmp/keyvol-quickstart.XXXXXX)"
WORK="$(mktemp -d /tmp/keyvol-quickstart-work.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
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

step "Every call is in the hash-chained audit log"
kv kms audit list --key-id "$KEY_ID" --max-items 3 --query 'Events[0]' | head -20
kv kms audit verify
kv kms usage
step "Done. State is in $KEYVOL_HOME"

step "Asymmetric keys: sign in keyvol, verify anywhere with openssl and the downloaded public key"
SIGN_KEY=$(kv kms create-key --key-spec RSA_2048 --key-usage SIGN_VERIFY --query KeyMetadata.KeyId --output text)
kv kms get-public-key --key-id "$SIGN_KEY" --query PublicKey --output text | base64 -d > "$WORK/sign-pub.der"
printf 'release v1.0 checksum: %s\n' "$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)" > "$WORK/release.txt"
kv kms sign --key-id "$SIGN_KEY" --message "fileb://$WORK/release.txt" --message-type RAW \
  --signing-algorithm RSASSA_PKCS1_V1_5_SHA_256 --query Signature --output text | base64 -d > "$WORK/release.sig"
openssl dgst -sha256 -verify <(openssl pkey -pubin -inform DER -in "$WORK/sign-pub.der") \
  -signature "$WORK/release.sig" "$WORK/release.txt"
