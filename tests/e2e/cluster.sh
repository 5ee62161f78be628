#!/usr/bin/env bash
# The cluster of scripts/cluster.sh under faults, with real clients talking to nginx only:
# three Garage nodes (one bucket, replication factor 3), three berth replicas on it, nginx
# round robin in front (no affinity).
#  0. Location headers name nginx, and requests through it reach all three replicas.
#  1. A Garage node killed with SIGKILL while skopeo, podman and docker push concurrently,
#     then brought back: each push succeeds or fails with an error (both recorded, at most 2
#     of 7 may fail, and each must succeed when pushed again); every acknowledged one pulls
#     back byte-identical with the node down, after it is back, and with another node down
#     once it is back (what was written without it was not lost).
#  2. A berth replica killed with SIGKILL during three chunked uploads by hand (curl, several
#     PATCHes each; a docker push too in the first round): a request that fails is followed
#     by a GET of the upload, and the upload resumes where its Range says, on whichever
#     replica nginx picks; every upload completes with its digest. Up to three rounds (a
#     random victim, restarted after each), until a kill has cut a PATCH short.
#  3. Online garbage collection on one replica (interval 1 s, grace period 2 s) while the two
#     others take pushes and manifest deletes directly: every surviving image pulls intact,
#     the deleted images' blobs are swept.
#  4. `berth check` on the bucket finds nothing wrong.
#  5. A blob of 10 MiB + 1000 bytes (its last segment short enough for Garage to keep it
#     inline) is stored, streamed and monolithic (a bug this suite found: a 500 at the PUT).
# Prints the kills survived and the acknowledged images and blobs verified.
#
# usage: tests/e2e/cluster.sh [berth]   (starts its own cluster, so no BERTH_TEST_S3_*;
#   needs nginx (scripts/install-deps.sh), Garage (scripts/garage.sh install), root)
#   E2E_CLUSTER_SEED: seed of the random kill times and victims (printed by each run)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
[[ $E2E_KIND == berth ]] || skip "tests berth replicas (Distribution has no equivalent)"
require_tool skopeo podman umoci nginx /usr/sbin/dockerd /usr/bin/docker
((EUID == 0)) || skip "dockerd needs root"
[[ -x $("$REPO_ROOT/scripts/garage.sh" bin) ]] || {
    [[ ${CI:-} == true ]] && fail "Garage is not built (scripts/garage.sh install)"
    skip "Garage is not built (scripts/garage.sh install)"
}

seed=${E2E_CLUSTER_SEED:-$((RANDOM * 32768 + RANDOM))}
log "random seed $seed (E2E_CLUSTER_SEED=$seed repeats this run's kill times and victims)"
RANDOM=$seed
# rand_sleep LOW HIGH: a random time between LOW and HIGH milliseconds, in seconds for sleep.
rand_sleep() {
    local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
    printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

CL=$REPO_ROOT/scripts/cluster.sh
export BERTH_CLUSTER_DIR=$E2E_TMP/cluster BERTH_BIN=$BERTH_PATH
cluster() { "$CL" "$@"; }

# Stop the cluster before lib.sh's cleanup removes its directory; on failure show its logs.
# shellcheck disable=SC2317 # run by the EXIT trap
_cluster_exit() {
    local rc=$? f
    trap - ERR
    set +e
    if ((rc != 0 && rc != ${E2E_SKIP_EXIT:-0})) && [[ -d $BERTH_CLUSTER_DIR ]]; then
        for f in "$BERTH_CLUSTER_DIR"/{berth1,berth2,berth3}/berth.log \
            "$BERTH_CLUSTER_DIR"/garage{1,2,3}/garage.log "$BERTH_CLUSTER_DIR"/nginx/error.log; do
            [[ -f $f ]] || continue
            printf -- '----- last lines of %s -----\n' "${f#"$BERTH_CLUSTER_DIR"/}" >&2
            grep -v ' INFO \| DEBUG ' "$f" | tail -n 15 >&2
        done
    fi
    BERTH_CLUSTER_KEEP=${E2E_KEEP_TMP:-0} cluster stop
    (exit "$rc")
    _e2e_cleanup
}
trap _cluster_exit EXIT

# --- bookkeeping: what was acknowledged, what failed -------------------------------------
ACKED=$E2E_TMP/acked   # "repo digest client" per acknowledged image
FAILED=$E2E_TMP/failed # "repo client error" per push that failed
DELETED=$E2E_TMP/deleted
: >"$ACKED"
: >"$FAILED"
: >"$DELETED"
KILLS_GARAGE=0 KILLS_BERTH=0 PATCH_RESUMES=0 VERIFIED_IMAGES=0
declare -A BLOBS_SEEN=()

ack() { printf '%s %s %s\n' "$1" "$2" "$3" >>"$ACKED"; }
nack() { printf '%s %s %s\n' "$1" "$2" "$3" >>"$FAILED"; }

ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

# verify_image BASE REPO DIGEST: the manifest BASE serves for REPO@DIGEST hashes to DIGEST,
# and every blob it lists comes back (following redirects to the bucket) with its digest and
# size. Prints the first thing wrong on stderr and returns 1.
verify_image() {
    local base=$1 repo=$2 digest=$3 m d size got
    m=$(mktemp "$E2E_TMP/verify.XXXXXX")
    if ! curl -fsS -o "$m" -H "Accept: $ACCEPT" "$base/v2/$repo/manifests/$digest"; then
        echo "$repo@$digest: manifest GET failed" >&2
        return 1
    fi
    got=sha256:$(sha256 "$m")
    [[ $got == "$digest" ]] || {
        echo "$repo@$digest: served manifest hashes to $got" >&2
        return 1
    }
    while read -r d size; do
        if ! curl -fsSL -o "$m.blob" "$base/v2/$repo/blobs/$d"; then
            echo "$repo@$digest: blob $d GET failed" >&2
            return 1
        fi
        got=sha256:$(sha256 "$m.blob")
        [[ $got == "$d" && $(stat -c %s "$m.blob") == "$size" ]] || {
            echo "$repo@$digest: blob $d served as $got, $(stat -c %s "$m.blob") bytes (want $size)" >&2
            return 1
        }
        BLOBS_SEEN[$d]=1
    done < <(manifest_blobs "$m")
    rm -f "$m" "$m.blob"
}

# verify_acked BASE WHEN: every acknowledged image not deleted since is intact through BASE.
verify_acked() {
    local base=$1 when=$2 repo digest client n=0
    while read -r repo digest client; do
        grep -qx "$repo $digest" "$DELETED" && continue
        verify_image "$base" "$repo" "$digest" || fail "$when: acknowledged $client push $repo@$digest is not intact"
        n=$((n + 1))
    done < <(awk '!seen[$1 " " $2]++' "$ACKED")
    VERIFIED_IMAGES=$n
    pass "$when: all $n acknowledged images pull back byte-identical"
}

# --- clients -----------------------------------------------------------------------------
PM_OPTS=(
    --root "$E2E_TMP/podman/root" --runroot "$E2E_TMP/podman/runroot"
    --tmpdir "$E2E_TMP/podman/tmp" --storage-driver=vfs
    --cgroup-manager=cgroupfs --events-backend=file
)
mkdir -p "$E2E_TMP/podman/vartmp"
# (without the DOCKER_CONFIG start_dockerd exports for docker: podman would look for
# credentials there)
pm() { env -u DOCKER_CONFIG TMPDIR="$E2E_TMP/podman/vartmp" podman "${PM_OPTS[@]}" "$@"; }

# make_tarball FILE BYTES: a root filesystem tarball with one incompressible file.
make_tarball() {
    local r
    r=$(mktemp -d "$E2E_TMP/rootfs.XXXXXX")
    mkdir -p "$r/etc" "$r/data"
    printf 'berth e2e cluster image %s\n' "${1##*/}" >"$r/etc/e2e-release"
    make_random_file "$r/data/blob" "$2"
    tar -C "$r" -cf "$1" .
    rm -rf "$r"
}

# The push_* helpers run in background workers: they record and never abort the test.
# push_skopeo TAG REPO [ADDR]: push oci:$L:TAG to REPO:TAG at ADDR (default: nginx).
push_skopeo() {
    local tag=$1 repo=$2 addr=${3:-$ADDR} log=$E2E_TMP/push-skopeo-$1.log want
    if skopeo --insecure-policy copy --dest-tls-verify=false --digestfile "$log.digest" \
        "oci:$L:$tag" "docker://$addr/$repo:$tag" >"$log" 2>&1; then
        want=sha256:$(raw_manifest "oci:$L:$tag" | sha256sum | cut -d' ' -f1)
        if [[ $(cat "$log.digest") == "$want" ]]; then
            ack "$repo" "$want" skopeo
        else
            nack "$repo" skopeo "acknowledged digest $(cat "$log.digest") is not the layout's $want"
        fi
    else
        nack "$repo" skopeo "$(grep -v '^\s*$' "$log" | tail -n 1)"
    fi
}

push_podman() {
    local img=$1 repo=$2 log=$E2E_TMP/push-podman-${2//\//-}.log
    if pm push --tls-verify=false --digestfile "$log.digest" "$img" "docker://$ADDR/$repo:1" >"$log" 2>&1; then
        ack "$repo" "$(cat "$log.digest")" podman
    else
        nack "$repo" podman "$(grep -v '^\s*$' "$log" | tail -n 1)"
    fi
}

push_docker() {
    local img=$1 repo=${1#*/} log=$E2E_TMP/push-docker-${1//[\/:]/-}.log d
    repo=${repo%:*}
    if dockercli push "$img" >"$log" 2>&1; then
        d=$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p' "$log" | tail -n 1)
        if [[ -n $d ]]; then
            ack "$repo" "$d" docker
        else
            nack "$repo" docker "push succeeded without printing a digest"
        fi
    else
        nack "$repo" docker "$(grep -v '^\s*$' "$log" | tail -n 1)"
    fi
}

# --- the cluster -------------------------------------------------------------------------
start_dockerd
cluster start
eval "$(cluster env)"
URL=$BERTH_CLUSTER_URL ADDR=$BERTH_CLUSTER_ADDR
read -r -a RPORTS <<<"$BERTH_CLUSTER_REPLICA_PORTS"
log "cluster up: $URL over replicas ${RPORTS[*]}"

# Images, all made before the faults so pushes overlap them: OCI layouts for skopeo,
# tarballs imported into podman's and docker's own storage.
L=$E2E_TMP/layout
for t in s1 s2 s3 s4 g1 g2 g3 g4; do
    build_oci_image "$L" "$t" $((1536 * 1024 + RANDOM))
done
for t in p1 p2; do
    make_tarball "$E2E_TMP/$t.tar" $((1536 * 1024 + RANDOM))
    pm import -q "$E2E_TMP/$t.tar" "localhost/e2e/$t" >/dev/null
done
for t in d1 d2 d3; do
    make_tarball "$E2E_TMP/$t.tar" $((1536 * 1024 + RANDOM))
    dockercli import "$E2E_TMP/$t.tar" "$ADDR/cluster/docker-$t:1" >/dev/null
done

# --- 0. through nginx --------------------------------------------------------------------
loc=$(curl -fsS -o /dev/null -D - -X POST "$URL/v2/cluster/probe/blobs/uploads/" | header /dev/stdin Location)
[[ $loc == "$URL/v2/cluster/probe/blobs/uploads/"* ]] || fail "upload Location '$loc' does not name nginx ($URL)"
pass "an upload's Location names nginx ($URL), not a replica"
clear_blob_info_cache
push_skopeo s1 cluster/skopeo-s1
[[ -s $ACKED ]] || fail "a push through nginx without faults failed: $(cat "$FAILED")"
for p in "${RPORTS[@]}"; do
    grep -q "upstream=127.0.0.1:$p " "$BERTH_CLUSTER_DIR/nginx/registry-access.log" ||
        fail "no request reached the replica on $p (round robin)"
done
pass "requests through nginx reached all three replicas"

# --- 1. a Garage node killed during pushes -----------------------------------------------
clear_blob_info_cache
(
    push_skopeo s2 cluster/skopeo-s2
    push_skopeo s3 cluster/skopeo-s3
) &
w1=$!
(
    push_podman localhost/e2e/p1 cluster/podman-p1
    push_podman localhost/e2e/p2 cluster/podman-p2
) &
w2=$!
(
    push_docker "$ADDR/cluster/docker-d1:1"
    push_docker "$ADDR/cluster/docker-d2:1"
) &
w3=$!
victim=$((1 + RANDOM % 3))
sleep "$(rand_sleep 300 1500)"
cluster kill "garage$victim"
KILLS_GARAGE=$((KILLS_GARAGE + 1))
running=0
for w in "$w1" "$w2" "$w3"; do kill -0 "$w" 2>/dev/null && running=$((running + 1)); done
log "garage$victim killed with $running of 3 push workers still pushing ($(($(wc -l <"$ACKED") - 1)) of 6 pushes done)"
((running > 0)) || fail "every push was over before the kill: the phase tests nothing"
wait "$w1" "$w2" "$w3"
push_skopeo s4 cluster/skopeo-s4 # entirely while the node is down
log "pushes acknowledged: $(($(wc -l <"$ACKED") - 1)) of 7, failed: $(wc -l <"$FAILED")"
while read -r repo client err; do
    log "push to $repo by $client failed with garage$victim killed: $err"
done <"$FAILED"
# A Garage node of three down leaves both quorums (2 of 3): a push may fail only as the node
# dies, if one of its requests was in flight there or hit another node that lost its quorum
# for that moment, and berth's S3 client's retries ran out (seen: a 500 on the final PUT).
(($(wc -l <"$FAILED") <= 2)) || fail "$(wc -l <"$FAILED") of 7 pushes failed with one Garage node of three down"
log "phase 1 done at ${SECONDS}s"
verify_acked "$URL" "garage$victim down"
cluster revive "garage$victim"
verify_acked "$URL" "garage$victim back"
# what failed is pushed again, as a user would, and must succeed now
while read -r repo client _; do
    case $repo in
        cluster/skopeo-*) push_skopeo "${repo##*-}" "$repo" ;;
        cluster/podman-*) push_podman "localhost/e2e/${repo##*-}" "$repo" ;;
        cluster/docker-*) push_docker "$ADDR/$repo:1" ;;
    esac
    grep -q "^$repo " "$ACKED" || fail "push to $repo by $client failed again with all nodes up"
    pass "push to $repo by $client, failed during the kill, succeeded when run again"
done <"$FAILED"
other=$((victim % 3 + 1))
cluster kill "garage$other"
KILLS_GARAGE=$((KILLS_GARAGE + 1))
verify_acked "$URL" "garage$victim back, garage$other down"
cluster revive "garage$other"

# --- 2. a berth replica killed during chunked uploads ------------------------------------
# upload_chunked REPO FILE OUT: POST, then PATCHes of 2 MiB (slowed to 8 MB/s, so one is in
# flight when the replica dies), then PUT, all through nginx. A request that fails is
# followed by a GET of the upload's URL, and the upload resumes at the offset its Range gives.
# Writes "digest resumes" to OUT, or "FAILED reason".
upload_chunked() {
    local repo=$1 file=$2 out=$3 size digest loc='' off=0 len code tries=0 resumes=0 st range
    size=$(stat -c %s "$file")
    digest=sha256:$(sha256 "$file")
    while [[ -z $loc ]]; do
        loc=$(curl -sS -o /dev/null -D - -X POST "$URL/v2/$repo/blobs/uploads/" 2>/dev/null | header /dev/stdin Location) || true
        ((++tries < 10)) || {
            echo "FAILED POST" >"$out"
            return
        }
    done
    while ((off < size)); do
        len=$((size - off < 2097152 ? size - off : 2097152))
        code=$(tail -c +$((off + 1)) "$file" | head -c "$len" |
            curl -sS -o /dev/null -w '%{http_code}' --limit-rate 8M -X PATCH \
                -H 'Content-Type: application/octet-stream' \
                -H "Content-Range: $off-$((off + len - 1))" --data-binary @- "$loc" 2>/dev/null) || true
        if [[ $code == 202 ]]; then
            off=$((off + len))
            continue
        fi
        ((++tries < 10)) || {
            echo "FAILED PATCH at $off: $code" >"$out"
            return
        }
        resumes=$((resumes + 1))
        st=$(curl -sS -o /dev/null -D - "$loc" 2>/dev/null) || true
        [[ $(status /dev/stdin <<<"$st") == 204 ]] || {
            echo "FAILED upload status after PATCH $code at $off: $(status /dev/stdin <<<"$st")" >"$out"
            return
        }
        range=$(header /dev/stdin Range <<<"$st")
        printf 'PATCH at %s answered %s; the upload status says Range: %s\n' "$off" "$code" "${range:-none}" >>"$out.log"
        if [[ -n $range ]]; then off=$((${range#*-} + 1)); else off=0; fi
    done
    for ((; tries < 10; tries++)); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$loc?digest=$digest" 2>/dev/null) || true
        [[ $code == 201 ]] && break
        # the PUT may have completed on a replica that died before answering
        [[ $(http_code HEAD "$URL/v2/$repo/blobs/$digest") == 200 ]] && break
        printf 'PUT answered %s\n' "$code" >>"$out.log"
        sleep 0.2
    done
    ((tries < 10)) || {
        echo "FAILED PUT: $code" >"$out"
        return
    }
    echo "$digest $resumes" >"$out"
}

# Rounds of three uploads at once, a random replica killed at a random moment in each, until
# a kill has cut a PATCH short (each round does with a chance of about 70%: the victim was
# receiving at least one of the three uploads' PATCHes). A docker push runs in the first.
layers='[]' n=0
for round in 1 2 3; do
    up=()
    for i in 1 2 3; do
        n=$((n + 1))
        # (the 4 KiB keep the last segment out of the sizes phase 5 checks on its own)
        make_random_file "$E2E_TMP/chunked$n" $((12 * 1024 * 1024 + 4096 + RANDOM))
        upload_chunked cluster/chunked "$E2E_TMP/chunked$n" "$E2E_TMP/chunked$n.out" &
        up+=($!)
    done
    if ((round == 1)); then
        push_docker "$ADDR/cluster/docker-d3:1" &
        up+=($!)
    fi
    rvictim=$((1 + RANDOM % 3))
    sleep "$(rand_sleep 500 2500)"
    cluster kill "berth$rvictim"
    KILLS_BERTH=$((KILLS_BERTH + 1))
    wait "${up[@]}"
    resumed=0
    for ((i = n - 2; i <= n; i++)); do
        read -r digest resumes <"$E2E_TMP/chunked$i.out"
        [[ $digest == sha256:* ]] || fail "chunked upload $i with berth$rvictim killed: $(cat "$E2E_TMP/chunked$i.out")"
        [[ $digest == "sha256:$(sha256 "$E2E_TMP/chunked$i")" ]] || fail "chunked upload $i: acknowledged $digest is not the file's"
        [[ -f $E2E_TMP/chunked$i.out.log ]] && sed "s/^/[chunked upload $i] /" "$E2E_TMP/chunked$i.out.log" >&2
        resumed=$((resumed + resumes))
        curl -fsSL -o "$E2E_TMP/back" "$URL/v2/cluster/chunked/blobs/$digest"
        check_blob "$E2E_TMP/back" "$digest" "$(stat -c %s "$E2E_TMP/chunked$i")" "chunked upload $i read back"
        layers=$(jq -c --arg d "$digest" --argjson s "$(stat -c %s "$E2E_TMP/chunked$i")" \
            '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $d, size: $s}]' <<<"$layers")
    done
    PATCH_RESUMES=$((PATCH_RESUMES + resumed))
    pass "round $round: 3 chunked uploads with berth$rvictim killed midway completed with their digests ($resumed failed request(s) resumed at the upload's Range)"
    if ((round == 1)); then
        if grep -q docker-d3 "$FAILED"; then
            log "docker push with berth$rvictim killed during it failed: $(grep docker-d3 "$FAILED")"
            # as a user would: push again (the layers already stored are skipped)
            push_docker "$ADDR/cluster/docker-d3:1"
            grep -q '^cluster/docker-d3 ' "$ACKED" || fail "docker push again with berth$rvictim down failed too: $(grep docker-d3 "$FAILED" | tail -n 1)"
            pass "docker push, cut by the kill of berth$rvictim, succeeded when run again"
        else
            retries=$(grep -c 'Retrying in' "$E2E_TMP/push-docker-${ADDR//[\/:]/-}-cluster-docker-d3-1.log" || true)
            pass "docker push with berth$rvictim killed during it was acknowledged (after $retries layer retries)"
        fi
    fi
    verify_acked "$URL" "berth$rvictim down"
    cluster revive "berth$rvictim"
    ((PATCH_RESUMES > 0)) && break
done
((PATCH_RESUMES > 0)) || log "in 3 rounds no kill cut a PATCH short: resuming went untested this run"
# A manifest makes the chunked blobs an image, so collection keeps them and the end checks them.
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$E2E_TMP/config.json"
cfg=sha256:$(sha256 "$E2E_TMP/config.json")
assert_eq 201 "$(http_code POST "$URL/v2/cluster/chunked/blobs/uploads/?digest=$cfg" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$E2E_TMP/config.json")" "config blob pushed"
jq -cj -n --arg c "$cfg" --argjson s "$(stat -c %s "$E2E_TMP/config.json")" --argjson l "$layers" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $s}, layers: $l}' \
    >"$E2E_TMP/chunked.json"
assert_eq 201 "$(http_code PUT "$URL/v2/cluster/chunked/manifests/v1" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$E2E_TMP/chunked.json")" \
    "manifest of the $n chunked blobs pushed"
ack cluster/chunked "sha256:$(sha256 "$E2E_TMP/chunked.json")" curl
log "phase 2 done at ${SECONDS}s"

# --- 3. online garbage collection on berth1, pushes and deletes on berth2 and berth3 -------
REGISTRY_STORAGE_MAINTENANCE_GARBAGECOLLECT_ENABLED=true \
    REGISTRY_STORAGE_MAINTENANCE_GARBAGECOLLECT_INTERVAL=1s \
    REGISTRY_STORAGE_MAINTENANCE_GARBAGECOLLECT_GRACEPERIOD=2s \
    cluster restart berth1
B2=http://127.0.0.1:${RPORTS[1]} B3=http://127.0.0.1:${RPORTS[2]}
clear_blob_info_cache
# Delete the skopeo images of phase 1 that were acknowledged (by digest, tags go too) while
# fresh images are pushed; s2's content is pushed again into another repository, racing the
# collector for the same blobs: that push must succeed with intact blobs or fail cleanly.
gone=()
while read -r repo digest client; do
    [[ $client == skopeo && $repo == cluster/skopeo-s[234] ]] && gone+=("$repo $digest")
done <"$ACKED"
((${#gone[@]} >= 1)) || fail "no acknowledged skopeo image of phase 1 to delete"
(
    push_skopeo g1 cluster/gc-g1 "127.0.0.1:${RPORTS[1]}"
    push_skopeo g2 cluster/gc-g2 "127.0.0.1:${RPORTS[2]}"
    push_skopeo g3 cluster/gc-g3 "127.0.0.1:${RPORTS[1]}"
) &
w1=$!
(
    for entry in "${gone[@]}"; do
        read -r repo digest <<<"$entry"
        base=$B2
        ((RANDOM % 2)) && base=$B3
        code=$(http_code DELETE "$base/v2/$repo/manifests/$digest")
        [[ $code == 202 ]] || echo "DELETE $repo@$digest on $base: $code" >>"$E2E_TMP/delete-errors"
        echo "$repo $digest" >>"$DELETED"
        sleep 1
    done
    sleep 1.5
    push_skopeo s2 cluster/gc-repush "127.0.0.1:${RPORTS[2]}"
    push_skopeo g4 cluster/gc-g4 "127.0.0.1:${RPORTS[1]}"
) &
w2=$!
wait "$w1" "$w2"
[[ ! -s $E2E_TMP/delete-errors ]] || fail "manifest deletes failed: $(cat "$E2E_TMP/delete-errors")"
for t in g1 g2 g3 g4; do
    grep -q "^cluster/gc-$t " "$ACKED" || fail "push of $t next to online gc failed: $(grep "gc-$t" "$FAILED")"
done
pass "pushes and ${#gone[@]} manifest deletes on berth2 and berth3 while berth1 collects"
if grep -q '^cluster/gc-repush ' "$ACKED"; then
    log "the re-push of deleted content racing the collector was acknowledged (checked below)"
elif grep -q '^cluster/gc-repush ' "$FAILED"; then
    log "the re-push of deleted content racing the collector failed (allowed): $(grep gc-repush "$FAILED")"
fi
# the deleted images' own blobs go once older than the grace period (s2's content was pushed
# again: its blobs may rightly stay)
blob=
for entry in "${gone[@]}"; do
    read -r repo digest <<<"$entry"
    [[ $repo == cluster/skopeo-s2 ]] && continue
    blob=$(raw_manifest "oci:$L:${repo##*-}" | jq -r '.layers[-1].digest')
    break
done
if [[ -n $blob ]]; then
    for ((i = 0; i < 100; i++)); do
        [[ $(http_code HEAD "$B2/v2/$repo/blobs/$blob") == 404 ]] && break
        sleep 0.2
    done
    assert_eq 404 "$(http_code HEAD "$B2/v2/$repo/blobs/$blob")" "the online collector swept a deleted image's layer"
fi
sleep 2.5 # a few more passes over what was just pushed
verify_acked "$URL" "after online gc"
for entry in "${gone[@]}"; do
    read -r repo digest <<<"$entry"
    assert_eq 404 "$(http_code GET "$URL/v2/$repo/manifests/$digest")" "deleted $repo@${digest:7:12} stays deleted"
done
swept=$(grep 'garbage collection finished' "$BERTH_CLUSTER_DIR/berth1/berth.log" |
    sed -n 's/.*blobs_swept=\([0-9]*\).*/\1/p' | awk '{s += $1} END {print s + 0}')
passes=$(grep -c 'garbage collection finished' "$BERTH_CLUSTER_DIR/berth1/berth.log" || true)
gcfail=$(grep -c 'garbage collection failed' "$BERTH_CLUSTER_DIR/berth1/berth.log" || true)
assert_eq 0 "$gcfail" "no collection pass failed ($passes passes, $swept blobs swept)"
cluster restart berth1
log "phase 3 done at ${SECONDS}s"

# --- 4. real clients pull; berth check on the bucket -----------------------------------------
d1=$(awk '$1 == "cluster/docker-d1" {print $2}' "$ACKED")
if [[ -n $d1 ]]; then
    dockercli image rm "$ADDR/cluster/docker-d1:1" >/dev/null
    dockercli pull "$ADDR/cluster/docker-d1@$d1" >/dev/null || fail "docker pull of docker-d1 by digest"
    pass "docker pulls its acknowledged image back through nginx"
fi
p1=$(awk '$1 == "cluster/podman-p1" {print $2}' "$ACKED")
if [[ -n $p1 ]]; then
    pm pull -q --tls-verify=false "$ADDR/cluster/podman-p1@$p1" >/dev/null || fail "podman pull of podman-p1 by digest"
    pass "podman pulls its acknowledged image back through nginx"
fi
"$BERTH_PATH" check "$BERTH_CLUSTER_DIR/berth1/config.yml" >"$E2E_TMP/check.log" 2>&1 ||
    fail "berth check on the bucket: $(grep -v ' INFO ' "$E2E_TMP/check.log" | tail -n 20)"
pass "berth check: nothing wrong in the bucket"
BLOBS_SEEN=()
verify_acked "$URL" "at the end"

# Not a failure by itself (nginx's 502 for a request cut by a kill is one), but worth knowing:
# what berth itself answered with a 5xx.
grep -h '" 5[0-9][0-9] ' "$BERTH_CLUSTER_DIR"/berth{1,2,3}/berth.log >"$E2E_TMP/5xx" || true
if [[ -s $E2E_TMP/5xx ]]; then
    log "berth answered $(wc -l <"$E2E_TMP/5xx") request(s) with a 5xx:"
    sed 's/^/    /' "$E2E_TMP/5xx" | head -n 20 >&2
fi
images=$VERIFIED_IMAGES
log "kills survived: $((KILLS_GARAGE + KILLS_BERTH)) (Garage nodes: $KILLS_GARAGE, berth replicas: $KILLS_BERTH);" \
    "acknowledged images verified: $images, distinct blobs verified: ${#BLOBS_SEEN[@]};" \
    "pushes that failed (recorded above): $(wc -l <"$FAILED"); PATCHes resumed: $PATCH_RESUMES"
printf 'cluster: kills survived %d (garage %d, berth %d), acknowledged images verified %d, blobs verified %d, pushes failed %d, PATCHes resumed %d\n' \
    $((KILLS_GARAGE + KILLS_BERTH)) "$KILLS_GARAGE" "$KILLS_BERTH" "$images" "${#BLOBS_SEEN[@]}" \
    "$(wc -l <"$FAILED")" "$PATCH_RESUMES"

# --- 5. a blob whose last segment Garage stores inline ------------------------------------
# Found by this suite: a blob of 10 MiB (storage.s3.chunksize) plus up to 3 KiB is stored as
# a 10 MiB segment and a segment so short that Garage keeps it inline in its metadata, and
# Garage refuses UploadPartCopy from an inline object ("Source object is too small (minimum
# part size is 5Mb)"), so the final PUT failed with 500 and the upload was gone. Both the
# streamed PATCH-then-PUT and the monolithic PUT must store it.
make_random_file "$E2E_TMP/tail" $((10 * 1024 * 1024 + 1000))
tail_digest=sha256:$(sha256 "$E2E_TMP/tail")
loc=$(curl -fsS -o /dev/null -D - -X POST "$URL/v2/cluster/tail/blobs/uploads/" | header /dev/stdin Location)
assert_eq 202 "$(http_code PATCH "$loc" -H 'Content-Type: application/octet-stream' --data-binary "@$E2E_TMP/tail")" \
    "a blob of 10 MiB + 1000 bytes streamed in one PATCH"
assert_eq 201 "$(http_code PUT "$loc?digest=$tail_digest")" \
    "the PUT closing an upload of 10 MiB + 1000 bytes (a 1000-byte last segment, inline in Garage)"
curl -fsSL -o "$E2E_TMP/back" "$URL/v2/cluster/tail/blobs/$tail_digest"
check_blob "$E2E_TMP/back" "$tail_digest" $((10 * 1024 * 1024 + 1000)) "the 10 MiB + 1000 bytes blob read back"
loc=$(curl -fsS -o /dev/null -D - -X POST "$URL/v2/cluster/tail2/blobs/uploads/" | header /dev/stdin Location)
assert_eq 201 "$(http_code PUT "$loc?digest=$tail_digest" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$E2E_TMP/tail")" "a monolithic PUT of 10 MiB + 1000 bytes"

e2e_finish
