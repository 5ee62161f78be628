#!/usr/bin/env bash
# End-to-end test of berth's web UI (issue 19) in a real browser: headless Chromium from
# Debian's `chromium` package, driven by Playwright from PyPI (ui_test.py), with berth behind
# htpasswd auth and a per-repository policy. This script pushes real content with skopeo and
# curl (an image, a multi-platform index, a signature and an SBOM referring to the image),
# then ui_test.py opens every page, checks what it shows against the registry's API, deletes
# a tag through the UI, signs in as a user with rights on one repository only, and times the
# repository list and search with 10,000 repositories. Screenshots go to $UI_ARTIFACTS
# (default target/e2e-ui).
#
# usage: tests/e2e/ui.sh [berth]   (the UI is berth's own: Distribution has none)
#   BERTH_E2E_PYTHON: a python with playwright (default /opt/berth-e2e/venv/bin/python,
#     which scripts/install-deps.sh creates)
#   UI_REPOSITORIES: repositories created for the timing (default 10000)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
[[ $E2E_KIND == berth ]] || skip "the web UI is berth's own"
[[ ${BERTH_STORAGE:-filesystem} == filesystem ]] || skip "the 10,000-repository fixture writes a filesystem layout"
PY=${BERTH_E2E_PYTHON:-/opt/berth-e2e/venv/bin/python}
require_tool skopeo umoci htpasswd /usr/bin/chromium "$PY"
"$PY" -c 'import playwright' 2>/dev/null || {
    [[ ${CI:-} == true ]] && fail "$PY has no playwright (run scripts/install-deps.sh)"
    skip "$PY has no playwright (run scripts/install-deps.sh)"
}

# ---------------------------------------------------------------- users --
HT=$E2E_TMP/htpasswd
htpasswd -Bbc "$HT" admin admin-pw 2>/dev/null # every right
htpasswd -Bb "$HT" carol carol-pw 2>/dev/null  # pull on e2e/app only
AUTH="auth:
  htpasswd:
    realm: berth-e2e
    path: $HT
  policy:
    admins: [admin]
    rules:
      - repositories: [\"e2e/app\"]
        users: [carol]
        actions: [pull]"
# A short grace period, so the storage page's GC dry run has something to free: the blob
# pushed first and never referenced is older than it by the time the page is opened.
REGISTRY_STORAGE_MAINTENANCE_GARBAGECOLLECT_GRACEPERIOD=3s \
    start_registry berth "$E2E_TMP/data" "$(free_port)" "$AUTH"
R=docker://$REG_ADDR
U=http://$REG_ADDR
ADMIN=(--dest-creds admin:admin-pw)

# push_blob REPO FILE: a monolithic upload (POST, then PUT with the digest); prints the digest.
push_blob() {
    local repo=$1 file=$2 digest loc hdr=$E2E_TMP/upload-headers
    digest=sha256:$(sha256 "$file")
    curl -fsS -u admin:admin-pw -X POST -o /dev/null -D "$hdr" "$U/v2/$repo/blobs/uploads/"
    loc=$(header "$hdr" location)
    [[ -n $loc ]] || fail "no upload location for $repo"
    [[ $loc == /* ]] && loc=$U$loc
    [[ $loc == *\?* ]] && loc="$loc&digest=$digest" || loc="$loc?digest=$digest"
    curl -fsS -u admin:admin-pw -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$file" -o /dev/null "$loc"
    echo "$digest"
}

# -------------------------------------------------------------- content --
make_random_file "$E2E_TMP/dangling.bin" 4242
DANGLING=$(push_blob e2e/app "$E2E_TMP/dangling.bin")
L=$E2E_TMP/layout
build_oci_image "$L" latest 300000
oci_retag_arch "$L" latest arm arm64
build_oci_index "$L" multi latest arm
push_image "oci:$L:latest" "$R/e2e/app:v1" "${ADMIN[@]}"
push_image "oci:$L:latest" "$R/e2e/app:old" "${ADMIN[@]}"
push_image "oci:$L:multi" "$R/e2e/app:multi" --all "${ADMIN[@]}"
push_image "oci:$L:latest" "$R/other/secret:v1" "${ADMIN[@]}"
pass "pushed an image, a multi-platform index and a second repository with skopeo"

# push_referrer REPO SUBJECT_DIGEST SUBJECT_SIZE ARTIFACT_TYPE LAYER_MEDIA_TYPE CONTENT: an OCI
# 1.1 artifact manifest with `subject` (as cosign and oras push signatures and SBOMs).
push_referrer() {
    local repo=$1 subject=$2 size=$3 type=$4 layer_type=$5 content=$6 empty blob manifest digest
    empty=$E2E_TMP/empty.json
    printf '{}' >"$empty"
    blob=$E2E_TMP/ref-$RANDOM.bin
    printf '%s' "$content" >"$blob"
    local empty_digest blob_digest
    empty_digest=$(push_blob "$repo" "$empty")
    blob_digest=$(push_blob "$repo" "$blob")
    manifest=$(jq -cnj --arg t "$type" --arg lt "$layer_type" --arg ed "$empty_digest" \
        --arg bd "$blob_digest" --argjson bs "$(stat -c %s "$blob")" --arg sd "$subject" \
        --argjson ss "$size" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
          artifactType: $t,
          config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $ed, size: 2},
          layers: [{mediaType: $lt, digest: $bd, size: $bs}],
          subject: {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $sd, size: $ss},
          annotations: {"org.opencontainers.image.created": "2026-12-05T00:00:00Z"}}')
    digest=sha256:$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
    curl -fsS -u admin:admin-pw -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "$manifest" -o /dev/null "$U/v2/$repo/manifests/$digest"
    echo "$digest"
}

curl -fsSI -u admin:admin-pw -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$U/v2/e2e/app/manifests/v1" >"$E2E_TMP/v1.headers"
V1=$(header "$E2E_TMP/v1.headers" docker-content-digest)

# What the storage page shows beside the images: an upload left open with 1000 bytes, and
# (pushed first, above the images) a blob no manifest references.
curl -fsS -u admin:admin-pw -X POST -o /dev/null -D "$E2E_TMP/open.headers" "$U/v2/e2e/app/blobs/uploads/"
OPEN=$(header "$E2E_TMP/open.headers" location)
[[ $OPEN == /* ]] && OPEN=$U$OPEN
head -c 1000 /dev/urandom | curl -fsS -u admin:admin-pw -X PATCH -H 'Content-Type: application/octet-stream' \
    --data-binary @- -o /dev/null "$OPEN"
pass "an upload session is left open with 1000 bytes"

V1_SIZE=$(curl -fsS -u admin:admin-pw -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$U/v2/e2e/app/manifests/v1" | wc -c)
SIG=$(push_referrer e2e/app "$V1" "$V1_SIZE" application/vnd.dev.cosign.artifact.sig.v1+json \
    application/vnd.dev.cosign.simplesigning.v1+json '{"critical":{"image":{"docker-manifest-digest":"'"$V1"'"}}}')
SBOM=$(push_referrer e2e/app "$V1" "$V1_SIZE" application/spdx+json application/spdx+json \
    '{"spdxVersion":"SPDX-2.3","name":"e2e-app"}')
assert_eq 2 "$(curl -fsS -u admin:admin-pw "$U/v2/e2e/app/referrers/$V1" | jq '.manifests | length')" \
    "a signature ($SIG) and an SBOM ($SBOM) refer to e2e/app:v1"

# ------------------------------------------------------------ the browser --
export UI_BASE=$U UI_DATA=$E2E_TMP/data/docker/registry/v2 UI_SUBJECT=$V1 UI_DANGLING=$DANGLING
export UI_ARTIFACTS=${UI_ARTIFACTS:-$REPO_ROOT/target/e2e-ui}
export UI_REPOSITORIES=${UI_REPOSITORIES:-10000}
mkdir -p "$UI_ARTIFACTS"
log "screenshots and timings in $UI_ARTIFACTS"
# ui_test.py prints PASS/FAIL lines in lib.sh's format; its exit status decides.
if ! "$PY" "$E2E_DIR/ui_test.py"; then
    fail "browser checks failed (see above; screenshots in $UI_ARTIFACTS)"
fi
E2E_PASSED=$((E2E_PASSED + $(grep -c '^PASS' "$UI_ARTIFACTS/results.txt" || true)))
e2e_finish
