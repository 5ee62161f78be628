#!/usr/bin/env bash
# Three berth replicas on one S3 bucket (Garage in CI: scripts/garage.sh), no shared secret:
#  1. one upload spanning replicas by hand: POST on A, PATCHes on B, C and A, PUT on C;
#  2. skopeo pushes and pulls through a load balancer that sends every request to a replica
#     picked at random (tests/e2e/random_lb.py), so each push's POST, PATCH and PUT scatter;
#  3. a tag moved on one replica is seen by the others within the documented bound
#     (berth-registry's LINK_TTL, 1 s, plus request time: 2 s is asserted);
#  4. a bucket written by Distribution's S3 driver is served by berth as it is, and the
#     other way round;
#  5. a pull-through cache on the bucket: filled through one replica, served by another
#     with the upstream stopped.
#
# usage: tests/e2e/s3_replicas.sh [berth]   (needs BERTH_TEST_S3_*: scripts/garage.sh env)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool skopeo umoci python3
if [[ -z ${BERTH_TEST_S3_ENDPOINT:-} ]]; then
    [[ ${CI:-} == true ]] && fail "BERTH_TEST_S3_* not set (scripts/garage.sh start; eval \"\$(scripts/garage.sh env)\")"
    skip "BERTH_TEST_S3_* not set (scripts/garage.sh start; eval \"\$(scripts/garage.sh env)\")"
fi
export BERTH_STORAGE=s3

SHARED=$E2E_TMP/shared
PORTS=()
for r in a b c; do
    # A and B redirect blob GETs to presigned URLs (the default on S3); C serves the bytes.
    [[ $r == c ]] && export E2E_S3_REDIRECT_DISABLE=true
    start_registry berth "$SHARED" "$(free_port)"
    PORTS+=("$REG_PORT")
    log "replica $r on $REG_PORT"
done
A=http://127.0.0.1:${PORTS[0]} B=http://127.0.0.1:${PORTS[1]} C=http://127.0.0.1:${PORTS[2]}

# --- 1. one upload, four requests, three replicas ---------------------------------------
blob=$E2E_TMP/blob
make_random_file "$blob" $((13 * 1024 * 1024 + 4321))
digest=sha256:$(sha256 "$blob")
piece() { head -c $(($1 + $2)) "$blob" | tail -c "$2"; }
loc=$(curl -fsS -o /dev/null -D - -X POST "$A/v2/e2e/span/blobs/uploads/" | header /dev/stdin Location)
[[ -n $loc ]] || fail "POST on A: no Location"
uuid=${loc##*/uploads/}
uuid=${uuid%%\?*}
path=/v2/e2e/span/blobs/uploads/$uuid
offset=0
for step in "B $((6 * 1024 * 1024))" "C $((1024 * 1024))" "A $((3 * 1024 * 1024))"; do
    read -r who len <<<"$step"
    case $who in A) base=$A ;; B) base=$B ;; C) base=$C ;; esac
    code=$(piece "$offset" "$len" | curl -sS -o /dev/null -w '%{http_code}' -X PATCH \
        -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $offset-$((offset + len - 1))" --data-binary @- "$base$path")
    assert_eq 202 "$code" "PATCH of $len bytes at $offset on replica $who"
    offset=$((offset + len))
    range=$(curl -fsS -o /dev/null -D - "$C$path" | header /dev/stdin Range)
    assert_eq "0-$((offset - 1))" "$range" "upload status on replica C after the PATCH on $who"
done
rest=$(($(stat -c %s "$blob") - offset))
code=$(piece "$offset" "$rest" | curl -sS -o /dev/null -w '%{http_code}' -X PUT \
    -H 'Content-Type: application/octet-stream' --data-binary @- "$C$path?digest=$digest")
assert_eq 201 "$code" "PUT with the last $rest bytes on replica C (re-hashes what A and B stored)"
for base in "$A" "$B" "$C"; do
    # -L: on S3, berth answers blob GETs with a redirect to a presigned URL by default.
    curl -fsSL -o "$E2E_TMP/back" "$base/v2/e2e/span/blobs/$digest"
    check_blob "$E2E_TMP/back" "$digest" "$(stat -c %s "$blob")" "blob read back from $base"
done
assert_eq 307 "$(http_code GET "$B/v2/e2e/span/blobs/$digest")" "blob GET redirects to the bucket"
assert_eq 206 "$(http_code GET "$B/v2/e2e/span/blobs/$digest" -L -H 'Range: bytes=6291450-6291460')" \
    "ranged GET through the redirect"
assert_eq 206 "$(http_code GET "$C/v2/e2e/span/blobs/$digest" -H 'Range: bytes=6291450-6291460')" \
    "ranged GET served by berth (storage.redirect.disable)"
unset E2E_S3_REDIRECT_DISABLE

# --- 2. pushes and pulls scattered request by request ------------------------------------
LB_PORT=$(free_port)
python3 "$E2E_DIR/random_lb.py" "$LB_PORT" "${PORTS[@]}" 2>"$E2E_TMP/registry-lb.log" &
E2E_BG_PIDS+=($!)
for ((i = 0; i < 50; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$LB_PORT/v2/" 2>/dev/null && break
    sleep 0.1
done
L=$E2E_TMP/layout
for n in 1 2 3; do
    build_oci_image "$L" "img$n" $((6 * 1024 * 1024 + n))
    push_image "oci:$L:img$n" "docker://127.0.0.1:$LB_PORT/e2e/scatter:img$n"
done
spread=$(awk '{print $4}' "$E2E_TMP/registry-lb.log" | sort | uniq -c | wc -l)
assert_eq 3 "$spread" "the pushes' requests reached all three replicas"
grep -q '^PATCH.*-> ' "$E2E_TMP/registry-lb.log" || fail "no PATCH went through the balancer"
for n in 1 2 3; do
    raw_manifest "oci:$L:img$n" >"$E2E_TMP/orig$n.json"
    copy_image "docker://127.0.0.1:$LB_PORT/e2e/scatter:img$n" "dir:$E2E_TMP/pulled$n"
    cmp -s "$E2E_TMP/pulled$n/manifest.json" "$E2E_TMP/orig$n.json" ||
        fail "img$n: pulled manifest differs"
    while read -r d size; do
        check_blob "$E2E_TMP/pulled$n/${d#sha256:}" "$d" "$size" "img$n blob $d"
    done < <(manifest_blobs "$E2E_TMP/orig$n.json")
    pass "img$n: pushed and pulled through random replicas, bit-identical"
done
tags=$(curl -fsS "$B/v2/e2e/scatter/tags/list" | jq -c '.tags | sort')
assert_eq '["img1","img2","img3"]' "$tags" "tags list on one replica shows every push"

# --- 3. a tag moved on A is seen on B and C within the bound -------------------------------
d2=sha256:$(sha256 "$E2E_TMP/orig2.json")
mt=$(jq -r .mediaType "$E2E_TMP/orig1.json")
# img2's blobs are in e2e/scatter; point tag "moving" at img1, read it everywhere (caches
# now hold it), then move it to img2 on A.
curl -fsS -o /dev/null -X PUT -H "Content-Type: $mt" --data-binary "@$E2E_TMP/orig1.json" "$A/v2/e2e/scatter/manifests/moving"
for base in "$B" "$C"; do
    curl -fsS -o /dev/null -I "$base/v2/e2e/scatter/manifests/moving"
done
curl -fsS -o /dev/null -X PUT -H "Content-Type: $mt" --data-binary "@$E2E_TMP/orig2.json" "$A/v2/e2e/scatter/manifests/moving"
moved=$(date +%s%N)
for base in "$B" "$C"; do
    while true; do
        got=$(curl -fsS -o /dev/null -D - -I -H "Accept: $mt" "$base/v2/e2e/scatter/manifests/moving" |
            header /dev/stdin Docker-Content-Digest)
        [[ $got == "$d2" ]] && break
        (($(date +%s%N) - moved < 5000000000)) || fail "$base still serves the old tag after 5 s"
        sleep 0.05
    done
    ms=$((($(date +%s%N) - moved) / 1000000))
    ((ms <= 2000)) || fail "$base saw the moved tag after $ms ms (bound: 1 s cache + request time)"
    pass "tag move on A seen on $base after $ms ms"
done

# --- 4. Distribution's S3 driver and berth on the same bucket ------------------------------
if command -v docker-registry >/dev/null 2>&1; then
    D=$E2E_TMP/from-distribution
    start_registry distribution "$D" "$(free_port)"
    push_image "oci:$L:img3" "docker://$REG_ADDR/e2e/interop:v1"
    stop_registry
    start_registry berth "$D" "$(free_port)"
    copy_image "docker://$REG_ADDR/e2e/interop:v1" "dir:$E2E_TMP/interop-berth"
    cmp -s "$E2E_TMP/interop-berth/manifest.json" "$E2E_TMP/orig3.json" ||
        fail "berth serves a different manifest than Distribution stored"
    while read -r d size; do
        check_blob "$E2E_TMP/interop-berth/${d#sha256:}" "$d" "$size" "interop blob $d"
    done < <(manifest_blobs "$E2E_TMP/orig3.json")
    pass "a push stored by Distribution's S3 driver pulls from berth, bit-identical"
    push_image "oci:$L:img1" "docker://$REG_ADDR/e2e/interop:v2"
    stop_registry
    start_registry distribution "$D" "$(free_port)"
    copy_image "docker://$REG_ADDR/e2e/interop:v2" "dir:$E2E_TMP/interop-dist"
    cmp -s "$E2E_TMP/interop-dist/manifest.json" "$E2E_TMP/orig1.json" ||
        fail "Distribution serves a different manifest than berth stored"
    pass "a push stored by berth on S3 pulls from Distribution's S3 driver"
    stop_registry
else
    [[ ${CI:-} == true ]] && fail "docker-registry missing (scripts/install-deps.sh)"
    log "docker-registry missing: Distribution interop on S3 not checked"
fi

# --- 5. a pull-through cache shared by two replicas through the bucket ---------------------
# The upstream is a berth on the filesystem; two cache replicas on the bucket. A cold pull
# through one, the upstream stopped, the same pull through the other: everything it serves
# came from the bucket (the tag is stale: the upstream cannot confirm it).
BERTH_STORAGE=filesystem start_registry berth "$E2E_TMP/upstream" "$(free_port)"
UP_PORT=$REG_PORT
push_image "oci:$L:img2" "docker://$REG_ADDR/team/app:v1"
cache_yaml=$(printf 'proxy:\n  upstreams:\n    - prefix: up\n      remoteurl: http://127.0.0.1:%s\n' "$UP_PORT")
start_registry berth "$E2E_TMP/cache" "$(free_port)" "$cache_yaml"
P1=$REG_ADDR
start_registry berth "$E2E_TMP/cache" "$(free_port)" "$cache_yaml"
P2=$REG_ADDR
copy_image "docker://$P1/up/team/app:v1" "dir:$E2E_TMP/cached-1"
cmp -s "$E2E_TMP/cached-1/manifest.json" "$E2E_TMP/orig2.json" ||
    fail "the cache serves a different manifest than the upstream holds"
stop_registry "$UP_PORT"
clear_blob_info_cache
copy_image "docker://$P2/up/team/app:v1" "dir:$E2E_TMP/cached-2"
while read -r d size; do
    check_blob "$E2E_TMP/cached-2/${d#sha256:}" "$d" "$size" "blob $d from the other replica"
done < <(manifest_blobs "$E2E_TMP/orig2.json")
assert_eq stale "$(curl -fsS -o /dev/null -D - -I "http://$P2/v2/up/team/app/manifests/v1" | header /dev/stdin X-Berth-Cache)" \
    "the tag, unconfirmed with the upstream down, is served stale"
pass "a cold pull through one replica is served by another with the upstream down"

e2e_finish
