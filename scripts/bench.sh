#!/usr/bin/env bash
# berth's benchmark: runs the same workload (crates/berth-bench) against berth and against
# CNCF Distribution (Debian's docker-registry), one after the other, each on loopback with a
# fresh data directory under /tmp and the same config.yml, and prints one table:
# metric | berth | distribution | ratio berth/distribution.
#
# usage: scripts/bench.sh [--quick]
#
#   --quick   smoke mode (64 MiB blobs, 3 s of load, 100 repositories, 1,000 manifests);
#             the full run uses 1 GiB blobs, 15 s of load, 1,000 repositories and 10,000
#             manifests, and takes about 9 minutes after the build (quick: about 3 minutes).
#
# Results: target/bench/{berth,distribution,ceilings}.jsonl (raw, one JSON object per
# metric), target/bench/table.md (the table, then the machine's ceilings: SHA-256 on one
# core, loopback TCP, durable disk writes, and the best ratio to Distribution each allows),
# target/bench/*.log (registry and bench logs).
# Installs docker-registry with apt when it is missing (needs root for that).
# BENCH_SETTLE_SECS is the pause before each registry and the ceilings (default 20).
# BENCH_JOBS sets cargo's -j (default 2). Extra berth-bench `run` flags can be given in
# BENCH_ARGS, e.g. BENCH_ARGS="--load-secs 30".

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=()
for arg in "$@"; do
    case "$arg" in
    --quick) QUICK=(--quick) ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench.sh: unknown argument $arg (usage: scripts/bench.sh [--quick])" >&2
        exit 2
        ;;
    esac
done
if ((${#QUICK[@]})); then MANIFESTS=1000; else MANIFESTS=10000; fi

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)" >&2; }
started=$SECONDS

DISTRIBUTION=/usr/bin/docker-registry
if [[ ! -x $DISTRIBUTION ]]; then
    step "installing docker-registry (CNCF Distribution)"
    if ((EUID != 0)); then
        echo "bench.sh: $DISTRIBUTION is missing and installing it needs root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The package must not start its own daemon: this script starts private instances.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, from berth scripts/bench.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    apt-get update -q
    apt-get install -y -q docker-registry
    if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi

step "building berth and berth-bench (release)"
cargo build --release -j "${BENCH_JOBS:-2}" -p berth -p berth-bench
# What was built, for the table's heading.
REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- crates 2>/dev/null || REV+="+uncommitted"

# Private copies: other builds may replace target/release/* while the benchmark runs.
BIN=$(mktemp -d /tmp/berth-bench-bin.XXXXXX)
cp "$ROOT/target/release/berth" "$ROOT/target/release/berth-bench" "$BIN/"
BERTH="$BIN/berth"
BENCH="$BIN/berth-bench"

OUT="$ROOT/target/bench"
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.log "$OUT"/table.md

PID=""
WORK=""
LOADAVG=()
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ -n $WORK && -d $WORK ]]; then rm -rf "$WORK"; fi
    rm -rf "$BIN"
}
trap cleanup EXIT

# Lets the writes of whatever ran before (the build, the other registry) reach the disk, in
# this VM and below it: a virtual disk's host may keep flushing after the guest's sync
# returns. Pushes timed back to back varied by up to 2x here; the pause helps, but after a
# few GiB the host may throttle the disk for longer than any pause (see the README).
settle() {
    sync
    sleep "${BENCH_SETTLE_SECS:-20}"
}

# bench_one NAME BINARY: the whole workload against one registry.
bench_one() {
    local name=$1 bin=$2
    step "$name: $bin"
    WORK=$(mktemp -d "/tmp/berth-bench-$name.XXXXXX")
    local port
    port=$("$BENCH" free-port)
    local url="http://127.0.0.1:$port"
    # Identical for both registries; only the binary differs. As in the config.yml that
    # registry:2 and Debian ship, Distribution keeps blob descriptors in memory; its access
    # log is off (berth writes none). berth ignores both keys.
    cat >"$WORK/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $WORK/data
http:
  addr: 127.0.0.1:$port
EOF
    mkdir -p "$WORK/data"
    settle
    LOADAVG+=("$name $(cut -d' ' -f1-3 /proc/loadavg)")
    "$bin" serve "$WORK/config.yml" >>"$OUT/$name.log" 2>&1 &
    PID=$!
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
    "$BENCH" run --url "$url" --pid "$PID" --label "$name" "${QUICK[@]}" ${BENCH_ARGS:-} \
        >"$OUT/$name.jsonl" 2> >(tee -a "$OUT/bench-$name.log" >&2)
    step "$name: stopping, then timing restarts over the populated data"
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    "$BENCH" startup --url "$url" --label "$name" --manifests "$MANIFESTS" \
        -- "$bin" serve "$WORK/config.yml" \
        >>"$OUT/$name.jsonl" 2> >(tee -a "$OUT/bench-$name.log" >&2)
    echo "data directory: $(du -sh "$WORK/data" | cut -f1)" >&2
    rm -rf "$WORK"
    WORK=""
}

bench_one berth "$BERTH"
bench_one distribution "$DISTRIBUTION"

step "the machine's ceilings"
if ((${#QUICK[@]})); then CEILING_MIB=64; else CEILING_MIB=1024; fi
settle
# On /tmp, where the registries' data directories are.
"$BENCH" ceilings --dir /tmp --mib "$CEILING_MIB" >"$OUT/ceilings.jsonl"

step "results"
{
    echo "berth $REV vs Distribution $("$DISTRIBUTION" --version 2>/dev/null | awk '{print $NF}'), $(date -u +%FT%TZ), $(nproc) cores${QUICK:+, quick mode}"
    echo "load average (1/5/15 min) as each started: ${LOADAVG[0]:-?}, ${LOADAVG[1]:-?}"
    echo
    "$BENCH" table "$OUT/berth.jsonl" "$OUT/distribution.jsonl"
    echo
    echo "What this machine allows at most, measured in the same run (berth-bench ceilings):"
    echo
    "$BENCH" table --ceilings "$OUT/ceilings.jsonl" "$OUT/berth.jsonl" "$OUT/distribution.jsonl"
} >"$OUT/table.md"
cat "$OUT/table.md"
echo >&2
echo "raw results: $OUT/berth.jsonl $OUT/distribution.jsonl; table: $OUT/table.md ($((SECONDS - started)) s)" >&2
