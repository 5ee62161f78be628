#!/usr/bin/env bash
# End-to-end test with podman (private storage under the scratch dir, vfs
# driver, no daemon): push local images in its default, OCI and Docker
# schema 2 formats, remove them, pull them back and check the image ID,
# manifest digest and file contents survive; also a manifest list pushed with
# `podman manifest push --all`, and `podman search` (which uses _catalog and
# tags/list). Images come from a locally built OCI layout and from
# `podman import` of a tarball (no network).
#
# usage: tests/e2e/podman.sh [berth|distribution]   (default: berth)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool podman skopeo umoci

PM_OPTS=(
    --root "$E2E_TMP/podman/root" --runroot "$E2E_TMP/podman/runroot"
    --tmpdir "$E2E_TMP/podman/tmp" --storage-driver=vfs
    --cgroup-manager=cgroupfs --events-backend=file
)
# podman's own temporary files (layer downloads) stay in the scratch dir
export TMPDIR=$E2E_TMP/podman/vartmp
mkdir -p "$TMPDIR"

_E2E_PM_N=0
# pm ARGS...: podman with our private storage; debug log kept per call and
# shown on failure.
pm() {
    _E2E_PM_N=$((_E2E_PM_N + 1))
    local logf=$E2E_TMP/podman-$_E2E_PM_N.log
    printf '$ podman %s\n' "$*" >"$logf"
    if ! podman "${PM_OPTS[@]}" --log-level=debug "$@" 2>>"$logf"; then
        printf -- '----- podman %s (last lines of %s) -----\n' "$*" "${logf##*/}" >&2
        tail -n 30 "$logf" >&2
        fail "podman $1 failed: podman $*"
    fi
}

# rootfs_sums IMAGE: sha256 of every regular file in the image's rootfs.
rootfs_sums() {
    local mnt
    mnt=$(pm image mount "$1")
    (cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    pm image unmount "$1" >/dev/null
}

# clear_local_images: remove every image from podman's storage.
clear_local_images() {
    pm rmi --all --force >/dev/null
    [[ -z $(pm images -q) ]] || fail "podman rmi --all left images behind"
}

L=$E2E_TMP/layout
build_oci_image "$L" latest
start_registry "$E2E_KIND" "$E2E_TMP/data" "$(free_port)"
IMG=$REG_ADDR/e2e/podman

ORIG_ID=$(pm pull -q "oci:$L:latest")
ORIG_CONFIG=$(raw_manifest "oci:$L:latest" | jq -r .config.digest)
assert_eq "${ORIG_CONFIG#sha256:}" "$ORIG_ID" "podman pull oci: layout: image ID is the config digest"
pm tag "$ORIG_ID" "$IMG:latest"
rootfs_sums "$IMG:latest" >"$E2E_TMP/sums-orig"
[[ $(wc -l <"$E2E_TMP/sums-orig") -ge 4 ]] || fail "unexpected rootfs content: $(cat "$E2E_TMP/sums-orig")"

# check_pulled REF DIGEST WHAT: after a pull, REF has the original image ID,
# the pushed manifest digest and the original file contents.
check_pulled() {
    local ref=$1 digest=$2 what=$3
    assert_eq "$ORIG_ID" "$(pm image inspect --format '{{.Id}}' "$ref")" "$what: pulled image has the original image ID"
    pm image inspect --format '{{json .RepoDigests}}' "$ref" >"$E2E_TMP/repodigests"
    jq -e --arg d "${ref%:*}@$digest" 'index($d)' "$E2E_TMP/repodigests" >/dev/null ||
        fail "$what: pulled image's RepoDigests $(cat "$E2E_TMP/repodigests") lack ${ref%:*}@$digest"
    pass "$what: pulled image is known by the pushed manifest digest"
    rootfs_sums "$ref" >"$E2E_TMP/sums-pulled"
    cmp -s "$E2E_TMP/sums-orig" "$E2E_TMP/sums-pulled" || fail "$what: pulled files differ from the original"
    pass "$what: pulled rootfs files are identical ($(wc -l <"$E2E_TMP/sums-orig") files)"
}

# check_registry_copy TAG DIGEST MEDIATYPE WHAT: the registry serves TAG as a
# manifest with DIGEST and MEDIATYPE, and every blob it lists is intact.
check_registry_copy() {
    local tag=$1 digest=$2 mt=$3 what=$4 d size
    raw_manifest "docker://$IMG:$tag" >"$E2E_TMP/m.json"
    assert_eq "$digest" "sha256:$(sha256 "$E2E_TMP/m.json")" "$what: registry serves the manifest podman pushed"
    assert_eq "$mt" "$(jq -r '.mediaType // "application/vnd.oci.image.manifest.v1+json"' "$E2E_TMP/m.json")" \
        "$what: manifest media type"
    assert_eq "$ORIG_CONFIG" "$(jq -r .config.digest "$E2E_TMP/m.json")" "$what: config blob is the original"
    rm -rf "$E2E_TMP/blobs"
    copy_image "docker://$IMG:$tag" "dir:$E2E_TMP/blobs"
    while read -r d size; do
        check_blob "$E2E_TMP/blobs/${d#sha256:}" "$d" "$size" "$what: blob $d"
    done < <(manifest_blobs "$E2E_TMP/m.json")
    pass "$what: every blob served matches its digest and size"
}

# --- 1. default format push, remove, pull ----------------------------------
clear_blob_info_cache
pm push -q --tls-verify=false --digestfile "$E2E_TMP/d-default" "$IMG:latest"
DIGEST=$(cat "$E2E_TMP/d-default")
check_registry_copy latest "$DIGEST" application/vnd.oci.image.manifest.v1+json "podman push"
clear_local_images
pm pull -q --tls-verify=false "$IMG:latest" >/dev/null
check_pulled "$IMG:latest" "$DIGEST" "podman pull"

# --- 2. --format oci and --format v2s2 -----------------------------------
for fmt in oci v2s2; do
    case $fmt in
        oci) mt=application/vnd.oci.image.manifest.v1+json ;;
        v2s2) mt=application/vnd.docker.distribution.manifest.v2+json ;;
    esac
    clear_blob_info_cache
    pm push -q --tls-verify=false --format "$fmt" --digestfile "$E2E_TMP/d-$fmt" "$IMG:latest" "docker://$IMG:$fmt"
    check_registry_copy "$fmt" "$(cat "$E2E_TMP/d-$fmt")" "$mt" "podman push --format $fmt"
done
clear_local_images
for fmt in oci v2s2; do
    pm pull -q --tls-verify=false "$IMG:$fmt" >/dev/null
    check_pulled "$IMG:$fmt" "$(cat "$E2E_TMP/d-$fmt")" "podman pull ($fmt)"
done
pm pull -q --tls-verify=false "$IMG@$(cat "$E2E_TMP/d-v2s2")" >/dev/null
pass "podman pull by digest"

# --- 3. an image made by podman import -------------------------------------
mkdir -p "$E2E_TMP/rootfs/etc" "$E2E_TMP/rootfs/data"
echo "imported by podman" >"$E2E_TMP/rootfs/etc/e2e-release"
make_random_file "$E2E_TMP/rootfs/data/blob" 300000
tar -C "$E2E_TMP/rootfs" -cf "$E2E_TMP/rootfs.tar" .
IMPORT_ID=$(pm import -q "$E2E_TMP/rootfs.tar" "$REG_ADDR/e2e/podman-import:1")
IMPORT_ID=${IMPORT_ID#sha256:}
clear_blob_info_cache
pm push -q --tls-verify=false --digestfile "$E2E_TMP/d-import" "$REG_ADDR/e2e/podman-import:1"
clear_local_images
pm pull -q --tls-verify=false "$REG_ADDR/e2e/podman-import:1" >/dev/null
assert_eq "$IMPORT_ID" "$(pm image inspect --format '{{.Id}}' "$REG_ADDR/e2e/podman-import:1")" \
    "podman import -> push -> pull keeps the image ID"
assert_eq "$(cat "$E2E_TMP/d-import")" "$(pm image inspect --format '{{.Digest}}' "$REG_ADDR/e2e/podman-import:1")" \
    "podman import -> push -> pull keeps the manifest digest"

# --- 4. manifest list via podman manifest ----------------------------------
pm pull -q --tls-verify=false "$IMG:latest" >/dev/null
pm manifest create e2e-list >/dev/null
pm manifest add e2e-list "containers-storage:$IMG:latest" >/dev/null
pm manifest add e2e-list "containers-storage:$REG_ADDR/e2e/podman-import:1" >/dev/null
clear_blob_info_cache
pm manifest push -q --all --tls-verify=false --digestfile "$E2E_TMP/d-list" e2e-list "docker://$IMG:list"
raw_manifest "docker://$IMG:list" >"$E2E_TMP/list.json"
assert_eq "$(cat "$E2E_TMP/d-list")" "sha256:$(sha256 "$E2E_TMP/list.json")" "podman manifest push: registry serves the pushed list"
assert_eq 2 "$(jq '.manifests | length' "$E2E_TMP/list.json")" "podman manifest push: list has both images"
for d in $(jq -r '.manifests[].digest' "$E2E_TMP/list.json"); do
    raw_manifest "docker://$IMG@$d" >"$E2E_TMP/child.json"
    assert_eq "$d" "sha256:$(sha256 "$E2E_TMP/child.json")" "podman manifest push: child $d served"
done
clear_local_images
pm pull -q --tls-verify=false "$IMG:list" >/dev/null
assert_eq "$ORIG_ID" "$(pm image inspect --format '{{.Id}}' "$IMG:list")" \
    "podman pull of the list picks the first linux/amd64 image"

# --- 5. podman search: _catalog and tags/list --------------------------------
pm search --tls-verify=false --format '{{.Name}}' "$REG_ADDR/" >"$E2E_TMP/search"
for repo in e2e/podman e2e/podman-import; do
    grep -qx "$REG_ADDR/$repo" "$E2E_TMP/search" || fail "podman search: $repo not found in: $(cat "$E2E_TMP/search")"
done
pass "podman search lists the repositories (_catalog)"
# (podman 4.3 ignores --format with --list-tags: parse the table)
pm search --tls-verify=false --list-tags "$IMG" >"$E2E_TMP/tags"
assert_eq "latest list oci v2s2" "$(awk -v r="$IMG" '$1 == r {print $2}' "$E2E_TMP/tags" | sort | tr '\n' ' ' | sed 's/ $//')" \
    "podman search --list-tags lists the tags (tags/list)"

clear_local_images
e2e_finish
