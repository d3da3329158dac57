# Sourced by the bench scripts that run the real `aims-api serve`: a temporary folder removed
# on exit, and one server at a time on loopback ports the kernel chooses, started and stopped
# with deadlines. Not a script of its own.
#
#   bench_workdir TEMPLATE   makes the folder ($work, from a mktemp TEMPLATE) and the traps
#   bench_config STATE_DIR   writes $work/config.ron: state in STATE_DIR, ports chosen by the
#                            kernel, bodies up to 1 GiB
#   start_server [CMD...]    serves $work/config.ron with CMD (default "$bin"; a prefix such as
#                            `env VAR=…` is allowed) and waits for both ports; sets $server_pid,
#                            $api, $admin and $start_secs (launch to both ports listening)
#   stop_server              SIGTERM and wait; SIGKILL, said on stderr, past the deadline
#   server_mib FIELD         a memory field of the server's /proc status (VmRSS, VmHWM), in MiB

BENCH_START_TIMEOUT_SECS=${BENCH_START_TIMEOUT_SECS:-600}
BENCH_STOP_TIMEOUT_SECS=${BENCH_STOP_TIMEOUT_SECS:-120}
server_pid=

bench_workdir() {
    work=$(mktemp -d "$1")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    if [ -n "$server_pid" ]; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}

bench_config() {
    cat > "$work/config.ron" <<EOF
(
    activation_code: "BENCH-ACTIVATION-CODE",
    state_dir: "$1",
    log_level: "info",
    api: (listen: "127.0.0.1:0", workers: 2),
    admin: (listen: "127.0.0.1:0", max_body_bytes: 1073741824),
)
EOF
}

start_server() {
    local command=("$@")
    if [ ${#command[@]} -eq 0 ]; then command=("$bin"); fi
    : > "$work/server.log"
    local started=$EPOCHREALTIME
    "${command[@]}" serve --config "$work/config.ron" 2>> "$work/server.log" &
    server_pid=$!
    local deadline=$((SECONDS + BENCH_START_TIMEOUT_SECS))
    until grep -q "api listening on" "$work/server.log" \
        && grep -q "admin listening on" "$work/server.log"; do
        if ! kill -0 "$server_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "the server did not start within ${BENCH_START_TIMEOUT_SECS} s; its log:" >&2
            tail -n 20 "$work/server.log" >&2
            exit 1
        fi
        sleep 0.01
    done
    start_secs=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    api=$(sed -nE 's/.*api listening on https:\/\/([^ ]+).*/\1/p' "$work/server.log")
    admin=$(sed -nE 's/.*admin listening on http:\/\/([^ ]+).*/\1/p' "$work/server.log")
}

stop_server() {
    kill -TERM "$server_pid"
    local deadline=$((SECONDS + BENCH_STOP_TIMEOUT_SECS))
    # A child that exited stays a zombie (state Z) until waited for.
    while [ "$(awk '{ print $3 }' "/proc/$server_pid/stat" 2>/dev/null || echo Z)" != Z ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "the server did not stop within ${BENCH_STOP_TIMEOUT_SECS} s of SIGTERM: killed" >&2
            kill -KILL "$server_pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

server_mib() {
    awk -v field="$1:" '$1 == field { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"
}
