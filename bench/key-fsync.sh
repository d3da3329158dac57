#!/usr/bin/env bash
# Issue 20, benchmark (b): the API's p99 while a key change's fsync is slow.
#
# Builds aims-api with the `bench-slow-key-fsync` feature (never in a release build: every fsync
# of the key store's new file first waits AIMS_API_BENCH_KEY_FSYNC_MS, here 500 ms), serves the
# sample snapshot, and measures with wrk (1 thread, 8 kept-alive connections, 10 s) the newest
# date's TechnicalDebt_Application page with gzip, alone and then while a loop installs key
# records back to back on the admin port (PUT /key/record, one generation up each time, the
# same key: each is a real key change, with its store write and its 500 ms fsync, and the key
# wrk presents stays admitted). Three runs each, interleaved (alone, with, alone, …); prints
# p50/p99 and req/s, and the ratio of the medians.
#
#   bench/key-fsync.sh            # about 1.5 minutes
#   FSYNC_MS=500 RUNS=3 SECS=10 bench/key-fsync.sh
#
# Loopback only; every loop is bounded by SECS. Run it under `flock /tmp/aims-bench.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
FSYNC_MS=${FSYNC_MS:-500}
RUNS=${RUNS:-3}
SECS=${SECS:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }

target=target/bench-slow-fsync
cargo build --release --quiet --features bench-slow-key-fsync --target-dir "$target"
bin=$target/release/aims-api
. bench/server.sh
bench_workdir /tmp/aims-key-fsync.XXXXXX
bench_config "$work/state"
start_server env AIMS_API_BENCH_KEY_FSYNC_MS="$FSYNC_MS" "$bin"

admin_curl() { curl -sS --max-time 30 "$@"; }
admin_curl -X PUT --data-binary @examples/snapshot-2024-05-14.json \
    "http://$admin/snapshots/2024-05-14" >/dev/null
key=$(admin_curl -X POST "http://$admin/key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
page="/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Application?Limit=200"

measure() { # prints "p50_ms p99_ms req_per_s"
    wrk -t1 -c8 -d"${SECS}s" --latency -H "x-api-key: $key" \
        -H "x-activation-code: BENCH-ACTIVATION-CODE" -H "accept-encoding: gzip" \
        "https://$api$page" | python3 -c '
import re, sys
out = sys.stdin.read()
def ms(label):
    m = re.search(r"^\s*" + label + r"%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50, p99 = ms("50"), ms("99")
print(f"{p50:.2f} {p99:.2f} {rps:.0f}")'
}

# Key changes back to back until told to stop (bounded by SECS + 5 s in any case): each
# installs the record one generation up. Prints how many were made and their mean duration.
changes() {
    python3 - "$admin" "$((SECS + 5))" "$work/stop" <<'PY'
import json, os, sys, time, urllib.request
admin, limit, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def call(method, body=None):
    req = urllib.request.Request(f"http://{admin}/key/record", data=body, method=method)
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.load(answer)
record, made, took, started = call("GET"), 0, 0.0, time.monotonic()
while not os.path.exists(stop) and time.monotonic() - started < limit:
    record["generation"] += 1
    t = time.monotonic()
    call("PUT", json.dumps(record).encode())
    took += time.monotonic() - t
    made += 1
print(f"{made} {took / max(made, 1) * 1000:.0f}")
PY
}

alone=() with=() made=()
for run in $(seq "$RUNS"); do
    alone+=("$(measure)")
    rm -f "$work/stop"
    changes > "$work/changes.out" &
    changer=$!
    sleep 1  # the first change is under way
    with+=("$(measure)")
    touch "$work/stop"
    wait "$changer"
    made+=("$(cat "$work/changes.out")")
done
stop_server

python3 - "$FSYNC_MS" "${alone[@]}" -- "${with[@]}" -- "${made[@]}" <<'PY'
import statistics, sys
args = sys.argv[2:]
first = args.index("--")
second = args.index("--", first + 1)
alone = [list(map(float, a.split())) for a in args[:first]]
with_ = [list(map(float, a.split())) for a in args[first + 1:second]]
made = [list(map(float, a.split())) for a in args[second + 1:]]
med = lambda rows, i: statistics.median(r[i] for r in rows)
print(f"newest page (Limit=200, gzip), wrk 1 thread x 8 connections, {len(alone)} runs each")
print(f"{'':34}{'alone':>10}{'with changes':>14}{'ratio':>8}")
for name, i in (("p50 latency (ms)", 0), ("p99 latency (ms)", 1), ("req/s", 2)):
    a, w = med(alone, i), med(with_, i)
    print(f"{name:34}{a:>10.2f}{w:>14.2f}{w / a:>8.2f}")
print("p99 per run (ms): alone " + ", ".join(f"{r[1]:.2f}" for r in alone)
      + "; with changes " + ", ".join(f"{r[1]:.2f}" for r in with_))
print(f"key changes during each run: {[int(m[0]) for m in made]}, "
      f"mean {statistics.mean(m[1] for m in made):.0f} ms each "
      f"(fsync held {sys.argv[1]} ms)")
PY
