#!/usr/bin/env bash
# berth on S3, measured: the berth-bench workload (crates/berth-bench) against
#   berth-fs      berth on the filesystem,
#   berth-s3      berth on a Garage bucket,
#   dist-s3       Distribution's S3 driver (Debian's docker-registry) on the same Garage,
#   *-s3-proxy    the same two with storage.redirect.disable (bytes through the registry),
# one after the other, then three tables: berth-s3 vs dist-s3, the -proxy pair, and
# berth-s3 vs berth-fs. The
# concurrent-push phase is 32 pushes of 100 MiB at once; its peak RSS is the memory bound's
# figure. Figures, not a timed test.
#
# usage: scripts/bench-s3.sh [--full | --big GIB]   (BENCH_S3_PAIR=1: only berth-s3 vs dist-s3;
#   BENCH_ARGS: more berth-bench arguments, e.g. --only-manifest-puts)
#   default: quick workload sizes (256 MiB blob, 3 s of manifest load, 100 repositories);
#   --full: berth-bench's full sizes (1 GiB blob, 15 s, 1,000 repositories);
#   --big GIB: instead, push one GIB-GiB layer to berth on S3 in 1 GiB PATCHes, pull it back
#   through berth, and report times, the digest check and berth's peak RSS.
# Uses the Garage BERTH_TEST_S3_* names if set, else starts its own (scripts/garage.sh).
# Results: target/bench-s3/{*.jsonl,*.log,table.md}.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZES=(--quick --blob-mib 256)
BIG=0
case ${1:-} in
    --full) SIZES=() ;;
    --big) BIG=${2:?--big needs a size in GiB} ;;
esac
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)" >&2; }

OUT=$ROOT/target/bench-s3
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.log "$OUT"/table.md

step "building berth and berth-bench (release)"
cargo build --release -j "${BENCH_JOBS:-2}" -p berth -p berth-bench
BIN=$(mktemp -d /tmp/berth-bench-s3-bin.XXXXXX)
cp target/release/berth target/release/berth-bench "$BIN/"
DISTRIBUTION=/usr/bin/docker-registry
[[ -x $DISTRIBUTION ]] || {
    echo "bench-s3.sh: $DISTRIBUTION missing (scripts/install-deps.sh)" >&2
    exit 1
}

PID="" WORK="" OWN_GARAGE=0
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [[ -n $WORK ]] && rm -rf "$WORK"
    ((OWN_GARAGE)) && scripts/garage.sh stop
    rm -rf "$BIN"
}
trap cleanup EXIT
if [[ -z ${BERTH_TEST_S3_ENDPOINT:-} ]]; then
    step "starting Garage"
    BERTH_GARAGE_DIR=$(mktemp -d /tmp/berth-bench-garage.XXXXXX)
    export BERTH_GARAGE_DIR
    OWN_GARAGE=1
    scripts/garage.sh start
    eval "$(scripts/garage.sh env)"
fi

# bench_one NAME BINARY STORAGE: the workload against one registry; STORAGE is fs, s3
# (blob GETs redirected to presigned URLs, the default of both programs) or s3-proxy
# (storage.redirect.disable: the registry streams blob bytes itself).
bench_one() {
    local name=$1 bin=$2 storage=$3 port url
    step "$name"
    WORK=$(mktemp -d "/tmp/berth-bench-$name.XXXXXX")
    port=$("$BIN/berth-bench" free-port)
    url=http://127.0.0.1:$port
    {
        printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n'
        printf 'http:\n  addr: 127.0.0.1:%s\nstorage:\n  cache:\n    blobdescriptor: inmemory\n' "$port"
        if [[ $storage == s3-proxy ]]; then
            printf '  redirect:\n    disable: true\n'
        fi
        if [[ $storage == s3* ]]; then
            # The same bucket, a fresh prefix per registry.
            printf '  s3:\n    region: %s\n    regionendpoint: %s\n    bucket: %s\n' \
                "$BERTH_TEST_S3_REGION" "$BERTH_TEST_S3_ENDPOINT" "$BERTH_TEST_S3_BUCKET"
            printf '    accesskey: %s\n    secretkey: %s\n' \
                "$BERTH_TEST_S3_ACCESS_KEY" "$BERTH_TEST_S3_SECRET_KEY"
            printf '    rootdirectory: /bench/%s-%s\n    forcepathstyle: true\n    secure: false\n' \
                "$name" "$(date +%s)"
        else
            printf '  filesystem:\n    rootdirectory: %s/data\n' "$WORK"
        fi
    } >"$WORK/config.yml"
    sync
    env -u AWS_CA_BUNDLE "$bin" serve "$WORK/config.yml" >>"$OUT/$name.log" 2>&1 &
    PID=$!
    "$BIN/berth-bench" run --url "$url" --pid "$PID" --label "$name" "${SIZES[@]}" ${BENCH_ARGS:-} \
        --concurrent 32 --concurrent-mib 100 \
        >"$OUT/$name.jsonl" 2> >(tee -a "$OUT/bench-$name.log" >&2)
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    rm -rf "$WORK"
    WORK=""
}

# big_layer GIB: one layer of GIB GiB through berth on S3 (bytes through berth both ways).
big_layer() {
    local gib=$1 port url digest loc path start secs peak=0 got
    WORK=$(mktemp -d /tmp/berth-bench-big.XXXXXX)
    port=$("$BIN/berth-bench" free-port)
    url=http://127.0.0.1:$port
    printf 'version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:%s\nstorage:\n  redirect:\n    disable: true\n  s3:\n    region: %s\n    regionendpoint: %s\n    bucket: %s\n    accesskey: %s\n    secretkey: %s\n    rootdirectory: /bench/big-%s\n    forcepathstyle: true\n' \
        "$port" "$BERTH_TEST_S3_REGION" "$BERTH_TEST_S3_ENDPOINT" "$BERTH_TEST_S3_BUCKET" \
        "$BERTH_TEST_S3_ACCESS_KEY" "$BERTH_TEST_S3_SECRET_KEY" "$(date +%s)" >"$WORK/config.yml"
    env -u AWS_CA_BUNDLE "$BIN/berth" serve "$WORK/config.yml" >>"$OUT/big.log" 2>&1 &
    PID=$!
    # A deterministic, incompressible stream: AES-CTR of zeros.
    # (openssl dies of SIGPIPE when head has enough: not a failure.)
    stream() { (openssl enc -aes-128-ctr -nosalt -pass pass:berth -pbkdf2 </dev/zero 2>/dev/null || true) | head -c $((gib << 30)); }
    step "hashing the $gib GiB layer (not timed)"
    digest=sha256:$(stream | sha256sum | cut -d' ' -f1)
    (while kill -0 "$PID" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null; sleep 0.2; done >"$WORK/rss") &
    sleep 0.5
    loc=$(curl -fsS -o /dev/null -D - -X POST "$url/v2/bench/big/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location" {print $2}')
    path=${loc#http://*/}
    step "pushing $gib GiB in 1 GiB PATCHes"
    start=$(date +%s.%N)
    # One stream, cut into 1 GiB PATCHes (head -c reads no further than it writes); curl -T
    # streams the body instead of loading it.
    stream | for ((i = 0; i < gib; i++)); do
        head -c $((1 << 30)) |
            curl -fsS -o /dev/null -X PATCH -H "Content-Range: $((i << 30))-$((((i + 1) << 30) - 1))" \
                -H 'Content-Type: application/octet-stream' -T - "$url/$path"
    done
    curl -fsS -o /dev/null -X PUT "$url/$path?digest=$digest"
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    echo "push $gib GiB: $secs s, $(echo "$gib * 1024 / $secs" | bc) MiB/s" | tee -a "$OUT/table.md"
    start=$(date +%s.%N)
    got=sha256:$(curl -fsS "$url/v2/bench/big/blobs/$digest" | sha256sum | cut -d' ' -f1)
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    [[ $got == "$digest" ]] || { echo "pulled content hashes to $got, expected $digest" >&2; exit 1; }
    echo "pull $gib GiB (digest verified): $secs s, $(echo "$gib * 1024 / $secs" | bc) MiB/s" | tee -a "$OUT/table.md"
    peak=$(sort -n "$WORK/rss" | tail -1)
    echo "berth peak RSS during push and pull: $((peak / 1024)) MiB" | tee -a "$OUT/table.md"
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
}
if ((BIG)); then
    big_layer "$BIG"
    exit 0
fi

bench_one berth-s3 "$BIN/berth" s3
bench_one dist-s3 "$DISTRIBUTION" s3
if [[ -n ${BENCH_S3_PAIR:-} ]]; then
    "$BIN/berth-bench" table "$OUT/berth-s3.jsonl" "$OUT/dist-s3.jsonl" --a-name berth-s3 --b-name dist-s3 |
        tee "$OUT/table.md"
    exit 0
fi
bench_one berth-s3-proxy "$BIN/berth" s3-proxy
bench_one dist-s3-proxy "$DISTRIBUTION" s3-proxy
bench_one berth-fs "$BIN/berth" fs

{
    echo "berth $(git rev-parse --short HEAD) on Garage $(scripts/garage.sh bin | grep -o '[0-9.]*/bin' | cut -d/ -f1), $(date -u +%FT%TZ), $(nproc) cores"
    echo
    echo "### berth on S3 vs Distribution's S3 driver (same Garage bucket)"
    "$BIN/berth-bench" table "$OUT/berth-s3.jsonl" "$OUT/dist-s3.jsonl" --a-name berth-s3 --b-name dist-s3
    echo
    echo "### both streaming blob bytes themselves (storage.redirect.disable: true)"
    "$BIN/berth-bench" table "$OUT/berth-s3-proxy.jsonl" "$OUT/dist-s3-proxy.jsonl" --a-name berth-s3-proxy --b-name dist-s3-proxy
    echo
    echo "### berth on S3 vs berth on the filesystem"
    "$BIN/berth-bench" table "$OUT/berth-s3.jsonl" "$OUT/berth-fs.jsonl" --a-name berth-s3 --b-name berth-fs
} >"$OUT/table.md"
cat "$OUT/table.md"
