#!/usr/bin/env bash
# Pull benchmark: `aims-api snapshot pull` of the 2,000-application benchmark snapshot (20,000
# modules, 400,000 findings) from a second `aims-api serve`, over HTTPS on loopback.
#
#   bench/pull.sh [snapshot-bench options, e.g. --apps 2000 --modules 20000 --findings 400000]
#
# 1. builds the release binary and the snapshot-bench example, generates the snapshot;
# 2. starts two servers on free loopback ports: the upstream, with the snapshot imported, and
#    the appliance, whose config's upstream section points at it (its certificate as ca_file);
# 3. pulls under /usr/bin/time -v (wall time, peak RSS of the pull process), then pulls again
#    (the "unchanged" path), and reports the requests made and the appliance's peak RSS.
# Everything it starts is stopped and its folder removed on exit. Needs curl and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/aims-pull-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }

echo "==> building (release)"
cargo build --release --quiet --bin aims-api --example snapshot-bench
bin=$PWD/target/release/aims-api
file="$work/snapshot.json"
echo "==> generating"
target/release/examples/snapshot-bench generate "$file" "$@"

# start NAME: serve $work/NAME/config.ron, wait for both ports, set $api and $admin.
start() {
    "$bin" serve --config "$work/$1/config.ron" 2> "$work/$1/serve.log" &
    pids+=($!)
    for _ in $(seq 1 600); do
        if grep -q "api listening on" "$work/$1/serve.log"; then break; fi
        sleep 0.05
    done
    api=$(sed -nE 's/.*api listening on https:\/\/([^ ]+).*/\1/p' "$work/$1/serve.log")
    admin=$(sed -nE 's/.*admin listening on http:\/\/([^ ]+).*/\1/p' "$work/$1/serve.log")
}

mkdir -p "$work/up" "$work/down"
cat > "$work/up/config.ron" <<CONF
(
    activation_code: "UPSTREAM-CODE",
    state_dir: "$work/up/state",
    api: (listen: "127.0.0.1:0", workers: 2),
    admin: (listen: "127.0.0.1:0", max_body_bytes: 1073741824),
)
CONF
start up
up_api=$api
curl -sf -o /dev/null -X PUT --data-binary "@$file" "http://$admin/snapshots/2024-05-14"
(umask 077 && curl -sf -X POST "http://$admin/key" | sed -E 's/.*"api_key":"([^"]+)".*/\1/' > "$work/down/upstream-key")

cat > "$work/down/config.ron" <<CONF
(
    activation_code: "BENCH-CODE",
    state_dir: "$work/down/state",
    api: (listen: "127.0.0.1:0", workers: 2),
    admin: (listen: "127.0.0.1:0", max_body_bytes: 1073741824),
)
CONF
start down
down_pid=${pids[-1]}
cat > "$work/down/pull.ron" <<CONF
(
    activation_code: "BENCH-CODE",
    state_dir: "$work/down/state",
    api: (listen: "127.0.0.1:0"),
    admin: (listen: "$admin", max_body_bytes: 1073741824),
    upstream: Some((
        url: "https://localhost:${up_api##*:}/AIMentorStudioAPI/rest/v1",
        api_key_file: "upstream-key",
        activation_code: Some("UPSTREAM-CODE"),
        ca_file: Some("$work/up/state/tls/cert.pem"),
    )),
)
CONF

for run in first second; do
    echo "==> $run pull"
    /usr/bin/time -v "$bin" snapshot pull --json --config "$work/down/pull.ron" \
        > "$work/pull.json" 2> "$work/pull.err"
    cat "$work/pull.json"
    awk -F': ' '/Elapsed \(wall clock\)/ { print "wall clock: " $2 }
                /Maximum resident set size/ { printf "pull peak RSS: %.1f MiB\n", $2 / 1024 }' \
        "$work/pull.err"
done
awk '/^VmHWM/ { printf "appliance peak RSS: %.1f MiB\n", $2 / 1024 }' "/proc/$down_pid/status"
