#!/usr/bin/env bash
# s3-server.sh: run a local S3-compatible server (moto) for keyvol snapshot
# stores. Convenience only: the tests start and stop their own server.
#
#   scripts/s3-server.sh start [PORT]   start on 127.0.0.1:PORT (default 9000),
#                                       create the bucket, print the store URL
#   scripts/s3-server.sh stop           stop the server started by `start`
#   scripts/s3-server.sh status
#
# Env: KEYVOL_S3_STATE (pid/log dir, default /tmp/keyvol-s3-$UID),
#      KEYVOL_S3_BUCKET (default keyvol-snapshots),
#      KEYVOL_MOTO_SERVER (default ~/.cache/keyvol-venv/bin/moto_server,
#      installed by scripts/setup.sh as moto[server]).
set -euo pipefail

state="${KEYVOL_S3_STATE:-/tmp/keyvol-s3-$(id -u)}"
bucket="${KEYVOL_S3_BUCKET:-keyvol-snapshots}"
moto="${KEYVOL_MOTO_SERVER:-$HOME/.cache/keyvol-venv/bin/moto_server}"
pidfile="$state/moto.pid"

die() { echo "s3-server: $*" >&2; exit 1; }

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
start)
    port="${2:-9000}"
    [[ -x "$moto" ]] || die "moto_server not found at $moto; run scripts/setup.sh (pip install 'moto[server]')"
    running && die "already running (pid $(cat "$pidfile")); run '$0 stop' first"
    mkdir -p "$state"
    "$moto" -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
    echo $! >"$pidfile"
    echo "$port" >"$state/port"
    for _ in $(seq 1 100); do
        if curl -fs -o /dev/null "http://127.0.0.1:$port/"; then
            curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$port/$bucket" \
                || die "could not create bucket $bucket; see $state/moto.log"
            echo "s3://$bucket/snapshots?endpoint=http://127.0.0.1:$port"
            echo "(credentials: AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test; any value works)" >&2
            exit 0
        fi
        running || die "moto exited; see $state/moto.log"
        sleep 0.1
    done
    die "moto did not answer on port $port within 10 s; see $state/moto.log"
    ;;
stop)
    if running; then
        kill "$(cat "$pidfile")"
        rm -f "$pidfile"
        echo "stopped"
    else
        rm -f "$pidfile"
        echo "not running"
    fi
    ;;
status)
    if running; then echo "running (pid $(cat "$pidfile"), port $(cat "$state/port"))"; else echo "not running"; fi
    ;;
*)
    die "usage: $0 start [PORT] | stop | status"
    ;;
esac
