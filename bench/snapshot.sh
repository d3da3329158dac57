#!/usr/bin/env bash
# Snapshot benchmark: the issue's target is a snapshot of 2,000 applications, 20,000 modules and
# 400,000 findings that loads in under 2 s and answers a Limit=200 page in under 5 ms.
#
#   bench/snapshot.sh [snapshot-bench options, e.g. --apps 2000 --modules 20000 --findings 400000]
#
# 1. builds the release binary and the snapshot-bench example;
# 2. generates the snapshot in a temporary folder (never in the work tree);
# 3. in-process: times the load (read, parse, check, render) and Limit=200 pages through
#    api::answer, with that process's peak RSS;
# 4. end to end: starts the real `aims-api serve` on free loopback ports, imports the file on
#    the admin port with curl, fetches pages over HTTPS with curl (one kept-alive connection),
#    restarts it to time the load at start, and reports the server's peak RSS.
# Everything it starts is stopped and its folder removed on exit. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/aims-bench.XXXXXX)
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
file="$work/2024-05-14.json"

echo "==> generating"
"$bench" generate "$file" "$@"

echo "==> in-process (load, then pages through api::answer)"
"$bench" load "$file" "$@"

# A configuration with ports chosen by the kernel; the server logs which.
cat > "$work/config.ron" <<EOF
(
    activation_code: "BENCH-ACTIVATION-CODE",
    state_dir: "$work/state",
    log_level: "info",
    api: (listen: "127.0.0.1:0", workers: 2),
    admin: (listen: "127.0.0.1:0", max_body_bytes: 1073741824),
)
EOF

start_server() {
    : > "$work/server.log"
    "$bin" serve --config "$work/config.ron" 2> "$work/server.log" &
    server_pid=$!
    for _ in $(seq 1 600); do
        if grep -q "api listening on" "$work/server.log"; then break; fi
        if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
        sleep 0.05
    done
    api=$(sed -nE 's/.*api listening on https:\/\/([^ ]+).*/\1/p' "$work/server.log")
    admin=$(sed -nE 's/.*admin listening on http:\/\/([^ ]+).*/\1/p' "$work/server.log")
}

stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

peak_rss_mib() {
    awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"
}

echo "==> end to end through aims-api serve"
start_server
echo "server started with no snapshot: peak RSS $(peak_rss_mib) MiB"
key=$(curl -s -X POST "http://$admin/key" | sed -E 's/.*"api_key":"([^"]+)".*/\1/')
import_time=$(curl -s -o "$work/import.json" -w '%{time_total}' -X PUT \
    --data-binary "@$file" "http://$admin/snapshots/2024-05-14")
echo "import on the admin port (upload, fsync, load, rename, swap): ${import_time} s; \
answer: $(head -c 300 "$work/import.json")"
echo "server peak RSS after the import: $(peak_rss_mib) MiB"

urls=()
for offset in $(seq 0 200 1800); do
    urls+=("https://$api/AIMentorStudioAPI/rest/v1/TechnicalDebt_Application?Limit=200&Offset=$offset")
done
curl -s --cacert "$work/state/tls/cert.pem" -H "x-api-key: $key" \
    -H "x-activation-code: BENCH-ACTIVATION-CODE" -o /dev/null "${urls[0]}"
for round in 1 2 3; do
    curl -s --cacert "$work/state/tls/cert.pem" -H "x-api-key: $key" \
        -H "x-activation-code: BENCH-ACTIVATION-CODE" \
        -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}\n' \
        $(for u in "${urls[@]}"; do printf -- '-o /dev/null %s ' "$u"; done)
done > "$work/pages.txt"
if awk '$1 != 200 { bad = 1 } END { exit !bad }' "$work/pages.txt"; then
    echo "non-200 answers:"; cat "$work/pages.txt"; exit 1
fi
# The first request of each curl run pays for the TLS handshake; the others reuse the connection.
awk 'NR % 10 != 1 { printf "%.3f\n", $4 * 1000 }' "$work/pages.txt" | sort -n > "$work/total.ms"
awk 'NR % 10 != 1 { printf "%.3f\n", $3 * 1000 }' "$work/pages.txt" | sort -n > "$work/ttfb.ms"
median() { awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }' "$1"; }
largest=$(awk '$2 > m { m = $2 } END { printf "%.1f", m / 1048576 }' "$work/pages.txt")
echo "curl, Limit=200 pages on a kept-alive HTTPS connection ($(wc -l < "$work/total.ms") \
requests, bodies up to $largest MiB): time to first byte median $(median "$work/ttfb.ms") ms, \
total median $(median "$work/total.ms") ms, max $(tail -n 1 "$work/total.ms") ms"
level_time=$(curl -s --cacert "$work/state/tls/cert.pem" -H "x-api-key: $key" \
    -H "x-activation-code: BENCH-ACTIVATION-CODE" -o /dev/null -w '%{time_total}' \
    "https://$api/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level")
echo "curl, TechnicalDebt_Level on a new connection (handshake included): ${level_time} s"
echo "server peak RSS after serving: $(peak_rss_mib) MiB"
stop_server

echo "==> restart: the snapshot is loaded at start"
start_server
grep -E "snapshot 2024-05-14|snapshots:" "$work/server.log" | sed -E 's/^[^ ]+ +INFO +//'
echo "server peak RSS after loading at start: $(peak_rss_mib) MiB"
stop_server
