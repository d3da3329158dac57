#!/usr/bin/env bash
# History benchmark (issue 12): what a history of daily snapshots costs the server, for
# 1, 30 and 365 days at 0 %, 1 % and 100 % of the 2,000 applications changing each day.
#
#   bench/history.sh [--days 1,30,365] [--churn 0,1,100] [--dates 30]
#                    [--apps N --modules N --findings N] [--peer PEER_HISTORY_BENCH]
#
# For each (days, churn) scenario, in a fresh state folder of its own:
# 1. starts the real `aims-api serve` on free loopback ports, generates the days one at a time
#    with `history-bench day` (bench/history.rs) and imports each on the admin port with curl,
#    deleting each file after its import; the last import's time is "import one more day";
# 2. stops the server and measures the snapshot storage on disk (STORE_PATHS below);
# 3. starts it again and times start to both ports listening, with its RSS right then;
# 4. fetches one Limit=200 application page of each of --dates random dates (a fixed seed) twice
#    over HTTPS with curl on one kept-alive connection (end to end: the slowest first touch),
#    and the server's RSS after;
# 5. stops it and runs `history-bench pages STATE_DIR --dates N` on the store: the same pages
#    in-process through `api::answer` (the issue's page targets), newest, first and second touch;
#    with --peer, the peer's `history-bench pages` (another build's, e.g. a01d077's, which reads
#    the same store format) on the same store right after, for its first touch beside ours.
# It prints one row per scenario and the issue's targets beside them. Everything it starts is
# stopped and its folder removed on exit. Needs curl. 365 days at 100 % churn imports 365 x 49
# MiB: hours, not minutes (progress every 30 days on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

# The snapshot storage whose size is "disk", relative to the state folder (globs allowed; what
# does not exist counts 0): the history store, and the folder of files waiting to be taken
# over (empty after imports). The key store, certificate and usage files are not counted.
STORE_PATHS=(history.redb snapshots)
# The activation code of bench/server.sh's configuration.
CODE=BENCH-ACTIVATION-CODE
# Bounds on every wait: a start and a stop (bench/server.sh: 600 s and 120 s), and the whole of
# one import (curl's --max-time).
IMPORT_TIMEOUT_SECS=600
SEED=12

usage() {
    sed -n '4,6p' "$0" | sed 's/^# *//'
    exit "${1:-2}"
}

days_list=1,30,365
churn_list=0,1,100
dates_wanted=30
shape=()
peer=
while [ $# -gt 0 ]; do
    case "$1" in
        --days) days_list=${2:?--days needs a list, e.g. 1,30}; shift 2 ;;
        --churn) churn_list=${2:?--churn needs a list, e.g. 0,1,100}; shift 2 ;;
        --dates) dates_wanted=${2:?--dates needs a number}; shift 2 ;;
        --apps | --modules | --findings) shape+=("$1" "${2:?$1 needs a number}"); shift 2 ;;
        --peer) peer=${2:?--peer needs the path of a peer history-bench}; shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
IFS=, read -ra days_each <<< "$days_list"
IFS=, read -ra churn_each <<< "$churn_list"
for days in "${days_each[@]}"; do
    if ! [[ "$days" =~ ^[1-9][0-9]*$ ]]; then
        echo "--days: $days is not a number of days" >&2
        exit 2
    fi
done

# /var/tmp, not /tmp: a long history on the file-per-date store is many GiB, too much for a tmpfs.
# shellcheck source=bench/server.sh
source bench/server.sh
bench_workdir /var/tmp/aims-history.XXXXXX

echo "==> building (release)" >&2
cargo build --release --quiet --bin aims-api --example history-bench
bin=target/release/aims-api
bench=target/release/examples/history-bench

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rss_mib() { printf "%.0f" "$(server_mib VmRSS)"; }
# The slowest curl time_total, in ms, of lines $1 to $2 of pages.txt.
max_ms() {
    awk -v from="$1" -v to="$2" 'NR >= from && NR <= to && $2 > m { m = $2 }
        END { printf "%.1f", m * 1000 }' "$work/pages.txt"
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# Bytes of snapshot storage under state folder $1.
store_bytes() {
    (cd "$1" && { du -scb -- ${STORE_PATHS[@]} 2>/dev/null || true; } \
        | awk '$2 == "total" { t = $1 } END { print t + 0 }')
}

# Generates day $1 at churn $2 into a file, imports it, removes it; sets date_of[$1] and
# import_secs.
import_day() {
    local file="$work/day.json" line date code
    line=$("$bench" day "$file" --day "$1" --churn "$2" "${shape[@]}")
    read -r _ _ date _ <<< "$line"
    date=${date%:}
    date_of[$1]=$date
    read -r code import_secs < <(curl -s --max-time "$IMPORT_TIMEOUT_SECS" \
        -o "$work/import.json" -w '%{http_code} %{time_total}\n' -X PUT --data-binary "@$file" \
        "http://$admin/snapshots/$date")
    rm -f "$file"
    if [ "$code" != 200 ] && [ "$code" != 201 ]; then
        echo "import of day $1 ($date) answered $code: $(head -c 500 "$work/import.json")" >&2
        exit 1
    fi
}

ROW='%6s %5s | %6s %9s %9s | %7s %8s | %6s | %6s %9s %9s | %9s | %8s %6s\n'
header() {
    printf "$ROW" days churn start "RSS start" "RSS dates" disk "disk/day" import newest \
        "1st touch" "2nd touch" "curl 1st" "peer 1st" "ratio"
    printf "$ROW" "" "%" s MiB MiB MiB MiB s ms ms ms ms ms "x"
}
targets() {
    printf "$ROW" target "" "<=1" "<=256" "<=256" "<=512*" "" "<=2" "<=5" "<=10" "<=5" "" "" ""
}

rows="$work/rows.txt"
: > "$rows"
header
targets
for days in "${days_each[@]}"; do
    for churn in "${churn_each[@]}"; do
        state="$work/state"
        rm -rf "$state"
        bench_config "$state"
        echo "==> $days day(s) at $churn % churn" >&2
        start_server
        key=$(curl -s -X POST "http://$admin/key" | sed -nE 's/.*"api_key":"([^"]+)".*/\1/p')
        if [ -z "$key" ]; then echo "POST /key gave no key" >&2; exit 1; fi
        date_of=()
        first_day_bytes=0
        started=$(now)
        for ((d = 0; d < days; d++)); do
            import_day "$d" "$churn"
            if [ "$d" -eq 0 ]; then first_day_bytes=$(store_bytes "$state"); fi
            if [ $(((d + 1) % 30)) -eq 0 ]; then
                echo "    $((d + 1))/$days days imported in $(elapsed "$started" "$(now)") s; \
last import $(printf "%.2f" "$import_secs") s, server RSS $(rss_mib) MiB" >&2
            fi
        done
        stop_server
        disk_bytes=$(store_bytes "$state")
        if [ "$days" -gt 1 ]; then
            per_day=$(awk -v a="$first_day_bytes" -v b="$disk_bytes" -v n="$days" \
                'BEGIN { printf "%.1f", (b - a) / (n - 1) / 1048576 }')
        else
            per_day=-
        fi

        start_server
        rss_start=$(rss_mib)
        # Distinct days drawn with a fixed seed (Fisher-Yates in awk).
        picks=$(awk -v n="$days" -v k="$dates_wanted" -v seed="$SEED" 'BEGIN {
            srand(seed); if (k > n) k = n
            for (i = 0; i < n; i++) a[i] = i
            for (i = 0; i < k; i++) {
                j = i + int(rand() * (n - i)); t = a[i]; a[i] = a[j]; a[j] = t; print a[i]
            }
        }')
        base="https://$api/AIMentorStudioAPI/rest/v1/TechnicalDebt_Application?Limit=200"
        # One connection: the Level request pays the handshake, then the newest date's page,
        # each picked date once (first touch), then each again (second touch).
        args=(-o /dev/null "https://$api/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level"
            -o /dev/null "$base")
        for touch in 1 2; do
            for d in $picks; do args+=(-o /dev/null "$base&Date=${date_of[$d]}"); done
        done
        curl -s --max-time 600 --cacert "$state/tls/cert.pem" -H "x-api-key: $key" \
            -H "x-activation-code: $CODE" -w '%{http_code} %{time_total}\n' "${args[@]}" \
            > "$work/pages.txt"
        if awk '$1 != 200 { bad = 1 } END { exit !bad }' "$work/pages.txt"; then
            echo "non-200 answers (Level, newest, then the dates):" >&2; cat "$work/pages.txt" >&2
            exit 1
        fi
        rss_dates=$(rss_mib)
        picked=$(wc -w <<< "$picks")
        curl_first_ms=$(max_ms 3 $((2 + picked)))
        stop_server
        # In-process: the issue's page targets (the server's HTTPS and curl are not in them).
        # Each run ends (and lets go of the store's lock) before the next begins.
        pages=$("$bench" pages "$state" --dates "$dates_wanted")
        read -r _open_ms newest_ms first_ms second_ms _rss <<< "$pages"
        peer_ms=- ratio=-
        if [ -n "$peer" ] && [ "$days" -gt 1 ]; then
            pages=$("$peer" pages "$state" --dates "$dates_wanted")
            read -r _ _ peer_ms _ _ <<< "$pages"
            ratio=$(awk -v a="$first_ms" -v b="$peer_ms" 'BEGIN { printf "%.2f", a / b }')
        fi
        if [ "$days" -eq 1 ]; then first_ms=- second_ms=- peer_ms=- ratio=-; fi
        # shellcheck disable=SC2059
        row=$(printf "$ROW" "$days" "$churn" "$start_secs" "$rss_start" "$rss_dates" \
            "$(mib "$disk_bytes")" "$per_day" "$(printf '%.2f' "$import_secs")" "$newest_ms" \
            "$first_ms" "$second_ms" "$curl_first_ms" "$peer_ms" "$ratio")
        row=${row%$'\n'}
        echo "$row"
        echo "$row" >> "$rows"
        rm -rf "$state"
    done
done

# The whole table again, in one piece (progress lines on stderr may have split it above).
echo
header
cat "$rows"
targets
cat <<'EOF'
start: launch to both ports listening. RSS: the server's VmRSS right after start, and after one
Limit=200 page of each of up to 30 random dates. disk: snapshot storage once stopped;
disk/day: (disk - disk after day 0) / (days - 1). import: curl's time for the last day's PUT.
newest, 1st and 2nd touch: the slowest in-process Limit=200 page (api::answer) of the newest
date, and of each of up to 30 older dates when first read from the store and right after.
curl 1st: the slowest first touch end to end (one kept-alive HTTPS connection, curl's time).
peer 1st: the same first touch by --peer's build on the same store, run right after; ratio:
ours / the peer's.
* 512 MiB is the target for 365 days at 1 % churn.
EOF
