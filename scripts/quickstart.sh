#!/usr/bin/env bash
# Quick start on a fresh machine: installs the testbed, starts two local servers, seeds sample
# data, runs `clustersync engine`, syncs with a live write during the sync, commits, and prints
# `clustersync verify` of the two clusters. Everything it starts is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIR="$ROOT/.testbed/quickstart"
PORT="${PORT:-27182}"
PY="$ROOT/.venv/bin/python"
api() { curl -sS "http://127.0.0.1:$PORT/api/v1/$1" "${@:2}"; }
field() { "$PY" -c "import json,sys; p=json.load(sys.stdin)['progress']; print(p.get('$1'))"; }
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every half second; gives up, with the engine's
# last progress, after SECONDS, so a stuck sync fails the script instead of hanging it.
wait_for() {
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if (( SECONDS - start > limit )); then
            echo "quickstart: gave up after ${limit}s waiting for $what" >&2
            echo "last progress: $(api progress 2>&1)" >&2
            echo "engine log: $DIR/logs" >&2
            exit 1
        fi
        sleep 0.5
    done
}
state_is() { [[ "$(api progress | field state)" == "$1" ]]; }
can_commit() { [[ "$(api progress | field canCommit)" == "True" ]]; }
# Honour CARGO_TARGET_DIR, as cargo does, so the binary is found wherever cargo put it.
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/clustersync"

scripts/testbed.sh install
echo "quickstart: building clustersync (a first build takes several minutes)"
cargo build --bin clustersync
scripts/testbed.sh stop "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
mapfile -t URIS < <(scripts/testbed.sh start 2 "$DIR")
ENGINE_PID=""
cleanup() {
    [[ -n "$ENGINE_PID" ]] && kill "$ENGINE_PID" 2>/dev/null || true
    scripts/testbed.sh stop "$DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "cluster0 (source):      ${URIS[0]}"
echo "cluster1 (destination): ${URIS[1]}"
"$PY" scripts/sample_data.py "${URIS[0]}" "${DOCS:-20000}"

"$BIN" engine --cluster0 "${URIS[0]}" --cluster1 "${URIS[1]}" --port "$PORT" \
    --logPath "$DIR/logs" --verbosity INFO &
ENGINE_PID=$!
wait_for 60 "the engine to answer on port $PORT" api progress
wait_for 60 "state IDLE" state_is IDLE
echo "POST /start: $(api start -XPOST --data '{"source":"cluster0","destination":"cluster1"}')"
"$PY" - "${URIS[0]}" <<'PY'
import sys
from pymongo import MongoClient
db = MongoClient(sys.argv[1]).shop
db.customers.update_many({"_id": {"$lt": 100}}, {"$set": {"vip": True}})
db.orders.delete_many({"customer": 1})
db.customers.insert_one({"_id": -1, "name": "written during the sync", "email": "live@example.com"})
print("live writes applied on the source during the sync")
PY
wait_for "${COPY_TIMEOUT:-900}" "canCommit" can_commit
echo "progress: $(api progress)"
echo "POST /commit: $(api commit -XPOST --data '{}')"
wait_for 300 "state COMMITTED" state_is COMMITTED
echo "progress: $(api progress)"
"$BIN" verify --cluster0 "${URIS[0]}" --cluster1 "${URIS[1]}"
