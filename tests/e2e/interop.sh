#!/usr/bin/env bash
# End-to-end storage interoperability test: berth must be able to take over a
# data directory written by CNCF Distribution, and hand one back. (a) push a
# set of images (OCI and Docker schema 2 manifests, an OCI index, a Docker
# manifest list, two tags of one manifest, two repositories, a deleted
# manifest) into Distribution on dir D, stop it, serve D with the registry
# under test and pull everything back with skopeo, comparing bytes and
# digests, _catalog and tags/list. (b) the reverse on a fresh dir E. Then the
# two data trees, written by the two registries from the same pushes, must
# hold the same files (ignoring _uploads and berth's documented own
# directories), with byte-identical link files. (c) both registries write
# one directory in turn, and a delete must still take its tags along.
# (d) Distribution's `garbage-collect` on the tree the registry under test
# wrote keeps what is referenced and sweeps the rest.
#
# usage: tests/e2e/interop.sh [berth|distribution]   (default: berth)
# With `distribution` both sides are Distribution (checks the test itself).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool skopeo umoci

L=$E2E_TMP/layout
build_oci_image "$L" latest
oci_retag_arch "$L" latest arm arm64
build_oci_index "$L" multi latest arm
build_oci_image "$L" other 1048576

# repository:tag pairs that must exist after push_set, and the manifests
# behind them must come back byte for byte
REFS=(
    e2e/interop-a:oci e2e/interop-a:v2s2 e2e/interop-a:multi e2e/interop-a:list
    e2e/interop-b:one e2e/interop-b:two
)
EXPECT_CATALOG='["e2e/interop-a","e2e/interop-b"]'
declare -A EXPECT_TAGS=(
    [e2e/interop-a]='["list","multi","oci","v2s2"]'
    [e2e/interop-b]='["one","two"]'
)

# push_set: push the image set into the registry at $REG_ADDR.
push_set() {
    local r=docker://$REG_ADDR code
    push_image "oci:$L:latest" "$r/e2e/interop-a:oci"
    push_image "oci:$L:latest" "$r/e2e/interop-a:v2s2" --format v2s2
    push_image "oci:$L:multi" "$r/e2e/interop-a:multi" --all
    push_image "oci:$L:multi" "$r/e2e/interop-a:list" --all --format v2s2
    push_image "oci:$L:other" "$r/e2e/interop-b:one"
    push_image "oci:$L:other" "$r/e2e/interop-b:two"
    # a manifest that is pushed, then deleted: it must stay deleted
    push_image "oci:$L:latest" "$r/e2e/interop-b:gone"
    code=$(http_code DELETE "http://$REG_ADDR/v2/e2e/interop-b/manifests/$GONE_DIGEST")
    [[ $code == 202 ]] || fail "$REG_KIND: DELETE of e2e/interop-b@$GONE_DIGEST answered $code"
    pass "$REG_KIND: pushed the image set (${#REFS[@]} tags, 2 repositories, 1 deleted manifest)"
}
GONE_DIGEST=sha256:$(raw_manifest "oci:$L:latest" | sha256sum | cut -d' ' -f1)

# record_set DIR: save the manifests the registry serves for REFS into DIR.
record_set() {
    local dir=$1 ref
    mkdir -p "$dir"
    for ref in "${REFS[@]}"; do
        raw_manifest "docker://$REG_ADDR/$ref" >"$dir/${ref//\//_}.json"
    done
}

# verify_set DIR WHAT: the registry at $REG_ADDR serves everything recorded
# in DIR, byte for byte, with intact blobs, and the same catalog and tags.
verify_set() {
    local dir=$1 what=$2 ref f repo d size pulled child
    for ref in "${REFS[@]}"; do
        f=$dir/${ref//\//_}.json
        raw_manifest "docker://$REG_ADDR/$ref" >"$E2E_TMP/served.json"
        cmp -s "$E2E_TMP/served.json" "$f" || fail "$what: $ref: manifest bytes differ"
        pulled=$E2E_TMP/pulled-${ref//[\/:]/_}
        rm -rf "$pulled"
        if jq -e '.manifests' "$f" >/dev/null; then
            copy_image "docker://$REG_ADDR/$ref" "dir:$pulled" --all
            for child in $(jq -r '.manifests[].digest' "$f"); do
                raw_manifest "docker://$REG_ADDR/${ref%:*}@$child" >"$E2E_TMP/child.json"
                assert_eq "$child" "sha256:$(sha256 "$E2E_TMP/child.json")" "$what: $ref: child manifest $child"
                while read -r d size; do
                    check_blob "$pulled/${d#sha256:}" "$d" "$size" "$what: $ref: blob $d"
                done < <(manifest_blobs "$E2E_TMP/child.json")
            done
        else
            copy_image "docker://$REG_ADDR/$ref" "dir:$pulled"
            while read -r d size; do
                check_blob "$pulled/${d#sha256:}" "$d" "$size" "$what: $ref: blob $d"
            done < <(manifest_blobs "$f")
        fi
        cmp -s "$pulled/manifest.json" "$f" || fail "$what: $ref: pulled manifest differs"
        pass "$what: $ref pulled back, manifest and blobs identical"
    done
    curl -sS "http://$REG_ADDR/v2/_catalog" >"$E2E_TMP/catalog"
    assert_eq "$EXPECT_CATALOG" "$(jq -c .repositories "$E2E_TMP/catalog")" "$what: _catalog"
    for repo in "${!EXPECT_TAGS[@]}"; do
        curl -sS "http://$REG_ADDR/v2/$repo/tags/list" >"$E2E_TMP/tags"
        assert_eq "${EXPECT_TAGS[$repo]}" "$(jq -c '.tags | sort' "$E2E_TMP/tags")" "$what: tags/list of $repo"
    done
    assert_eq 404 "$(http_code GET "http://$REG_ADDR/v2/e2e/interop-b/manifests/$GONE_DIGEST" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json')" "$what: the deleted manifest stays deleted"
    assert_eq 404 "$(http_code GET "http://$REG_ADDR/v2/e2e/interop-b/manifests/gone" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json')" "$what: the deleted manifest's tag stays deleted"
}

# Directories berth documents as its own additions to the layout (see
# crates/berth-registry/src/layout.rs), which Distribution never reads:
# left out of the tree comparison unless E2E_STRICT_TREE=1, and listed.
BERTH_ONLY_DIRS=(_referrers)

# tree DATADIR: "path sha256" for every file of the storage tree (no _uploads,
# no berth-only directories).
tree() {
    local skip=(-path '*/_uploads/*')
    if [[ ${E2E_STRICT_TREE:-0} != 1 ]]; then
        local d
        for d in "${BERTH_ONLY_DIRS[@]}"; do
            skip+=(-o -path "./repositories/*/$d/*")
        done
        # Garbage collection's pins and run markers (berth-registry's pins.rs).
        skip+=(-o -path './_berth/*')
    fi
    (cd "$1/docker/registry/v2" && find . -type f -not \( "${skip[@]}" \) -print0 | sort -z | xargs -0 -r sha256sum) |
        awk '{print $2, $1}'
}

# berth_only_files DATADIR: files in the berth-only directories.
berth_only_files() {
    local d
    {
        for d in "${BERTH_ONLY_DIRS[@]}"; do
            (cd "$1/docker/registry/v2" && find . -type f -path "./repositories/*/$d/*")
        done
        (cd "$1/docker/registry/v2" && find . -type f -path './_berth/*')
    } | sort
}

# check_links DATADIR WHAT: every link file is exactly "sha256:<64 hex>".
check_links() {
    local bad
    bad=$(find "$1/docker/registry/v2/repositories" -type f -name link -not -path '*/_uploads/*' \
        -exec sh -c 'for f; do printf "%s" "$(cat "$f")" | cmp -s - "$f" || echo "$f"; grep -qxE "sha256:[0-9a-f]{64}" "$f" || echo "$f"; done' sh {} + |
        sort -u)
    [[ -z $bad ]] || fail "$2: malformed link files (must be sha256:<hex>, no newline): $bad"
    pass "$2: every link file is sha256:<hex> without a trailing newline"
}

OTHER=$E2E_KIND # the registry under test; Distribution is the reference

# --- (a) Distribution writes D, the registry under test reads it --------------
D=$E2E_TMP/data-d
start_registry distribution "$D" "$(free_port)"
push_set
record_set "$E2E_TMP/expect-d"
stop_registry "$REG_PORT"
tree "$D" >"$E2E_TMP/tree-d"
check_links "$D" "Distribution-written tree"
start_registry "$OTHER" "$D" "$(free_port)"
verify_set "$E2E_TMP/expect-d" "$OTHER reading Distribution's data"
stop_registry "$REG_PORT"
tree "$D" >"$E2E_TMP/tree-d-after"
diff -u "$E2E_TMP/tree-d" "$E2E_TMP/tree-d-after" >&2 ||
    fail "$OTHER changed Distribution's data tree while only serving pulls"
pass "$OTHER left Distribution's data tree unchanged while serving pulls"

# --- (b) the registry under test writes E, Distribution reads it ------------------
E=$E2E_TMP/data-e
start_registry "$OTHER" "$E" "$(free_port)"
push_set
record_set "$E2E_TMP/expect-e"
stop_registry "$REG_PORT"
for f in "$E2E_TMP"/expect-d/*.json; do
    cmp -s "$f" "$E2E_TMP/expect-e/${f##*/}" || fail "$OTHER serves ${f##*/} differently from Distribution after the same push"
done
pass "$OTHER and Distribution serve identical manifests after the same pushes"
tree "$E" >"$E2E_TMP/tree-e"
check_links "$E" "$OTHER-written tree"
start_registry distribution "$E" "$(free_port)"
verify_set "$E2E_TMP/expect-e" "Distribution reading $OTHER's data"
stop_registry "$REG_PORT"

# --- the two trees ---------------------------------------------------------
if ! diff -u "$E2E_TMP/tree-d" "$E2E_TMP/tree-e" >"$E2E_TMP/tree.diff"; then
    head -n 60 "$E2E_TMP/tree.diff" >&2
    fail "data trees written by Distribution and $OTHER differ (paths or contents, see diff above)"
fi
extra=$(berth_only_files "$E" | wc -l)
if ((extra > 0)) && [[ ${E2E_STRICT_TREE:-0} != 1 ]]; then
    log "$OTHER also wrote $extra files in its own directories (${BERTH_ONLY_DIRS[*]}), not compared:"
    berth_only_files "$E" | head -n 10 >&2
fi
assert_eq "" "$(berth_only_files "$D")" "$OTHER wrote nothing of its own into Distribution's tree while serving pulls"
pass "data trees written by Distribution and $OTHER are identical ($(wc -l <"$E2E_TMP/tree-d") files, same paths and contents)"

# --- (c) both write one directory in turn -------------------------------------
# Someone migrating may go back and forth: the registry under test writes
# F (and deletes once, which is when berth completes its own tag index),
# Distribution then adds a tag to the same repository, and the registry
# under test deletes that tag's manifest by digest. As with Distribution,
# the tag must go with the manifest.
F=$E2E_TMP/data-f
start_registry "$OTHER" "$F" "$(free_port)"
push_image "oci:$L:latest" "docker://$REG_ADDR/e2e/mixed:first"
push_image "oci:$L:other" "docker://$REG_ADDR/e2e/mixed:doomed"
OTHER_DIGEST=sha256:$(raw_manifest "oci:$L:other" | sha256sum | cut -d' ' -f1)
assert_eq 202 "$(http_code DELETE "http://$REG_ADDR/v2/e2e/mixed/manifests/$OTHER_DIGEST")" \
    "mixed writes: $OTHER deletes a manifest in F"
stop_registry "$REG_PORT"
start_registry distribution "$F" "$(free_port)"
push_image "oci:$L:arm" "docker://$REG_ADDR/e2e/mixed:second"
ARM_DIGEST=sha256:$(raw_manifest "oci:$L:arm" | sha256sum | cut -d' ' -f1)
stop_registry "$REG_PORT"
start_registry "$OTHER" "$F" "$(free_port)"
curl -sS "http://$REG_ADDR/v2/e2e/mixed/tags/list" >"$E2E_TMP/tags"
assert_eq '["first","second"]' "$(jq -c '.tags | sort' "$E2E_TMP/tags")" \
    "mixed writes: $OTHER lists the tag Distribution added"
assert_eq 202 "$(http_code DELETE "http://$REG_ADDR/v2/e2e/mixed/manifests/$ARM_DIGEST")" \
    "mixed writes: $OTHER deletes the manifest Distribution pushed"
curl -sS "http://$REG_ADDR/v2/e2e/mixed/tags/list" >"$E2E_TMP/tags"
assert_eq '["first"]' "$(jq -c '.tags | sort' "$E2E_TMP/tags")" \
    "mixed writes: the tag Distribution added went with its manifest"
stop_registry "$REG_PORT"

# --- (d) Distribution's garbage collector on a tree the registry under test wrote
# Users keep running `registry garbage-collect`: on E it must keep everything
# still referenced and sweep what a deleted manifest alone referenced.
build_oci_image "$L" doomed 300000
start_registry "$OTHER" "$E" "$(free_port)"
push_image "oci:$L:doomed" "docker://$REG_ADDR/e2e/interop-b:doomed"
raw_manifest "oci:$L:doomed" >"$E2E_TMP/doomed.json"
DOOMED_DIGEST=sha256:$(sha256 "$E2E_TMP/doomed.json")
assert_eq 202 "$(http_code DELETE "http://$REG_ADDR/v2/e2e/interop-b/manifests/$DOOMED_DIGEST")" \
    "gc: $OTHER deletes a manifest whose blobs nothing else uses"
stop_registry "$REG_PORT"
write_registry_config "$E2E_TMP/gc.yml" "$E" "$(free_port)"
docker-registry garbage-collect "$E2E_TMP/gc.yml" >"$E2E_TMP/gc.log" 2>&1 || {
    tail -n 20 "$E2E_TMP/gc.log" >&2
    fail "gc: docker-registry garbage-collect failed on $OTHER's tree"
}
pass "gc: docker-registry garbage-collect ran on $OTHER's tree"
for d in $DOOMED_DIGEST $(jq -r '.config.digest, .layers[].digest' "$E2E_TMP/doomed.json"); do
    hex=${d#sha256:}
    [[ ! -e $E/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data ]] || fail "gc: blob $d was not swept"
done
pass "gc: the deleted manifest's own blobs were swept"
start_registry "$OTHER" "$E" "$(free_port)"
verify_set "$E2E_TMP/expect-e" "$OTHER after Distribution's gc"
assert_eq 404 "$(http_code HEAD "http://$REG_ADDR/v2/e2e/interop-b/blobs/$(jq -r '.layers[1].digest' "$E2E_TMP/doomed.json")")" \
    "gc: $OTHER answers 404 for a swept blob"
push_image "oci:$L:doomed" "docker://$REG_ADDR/e2e/interop-b:doomed"
raw_manifest "docker://$REG_ADDR/e2e/interop-b:doomed" >"$E2E_TMP/doomed-again.json"
cmp -s "$E2E_TMP/doomed.json" "$E2E_TMP/doomed-again.json" || fail "gc: re-push of swept content failed"
pass "gc: swept content can be pushed again"
stop_registry "$REG_PORT"

e2e_finish
