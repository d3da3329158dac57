#!/usr/bin/env bash
# The admin port under strangers (issue 19), this build beside an older one in the same run:
#
#   flock /tmp/aims-bench.lock bench/admin-port.sh [OLD_REV]     (as root; OLD_REV: a01d077)
#
# For each build, the server runs as uid 65533 (as the packaged service runs as its own user),
# with two API workers, and root measures GET /health on the admin port, a new connection each
# (as curl does):
#   clean        nothing else going on
#   idle 3000    with 3,000 idle TCP connections open on the API port (6,000 entries in the
#                host's socket table), from 12 loopback addresses
#   + strangers  and, at the same time, 8 loops of uid 65534 (not allowed) asking /health, and
#                8 uploads of uid 65533 (the service's own, allowed) that announce 1,000 bytes
#                and send 16, each reopened as soon as it is cut
# and uid 65534 opens refused connections one after another, on a clean table and with the
# 3,000 idle connections open (the cost per refused connection, and how it grows with the
# table). Every loop is bounded by a count and a time. Figures are in ms (p50 p99 max) and
# "timeouts" counts /health requests not answered 200 within 8 s. Needs root, setpriv, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/admin-port.sh runs clients as other uids: run it as root" >&2; exit 1; }

old_rev=${1:-a01d077}
service_uid=65533
stranger_uid=65534
client=$PWD/bench/admin_port.py
# The system's python3: another uid may not reach root's own (pyenv, say).
py=/usr/bin/python3
# shellcheck source=bench/server.sh
source bench/server.sh
bench_workdir /tmp/aims-admin-bench.XXXXXX
chmod 755 "$work"

echo "==> building this tree and $old_rev (release)"
cargo build --release --quiet --bin aims-api
new_bin=$PWD/target/release/aims-api
# A plain copy of the old tree (not a worktree: nothing is registered in the repository), kept
# between runs so its build is reused.
old_tree=/tmp/aims-bench-old-$old_rev
if [ ! -f "$old_tree/Cargo.toml" ]; then
    mkdir -p "$old_tree"
    git archive "$old_rev" | tar -x -C "$old_tree"
fi
(cd "$old_tree" && cargo build --release --quiet --bin aims-api)
old_bin=$old_tree/target/release/aims-api

as() { local uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }

config() {
    rm -rf "$work/state"
    mkdir -m 700 "$work/state"
    chown "$service_uid:$service_uid" "$work/state"
    # Idle connections stay in their handshake stage: give them an hour, not 10 s.
    cat > "$work/config.ron" <<EOF
(
    activation_code: "BENCH-ACTIVATION-CODE",
    state_dir: "$work/state",
    log_level: "info",
    api: (listen: "127.0.0.1:0", workers: 2, handshake_timeout_secs: 3600),
    admin: (listen: "127.0.0.1:0"),
)
EOF
    chmod 644 "$work/config.ron"
}

measure() {
    local name=$1 bin=$2
    config
    : > "$work/server.log"
    start_server setpriv --reuid="$service_uid" --regid="$service_uid" --clear-groups "$bin"
    local health_clean refused_clean idle_fifo idle_pid health_idle health_busy refused_busy
    health_clean=$("$py" "$client" health "$admin" 1000 60)
    refused_clean=$(as "$stranger_uid" "$py" "$client" refused "$admin" 500 60)

    # 3,000 idle API connections, held until their stdin closes.
    idle_fifo=$work/idle.fifo
    mkfifo "$idle_fifo"
    "$py" "$client" idle "$api" 3000 < "$idle_fifo" > "$work/idle.out" &
    idle_pid=$!
    exec 9> "$idle_fifo"
    until grep -q ready "$work/idle.out" 2>/dev/null; do sleep 0.1; done
    health_idle=$("$py" "$client" health "$admin" 1000 60)

    local pids=()
    for _ in 1 2 3 4 5 6 7 8; do
        as "$stranger_uid" "$py" "$client" flood "$admin" 40 > /dev/null &
        pids+=($!)
    done
    as "$service_uid" "$py" "$client" stall "$admin" 8 40 > "$work/stall.out" &
    pids+=($!)
    sleep 2
    health_busy=$("$py" "$client" health "$admin" 500 30)
    wait "${pids[@]}" || true
    refused_busy=$(as "$stranger_uid" "$py" "$client" refused "$admin" 2500 90)
    exec 9>&-
    wait "$idle_pid" || true
    rm -f "$idle_fifo"
    stop_server
    printf '%-4s %-22s %s\n' "$name" "health clean" "$health_clean"
    printf '%-4s %-22s %s\n' "$name" "health idle 3000" "$health_idle"
    printf '%-4s %-22s %s\n' "$name" "health + strangers" "$health_busy"
    printf '%-4s %-22s %s\n' "$name" "stalled uploads ended" "$(tail -n 1 "$work/stall.out")"
    printf '%-4s %-22s %s\n' "$name" "refused 500, clean" "$refused_clean"
    printf '%-4s %-22s %s\n' "$name" "refused 2500, idle 3000" "$refused_busy"
}

echo "==> root's GET /health: p50 p99 max (ms), not-200s, requests"
echo "==> refused connections of uid $stranger_uid: count, seconds, ms each, statuses"
measure old "$old_bin"
measure new "$new_bin"
