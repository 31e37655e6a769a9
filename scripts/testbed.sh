#!/usr/bin/env bash
# Local test bed for clustersync: throwaway SecantusDB servers (MongoDB-wire
# compatible) standing in for mongod.
#
#   scripts/testbed.sh install          create .venv and install SecantusDB
#   scripts/testbed.sh start N [DIR]    start N servers (storage under DIR, default .testbed/)
#   scripts/testbed.sh stop [DIR]       stop the servers started in DIR
#   scripts/testbed.sh uris [DIR]       print URIs of the running servers in DIR
#
# `start` prints one mongodb://127.0.0.1:PORT/?directConnection=true URI per line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
SECANTUSD="${SECANTUSD:-$VENV/bin/secantusd-py}"
PY="$VENV/bin/python"
SECANTUS_VERSION="0.7.0b3"

die() { echo "testbed: $*" >&2; exit 1; }
log() { echo "testbed: $*" >&2; }

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

abs_dir() {
    local d="${1:-$ROOT/.testbed}"
    case "$d" in
        /*) ;;
        *) d="$PWD/$d" ;;
    esac
    echo "$d"
}

uri_for() { echo "mongodb://127.0.0.1:$1/?directConnection=true"; }

pid_alive() { kill -0 "$1" 2>/dev/null; }

cmd_install() {
    if [[ ! -x "$PY" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [[ ! -x "$VENV/bin/secantusd-py" ]]; then
        log "installing SecantusDB==$SECANTUS_VERSION"
        "$PY" -m pip install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION"
    fi
    if ! "$PY" -c 'import pymongo' 2>/dev/null; then
        "$PY" -m pip install --quiet --disable-pip-version-check pymongo
    fi
    # What the install-path tests check manifests, charts and the Argo CD health script with.
    if ! "$PY" -c 'import kubernetes_validate, jsonschema, yaml, lupa' 2>/dev/null; then
        log "installing manifest checkers (kubernetes-validate, jsonschema, PyYAML, lupa)"
        "$PY" -m pip install --quiet --disable-pip-version-check \
            "kubernetes-validate==1.37.0" "jsonschema==4.26.0" "PyYAML==6.0.4" "lupa==2.8"
    fi
    log "ok: $VENV/bin/secantusd-py"
}

# Ask the kernel for N distinct free loopback ports.
free_ports() {
    local n="$1"
    python3 - "$n" <<'PY'
import socket, sys
n = int(sys.argv[1])
socks, ports = [], []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    ports.append(s.getsockname()[1])
for s in socks:
    s.close()
print("\n".join(map(str, ports)))
PY
}

# Wait until the server on $1 answers a ping (via pymongo from the venv).
wait_ping() {
    local port="$1" pid="$2" logf="$3" deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        if ! pid_alive "$pid"; then
            log "server on port $port (pid $pid) exited; log tail:"
            tail -n 20 "$logf" >&2 || true
            return 1
        fi
        if "$PY" - "$port" <<'PY' 2>/dev/null; then
import sys
from pymongo import MongoClient
c = MongoClient("127.0.0.1", int(sys.argv[1]), directConnection=True,
                serverSelectionTimeoutMS=500, connectTimeoutMS=500)
c.admin.command("ping")
PY
            return 0
        fi
        sleep 0.2
    done
    log "server on port $port did not answer ping within 30s; log tail:"
    tail -n 20 "$logf" >&2 || true
    return 1
}

cmd_start() {
    local n="${1:-}"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "start: N must be a positive integer"
    local dir
    dir="$(abs_dir "${2:-}")"
    [[ -x "$SECANTUSD" ]] || die "$SECANTUSD not found; run: scripts/testbed.sh install"
    mkdir -p "$dir"
    if [[ -s "$dir/pids" ]]; then
        local pid port _rest alive=0
        while read -r pid port _rest; do
            pid_alive "$pid" && alive=1
        done <"$dir/pids"
        ((alive)) && die "servers already running in $dir (run: $0 stop $dir)"
        rm -f "$dir/pids"
    fi
    local ports=() started=() i=0
    mapfile -t ports < <(free_ports "$n")
    for port in "${ports[@]}"; do
        local sdir="$dir/server$i"
        mkdir -p "$sdir/data"
        # setsid: detach from our process group so ^C on the caller does not kill it.
        setsid "$SECANTUSD" --host 127.0.0.1 --port "$port" --storage-path "$sdir/data" \
            >"$sdir/server.log" 2>&1 </dev/null &
        local pid=$!
        echo "$pid $port $sdir" >>"$dir/pids"
        started+=("$pid:$port:$sdir")
        i=$((i + 1))
    done
    local ok=1
    for s in "${started[@]}"; do
        IFS=: read -r pid port sdir <<<"$s"
        wait_ping "$port" "$pid" "$sdir/server.log" || ok=0
    done
    if ((!ok)); then
        cmd_stop "$dir" >/dev/null 2>&1 || true
        die "start failed"
    fi
    for s in "${started[@]}"; do
        IFS=: read -r _ port _ <<<"$s"
        uri_for "$port"
    done
}

cmd_stop() {
    local dir
    dir="$(abs_dir "${1:-}")"
    [[ -f "$dir/pids" ]] || { log "no pid file in $dir"; return 0; }
    local pids=() pid port _rest
    while read -r pid port _rest; do
        [[ -n "$pid" ]] && pids+=("$pid")
    done <"$dir/pids"
    for pid in "${pids[@]}"; do
        pid_alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 10))
    for pid in "${pids[@]}"; do
        while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if pid_alive "$pid"; then
            log "pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$dir/pids"
    log "stopped ${#pids[@]} server(s)"
}

cmd_uris() {
    local dir
    dir="$(abs_dir "${1:-}")"
    [[ -f "$dir/pids" ]] || return 0
    local pid port _rest
    while read -r pid port _rest; do
        pid_alive "$pid" && uri_for "$port"
    done <"$dir/pids"
}

sub="${1:-}"
shift || true
case "$sub" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    uris) cmd_uris "$@" ;;
    -h | --help | help | "") usage ;;
    *) die "unknown subcommand '$sub' (install|start|stop|uris)" ;;
esac
