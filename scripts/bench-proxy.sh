#!/usr/bin/env bash
# What the pull-through cache costs and saves, for a multi-layer image pulled with skopeo
# (to a dir: no local storage in the way), in one run, side by side:
#
#   upstream        pulled from the upstream registry alone (a berth on its own directory)
#   cache, cold     through a berth pull-through cache with nothing cached (fetch + verify +
#                   store while streaming)
#   cache, warm     through the cache again (one HEAD to the upstream for the tag)
#   upstream down   through the cache with the upstream stopped (served stale)
#
# Each round uses a fresh cache directory; the median of the rounds is printed per row with
# its ratio to `upstream`. Both registries run the same release build on loopback, so the
# figures say what the cache adds, not what a WAN would.
#
# usage: scripts/bench-proxy.sh [--layers N] [--layer-mib M] [--rounds R]

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LAYERS=6 LAYER_MIB=32 ROUNDS=5
while (($#)); do
    case $1 in
        --layers) LAYERS=$2; shift 2 ;;
        --layer-mib) LAYER_MIB=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        *) echo "usage: $0 [--layers N] [--layer-mib M] [--rounds R]" >&2; exit 2 ;;
    esac
done
command -v skopeo >/dev/null || { echo "skopeo missing (scripts/install-deps.sh)" >&2; exit 1; }

cargo build --release -j "${BENCH_JOBS:-2}" -p berth -p berth-bench
WORK=$(mktemp -d /tmp/berth-bench-proxy.XXXXXX)
cp target/release/berth target/release/berth-bench "$WORK/"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME EXTRA_YAML: a berth on a free port over $WORK/NAME; sets PORT and PID.
start() {
    local name=$1 extra=$2
    PORT=$("$WORK/berth-bench" free-port)
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/$name
http:
  addr: 127.0.0.1:$PORT
$extra
EOF
    "$WORK/berth" serve "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
    PID=$!
    pids+=("$PID")
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "berth ($name) did not start: $(tail -3 "$WORK/$name.log")" >&2
    exit 1
}

# An image of $LAYERS random layers in an OCI layout, pushed to the upstream.
img=$WORK/image
mkdir -p "$img/blobs/sha256"
layers=""
for i in $(seq "$LAYERS"); do
    head -c $((LAYER_MIB * 1024 * 1024)) /dev/urandom >"$WORK/layer"
    d=$(sha256sum "$WORK/layer" | cut -d' ' -f1)
    mv "$WORK/layer" "$img/blobs/sha256/$d"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$((LAYER_MIB * 1024 * 1024))}"
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config"
c=$(sha256sum "$WORK/config" | cut -d' ' -f1)
csize=$(stat -c %s "$WORK/config")
mv "$WORK/config" "$img/blobs/sha256/$c"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$c" "$csize" "$layers" >"$WORK/manifest"
m=$(sha256sum "$WORK/manifest" | cut -d' ' -f1)
msize=$(stat -c %s "$WORK/manifest")
mv "$WORK/manifest" "$img/blobs/sha256/$m"
printf '{"imageLayoutVersion":"1.0.0"}' >"$img/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$m" "$msize" >"$img/index.json"

start upstream ""
UP_PORT=$PORT UP_PID=$PID
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$img:v1" "docker://127.0.0.1:$UP_PORT/bench/app:v1"

# What the upstream serves for the tag (skopeo may have rewritten the layout's manifest on
# the way in), to check every pull against.
want=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$UP_PORT/v2/bench/app/manifests/v1" | sha256sum | cut -d' ' -f1)

# pull REF: seconds skopeo takes to copy REF to a fresh dir (no blob-info cache).
pull() {
    rm -rf "$WORK/out" /var/lib/containers/cache/blob-info-cache-v1.* 2>/dev/null || true
    local t0 t1
    t0=$(date +%s%N)
    skopeo --insecure-policy copy -q --src-tls-verify=false "$1" "dir:$WORK/out"
    t1=$(date +%s%N)
    [ "$(sha256sum <"$WORK/out/manifest.json" | cut -d' ' -f1)" = "$want" ] ||
        { echo "wrong manifest from $1" >&2; exit 1; }
    echo "scale=3; ($t1 - $t0) / 1000000000" | bc
}

declare -A times=()
for r in $(seq "$ROUNDS"); do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        start upstream ""
        UP_PORT=$PORT UP_PID=$PID
    fi
    rm -rf "$WORK/cache"
    start cache "proxy:
  upstreams:
    - prefix: up
      remoteurl: http://127.0.0.1:$UP_PORT"
    CACHE_PID=$PID
    times[upstream]+="$(pull "docker://127.0.0.1:$UP_PORT/bench/app:v1") "
    times[cold]+="$(pull "docker://127.0.0.1:$PORT/up/bench/app:v1") "
    times[warm]+="$(pull "docker://127.0.0.1:$PORT/up/bench/app:v1") "
    kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true
    times[down]+="$(pull "docker://127.0.0.1:$PORT/up/bench/app:v1") "
    kill "$CACHE_PID"; wait "$CACHE_PID" 2>/dev/null || true
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${times[upstream]}" | median)
printf '\n%s layers of %s MiB (%s MiB), skopeo copy to dir, median of %s rounds\n\n' \
    "$LAYERS" "$LAYER_MIB" $((LAYERS * LAYER_MIB)) "$ROUNDS"
printf '| pull | seconds | vs upstream alone |\n|---|---:|---:|\n'
for row in "upstream:upstream alone" "cold:through the cache, cold" "warm:through the cache, warm" "down:through the cache, upstream stopped"; do
    key=${row%%:*} label=${row#*:}
    t=$(echo "${times[$key]}" | median)
    printf '| %s | %s | %sx |\n' "$label" "$t" "$(echo "scale=2; $t / $base" | bc)"
done
