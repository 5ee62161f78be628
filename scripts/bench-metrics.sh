#!/usr/bin/env bash
# What observability costs on the hottest path: manifest HEAD and GET by tag under load
# (berth-bench manifest-ab), against three berth processes started side by side from one
# release build, each over its own fresh data directory, loaded in alternating rounds:
#
#   off        metrics off, access log off (log.level error, as scripts/bench.sh runs berth)
#   metrics    http.debug.addr + http.debug.prometheus.enabled, access log off
#   accesslog  metrics off, access log on (stdout to a file)
#
# It prints, per variant and method, the median req/s of the rounds and its difference from
# `off`; the JSON lines land in target/bench/metrics-ab.jsonl.
#
# usage: scripts/bench-metrics.sh [berth-bench manifest-ab flags, e.g. --secs 10 --rounds 7]

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

cargo build --release -j "${BENCH_JOBS:-2}" -p berth -p berth-bench
BIN=$(mktemp -d /tmp/berth-bench-metrics.XXXXXX)
cp target/release/berth target/release/berth-bench "$BIN/"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$BIN"
}
trap cleanup EXIT

# start NAME EXTRA_HTTP_YAML EXTRA_LOG_YAML: a berth on a free port, its URL in $URL (not
# printed: a command substitution would run it in a subshell, out of reach of the cleanup).
start() {
    local name=$1 http=$2 log=$3 dir="$BIN/$1" port
    port=$("$BIN/berth-bench" free-port)
    mkdir -p "$dir/root"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
$log
storage:
  filesystem:
    rootdirectory: $dir/root
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
$http
EOF
    "$BIN/berth" serve "$dir/config.yml" >"$OUT/metrics-ab-$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
        sleep 0.05
    done
    URL="http://127.0.0.1:$port"
}

start off "" "  accesslog:
    disabled: true"
OFF=$URL
start metrics "  debug:
    addr: 127.0.0.1:0
    prometheus:
      enabled: true" "  accesslog:
    disabled: true"
METRICS=$URL
start accesslog "" ""
ACCESS=$URL

"$BIN/berth-bench" manifest-ab \
    --variant "off=$OFF" --variant "metrics=$METRICS" --variant "accesslog=$ACCESS" \
    "$@" | tee "$OUT/metrics-ab.jsonl"
