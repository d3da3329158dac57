#!/usr/bin/env bash
# Cold reads beside warm ones (issue 20, figure a): what clients of the newest date see while
# other clients make the server read older dates from its history store.
#
#   bench/cold.sh [--peer BIN] [--cold 0,1,4,8] [--secs 8] [--runs 3] [--days 12]
#                 [--apps 500 --modules 5000 --findings 100000] [--cold-gzip] [--control]
#
# The history: --days dates of --apps applications, every application changed every day (100 %
# churn, `history-bench day`), so no two dates share a piece and every older date is read from
# the store when first asked for. Each server (this build, and the --peer binary if given, both
# with their defaults: 2 API workers on this machine) imports the same files once. Then, --runs
# times, the servers interleaved (A B A B ...), each is restarted (nothing of the older dates in
# memory) and, for each count C of --cold:
#   - wrk (1 thread, 8 kept-alive connections) asks for the newest date's Limit=200 page, gzip,
#     for --secs seconds: its p99 and requests per second;
#   - meanwhile C clients of `loadgen pages` (bench/loadgen.rs), one kept-alive connection each,
#     walk every older date's Limit=200 pages (offsets 0, 200, …), identity-coded (each page
#     read and decompressed, about 5 MiB to send) or, with --cold-gzip, gzip (the compressed
#     pieces sent as read, about 290 KB), in a closed loop (with --control they walk the newest
#     date's pages instead, all in memory: what moving the same pages costs without a store read): more dates than the server keeps ready (cached_dates 4), so most requests read the
#     store and decompress; their own rate and p99.
# It prints the medians of the runs per server and C, and the ratios the issue sets targets on:
# the newest page's p99 with C cold clients over its p99 alone (<= 2), and its rate with them
# over alone (>= 0.5). Loopback only; every load is bounded by --secs. Needs wrk (Debian's
# package; installed when missing, as root) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

CODE=BENCH-ACTIVATION-CODE
IMPORT_TIMEOUT_SECS=600

peer=
cold_list=0,1,4,8
secs=8
runs=3
days=12
shape=(--apps 500 --modules 5000 --findings 100000)
cold_coding=()
control=
while [ $# -gt 0 ]; do
    case "$1" in
        --peer) peer=$(realpath "${2:?--peer needs a binary}"); shift 2 ;;
        --cold) cold_list=${2:?--cold needs a list, e.g. 0,4}; shift 2 ;;
        --secs) secs=${2:?--secs needs a number}; shift 2 ;;
        --runs) runs=${2:?--runs needs a number}; shift 2 ;;
        --days) days=${2:?--days needs a number}; shift 2 ;;
        --apps) shape[1]=${2:?}; shift 2 ;;
        --modules) shape[3]=${2:?}; shift 2 ;;
        --findings) shape[5]=${2:?}; shift 2 ;;
        --cold-gzip) cold_coding=(--gzip); shift ;;
        --control) control=1; shift ;;
        -h | --help) sed -n '2,5p' "$0" | sed 's/^# *//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
IFS=, read -ra cold_each <<< "$cold_list"
if [ "$days" -lt 2 ]; then echo "--days: at least 2 (one newest, the rest older)" >&2; exit 2; fi

if ! command -v wrk >/dev/null; then
    echo "==> installing wrk" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

# shellcheck source=bench/server.sh
source bench/server.sh
bench_workdir /var/tmp/aims-cold.XXXXXX

echo "==> building (release)" >&2
cargo build --release --quiet --bin aims-api --example history-bench --example loadgen
ours=$PWD/target/release/aims-api
history=$PWD/target/release/examples/history-bench
loadgen=$PWD/target/release/examples/loadgen
servers=(ours)
declare -A bin_of=([ours]=$ours)
if [ -n "$peer" ]; then servers+=(peer); bin_of[peer]=$peer; fi

echo "==> generating $days dates (${shape[*]}, 100 % churn)" >&2
mkdir -p "$work/days"
dates=()
for ((d = 0; d < days; d++)); do
    line=$("$history" day "$work/days/$d.json" --day "$d" --churn 100 "${shape[@]}")
    read -r _ _ date _ <<< "$line"
    dates+=("${date%:}")
done
older=$(IFS=,; echo "${dates[*]:0:$((days - 1))}")
if [ -n "$control" ]; then older=${dates[$((days - 1))]}; fi
# Every Limit=200 page of a date: 0, 200, … below the number of applications.
offsets=$(seq -s, 0 200 $((shape[1] - 1)))

declare -A key_of
for name in "${servers[@]}"; do
    echo "==> $name: importing" >&2
    bin=${bin_of[$name]}
    mkdir -p "$work/$name"
    bench_config "$work/$name/state"
    cp "$work/config.ron" "$work/$name/config.ron"
    start_server
    key_of[$name]=$(curl -s -X POST "http://$admin/key" | sed -nE 's/.*"api_key":"([^"]+)".*/\1/p')
    if [ -z "${key_of[$name]}" ]; then echo "$name: POST /key gave no key" >&2; exit 1; fi
    for ((d = 0; d < days; d++)); do
        code=$(curl -s --max-time "$IMPORT_TIMEOUT_SECS" -o "$work/import.json" -w '%{http_code}' \
            -X PUT --data-binary "@$work/days/$d.json" "http://$admin/snapshots/${dates[$d]}")
        if [ "$code" != 201 ]; then
            echo "$name: import of ${dates[$d]} answered $code: $(head -c 300 "$work/import.json")" >&2
            exit 1
        fi
    done
    stop_server
done

# One measurement: server $1 restarted, $2 cold clients beside the newest page's wrk. Appends
# "name cold newest_p99_ms newest_rps cold_p99_ms cold_rps cold_failed" to results.txt.
measure() {
    local name=$1 cold=$2
    bin=${bin_of[$name]}
    cp "$work/$name/config.ron" "$work/config.ron"
    start_server
    local key=${key_of[$name]} cert="$work/$name/state/tls/cert.pem"
    local page="/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Application?Limit=200"
    local cold_pid=
    if [ "$cold" -gt 0 ]; then
        "$loadgen" pages "$api" --cacert "$cert" --threads "$cold" --secs "$secs" \
            --key "$key" --code "$CODE" --dates "$older" \
            --offsets "$offsets" "${cold_coding[@]}" \
            --path "$page&Date={date}&Offset={offset}" > "$work/cold.json" &
        cold_pid=$!
    fi
    wrk -t1 -c8 -d"${secs}s" --latency -H "x-api-key: $key" -H "x-activation-code: $CODE" \
        -H "Accept-Encoding: gzip" "https://$api$page" > "$work/wrk.txt"
    local cold_p99=- cold_rps=- cold_failed=-
    if [ -n "$cold_pid" ]; then
        wait "$cold_pid"
        cold_p99=$(sed -nE 's/.*"p99_ms":([0-9.]+).*/\1/p' "$work/cold.json")
        cold_rps=$(sed -nE 's/.*"rps":([0-9.]+).*/\1/p' "$work/cold.json")
        cold_failed=$(sed -nE 's/.*"failed":([0-9]+).*/\1/p' "$work/cold.json")
    fi
    stop_server
    local p99 rps non2xx
    p99=$(awk '$1 == "99%" { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
        m = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1; printf "%.2f", v * m }' "$work/wrk.txt")
    rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$work/wrk.txt")
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt")
    if [ -n "$non2xx" ]; then echo "$name: wrk saw $non2xx answers other than 2xx" >&2; exit 1; fi
    if [ "$cold_failed" != - ] && [ "$cold_failed" != 0 ]; then
        echo "$name: $cold_failed cold requests failed" >&2
        exit 1
    fi
    echo "$name $cold $p99 $rps $cold_p99 $cold_rps $cold_failed" >> "$work/results.txt"
    echo "    run $run $name, $cold cold: newest p99 $p99 ms, $rps req/s; cold p99 $cold_p99 ms, \
$cold_rps req/s" >&2
}

: > "$work/results.txt"
for ((run = 1; run <= runs; run++)); do
    # Which server goes first alternates run by run: with a fixed order the second server did
    # better at 4 cold clients in all six pairs of two sessions, whichever binary it was, and
    # that would have gone into the comparison. Use an even --runs for a balanced order.
    order=("${servers[@]}")
    if ((run % 2 == 0 && ${#servers[@]} == 2)); then order=("${servers[1]}" "${servers[0]}"); fi
    for cold in "${cold_each[@]}"; do
        for name in "${order[@]}"; do
            measure "$name" "$cold"
        done
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print v[int((NR + 1) / 2)] }'; }
field() { awk -v n="$1" -v c="$2" -v f="$3" '$1 == n && $2 == c { print $f }' "$work/results.txt"; }

echo
printf 'newest date Limit=200 gzip, wrk 1x8, medians of %s runs of %s s; %s dates of %s apps, 100 %% churn; cold clients %s\n' \
    "$runs" "$secs" "$days" "${shape[1]}" "$([ ${#cold_coding[@]} -gt 0 ] && echo gzip || echo identity)"
printf '%-6s %5s | %10s %10s | %12s %12s | %10s %10s\n' server cold "p99 ms" "req/s" \
    "p99 / alone" "rate / alone" "cold p99" "cold req/s"
for name in "${servers[@]}"; do
    alone_p99=$(field "$name" 0 3 | median)
    alone_rps=$(field "$name" 0 4 | median)
    for cold in "${cold_each[@]}"; do
        p99=$(field "$name" "$cold" 3 | median)
        rps=$(field "$name" "$cold" 4 | median)
        cp99=$(field "$name" "$cold" 5 | median)
        crps=$(field "$name" "$cold" 6 | median)
        ratio_p99=$(awk -v a="$p99" -v b="$alone_p99" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        ratio_rps=$(awk -v a="$rps" -v b="$alone_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        printf '%-6s %5s | %10s %10s | %12s %12s | %10s %10s\n' "$name" "$cold" "$p99" "$rps" \
            "$ratio_p99" "$ratio_rps" "$cp99" "$crps"
    done
done
echo "targets (issue 20): p99 / alone <= 2 and rate / alone >= 0.5 with 4 cold clients"
