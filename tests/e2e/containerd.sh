#!/usr/bin/env bash
# End-to-end test with containerd (via ctr), the runtime behind Kubernetes'
# image pulls and docker: a private containerd (own root, state and socket,
# native snapshotter, CRI plugin off) pulls an OCI index and a Docker
# manifest list for all platforms (unpacking checks every layer against the
# config's diff IDs), pushes them to new repositories (containerd mounts the
# layers cross-repository), and pulls them back, checking digests throughout.
# Images are built locally with umoci and pushed with skopeo (no network).
#
# usage: tests/e2e/containerd.sh [berth|distribution]   (default: berth)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool containerd ctr skopeo umoci
if ((EUID != 0)); then
    skip "containerd needs root"
fi

L=$E2E_TMP/layout
build_oci_image "$L" latest
oci_retag_arch "$L" latest arm arm64
build_oci_index "$L" multi latest arm
start_registry "$E2E_KIND" "$E2E_TMP/data" "$(free_port)"

# --- a private containerd -------------------------------------------------
C=$E2E_TMP/ctd
mkdir -p "$C"
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$C/containerd.sock"
EOF
containerd --config "$C/config.toml" >"$E2E_TMP/containerd.log" 2>&1 </dev/null &
E2E_BG_PIDS+=("$!")
for ((i = 0; i < 300; i++)); do
    ctr -a "$C/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
done
ctr -a "$C/containerd.sock" version >/dev/null 2>&1 || {
    tail -n 20 "$E2E_TMP/containerd.log" >&2
    fail "containerd did not start"
}

# ct ARGS...: ctr against our containerd; output kept, shown on failure.
ct() {
    local out=$E2E_TMP/ctr.out
    if ! ctr -a "$C/containerd.sock" -n e2e "$@" >"$out" 2>&1; then
        printf -- '----- ctr %s -----\n' "$*" >&2
        tail -n 30 "$out" >&2
        tail -n 10 "$E2E_TMP/containerd.log" >&2
        fail "ctr $1 $2 failed: ctr $*"
    fi
    cat "$out"
}

# image_digest REF: the target digest of an image in containerd.
image_digest() {
    ct images ls | awk -v r="$1" '$1 == r {print $3}'
}

# check_complete REF WHAT: containerd has every blob of REF, for all platforms.
check_complete() {
    ct images check | awk -v r="$1" '$1 == r' >"$E2E_TMP/check"
    grep -q 'complete' "$E2E_TMP/check" || fail "$2: content incomplete: $(cat "$E2E_TMP/check")"
    pass "$2: all content present"
}

R=$REG_ADDR
PULL=(--plain-http --snapshotter native)

# --- 1. OCI index: pull all platforms, push elsewhere, pull back ------------
push_image "oci:$L:multi" "docker://$R/e2e/ctr:multi" --all
INDEX_DIGEST=sha256:$(raw_manifest "oci:$L:multi" | sha256sum | cut -d' ' -f1)
ct images pull "${PULL[@]}" --all-platforms "$R/e2e/ctr:multi" >/dev/null
assert_eq "$INDEX_DIGEST" "$(image_digest "$R/e2e/ctr:multi")" "ctr pull: OCI index digest"
check_complete "$R/e2e/ctr:multi" "ctr pull --all-platforms (OCI index)"

ct images tag "$R/e2e/ctr:multi" "$R/e2e/ctr-pushed:multi" >/dev/null
ct images push --plain-http "$R/e2e/ctr-pushed:multi" >/dev/null
raw_manifest "docker://$R/e2e/ctr-pushed:multi" >"$E2E_TMP/pushed.json"
assert_eq "$INDEX_DIGEST" "sha256:$(sha256 "$E2E_TMP/pushed.json")" "ctr push: registry serves the same index"
for d in $(jq -r '.manifests[].digest' "$E2E_TMP/pushed.json"); do
    raw_manifest "docker://$R/e2e/ctr-pushed@$d" >"$E2E_TMP/child.json"
    assert_eq "$d" "sha256:$(sha256 "$E2E_TMP/child.json")" "ctr push: child manifest $d served"
    for b in $(jq -r '.config.digest, .layers[].digest' "$E2E_TMP/child.json"); do
        code=$(http_code HEAD "http://$R/v2/e2e/ctr-pushed/blobs/$b")
        [[ $code == 200 ]] || fail "ctr push: blob $b of $d not in e2e/ctr-pushed (HEAD answered $code)"
    done
done
pass "ctr push: every blob is in the new repository"

ct images rm "$R/e2e/ctr:multi" "$R/e2e/ctr-pushed:multi" >/dev/null
ctr -a "$C/containerd.sock" -n e2e content prune references >/dev/null 2>&1 || true
ct images pull "${PULL[@]}" --all-platforms "$R/e2e/ctr-pushed:multi" >/dev/null
assert_eq "$INDEX_DIGEST" "$(image_digest "$R/e2e/ctr-pushed:multi")" "ctr pull of the pushed copy: index digest"
check_complete "$R/e2e/ctr-pushed:multi" "ctr pull of the pushed copy"

# --- 2. Docker manifest list and a single platform pull ----------------------
push_image "oci:$L:multi" "docker://$R/e2e/ctr:list" --all --format v2s2
raw_manifest "docker://$R/e2e/ctr:list" >"$E2E_TMP/list.json"
LIST_DIGEST=sha256:$(sha256 "$E2E_TMP/list.json")
ct images pull "${PULL[@]}" --platform linux/arm64 "$R/e2e/ctr:list" >/dev/null
assert_eq "$LIST_DIGEST" "$(image_digest "$R/e2e/ctr:list")" "ctr pull --platform linux/arm64: Docker manifest list digest"
ARM=$(jq -r '.manifests[] | select(.platform.architecture == "arm64") | .digest' "$E2E_TMP/list.json")
ct content get "$ARM" >"$E2E_TMP/arm.json"
assert_eq "$ARM" "sha256:$(sha256 "$E2E_TMP/arm.json")" "ctr pull --platform linux/arm64: fetched the arm64 manifest"

# --- 3. a single image by digest -------------------------------------------
AMD=$(jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest' "$E2E_TMP/list.json")
ct images pull "${PULL[@]}" "$R/e2e/ctr@$AMD" >/dev/null
assert_eq "$AMD" "$(image_digest "$R/e2e/ctr@$AMD")" "ctr pull by digest"
check_complete "$R/e2e/ctr@$AMD" "ctr pull by digest"

e2e_finish
