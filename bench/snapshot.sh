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

# shellcheck source=bench/server.sh
source bench/server.sh
bench_workdir /tmp/aims-bench.XXXXXX

echo "==> building (release)"
cargo build --release --quiet --bin aims-api --example snapshot-bench
bin=target/release/aims-api
bench=target/release/examples/snapshot-bench
file="$work/2024-05-14.json"

echo "==> generating"
"$bench" generate "$file" "$@"

echo "==> in-process (load, then pages through api::answer)"
"$bench" load "$file" "$@"

bench_config "$work/state"
peak_rss_mib() { server_mib VmHWM; }

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
# Up to ten pages of 200, as many as the snapshot has (an offset past the end is a 400).
apps=$(grep -o '"applications":[0-9]*' "$work/import.json" | head -n 1 | cut -d: -f2)
for offset in $(seq 0 200 $(((apps < 2000 ? apps : 2000) - 1))); do
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
per_run=${#urls[@]}
awk -v n="$per_run" 'NR % n != 1 % n { printf "%.3f\n", $4 * 1000 }' "$work/pages.txt" | sort -n > "$work/total.ms"
awk -v n="$per_run" 'NR % n != 1 % n { printf "%.3f\n", $3 * 1000 }' "$work/pages.txt" | sort -n > "$work/ttfb.ms"
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
