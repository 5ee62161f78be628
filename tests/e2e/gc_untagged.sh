#!/usr/bin/env bash
# Referrers and deleted tags survive Distribution's `garbage-collect --delete-untagged`.
#
# Operators keep running Distribution's garbage collector on their data directory. berth
# adds a referrers index and deletes tags on their own; this test proves that, after
# `docker-registry garbage-collect --delete-untagged` on a copy of a berth directory, berth
# still serves every tagged image and every tagged signature, lists the tagged signature as a
# referrer, drops the untagged one (Distribution deletes untagged manifests; berth then skips
# the stale index entry instead of serving a broken descriptor), and keeps deleted tags deleted.
#
# usage: tests/e2e/gc_untagged.sh [berth]   (only berth: Distribution has no referrers API)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool skopeo umoci docker-registry jq
[[ $E2E_KIND == berth ]] || {
    skip "Distribution 2.8 has no referrers API"
    exit 0
}

L=$E2E_TMP/layout
build_oci_image "$L" a
build_oci_image "$L" b
build_oci_image "$L" c
E=$E2E_TMP/data
start_registry berth "$E" "$(free_port)"
R=http://$REG_ADDR/v2/e2e/gc

push_image "oci:$L:a" "docker://$REG_ADDR/e2e/gc:a1"
push_image "oci:$L:b" "docker://$REG_ADDR/e2e/gc:b1"
push_image "oci:$L:b" "docker://$REG_ADDR/e2e/gc:b2"
push_image "oci:$L:c" "docker://$REG_ADDR/e2e/gc:c1"
raw_manifest "oci:$L:a" >"$E2E_TMP/a.json"
raw_manifest "oci:$L:c" >"$E2E_TMP/c.json"
A=sha256:$(sha256 "$E2E_TMP/a.json")
C=sha256:$(sha256 "$E2E_TMP/c.json")

# put_blob FILE: monolithic upload; prints the digest.
put_blob() {
    local d=sha256:$(sha256 "$1")
    [[ $(http_code POST "$R/blobs/uploads/?digest=$d" -H 'Content-Type: application/octet-stream' --data-binary "@$1") == 201 ]] ||
        fail "blob upload of $1 failed"
    echo "$d"
}

# put_referrer NAME REFERENCE ARTIFACT_TYPE: an artifact manifest whose subject is image a.
put_referrer() {
    local name=$1 ref=$2 type=$3 cfg layer out
    printf '{}' >"$E2E_TMP/empty.json"
    printf '%s payload' "$name" >"$E2E_TMP/$name.payload"
    cfg=$(put_blob "$E2E_TMP/empty.json")
    layer=$(put_blob "$E2E_TMP/$name.payload")
    jq -cn --arg cfg "$cfg" --arg layer "$layer" --arg type "$type" --arg subject "$A" \
        --argjson subject_size "$(stat -c %s "$E2E_TMP/a.json")" \
        --argjson layer_size "$(stat -c %s "$E2E_TMP/$name.payload")" '{
        schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
        artifactType: $type,
        config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $cfg, size: 2},
        layers: [{mediaType: "application/octet-stream", digest: $layer, size: $layer_size}],
        subject: {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $subject, size: $subject_size}
    }' >"$E2E_TMP/$name.json"
    out=$(curl -sS -o /dev/null -D - -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$E2E_TMP/$name.json" "$R/manifests/${ref:-sha256:$(sha256 "$E2E_TMP/$name.json")}")
    [[ $(printf '%s' "$out" | head -n1 | cut -d' ' -f2) == 201 ]] || fail "referrer $name was not accepted"
}

put_referrer sig "sha256-${A#sha256:}.sig" application/vnd.dev.cosign.artifact.sig.v1+json
put_referrer sbom "" application/spdx+json
SIG=sha256:$(sha256 "$E2E_TMP/sig.json")
SBOM=sha256:$(sha256 "$E2E_TMP/sbom.json")
assert_eq "$(printf '%s\n%s\n' "$SIG" "$SBOM" | sort | paste -sd,)" \
    "$(curl -sS "$R/referrers/$A" | jq -r '[.manifests[].digest] | sort | join(",")')" \
    "berth lists both referrers of a before gc"

# A deleted tag and a deleted manifest.
assert_eq 202 "$(http_code DELETE "$R/manifests/b2")" "tag b2 deleted by name"
assert_eq 202 "$(http_code DELETE "$R/manifests/$C")" "image c deleted by digest"
stop_registry

F=$E2E_TMP/data-after-gc
cp -a "$E" "$F"
write_registry_config "$E2E_TMP/gc.yml" "$F" "$(free_port)"
docker-registry garbage-collect --delete-untagged "$E2E_TMP/gc.yml" >"$E2E_TMP/gc.log" 2>&1 || {
    tail -n 20 "$E2E_TMP/gc.log" >&2
    fail "docker-registry garbage-collect --delete-untagged failed on berth's tree"
}
pass "docker-registry garbage-collect --delete-untagged ran on a copy of berth's tree"

start_registry berth "$F" "$(free_port)"
R=http://$REG_ADDR/v2/e2e/gc
for pair in a1:a b1:b; do
    tag=${pair%%:*} src=${pair#*:}
    raw_manifest "docker://$REG_ADDR/e2e/gc:$tag" >"$E2E_TMP/got-$tag.json"
    raw_manifest "oci:$L:$src" >"$E2E_TMP/want-$tag.json"
    cmp -s "$E2E_TMP/got-$tag.json" "$E2E_TMP/want-$tag.json" || fail "tag $tag changed after gc"
    copy_image "docker://$REG_ADDR/e2e/gc:$tag" "dir:$E2E_TMP/pull-$tag"
    while read -r d size; do
        check_blob "$E2E_TMP/pull-$tag/${d#sha256:}" "$d" "$size" "tag $tag: blob $d intact after gc"
    done < <(manifest_blobs "$E2E_TMP/got-$tag.json")
done
assert_eq 200 "$(http_code GET "$R/manifests/sha256-${A#sha256:}.sig")" "the tagged signature survives gc"
assert_eq "$SIG" "$(curl -sS "$R/referrers/$A" | jq -r '[.manifests[].digest] | join(",")')" \
    "after gc berth lists the tagged signature and skips the untagged SBOM Distribution swept"
assert_eq 404 "$(http_code GET "$R/manifests/$SBOM")" "the untagged SBOM is gone (Distribution deletes untagged manifests)"
assert_eq 404 "$(http_code GET "$R/manifests/b2")" "deleted tag b2 stays deleted"
assert_eq 404 "$(http_code GET "$R/manifests/$C")" "deleted image c stays deleted"
assert_eq '["a1","b1","sha256-'"${A#sha256:}"'.sig"]' "$(curl -sS "$R/tags/list" | jq -c .tags)" \
    "tags/list after gc"
stop_registry

e2e_finish
