#!/usr/bin/env bash
# The memory an import needs: the server's peak RSS (VmHWM) across two imports, for snapshots
# of 500, 1,000 and 2,000 applications (ten modules and 200 findings per application, as the
# issue's benchmark), so that the figure shows how the peak grows with the file.
#
#   bench/import-peak.sh [PEER_BINARY]
#
# PEER_BINARY, when given, is measured in the same run on the same files (for instance the
# previous release's `aims-api`), and the ratio printed. Each server runs with
# MALLOC_ARENA_MAX=1, as the packaged unit sets, so the peak is the import's and not the
# allocator's arenas. The first import goes into an empty store; the second, of a slightly
# different file, runs while the first is the newest date held whole, as every daily import
# does. Everything runs on loopback in a temporary folder, removed on exit. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."

peer=${1:-}
work=$(mktemp -d /tmp/aims-import-peak.XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building (release)"
cargo build --release --quiet --bin aims-api --example snapshot-bench
bin=target/release/aims-api
bench=target/release/examples/snapshot-bench

# Prints "first second" peak RSS in MiB for binary $1 and files $2 and $3.
measure() {
    local binary=$1 first=$2 second=$3
    rm -rf "$work/state"
    cat > "$work/config.ron" <<EOF
(
    activation_code: "BENCH-ACTIVATION-CODE",
    state_dir: "$work/state",
    log_level: "info",
    api: (listen: "127.0.0.1:0", workers: 2),
    admin: (listen: "127.0.0.1:0", max_body_bytes: 1073741824),
)
EOF
    : > "$work/server.log"
    MALLOC_ARENA_MAX=1 "$binary" serve --config "$work/config.ron" 2> "$work/server.log" &
    server_pid=$!
    local admin=
    for _ in $(seq 1 200); do
        admin=$(sed -nE 's/.*admin listening on http:\/\/([^ ]+).*/\1/p' "$work/server.log")
        if [ -n "$admin" ]; then break; fi
        if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
        sleep 0.05
    done
    local peaks=()
    for file in "$first" "$second"; do
        local status
        status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$file" \
            "http://$admin/snapshots/$(basename "$file" .json)")
        if [ "$status" != 201 ]; then echo "import of $file answered $status" >&2; exit 1; fi
        peaks+=("$(awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$server_pid/status")")
    done
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
    echo "${peaks[0]} ${peaks[1]}"
}

printf '%6s %8s | %12s %12s' apps "JSON MiB" "1st import" "2nd import"
if [ -n "$peer" ]; then printf ' | %12s %12s | %6s %6s' "peer 1st" "peer 2nd" ratio ratio; fi
printf '\n'
for apps in 500 1000 2000; do
    first="$work/2024-05-14.json"
    second="$work/2024-05-15.json"
    "$bench" generate "$first" --apps "$apps" --modules $((apps * 10)) --findings $((apps * 200)) > /dev/null
    # One count changed: a new date whose every application but one is the same.
    sed '0,/"Count": 1,/s//"Count": 2,/' "$first" > "$second"
    mib=$(awk -v b="$(stat -c %s "$first")" 'BEGIN { printf "%.1f", b / 1048576 }')
    read -r a b < <(measure "$bin" "$first" "$second")
    printf '%6s %8s | %9s MiB %9s MiB' "$apps" "$mib" "$a" "$b"
    if [ -n "$peer" ]; then
        read -r pa pb < <(measure "$peer" "$first" "$second")
        printf ' | %9s MiB %9s MiB | %6.2f %6.2f' "$pa" "$pb" \
            "$(awk -v x="$a" -v y="$pa" 'BEGIN { print x / y }')" \
            "$(awk -v x="$b" -v y="$pb" 'BEGIN { print x / y }')"
    fi
    printf '\n'
done
