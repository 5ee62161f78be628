#!/usr/bin/env bash
# End-to-end test of the curl commands of the registry walkthrough, run as
# written (only -sS is added to silence the progress meter; the requests are
# byte-identical) against an image pushed with skopeo: API version check,
# catalog, manifest GET/HEAD, blob GET, manifest DELETE. A user following the
# walkthrough against berth must see what they see against `registry:2`.
#
# usage: tests/e2e/walkthrough_curl.sh [berth|distribution]   (default: berth)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool skopeo umoci

L=$E2E_TMP/layout
build_oci_image "$L" latest
start_registry "$E2E_KIND" "$E2E_TMP/data" "$(free_port)"
P=$REG_PORT
NAME=my_test
TAG=latest
V2=application/vnd.docker.distribution.manifest.v2+json
OCI=application/vnd.oci.image.manifest.v1+json

# The image as `docker push` would store it: Docker schema 2.
push_image "oci:$L:latest" "docker://$REG_ADDR/$NAME:$TAG" --format v2s2
raw_manifest "docker://$REG_ADDR/$NAME:$TAG" >"$E2E_TMP/pushed.json"
PUSHED_DIGEST=sha256:$(sha256 "$E2E_TMP/pushed.json")
PUSHED_LEN=$(stat -c %s "$E2E_TMP/pushed.json")
# and an OCI image in a second repository
push_image "oci:$L:latest" "docker://$REG_ADDR/my_oci:$TAG"

# walk CMD...: print and run a walkthrough command (curl gets -sS).
walk() {
    printf '$ %s\n' "$*" >&2
    "$1" -sS "${@:2}"
}

# --- curl -I -X GET localhost:5000/v2/ ------------------------------------
walk curl -I -X GET "localhost:$P/v2/" >"$E2E_TMP/h"
assert_eq 200 "$(status "$E2E_TMP/h")" "GET /v2/ answers 200"
assert_eq registry/2.0 "$(header "$E2E_TMP/h" Docker-Distribution-API-Version)" \
    "GET /v2/ sends Docker-Distribution-API-Version: registry/2.0"

# --- curl -X GET localhost:5000/v2/_catalog --------------------------------
walk curl -X GET "localhost:$P/v2/_catalog" >"$E2E_TMP/catalog"
assert_eq '["my_oci","my_test"]' "$(jq -c .repositories "$E2E_TMP/catalog")" \
    "GET /v2/_catalog lists both repositories, sorted"
walk curl -X GET "localhost:$P/v2/$NAME/tags/list" >"$E2E_TMP/tags"
assert_eq "{\"name\":\"$NAME\",\"tags\":[\"$TAG\"]}" "$(jq -c . "$E2E_TMP/tags")" \
    "GET /v2/$NAME/tags/list lists the tag"

# --- curl -I -X GET localhost:5000/v2/<name>/manifests/<tag> ---------------
# No Accept header: Distribution 2.x down-converts a schema 2 manifest to a
# signed schema 1 for such a client; a registry may instead serve it as
# stored. Either way the headers must describe the body that GET returns.
walk curl -I -X GET "localhost:$P/v2/$NAME/manifests/$TAG" >"$E2E_TMP/h-get"
assert_eq 200 "$(status "$E2E_TMP/h-get")" "manifest GET -I (no Accept) answers 200"
walk curl -X GET "localhost:$P/v2/$NAME/manifests/$TAG" >"$E2E_TMP/body"
ctype=$(header "$E2E_TMP/h-get" Content-Type)
if [[ $ctype == application/vnd.docker.distribution.manifest.v1+prettyjws ]]; then
    log "registry down-converted to schema 1 for a client without Accept (as Distribution 2.x does)"
    body_digest=sha256:$(schema1_canonical_digest "$E2E_TMP/body")
else
    assert_eq "$V2" "$ctype" "manifest GET (no Accept) serves the stored manifest's media type"
    cmp -s "$E2E_TMP/body" "$E2E_TMP/pushed.json" || fail "manifest GET (no Accept) body differs from the pushed manifest"
    body_digest=sha256:$(sha256 "$E2E_TMP/body")
fi
assert_eq "$(stat -c %s "$E2E_TMP/body")" "$(header "$E2E_TMP/h-get" Content-Length)" \
    "manifest GET -I (no Accept): Content-Length is the body's length"
assert_eq "$body_digest" "$(header "$E2E_TMP/h-get" Docker-Content-Digest)" \
    "manifest GET -I (no Accept): Docker-Content-Digest is the body's digest"

# --- curl -I -X HEAD localhost:5000/v2/<name>/manifests/<tag> --------------
walk curl -I -X HEAD "localhost:$P/v2/$NAME/manifests/$TAG" >"$E2E_TMP/h-head"
assert_eq 200 "$(status "$E2E_TMP/h-head")" "manifest HEAD (no Accept) answers 200"
assert_eq "$(header "$E2E_TMP/h-get" Content-Length)" "$(header "$E2E_TMP/h-head" Content-Length)" \
    "manifest HEAD (no Accept): same Content-Length as GET"
assert_eq "$body_digest" "$(header "$E2E_TMP/h-head" Docker-Content-Digest)" \
    "manifest HEAD (no Accept): same Docker-Content-Digest as GET"

# The same with the Accept header docker sends: exactly the pushed manifest.
walk curl -I --header "Accept: $V2" -X HEAD "localhost:$P/v2/$NAME/manifests/$TAG" >"$E2E_TMP/h-head2"
assert_eq 200 "$(status "$E2E_TMP/h-head2")" "manifest HEAD (Accept: schema 2) answers 200"
assert_eq "$PUSHED_LEN" "$(header "$E2E_TMP/h-head2" Content-Length)" \
    "manifest HEAD (Accept: schema 2): Content-Length is the pushed manifest's length"
assert_eq "$PUSHED_DIGEST" "$(header "$E2E_TMP/h-head2" Docker-Content-Digest)" \
    "manifest HEAD (Accept: schema 2): Docker-Content-Digest is the pushed manifest's sha256"
assert_eq "$V2" "$(header "$E2E_TMP/h-head2" Content-Type)" "manifest HEAD (Accept: schema 2): Content-Type"
walk curl --header "Accept: $V2" -X GET "localhost:$P/v2/$NAME/manifests/$TAG" >"$E2E_TMP/body2"
cmp -s "$E2E_TMP/body2" "$E2E_TMP/pushed.json" || fail "manifest GET (Accept: schema 2) body differs from the pushed manifest"
pass "manifest GET (Accept: schema 2) returns the pushed bytes"
walk curl -I --header "Accept: $OCI" -X HEAD "localhost:$P/v2/my_oci/manifests/$TAG" >"$E2E_TMP/h-oci"
assert_eq 200 "$(status "$E2E_TMP/h-oci")" "OCI manifest HEAD (Accept: OCI) answers 200"
assert_eq "$OCI" "$(header "$E2E_TMP/h-oci" Content-Type)" "OCI manifest HEAD (Accept: OCI): Content-Type"

# --- curl -X GET localhost:5000/v2/<name>/blobs/<digest> -------------------
for digest in $(jq -r '.config.digest, .layers[].digest' "$E2E_TMP/pushed.json"); do
    walk curl -X GET "localhost:$P/v2/$NAME/blobs/$digest" >"$E2E_TMP/blob"
    assert_eq "$digest" "sha256:$(sha256 "$E2E_TMP/blob")" "blob GET $digest: bytes hash to the digest"
done

# --- curl -I --header "Accept: ..." -X DELETE .../manifests/<digest> -------
walk curl -I --header "Accept: $V2" -X DELETE "localhost:$P/v2/$NAME/manifests/$PUSHED_DIGEST" >"$E2E_TMP/h-del"
assert_eq 202 "$(status "$E2E_TMP/h-del")" "manifest DELETE by digest answers 202 Accepted"
assert_eq 404 "$(http_code GET "localhost:$P/v2/$NAME/manifests/$PUSHED_DIGEST" --header "Accept: $V2")" \
    "manifest GET by digest after DELETE answers 404"
assert_eq 404 "$(http_code GET "localhost:$P/v2/$NAME/manifests/$TAG" --header "Accept: $V2")" \
    "manifest GET by tag after DELETE answers 404 (the tag went with it)"
walk curl -X GET "localhost:$P/v2/$NAME/manifests/$PUSHED_DIGEST" --header "Accept: $V2" >"$E2E_TMP/err"
assert_eq MANIFEST_UNKNOWN "$(jq -r '.errors[0].code' "$E2E_TMP/err")" "the 404 body carries error code MANIFEST_UNKNOWN"
assert_eq 404 "$(http_code DELETE "localhost:$P/v2/$NAME/manifests/$PUSHED_DIGEST")" \
    "deleting it again answers 404"

e2e_finish
