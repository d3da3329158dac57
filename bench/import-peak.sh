#!/usr/bin/env bash
# The memory an import needs: the server's peak RSS (VmHWM) across two imports, for snapshots
# of 500, 1,000 and 2,000 applications (ten modules and 200 findings per application, as the
# issue's benchmark), so that the figure shows how the peak grows with the file.
#
#   bench/import-peak.sh [PEER_BINARY]
#   DAYS=8 ARENAS=default bench/import-peak.sh [PEER_BINARY]
#
# PEER_BINARY, when given, is measured in the same run on the same files (for instance the
# previous release's `aims-api`), and the ratio printed. The first import goes into an empty
# store; each next one, of the same file with one count changed, runs while the previous date
# is the newest held whole, as every daily import does. Columns: the peak after the first
# import, after the second, and after the last of DAYS (default 2). Each server runs with
# MALLOC_ARENA_MAX=1, as the packaged unit sets, so the peak is the import's and not the
# allocator's arenas; ARENAS=default runs them with glibc's default instead. Everything runs on
# loopback in a temporary folder, removed on exit. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."

peer=${1:-}
days=${DAYS:-2}
arenas=(env MALLOC_ARENA_MAX=1)
if [ "${ARENAS:-1}" = default ]; then arenas=(env -u MALLOC_ARENA_MAX); fi
# shellcheck source=bench/server.sh
source bench/server.sh
bench_workdir /tmp/aims-import-peak.XXXXXX

echo "==> building (release)"
cargo build --release --quiet --bin aims-api --example snapshot-bench
bin=target/release/aims-api
bench=target/release/examples/snapshot-bench

# Prints "first second last" peak RSS in MiB for binary $1 importing the dated files of $work/days.
measure() {
    local binary=$1
    rm -rf "$work/state"
    bench_config "$work/state"
    start_server "${arenas[@]}" "$binary"
    local peaks=()
    for file in "$work"/days/*.json; do
        local status
        status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$file" \
            "http://$admin/snapshots/$(basename "$file" .json)")
        if [ "$status" != 201 ]; then echo "import of $file answered $status" >&2; exit 1; fi
        peaks+=("$(printf "%.0f" "$(server_mib VmHWM)")")
    done
    stop_server
    echo "${peaks[0]} ${peaks[1]} ${peaks[-1]}"
}

echo "peak RSS of aims-api serve in MiB, $days daily imports, ${ARENAS:-MALLOC_ARENA_MAX=1} arenas"
printf '%6s %8s | %6s %6s %6s' apps "JSON MiB" 1st 2nd "day $days"
if [ -n "$peer" ]; then printf ' | %6s %6s %6s | %5s %5s %5s' 1st 2nd "day $days" ratio ratio ratio; fi
printf '\n'
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", x / y }'; }
for apps in 500 1000 2000; do
    rm -rf "$work/days"; mkdir "$work/days"
    first="$work/days/2024-05-01.json"
    "$bench" generate "$first" --apps "$apps" --modules $((apps * 10)) --findings $((apps * 200)) > /dev/null
    # Each next day changes one count: every application but one is the same as the day before.
    for day in $(seq 2 "$days"); do
        sed "0,/\"Count\": 1,/s//\"Count\": $day,/" "$first" > "$work/days/2024-05-$(printf %02d "$day").json"
    done
    mib=$(awk -v b="$(stat -c %s "$first")" 'BEGIN { printf "%.1f", b / 1048576 }')
    # Through a file, not a pipe: measure runs in this shell, so a failure stops the script and
    # the exit trap stops its server.
    measure "$bin" > "$work/peaks"
    read -r a b c < "$work/peaks"
    printf '%6s %8s | %6s %6s %6s' "$apps" "$mib" "$a" "$b" "$c"
    if [ -n "$peer" ]; then
        measure "$peer" > "$work/peaks"
        read -r pa pb pc < "$work/peaks"
        printf ' | %6s %6s %6s | %5s %5s %5s' "$pa" "$pb" "$pc" \
            "$(ratio "$a" "$pa")" "$(ratio "$b" "$pb")" "$(ratio "$c" "$pc")"
    fi
    printf '\n'
done
