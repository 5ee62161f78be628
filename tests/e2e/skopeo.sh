#!/usr/bin/env bash
# End-to-end test with skopeo, the client of containers/image (the library
# behind podman, buildah and CRI-O): push and pull OCI manifests, Docker
# schema 2 manifests, OCI indexes and Docker manifest lists, cross-repository
# blob mounts and manifest deletion, checking that every byte and digest
# survives the round trip. Images are built locally with umoci (no network).
#
# usage: tests/e2e/skopeo.sh [berth|distribution]   (default: berth)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool skopeo umoci

L=$E2E_TMP/layout
build_oci_image "$L" latest
oci_retag_arch "$L" latest arm arm64
build_oci_index "$L" multi latest arm

start_registry "$E2E_KIND" "$E2E_TMP/data" "$(free_port)"
R=docker://$REG_ADDR

raw_manifest "oci:$L:latest" >"$E2E_TMP/orig.json"
ORIG_DIGEST=sha256:$(sha256 "$E2E_TMP/orig.json")
mapfile -t ORIG_LAYERS < <(jq -r '.layers[].digest' "$E2E_TMP/orig.json")
ORIG_CONFIG=$(jq -r .config.digest "$E2E_TMP/orig.json")

# check_pulled_dir DIR MANIFEST_FILE WHAT: a `dir:` copy holds MANIFEST_FILE's
# exact bytes and each of its blobs, bit-identical to the original layout's.
check_pulled_dir() {
    local dir=$1 manifest=$2 what=$3 digest size
    cmp -s "$dir/manifest.json" "$manifest" || fail "$what: dir: manifest.json differs from the pushed manifest"
    while read -r digest size; do
        check_blob "$dir/${digest#sha256:}" "$digest" "$size" "$what: blob $digest"
        cmp -s "$dir/${digest#sha256:}" "$(oci_blob "$L" "$digest")" ||
            fail "$what: blob $digest differs from the original"
    done < <(manifest_blobs "$manifest")
    pass "$what: pulled into dir:, manifest and $(manifest_blobs "$manifest" | wc -l) blobs bit-identical"
}

# --- 1. OCI image manifest, pushed as is --------------------------------
push_image "oci:$L:latest" "$R/e2e/skopeo:v1"
raw_manifest "$R/e2e/skopeo:v1" >"$E2E_TMP/v1.json"
cmp -s "$E2E_TMP/v1.json" "$E2E_TMP/orig.json" || fail "OCI push: registry serves different manifest bytes"
pass "OCI push: registry serves the pushed manifest byte for byte"
assert_eq "$ORIG_DIGEST" "$(skopeo inspect --tls-verify=false "$R/e2e/skopeo:v1" | jq -r .Digest)" \
    "OCI push: skopeo inspect reports the manifest digest"
raw_manifest "$R/e2e/skopeo@$ORIG_DIGEST" >"$E2E_TMP/v1-by-digest.json"
cmp -s "$E2E_TMP/v1-by-digest.json" "$E2E_TMP/orig.json" || fail "OCI push: manifest by digest differs"
pass "OCI push: manifest fetched by digest is identical"
skopeo list-tags --tls-verify=false "$R/e2e/skopeo" >"$E2E_TMP/tags.json"
jq -e '.Tags | index("v1")' "$E2E_TMP/tags.json" >/dev/null || fail "OCI push: tag v1 not listed: $(cat "$E2E_TMP/tags.json")"
pass "OCI push: list-tags shows v1"

copy_image "$R/e2e/skopeo:v1" "oci:$E2E_TMP/back-oci:v1"
assert_eq "$ORIG_DIGEST" "$(oci_manifest_desc "$E2E_TMP/back-oci" v1 | jq -r .digest)" \
    "OCI pull: oci layout copy has the original manifest digest"
while read -r digest size; do
    check_blob "$(oci_blob "$E2E_TMP/back-oci" "$digest")" "$digest" "$size" "OCI pull: blob $digest"
    cmp -s "$(oci_blob "$E2E_TMP/back-oci" "$digest")" "$(oci_blob "$L" "$digest")" ||
        fail "OCI pull: blob $digest differs from the original"
done < <(manifest_blobs "$E2E_TMP/orig.json")
pass "OCI pull: oci layout copy has config and ${#ORIG_LAYERS[@]} layers bit-identical"
copy_image "$R/e2e/skopeo:v1" "dir:$E2E_TMP/back-dir"
check_pulled_dir "$E2E_TMP/back-dir" "$E2E_TMP/orig.json" "OCI pull"

# --- 2. Docker schema 2 (converted by skopeo on push) --------------------
push_image "oci:$L:latest" "$R/e2e/skopeo:v2s2" --format v2s2
raw_manifest "$R/e2e/skopeo:v2s2" >"$E2E_TMP/v2s2.json"
assert_eq application/vnd.docker.distribution.manifest.v2+json "$(jq -r .mediaType "$E2E_TMP/v2s2.json")" \
    "v2s2 push: registry serves a Docker schema 2 manifest"
assert_eq "${ORIG_LAYERS[*]}" "$(jq -r '[.layers[].digest] | join(" ")' "$E2E_TMP/v2s2.json")" \
    "v2s2 push: same layer digests as the OCI original"
assert_eq "$ORIG_CONFIG" "$(jq -r .config.digest "$E2E_TMP/v2s2.json")" "v2s2 push: same config blob"
assert_eq "sha256:$(sha256 "$E2E_TMP/v2s2.json")" \
    "$(skopeo inspect --tls-verify=false "$R/e2e/skopeo:v2s2" | jq -r .Digest)" \
    "v2s2 push: digest reported for the tag is the sha256 of the served bytes"
copy_image "$R/e2e/skopeo:v2s2" "dir:$E2E_TMP/back-v2s2"
check_pulled_dir "$E2E_TMP/back-v2s2" "$E2E_TMP/v2s2.json" "v2s2 pull"

# --- 3. OCI image index (multi-arch), copied with --all -----------------
raw_manifest "oci:$L:multi" >"$E2E_TMP/index.json"
INDEX_DIGEST=sha256:$(sha256 "$E2E_TMP/index.json")
push_image "oci:$L:multi" "$R/e2e/skopeo:multi" --all
raw_manifest "$R/e2e/skopeo:multi" >"$E2E_TMP/index-served.json"
cmp -s "$E2E_TMP/index.json" "$E2E_TMP/index-served.json" || fail "index push: registry serves different index bytes"
pass "index push: registry serves the pushed OCI index byte for byte"
while read -r digest; do
    raw_manifest "$R/e2e/skopeo@$digest" >"$E2E_TMP/child.json"
    cmp -s "$E2E_TMP/child.json" "$(oci_blob "$L" "$digest")" || fail "index push: child manifest $digest differs"
done < <(jq -r '.manifests[].digest' "$E2E_TMP/index.json")
pass "index push: both child manifests served by digest, byte for byte"
copy_image "$R/e2e/skopeo:multi" "oci:$E2E_TMP/back-index:multi" --all
assert_eq "$INDEX_DIGEST" "$(oci_manifest_desc "$E2E_TMP/back-index" multi | jq -r .digest)" \
    "index pull --all: oci layout copy has the original index digest"
for digest in $(jq -r '.manifests[].digest' "$E2E_TMP/index.json"); do
    cmp -s "$(oci_blob "$E2E_TMP/back-index" "$digest")" "$(oci_blob "$L" "$digest")" ||
        fail "index pull --all: child manifest $digest differs"
    while read -r d size; do
        check_blob "$(oci_blob "$E2E_TMP/back-index" "$d")" "$d" "$size" "index pull --all: blob $d"
    done < <(manifest_blobs "$(oci_blob "$L" "$digest")")
done
pass "index pull --all: child manifests and their blobs are bit-identical"
ARM_DIGEST=$(jq -r '.manifests[] | select(.platform.architecture == "arm64") | .digest' "$E2E_TMP/index.json")
skopeo_run --override-arch arm64 --override-os linux copy --src-tls-verify=false \
    "$R/e2e/skopeo:multi" "dir:$E2E_TMP/back-arm"
check_pulled_dir "$E2E_TMP/back-arm" "$(oci_blob "$L" "$ARM_DIGEST")" "index pull (arm64 only)"

# --- 4. Docker manifest list (skopeo converts the index and children) ----
push_image "oci:$L:multi" "$R/e2e/skopeo:list" --all --format v2s2
raw_manifest "$R/e2e/skopeo:list" >"$E2E_TMP/list.json"
assert_eq application/vnd.docker.distribution.manifest.list.v2+json "$(jq -r .mediaType "$E2E_TMP/list.json")" \
    "manifest list push: registry serves a Docker manifest list"
for digest in $(jq -r '.manifests[].digest' "$E2E_TMP/list.json"); do
    raw_manifest "$R/e2e/skopeo@$digest" >"$E2E_TMP/child.json"
    assert_eq "$digest" "sha256:$(sha256 "$E2E_TMP/child.json")" "manifest list push: child $digest served with matching bytes"
done
copy_image "$R/e2e/skopeo:list" "dir:$E2E_TMP/back-list" --all
cmp -s "$E2E_TMP/back-list/manifest.json" "$E2E_TMP/list.json" || fail "manifest list pull --all: list bytes differ"
pass "manifest list pull --all: list bytes identical"

# --- 5. cross-repository blob mount ------------------------------------
# Upload to a new repository e2e/skopeo-base (skopeo's blob-info cache then
# knows the layers live there), then push the same image to another new
# repository: skopeo mounts the layers instead of uploading them.
push_image "oci:$L:latest" "$R/e2e/skopeo-base:v1"
copy_image "oci:$L:latest" "$R/e2e/skopeo-mount:v1"
mounts=$(grep -c -- '\.\.\. mount OK' "$SKOPEO_LOG" || true)
assert_eq "${#ORIG_LAYERS[@]}" "$mounts" "mount: skopeo mounted every layer from e2e/skopeo-base into e2e/skopeo-mount"
raw_manifest "$R/e2e/skopeo-mount:v1" >"$E2E_TMP/mounted.json"
cmp -s "$E2E_TMP/mounted.json" "$E2E_TMP/orig.json" || fail "mount: manifest in e2e/skopeo-mount differs"
copy_image "$R/e2e/skopeo-mount:v1" "dir:$E2E_TMP/back-mount"
check_pulled_dir "$E2E_TMP/back-mount" "$E2E_TMP/orig.json" "mount pull"

# The same mount done by hand: POST .../blobs/uploads/?mount=&from= -> 201.
hdrs=$E2E_TMP/mount-headers
code=$(curl -sS -o /dev/null -D "$hdrs" -w '%{http_code}' -X POST \
    "http://$REG_ADDR/v2/e2e/skopeo-mount2/blobs/uploads/?mount=${ORIG_LAYERS[1]}&from=e2e/skopeo")
assert_eq 201 "$code" "mount by hand: POST ?mount=&from= answers 201 Created"
assert_eq "${ORIG_LAYERS[1]}" "$(sed -n 's/^docker-content-digest: *//Ip' "$hdrs" | tr -d '\r')" \
    "mount by hand: Docker-Content-Digest is the mounted digest"
code=$(curl -sS -o /dev/null -w '%{http_code}' -I "http://$REG_ADDR/v2/e2e/skopeo-mount2/blobs/${ORIG_LAYERS[1]}")
assert_eq 200 "$code" "mount by hand: blob now exists in the target repository"

# --- 6. delete ------------------------------------------------------------
skopeo_run delete --tls-verify=false "$R/e2e/skopeo-mount:v1"
pass "delete: skopeo delete of e2e/skopeo-mount:v1 accepted"
code=$(http_code GET "http://$REG_ADDR/v2/e2e/skopeo-mount/manifests/$ORIG_DIGEST" -H "Accept: application/vnd.oci.image.manifest.v1+json")
if [[ $code != 404 ]]; then
    fail "delete: GET of the deleted manifest by digest answers $code, expected 404"
fi
pass "delete: manifest GET by digest answers 404 in e2e/skopeo-mount"
raw_manifest "$R/e2e/skopeo:v1" >"$E2E_TMP/v1-after.json"
cmp -s "$E2E_TMP/v1-after.json" "$E2E_TMP/orig.json" || fail "delete: e2e/skopeo:v1 was affected"
pass "delete: the same manifest in e2e/skopeo is unaffected"

e2e_finish
