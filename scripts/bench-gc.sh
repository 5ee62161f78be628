#!/usr/bin/env bash
# Garbage-collection benchmark (issue 7): berth vs Distribution's `garbage-collect` on copies
# of one data directory in Distribution's layout, written directly (no registry involved):
# 10,000 manifests over 100 repositories and 50,000 small blobs, a fifth of them referenced
# by no manifest. Prints one table: wall time of each collector, what each deleted, and the
# speed-up. A figure, not a test: nothing fails on a slow machine.
#
# usage: scripts/bench-gc.sh [MANIFESTS] [BLOBS]     (needs target/release/berth or BERTH_BIN,
#        and /usr/bin/docker-registry from scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
manifests=${1:-10000}
blobs=${2:-50000}
berth=${BERTH_BIN:-target/release/berth}
[[ -x $berth ]] || { echo "bench-gc: build berth first (cargo build --release -p berth)" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "bench-gc: docker-registry not installed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp/base" "$manifests" "$blobs" <<'PY'
import hashlib, json, os, sys
root, n_manifests, n_blobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v2 = os.path.join(root, "docker/registry/v2")
def put_blob(data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "data"), "wb") as f:
        f.write(data)
    return "sha256:" + h
def link(path, digest):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(digest)
# Layer blobs: n_blobs - n_manifests (manifests are blobs too); the last fifth unreferenced.
n_layers = n_blobs - n_manifests
layers = [put_blob(b"layer %d " % i + os.urandom(32)) for i in range(n_layers)]
referenced = layers[: n_layers * 4 // 5]
repos = 100
for m in range(n_manifests):
    repo = "bench/r%03d" % (m % repos)
    rdir = os.path.join(v2, "repositories", repo)
    cfg = referenced[(m * 3) % len(referenced)]
    ls = [referenced[(m * 3 + k) % len(referenced)] for k in (1, 2)]
    body = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 40},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": 40} for l in ls],
        "annotations": {"n": str(m)},
    }).encode()
    d = put_blob(body)
    for b in [cfg] + ls:
        link(os.path.join(rdir, "_layers/sha256", b[7:], "link"), b)
    link(os.path.join(rdir, "_manifests/revisions/sha256", d[7:], "link"), d)
    # Half the manifests keep a tag, the rest are untagged revisions; every repository has
    # tags (Distribution 2.8's --delete-untagged fails on a repository without any).
    if (m // repos) % 2 == 0:
        t = os.path.join(rdir, "_manifests/tags", "t%d" % m)
        link(os.path.join(t, "current/link"), d)
        link(os.path.join(t, "index/sha256", d[7:], "link"), d)
PY
# Make every file older than any grace period.
find "$tmp/base" -exec touch -h -d '2 days ago' {} +

config() {
    cat >"$1" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $2}
  delete: {enabled: true}
http: {addr: 127.0.0.1:0}
YML
}
count_blobs() { find "$1/docker/registry/v2/blobs" -name data -type f | wc -l; }

row() { printf '%-46s %10s %10s\n' "$@"; }
declare -A secs=()
run() { # NAME CMD...: copy the base, time CMD on it, record seconds and blobs left
    local name=$1 dir=$tmp/$1
    shift
    rm -rf "$dir"
    cp -a "$tmp/base" "$dir"
    config "$tmp/$name.yml" "$dir"
    sync
    local start end
    start=$(date +%s.%N)
    "$@" "$tmp/$name.yml" >"$tmp/$name.log" 2>&1 || { tail -n 20 "$tmp/$name.log" >&2; echo "bench-gc: $name failed" >&2; exit 1; }
    end=$(date +%s.%N)
    secs[$name]=$(echo "$end - $start" | bc)
    echo "bench-gc: $name took ${secs[$name]} s" >&2
    left[$name]=$(count_blobs "$dir")
    rm -rf "$dir"
}
declare -A left=()
total=$(count_blobs "$tmp/base")
run distribution docker-registry garbage-collect
run berth "$berth" garbage-collect
run distribution_untagged docker-registry garbage-collect --delete-untagged
run berth_untagged "$berth" garbage-collect --delete-untagged

echo
echo "GC of $manifests manifests and $total blobs (100 repositories; half the manifests tagged)"
row "collector" "seconds" "blobs left"
row "docker-registry garbage-collect (2.8)" "${secs[distribution]}" "${left[distribution]}"
row "berth garbage-collect" "${secs[berth]}" "${left[berth]}"
row "docker-registry garbage-collect --delete-untagged" "${secs[distribution_untagged]}" "${left[distribution_untagged]}"
row "berth garbage-collect --delete-untagged" "${secs[berth_untagged]}" "${left[berth_untagged]}"
printf 'speed-up: %.1fx (all revisions), %.1fx (--delete-untagged)\n' \
    "$(echo "${secs[distribution]} / ${secs[berth]}" | bc -l)" \
    "$(echo "${secs[distribution_untagged]} / ${secs[berth_untagged]}" | bc -l)"
