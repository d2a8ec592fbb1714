#!/usr/bin/env bash
# The KMS over HTTP: Encrypt and GenerateDataKey requests per second and
# p50/p99 latency with 1, 16 and 64 concurrent SigV4-signing clients on
# loopback, keyvol (`keyvol kms serve`, release) side by side with moto's
# KMS server, and the keyvol/moto ratio; and for each server the CPU time
# per answered request of the server and of the load generator (less
# noisy than the rates on a shared machine, where both share the cores).
# Env: BENCH_SECONDS (default 5 per cell), BENCH_CLIENTS (default "1 16 64"),
# KEYVOL_VENV (default ~/.cache/keyvol-venv, holds moto_server),
# BENCH_INPROCESS (default 1: also measure the in-process KMS, benches/kms.rs,
# one thread, and print each cell against it; 0 skips it),
# BENCH_BASELINE_KEYVOL (optional: an earlier keyvol binary, e.g. built from
# an older commit; its server runs the same cells in the same run on a home
# of its own, and each row adds its r/s and the ratio this/baseline),
# BENCH_DRIVER (default events: every client's connection on one event-loop
# thread of the load generator; threads: a thread per client).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KEYVOL_VENV:-$HOME/.cache/keyvol-venv}
SECONDS_PER=${BENCH_SECONDS:-5}
CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
OPS="Encrypt GenerateDataKey"
DRIVER=${BENCH_DRIVER:-events}
if [ ! -x "$VENV/bin/moto_server" ]; then
  echo "bench-server: $VENV/bin/moto_server is missing: run scripts/setup.sh" >&2
  exit 1
fi
cargo build --release --quiet --bin keyvol --example kms_load
KEYVOL="${CARGO_TARGET_DIR:-target}/release/keyvol"
LOAD="${CARGO_TARGET_DIR:-target}/release/examples/kms_load"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # host port
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench-server: nothing listens on $1:$2" >&2
  return 1
}
field() { # json-file-or-string key...
  "$VENV/bin/python" -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2:]: v=v[k]
print(v)' "$@"
}

# keyvol: a fresh home, an account whose root key signs the requests.
home="$work/home"
acct=$("$KEYVOL" --home "$home" iam create-account --account-id 444455556666 --profile-name bench)
kv_akid=$(field "$acct" AccessKey AccessKeyId)
kv_secret=$(field "$acct" AccessKey SecretAccessKey)
"$KEYVOL" --home "$home" kms serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
kv_pid=$!
pids+=($kv_pid)
for _ in $(seq 1 200); do [ -s "$work/serve.out" ] && break; sleep 0.05; done
kv_endpoint=$(field "$(head -n1 "$work/serve.out")" Endpoint)

# An earlier build, when one is named: its own home and server.
base_endpoint=""
if [ -n "${BENCH_BASELINE_KEYVOL:-}" ]; then
  bhome="$work/baseline-home"
  bacct=$("$BENCH_BASELINE_KEYVOL" --home "$bhome" iam create-account --account-id 444455556666 --profile-name bench)
  base_akid=$(field "$bacct" AccessKey AccessKeyId)
  base_secret=$(field "$bacct" AccessKey SecretAccessKey)
  base_key=$("$BENCH_BASELINE_KEYVOL" --home "$bhome" --profile bench kms create-key --description bench \
    --query KeyMetadata.KeyId --output text)
  "$BENCH_BASELINE_KEYVOL" --home "$bhome" kms serve --listen 127.0.0.1:0 >"$work/base.out" 2>"$work/base.err" &
  base_pid=$!
  pids+=($base_pid)
  for _ in $(seq 1 200); do [ -s "$work/base.out" ] && break; sleep 0.05; done
  base_endpoint=$(field "$(head -n1 "$work/base.out")" Endpoint)
fi

# moto: any credentials are accepted (it still parses the SigV4 header).
moto_port=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
pids+=($moto_pid)
wait_port 127.0.0.1 "$moto_port"
moto_endpoint="http://127.0.0.1:$moto_port"

# One key on each (keyvol's through its CLI: the server shares the home).
kv_key=$("$KEYVOL" --home "$home" --profile bench kms create-key --description bench \
  --query KeyMetadata.KeyId --output text)
moto_key=$(AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null \
  "$VENV/bin/aws" --endpoint-url "$moto_endpoint" kms create-key --query KeyMetadata.KeyId --output text)

echo "KMS over HTTP on loopback: ${SECONDS_PER}s per cell, SigV4-signed keep-alive clients (examples/kms_load.rs, driver $DRIVER)"
echo "keyvol: $kv_endpoint (release, home $home)   moto: $moto_endpoint ($("$VENV/bin/python" -c 'import moto; print("moto", moto.__version__)'))"
printf '%-16s %7s | %10s %9s %9s | %10s %9s %9s | %9s | %14s | %14s\n' operation clients "keyvol r/s" "p50 ms" "p99 ms" "moto r/s" "p50 ms" "p99 ms" "ratio r/s" "keyvol cpu us" "moto cpu us"
echo "(cpu us: CPU time per answered request, server / load generator)"
results="$work/results.jsonl"
for op in $OPS; do
  for c in $CLIENTS; do
    kv=$("$LOAD" --endpoint "$kv_endpoint" --access-key-id "$kv_akid" --secret-access-key "$kv_secret" \
      --key-id "$kv_key" --operation "$op" --clients "$c" --seconds "$SECONDS_PER" --driver "$DRIVER" --label keyvol --server-pid "$kv_pid")
    mo=$("$LOAD" --endpoint "$moto_endpoint" --key-id "$moto_key" --operation "$op" --clients "$c" \
      --seconds "$SECONDS_PER" --driver "$DRIVER" --label moto --server-pid "$moto_pid")
    base='{}'
    if [ -n "$base_endpoint" ]; then
      base=$("$LOAD" --endpoint "$base_endpoint" --access-key-id "$base_akid" --secret-access-key "$base_secret" \
        --key-id "$base_key" --operation "$op" --clients "$c" --seconds "$SECONDS_PER" --driver "$DRIVER" --label baseline --server-pid "$base_pid")
      echo "$base" >>"$results"
    fi
    echo "$kv" >>"$results"
    echo "$mo" >>"$results"
    "$VENV/bin/python" - "$kv" "$mo" "$base" <<'PY'
import json, sys
kv, mo, base = (json.loads(a) for a in sys.argv[1:4])
for r in (kv, mo, base):
    if r.get("errors"):
        print(f"  ({r['label']}: {r['errors']} errors, first: {r['first_error']})", file=sys.stderr)
ratio = kv["rps"] / mo["rps"] if mo["rps"] else float("inf")
line = (f"{kv['operation']:<16} {kv['clients']:>7} | {kv['rps']:>10.0f} {kv['p50_ms']:>9.2f} {kv['p99_ms']:>9.2f} | "
        f"{mo['rps']:>10.0f} {mo['p50_ms']:>9.2f} {mo['p99_ms']:>9.2f} | {ratio:>8.2f}x")
cpu = lambda r: f"{r.get('server_cpu_us') or float('nan'):>6.1f} / {r.get('client_cpu_us') or float('nan'):>5.1f}"
line += f" | {cpu(kv)} | {cpu(mo)}"
if base:
    line += f" | baseline {base['rps']:>6.0f} r/s p99 {base['p99_ms']:>6.2f} ms, cpu {cpu(base)} us, this/baseline {kv['rps'] / base['rps']:.2f}x"
print(line)
PY
  done
done
# The same operations in process (benches/kms.rs: one thread, the full
# request path without HTTP, SigV4 and JSON): each cell against it.
if [ "${BENCH_INPROCESS:-1}" = 1 ]; then
  inproc="$(BENCH_SECS="$SECONDS_PER" BENCH_SKIP_ASYM=1 cargo bench --quiet --bench kms 2>/dev/null)"
  "$VENV/bin/python" - "$inproc" "$results" <<'PY'
import json, re, sys
rates = {}
for line in sys.argv[1].splitlines():
    m = re.match(r"(Encrypt|GenerateDataKey) .*?\s([\d.]+) ops/s\s+\(([\d.]+) us/op\)$", line)
    if m and m.group(1) not in rates:
        rates[m.group(1)] = float(m.group(2))
print("in process, one thread (benches/kms.rs): " + ", ".join(f"{k} {v:.0f}/s" for k, v in rates.items()))
print(f"{'operation':<16} {'clients':>7} | {'keyvol r/s':>10} {'in-process':>10} {'ratio':>7}   (target: at least 0.8x at 16 and 64 clients)")
for line in open(sys.argv[2]):
    r = json.loads(line)
    if r["label"] != "keyvol" or r["operation"] not in rates:
        continue
    base = rates[r["operation"]]
    print(f"{r['operation']:<16} {r['clients']:>7} | {r['rps']:>10.0f} {base:>10.0f} {r['rps'] / base:>6.2f}x")
PY
fi
echo "raw results: one JSON line per cell above (label, operation, clients, requests, errors, rps, p50_ms, p99_ms)"
cat "$results"
