#!/usr/bin/env bash
# End-to-end test with the Docker engine: a private dockerd (own data root
# and socket, vfs storage, no network setup) pushes to and pulls from the
# registry exactly as in the registry walkthrough (tag, push, rm, pull on
# localhost:<port>, which docker treats as an insecure registry, so plain
# HTTP), checking image IDs and manifest digests survive; also a two-layer
# image from `docker build` FROM scratch, a pull by digest and a push into a
# second repository that docker does with cross-repository mounts.
# Images are made with `docker import`/`docker build` (no network).
#
# usage: tests/e2e/docker.sh [berth|distribution]   (default: berth)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool /usr/sbin/dockerd /usr/bin/docker
if ((EUID != 0)); then
    skip "dockerd needs root"
fi

start_dockerd
start_registry "$E2E_KIND" "$E2E_TMP/data" "$(free_port)"
P=$REG_PORT
V2=application/vnd.docker.distribution.manifest.v2+json

# dk ARGS...: the docker client; output kept, shown on failure.
dk() {
    local out=$E2E_TMP/docker.out
    if ! dockercli "$@" >"$out" 2>&1; then
        printf -- '----- docker %s -----\n' "$*" >&2
        cat "$out" >&2
        fail "docker $1 failed: docker $*"
    fi
    cat "$out"
}

image_id() {
    dockercli image inspect --format '{{.Id}}' "$1"
}

# pushed_digest PUSH_OUTPUT: the "digest: sha256:..." that docker push prints.
pushed_digest() {
    sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p' <<<"$1" | tail -n 1
}

# registry_digest REPO TAG: Docker-Content-Digest the registry answers for it.
registry_digest() {
    curl -sS -I -H "Accept: $V2" "http://$REG_ADDR/v2/$1/manifests/$2" >"$E2E_TMP/h"
    header "$E2E_TMP/h" Docker-Content-Digest
}

# --- an image without network: docker import of generated files ----------
mkdir -p "$E2E_TMP/rootfs/etc" "$E2E_TMP/rootfs/data"
echo "berth e2e docker image" >"$E2E_TMP/rootfs/etc/e2e-release"
make_random_file "$E2E_TMP/rootfs/data/blob" 1500000
tar -C "$E2E_TMP/rootfs" -cf "$E2E_TMP/rootfs.tar" .
dk import "$E2E_TMP/rootfs.tar" test >/dev/null
TEST_ID=$(image_id test)

# --- the walkthrough ---------------------------------------------------------
dk image tag test "localhost:$P/my_test"
out=$(dk push "localhost:$P/my_test")
DIGEST=$(pushed_digest "$out")
[[ -n $DIGEST ]] || fail "docker push printed no digest: $out"
pass "docker push localhost:$P/my_test ($DIGEST)"
assert_eq "$DIGEST" "$(registry_digest my_test latest)" "registry has my_test:latest at the digest docker printed"
dk image rm "localhost:$P/my_test" >/dev/null
dk image rm test >/dev/null
if dockercli image inspect "$TEST_ID" >/dev/null 2>&1; then
    fail "image $TEST_ID still present after docker image rm"
fi
pass "docker image rm removed the image locally"
out=$(dk pull "localhost:$P/my_test")
grep -q "Digest: $DIGEST" <<<"$out" || fail "docker pull did not report digest $DIGEST: $out"
pass "docker pull localhost:$P/my_test reports the pushed digest"
assert_eq "$TEST_ID" "$(image_id "localhost:$P/my_test")" "pulled image has the original image ID"
dk image inspect --format '{{json .RepoDigests}}' "localhost:$P/my_test" >"$E2E_TMP/rd"
jq -e --arg d "localhost:$P/my_test@$DIGEST" 'index($d)' "$E2E_TMP/rd" >/dev/null ||
    fail "RepoDigests $(cat "$E2E_TMP/rd") lack localhost:$P/my_test@$DIGEST"
pass "pulled image's RepoDigests has the pushed digest"

# --- pull by digest ----------------------------------------------------------
dk image rm "localhost:$P/my_test" >/dev/null
dk pull "localhost:$P/my_test@$DIGEST" >/dev/null
assert_eq "$TEST_ID" "$(image_id "localhost:$P/my_test@$DIGEST")" "docker pull by digest gives the original image"

# --- a two-layer image from docker build FROM scratch ---------------------------
mkdir -p "$E2E_TMP/ctx"
echo "first layer" >"$E2E_TMP/ctx/one.txt"
make_random_file "$E2E_TMP/ctx/two.bin" 1200000
printf 'FROM scratch\nCOPY one.txt /one.txt\nCOPY two.bin /data/two.bin\nLABEL org.example.e2e=docker-build\n' \
    >"$E2E_TMP/ctx/Dockerfile"
dk build -q -t "localhost:$P/e2e/docker-multi:v1" "$E2E_TMP/ctx" >/dev/null
MULTI_ID=$(image_id "localhost:$P/e2e/docker-multi:v1")
assert_eq 2 "$(dockercli image inspect --format '{{len .RootFS.Layers}}' "$MULTI_ID")" "docker build made a two-layer image"
out=$(dk push "localhost:$P/e2e/docker-multi:v1")
MULTI_DIGEST=$(pushed_digest "$out")
assert_eq "$MULTI_DIGEST" "$(registry_digest e2e/docker-multi v1)" "two-layer push: registry has the printed digest"
curl -sS -H "Accept: $V2" "http://$REG_ADDR/v2/e2e/docker-multi/manifests/v1" >"$E2E_TMP/multi.json"
assert_eq 2 "$(jq '.layers | length' "$E2E_TMP/multi.json")" "two-layer push: manifest lists two layers"
dk image rm "localhost:$P/e2e/docker-multi:v1" >/dev/null
out=$(dk pull "localhost:$P/e2e/docker-multi:v1")
grep -q "Digest: $MULTI_DIGEST" <<<"$out" || fail "two-layer pull did not report digest $MULTI_DIGEST: $out"
assert_eq "$MULTI_ID" "$(image_id "localhost:$P/e2e/docker-multi:v1")" "two-layer pull: original image ID"

# --- cross-repository push: docker mounts known layers -------------------------
dk image tag "localhost:$P/e2e/docker-multi:v1" "localhost:$P/e2e/docker-copy:v1"
out=$(dk push "localhost:$P/e2e/docker-copy:v1")
mounted=$(grep -c 'Mounted from e2e/docker-multi' <<<"$out" || true)
assert_eq 2 "$mounted" "push to a second repository mounts both layers from the first"
assert_eq "$MULTI_DIGEST" "$(pushed_digest "$out")" "second repository: same manifest digest"
dk image rm "localhost:$P/e2e/docker-copy:v1" "localhost:$P/e2e/docker-multi:v1" >/dev/null
dk pull "localhost:$P/e2e/docker-copy:v1" >/dev/null
assert_eq "$MULTI_ID" "$(image_id "localhost:$P/e2e/docker-copy:v1")" "pull from the second repository: original image ID"

e2e_finish
