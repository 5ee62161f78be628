#!/usr/bin/env bash
# End-to-end test of berth as a pull-through cache (issue 17) with real
# clients. Upstreams are real registries on loopback: a plain berth ("U") and
# Debian's Distribution ("D", with htpasswd: the caches answer its Basic
# challenge with the configured credentials), filled with skopeo from images
# built offline with umoci. In front of them:
#   C1  berth with `proxy: upstreams:` (prefix "up" -> U, with an allow-list),
#       every other repository local;
#   C2  berth with a top-level `proxy: remoteurl:` (U) beside `upstreams:`
#       (prefix "dist" -> D): the docker `registry-mirrors` setup, where docker
#       asks for `library/<name>`;
#   C3  berth with Distribution's single `proxy: remoteurl:` (D).
# Checked: skopeo (image, OCI index) and podman cold and warm pulls, byte-
# identical to the upstream, blobs fetched from upstream once and never on a
# warm pull (the upstream's access log), X-Berth-Cache hit/miss/revalidated,
# the berth_proxy_* metrics; a docker daemon with --registry-mirror pulling a
# short `library/` name (success proves the mirror served it: there is no
# Docker Hub here), cold and warm; upstream 404s and the allow-list; tag
# lists; pushes and deletes in proxied repositories refused with 405
# UNSUPPORTED and nothing reaching the upstream, pushes beside the prefix
# working; Distribution as the upstream with the single-remoteurl config
# (credentials never logged); and with U stopped, warm pulls (skopeo, podman
# and docker) served stale (header, Warning 110, a WARN log line) while
# never-cached content fails with 503 UNAVAILABLE, and pulls once the
# upstream is back.
# About 25 s.
#
# usage: tests/e2e/proxy.sh [berth]   (the cache is berth's; `distribution` skips)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
if [[ $E2E_KIND != berth ]]; then
    skip "the pull-through cache under test is berth (Distribution plays an upstream here)"
fi
require_tool skopeo podman umoci docker-registry

OCI_M=application/vnd.oci.image.manifest.v1+json
OCI_I=application/vnd.oci.image.index.v1+json
V2=application/vnd.docker.distribution.manifest.v2+json
V2L=application/vnd.docker.distribution.manifest.list.v2+json
ACCEPT=(-H "Accept: $OCI_M" -H "Accept: $OCI_I" -H "Accept: $V2" -H "Accept: $V2L")

# ------------------------------------------------------------------ helpers --

# log_mark FILE: how many lines FILE has now (for log_since).
log_mark() {
    wc -l <"$1"
}

# log_since FILE MARK: the lines FILE got after log_mark said MARK.
log_since() {
    tail -n +"$(($2 + 1))" "$1"
}

# req_count LOG MARK METHOD PATH_PREFIX [STATUS_RE]: access-log lines
# (combined format, berth and Distribution alike) for METHOD
# /v2/PATH_PREFIX... since MARK, answered with a status matching STATUS_RE
# (default: any).
req_count() {
    log_since "$1" "$2" | grep -c "\"$3 /v2/$4[^\"]* HTTP/[0-9.]*\" ${5:-[0-9]*} " || true
}

# expect_reqs N LOG MARK METHOD PATH_PREFIX MSG: exactly N such requests
# since MARK; for N > 0 only successful ones count (an authenticated
# upstream answers each first try 401), for N = 0 any. Waits up to 5 s for
# access-log lines written after the response.
expect_reqs() {
    local n=$1 logf=$2 mark=$3 method=$4 path=$5 msg=$6 got i status_re=
    ((n == 0)) && sleep 0.5
    ((n > 0)) && status_re='2[0-9][0-9]'
    for ((i = 0; i < 50; i++)); do
        got=$(req_count "$logf" "$mark" "$method" "$path" "$status_re")
        [[ $got == "$n" ]] && break
        sleep 0.1
    done
    if [[ $got != "$n" ]]; then
        log_since "$logf" "$mark" | grep '"[A-Z]* /v2/' | tail -n 20 >&2 || true
        fail "$msg: expected $n upstream $method /v2/$path..., counted $got"
    fi
    pass "$msg"
}

# probe METHOD URL: a request with every manifest type accepted; leaves the
# headers in $E2E_TMP/h and the body in $E2E_TMP/b; prints the status.
probe() {
    curl -sS "${ACCEPT[@]}" -D "$E2E_TMP/h" -o "$E2E_TMP/b" -w '%{http_code}' -X "$1" "$2"
}

# expect_cache STATUS CACHE METHOD URL MSG: the answer's status and X-Berth-Cache.
expect_cache() {
    local want_status=$1 want_cache=$2 method=$3 url=$4 msg=$5 got_status got_cache
    if [[ $method == HEAD ]]; then
        got_status=$(curl -sS "${ACCEPT[@]}" -D "$E2E_TMP/h" -o /dev/null -w '%{http_code}' -I "$url")
    else
        got_status=$(probe "$method" "$url")
    fi
    got_cache=$(header "$E2E_TMP/h" X-Berth-Cache)
    [[ $got_status == "$want_status" && $got_cache == "$want_cache" ]] ||
        fail "$msg: $method $url: expected $want_status with X-Berth-Cache '$want_cache', got $got_status with '$got_cache'"
    pass "$msg"
}

# expect_error STATUS CODE METHOD URL MSG [CURL_ARGS...]: an error answer with
# STATUS and JSON error code CODE. The body stays in $E2E_TMP/b.
expect_error() {
    local want_status=$1 want_code=$2 method=$3 url=$4 msg=$5 got_status got_code
    shift 5
    got_status=$(curl -sS -D "$E2E_TMP/h" -o "$E2E_TMP/b" -w '%{http_code}' -X "$method" "$@" "$url")
    got_code=$(jq -r '.errors[0].code // empty' "$E2E_TMP/b" 2>/dev/null || true)
    [[ $got_status == "$want_status" && $got_code == "$want_code" ]] ||
        fail "$msg: $method $url: expected $want_status $want_code, got $got_status '$got_code': $(head -c 300 "$E2E_TMP/b")"
    pass "$msg"
}

# manifest_digest ADDR REPO REF [CURL_ARGS...]: Docker-Content-Digest a
# registry answers (asked directly, for the upstreams).
manifest_digest() {
    curl -sS "${ACCEPT[@]}" "${@:4}" -I "http://$1/v2/$2/manifests/$3" >"$E2E_TMP/hd"
    header "$E2E_TMP/hd" Docker-Content-Digest
}

# check_same_dir GOT WANT WHAT: two `dir:` copies hold the same files, and
# every blob the manifest lists matches its digest and size.
check_same_dir() {
    local got=$1 want=$2 what=$3 d size
    diff -r "$want" "$got" >/dev/null || fail "$what: $got differs from the upstream's copy $want"
    while read -r d size; do
        check_blob "$got/${d#sha256:}" "$d" "$size" "$what: blob $d"
    done < <(manifest_blobs "$got/manifest.json")
    pass "$what: manifest and $(manifest_blobs "$got/manifest.json" | wc -l) blobs byte-identical to the upstream's"
}

PM_OPTS=(
    --root "$E2E_TMP/podman/root" --runroot "$E2E_TMP/podman/runroot"
    --tmpdir "$E2E_TMP/podman/tmp" --storage-driver=vfs
    --cgroup-manager=cgroupfs --events-backend=file
)
export TMPDIR=$E2E_TMP/podman/vartmp
mkdir -p "$TMPDIR"
_E2E_PM_N=0
# pm ARGS...: podman with private storage; its debug log shown on failure.
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

pm_clear() {
    pm rmi --all --force >/dev/null
    clear_blob_info_cache
}

# ------------------------------------------------------------------ images --

L=$E2E_TMP/layout
build_oci_image "$L" v1 1048576
oci_retag_arch "$L" v1 arm arm64
build_oci_index "$L" multi v1 arm
build_oci_image "$L" pod 524288
build_oci_image "$L" dock 524288
oci_retag_arch "$L" dock dockarm arm64
build_oci_index "$L" dockmulti dockarm dock
build_oci_image "$L" par 2097152
build_oci_image "$L" never 4096
build_oci_image "$L" dist 524288
oci_retag_arch "$L" dist distarm arm64
build_oci_index "$L" distmulti dist distarm

# ---------------------------------------------------------------- upstreams --

start_registry berth "$E2E_TMP/up" "$(free_port)"
U=$REG_ADDR PU=$REG_PORT U_LOG=$REG_LOG
push_image "oci:$L:v1" "docker://$U/e2e/app:v1"
push_image "oci:$L:v1" "docker://$U/e2e/app:v2s2" --format v2s2
push_image "oci:$L:multi" "docker://$U/e2e/app:multi" --all
push_image "oci:$L:pod" "docker://$U/e2e/pod:v1"
push_image "oci:$L:dock" "docker://$U/library/e2eproxy:latest" --format v2s2
push_image "oci:$L:dockmulti" "docker://$U/library/e2emulti:latest" --all
push_image "oci:$L:never" "docker://$U/e2e/never:v1"
push_image "oci:$L:par" "docker://$U/e2e/par:v1"
push_image "oci:$L:v1" "docker://$U/other/secret:v1"
pass "upstream berth filled (e2e/app, e2e/pod, e2e/never, library/e2eproxy, other/secret)"

# Distribution asks for credentials (htpasswd: a Basic challenge), as a
# private registry:2 does; the caches are configured with them
require_tool htpasswd
DPW=dist-Secret-41
htpasswd -Bbc "$E2E_TMP/htpasswd" alice "$DPW" 2>/dev/null
DCREDS=(-u "alice:$DPW")
start_registry distribution "$E2E_TMP/dist" "$(free_port)" "auth:
  htpasswd:
    realm: dist-e2e
    path: $E2E_TMP/htpasswd"
D=$REG_ADDR D_LOG=$REG_LOG
assert_eq 401 "$(http_code GET "http://$D/v2/")" "upstream Distribution refuses anonymous clients"
push_image "oci:$L:dist" "docker://$D/e2e/dist:v1" --dest-creds "alice:$DPW"
push_image "oci:$L:distmulti" "docker://$D/e2e/dist:multi" --all --dest-creds "alice:$DPW"
pass "upstream Distribution filled (e2e/dist:v1, e2e/dist:multi)"

# the upstreams' own copies, to compare the cache's against
copy_image "docker://$U/e2e/app:v1" "dir:$E2E_TMP/want-app-v1"
copy_image "docker://$U/e2e/app:v2s2" "dir:$E2E_TMP/want-app-v2s2"
copy_image "docker://$U/e2e/par:v1" "dir:$E2E_TMP/want-par-v1"
copy_image "docker://$D/e2e/dist:v1" "dir:$E2E_TMP/want-dist-v1" --src-creds "alice:$DPW"
APP_V1=$(manifest_digest "$U" e2e/app v1)
APP_MULTI=$(manifest_digest "$U" e2e/app multi)
POD_V1=$(manifest_digest "$U" e2e/pod v1)
DOCK=$(manifest_digest "$U" library/e2eproxy latest)
DIST_V1=$(manifest_digest "$D" e2e/dist v1 "${DCREDS[@]}")
DIST_MULTI=$(manifest_digest "$D" e2e/dist multi "${DCREDS[@]}")
APP_BLOBS=$(manifest_blobs "$E2E_TMP/want-app-v1/manifest.json" | wc -l)

# ------------------------------------------------------------------- caches --

# C1 has its metrics on a debug listener (Distribution's REGISTRY_* overrides)
C1_DEBUG=127.0.0.1:$(free_port)
REGISTRY_HTTP_DEBUG_ADDR=$C1_DEBUG REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED=true \
    start_registry berth "$E2E_TMP/c1" "$(free_port)" "proxy:
  upstreams:
    - prefix: up
      remoteurl: http://$U
      timeout: 5s
      repositories: [\"e2e/*\", \"library/*\"]"
C1=$REG_ADDR C1_LOG=$REG_LOG

start_registry berth "$E2E_TMP/c2" "$(free_port)" "proxy:
  remoteurl: http://$U
  upstreams:
    - prefix: dist
      remoteurl: http://$D
      username: alice
      password: $DPW"
C2=$REG_ADDR C2_LOG=$REG_LOG

start_registry berth "$E2E_TMP/c3" "$(free_port)" "proxy:
  remoteurl: http://$D
  username: alice
  password: $DPW
  ttl: 168h"
C3=$REG_ADDR C3_LOG=$REG_LOG

# ------------------------------------------------- 1. skopeo through C1 --

m=$(log_mark "$U_LOG")
copy_image "docker://$C1/up/e2e/app:v1" "dir:$E2E_TMP/cold-app-v1"
check_same_dir "$E2E_TMP/cold-app-v1" "$E2E_TMP/want-app-v1" "skopeo cold pull through the cache"
expect_reqs "$APP_BLOBS" "$U_LOG" "$m" GET e2e/app/blobs/ "cold pull: each of the $APP_BLOBS blobs fetched from upstream exactly once"
grep -i proxy "$C1_LOG" | grep -qi miss || fail "cold pull: no log line of the cache naming a proxy miss"
pass "cold pull: the cache logs its misses"

expect_cache 200 hit HEAD "http://$C1/v2/up/e2e/app/manifests/$APP_V1" "manifest by digest after the cold pull: hit"
while read -r d _; do
    expect_cache 200 hit HEAD "http://$C1/v2/up/e2e/app/blobs/$d" "blob ${d:7:12} after the cold pull: HEAD hit"
done < <(manifest_blobs "$E2E_TMP/want-app-v1/manifest.json")
d=$(jq -r '.layers[-1].digest' "$E2E_TMP/want-app-v1/manifest.json")
expect_cache 200 hit GET "http://$C1/v2/up/e2e/app/blobs/$d" "big layer GET after the cold pull: hit"
assert_eq "$d" "sha256:$(sha256 "$E2E_TMP/b")" "big layer served from the cache hashes to its digest"
expect_cache 200 revalidated GET "http://$C1/v2/up/e2e/app/manifests/v1" "manifest by tag (tagttl 0): revalidated by upstream"
assert_eq "$APP_V1" "$(header "$E2E_TMP/h" Docker-Content-Digest)" "manifest by tag: the upstream's digest"

m=$(log_mark "$U_LOG")
copy_image "docker://$C1/up/e2e/app:v1" "dir:$E2E_TMP/warm-app-v1"
check_same_dir "$E2E_TMP/warm-app-v1" "$E2E_TMP/want-app-v1" "skopeo warm pull through the cache"
expect_reqs 0 "$U_LOG" "$m" GET e2e/app/ "warm pull: no GET reached the upstream (blobs nor manifests)"

# the metrics count what happened (summed over every label set)
curl -sS "http://$C1_DEBUG/metrics" >"$E2E_TMP/metrics"
metric_sum() {
    awk -v re="$1" '$0 ~ re {s += $NF} END {print s + 0}' "$E2E_TMP/metrics"
}
for r in miss hit revalidated; do
    n=$(metric_sum "^berth_proxy_requests_total[{].*result=\"$r\"")
    ((n > 0)) || fail "metrics: berth_proxy_requests_total{result=\"$r\"} is $n: $(grep berth_proxy_ "$E2E_TMP/metrics" | head -n 20)"
done
pass "metrics: berth_proxy_requests_total counts misses, hits and revalidations"
n=$(metric_sum '^berth_proxy_upstream_bytes_total[{]')
big=$(jq -r '.layers[-1].size' "$E2E_TMP/want-app-v1/manifest.json")
((n >= big)) || fail "metrics: berth_proxy_upstream_bytes_total is $n, less than the big layer's $big bytes"
pass "metrics: berth_proxy_upstream_bytes_total covers the fetched blobs ($n bytes)"

# a Docker schema 2 tag: a miss first, then revalidated, same bytes
expect_cache 200 miss GET "http://$C1/v2/up/e2e/app/manifests/v2s2" "first GET of a tag never pulled: miss"
cmp -s "$E2E_TMP/b" "$E2E_TMP/want-app-v2s2/manifest.json" || fail "v2s2 manifest through the cache differs from the upstream's"
pass "v2s2 manifest through the cache: the upstream's bytes"
expect_cache 200 revalidated GET "http://$C1/v2/up/e2e/app/manifests/v2s2" "second GET of that tag: revalidated"
copy_image "docker://$C1/up/e2e/app:v2s2" "dir:$E2E_TMP/cold-app-v2s2"
check_same_dir "$E2E_TMP/cold-app-v2s2" "$E2E_TMP/want-app-v2s2" "skopeo pull of the v2s2 tag"

# an OCI index and its children (by digest)
copy_image "docker://$C1/up/e2e/app:multi" "oci:$E2E_TMP/multi-out:multi" --all
assert_eq "$APP_MULTI" "$(oci_manifest_desc "$E2E_TMP/multi-out" multi | jq -r .digest)" \
    "skopeo copy --all through the cache: the upstream's index digest"
for d in $(jq -r '.manifests[].digest' "$(oci_blob "$E2E_TMP/multi-out" "$APP_MULTI")"); do
    [[ -f $(oci_blob "$E2E_TMP/multi-out" "$d") ]] || fail "copy --all: child $d missing"
    assert_eq "$d" "sha256:$(sha256 "$(oci_blob "$E2E_TMP/multi-out" "$d")")" "copy --all: child ${d:7:12} has its digest"
done

# four skopeo pulls of one cold image at once: one upstream GET per blob
m=$(log_mark "$U_LOG")
pids=()
for i in 1 2 3 4; do
    skopeo --insecure-policy copy --src-tls-verify=false "docker://$C1/up/e2e/par:v1" "dir:$E2E_TMP/par-$i" \
        >"$E2E_TMP/par-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3 4; do
    wait "${pids[$((i - 1))]}" || fail "concurrent cold pull $i failed: $(tail -n 5 "$E2E_TMP/par-$i.log")"
done
for i in 1 2 3 4; do
    check_same_dir "$E2E_TMP/par-$i" "$E2E_TMP/want-par-v1" "concurrent cold pull $i of 4"
done
expect_reqs 3 "$U_LOG" "$m" GET e2e/par/blobs/ "4 concurrent cold pulls: each blob fetched from upstream once"

# tag list from upstream
curl -sS "http://$C1/v2/up/e2e/app/tags/list" >"$E2E_TMP/tags.json"
assert_eq '["multi","v1","v2s2"]' "$(jq -c '.tags | sort' "$E2E_TMP/tags.json")" "tag list of a proxied repository: the upstream's tags"
assert_eq up/e2e/app "$(jq -r .name "$E2E_TMP/tags.json")" "tag list of a proxied repository: named as the client asked"

# upstream 404s, the allow-list
expect_error 404 MANIFEST_UNKNOWN GET "http://$C1/v2/up/e2e/app/manifests/nosuchtag" "tag the upstream lacks: 404 MANIFEST_UNKNOWN"
expect_error 404 BLOB_UNKNOWN GET "http://$C1/v2/up/e2e/app/blobs/sha256:$(printf nope | sha256sum | cut -d' ' -f1)" \
    "blob the upstream lacks: 404 BLOB_UNKNOWN"
m=$(log_mark "$U_LOG")
expect_error 404 NAME_UNKNOWN GET "http://$C1/v2/up/other/secret/manifests/v1" "repository outside the allow-list: 404 NAME_UNKNOWN"
expect_reqs 0 "$U_LOG" "$m" GET other/ "repository outside the allow-list: upstream not asked"

# ------------------------------------------------- 2. podman through C1 --

m=$(log_mark "$U_LOG")
pm pull -q --tls-verify=false "$C1/up/e2e/pod:v1" >/dev/null
POD_CONFIG=$(jq -r .config.digest < <(raw_manifest "docker://$U/e2e/pod:v1"))
assert_eq "${POD_CONFIG#sha256:}" "$(pm image inspect --format '{{.Id}}' "$C1/up/e2e/pod:v1")" "podman cold pull: image ID is the upstream's config digest"
assert_eq "$POD_V1" "$(pm image inspect --format '{{.Digest}}' "$C1/up/e2e/pod:v1")" "podman cold pull: the upstream's manifest digest"
expect_reqs 3 "$U_LOG" "$m" GET e2e/pod/blobs/ "podman cold pull: 3 blobs fetched from upstream once each"
mnt=$(pm image mount "$C1/up/e2e/pod:v1")
grep -q 'image pod built' "$mnt/etc/e2e-release" || fail "podman cold pull: unexpected /etc/e2e-release: $(cat "$mnt/etc/e2e-release")"
pm image unmount "$C1/up/e2e/pod:v1" >/dev/null
pass "podman cold pull: the image's files are there"
pm_clear
m=$(log_mark "$U_LOG")
pm pull -q --tls-verify=false "$C1/up/e2e/pod:v1" >/dev/null
assert_eq "${POD_CONFIG#sha256:}" "$(pm image inspect --format '{{.Id}}' "$C1/up/e2e/pod:v1")" "podman warm pull: same image ID"
expect_reqs 0 "$U_LOG" "$m" GET e2e/pod/ "podman warm pull: no GET reached the upstream"
pm pull -q --tls-verify=false "$C1/up/e2e/pod@$POD_V1" >/dev/null
pass "podman pull by digest through the cache"

# ------------------------------------ 3. pushes: refused when proxied --

m=$(log_mark "$U_LOG")
clear_blob_info_cache
if skopeo --insecure-policy copy --dest-tls-verify=false "oci:$L:never" "docker://$C1/up/e2e/pushed:v1" \
    >"$E2E_TMP/push-proxied.out" 2>&1; then
    fail "skopeo push into the proxied prefix succeeded"
fi
grep -qi '405\|unsupported' "$E2E_TMP/push-proxied.out" ||
    fail "skopeo push into the proxied prefix failed, but not with 405/UNSUPPORTED: $(tail -n 3 "$E2E_TMP/push-proxied.out")"
pass "skopeo push into the proxied prefix fails with UNSUPPORTED"
expect_error 405 UNSUPPORTED POST "http://$C1/v2/up/e2e/app/blobs/uploads/" "POST upload in a proxied repository: 405 UNSUPPORTED"
d=$(jq -r .config.digest "$E2E_TMP/want-app-v1/manifest.json")
expect_error 405 UNSUPPORTED POST "http://$C1/v2/up/e2e/app/blobs/uploads/?mount=$d&from=up/e2e/pod" \
    "cross-repository mount into a proxied repository: 405 UNSUPPORTED"
expect_error 405 UNSUPPORTED PUT "http://$C1/v2/up/e2e/app/manifests/pushed" "manifest PUT in a proxied repository: 405 UNSUPPORTED" \
    -H "Content-Type: $OCI_M" --data-binary "@$E2E_TMP/want-app-v1/manifest.json"
expect_error 405 UNSUPPORTED DELETE "http://$C1/v2/up/e2e/app/manifests/$APP_V1" "manifest DELETE in a proxied repository: 405 UNSUPPORTED"
expect_error 405 UNSUPPORTED DELETE "http://$C1/v2/up/e2e/app/blobs/$d" "blob DELETE in a proxied repository: 405 UNSUPPORTED"
for method in POST PUT PATCH DELETE; do
    expect_reqs 0 "$U_LOG" "$m" "$method" "" "refused pushes: no $method reached the upstream"
done
expect_cache 200 hit HEAD "http://$C1/v2/up/e2e/app/manifests/$APP_V1" "after the refused DELETE the manifest is still cached"

# local repositories beside the prefix
for repo in local/app upx/app; do
    push_image "oci:$L:never" "docker://$C1/$repo:v1"
    copy_image "docker://$C1/$repo:v1" "dir:$E2E_TMP/local-${repo%%/*}"
    assert_eq "sha256:$(raw_manifest "oci:$L:never" | sha256sum | cut -d' ' -f1)" \
        "sha256:$(sha256 "$E2E_TMP/local-${repo%%/*}/manifest.json")" "push + pull of local repository $repo beside the proxied prefix"
    curl -sS "${ACCEPT[@]}" -I -o /dev/null -D "$E2E_TMP/h" "http://$C1/v2/$repo/manifests/v1"
    assert_eq "" "$(header "$E2E_TMP/h" X-Berth-Cache)" "local repository $repo: no X-Berth-Cache header"
done
code=$(http_code DELETE "http://$C1/v2/local/app/manifests/$(manifest_digest "$C1" local/app v1)")
assert_eq 202 "$code" "DELETE in a local repository still works"
expect_reqs 0 "$U_LOG" "$m" GET local/ "local repositories never ask the upstream"

# ------------------------- 4. Distribution upstream, single remoteurl (C3) --

m=$(log_mark "$D_LOG")
copy_image "docker://$C3/e2e/dist:v1" "dir:$E2E_TMP/cold-dist-v1"
check_same_dir "$E2E_TMP/cold-dist-v1" "$E2E_TMP/want-dist-v1" "Distribution upstream, single remoteurl: skopeo cold pull"
expect_reqs 3 "$D_LOG" "$m" GET e2e/dist/blobs/ "Distribution upstream: each blob fetched once"
m=$(log_mark "$D_LOG")
copy_image "docker://$C3/e2e/dist:v1" "dir:$E2E_TMP/warm-dist-v1"
check_same_dir "$E2E_TMP/warm-dist-v1" "$E2E_TMP/want-dist-v1" "Distribution upstream: skopeo warm pull"
expect_reqs 0 "$D_LOG" "$m" GET e2e/dist/blobs/ "Distribution upstream: warm pull fetched no blob"
expect_reqs 0 "$D_LOG" "$m" GET e2e/dist/manifests/ "Distribution upstream: warm pull fetched no manifest"
expect_cache 200 hit HEAD "http://$C3/v2/e2e/dist/manifests/$DIST_V1" "single remoteurl: manifest by digest hit"
copy_image "docker://$C3/e2e/dist:multi" "oci:$E2E_TMP/distmulti-out:multi" --all
assert_eq "$DIST_MULTI" "$(oci_manifest_desc "$E2E_TMP/distmulti-out" multi | jq -r .digest)" \
    "single remoteurl: skopeo copy --all gives Distribution's index digest"
pm pull -q --tls-verify=false "$C3/e2e/dist:v1" >/dev/null
assert_eq "$DIST_V1" "$(pm image inspect --format '{{.Digest}}' "$C3/e2e/dist:v1")" "single remoteurl: podman pull, Distribution's digest"
clear_blob_info_cache
if skopeo --insecure-policy copy --dest-tls-verify=false "oci:$L:never" "docker://$C3/mine/app:v1" \
    >"$E2E_TMP/push-c3.out" 2>&1; then
    fail "skopeo push into a single-remoteurl cache succeeded"
fi
pass "single remoteurl: every repository is proxied, a push fails"
expect_error 405 UNSUPPORTED POST "http://$C3/v2/mine/app/blobs/uploads/" "single remoteurl: POST upload 405 UNSUPPORTED"
if grep -qF "$DPW" "$C3_LOG"; then
    fail "the cache's log holds the upstream password: $(grep -F "$DPW" "$C3_LOG" | head -n 3)"
fi
pass "single remoteurl: the upstream password appears in no log line"

# ---------------------------- 5. docker with registry-mirrors (C2) --

DOCKER_RUNNING=0
if ((EUID == 0)) && [[ -x /usr/sbin/dockerd && -x /usr/bin/docker ]]; then
    start_dockerd --registry-mirror "http://$C2"
    dockercli info --format '{{json .RegistryConfig.Mirrors}}' | grep -q "$C2" ||
        fail "dockerd does not list the mirror: $(dockercli info --format '{{json .RegistryConfig.Mirrors}}')"
    dk() {
        local out=$E2E_TMP/docker.out
        if ! dockercli "$@" >"$out" 2>&1; then
            printf -- '----- docker %s -----\n' "$*" >&2
            cat "$out" >&2
            fail "docker $1 failed: docker $*"
        fi
        cat "$out"
    }
    DOCK_CONFIG=$(jq -r .config.digest < <(raw_manifest "docker://$U/library/e2eproxy:latest"))
    m=$(log_mark "$U_LOG")
    mc=$(log_mark "$C2_LOG")
    out=$(dk pull e2eproxy:latest)
    grep -q "Digest: $DOCK" <<<"$out" || fail "docker pull e2eproxy did not report the upstream digest $DOCK: $out"
    pass "docker pull e2eproxy:latest through the mirror (no Docker Hub here): the upstream's digest"
    assert_eq "$DOCK_CONFIG" "$(dockercli image inspect --format '{{.Id}}' e2eproxy:latest)" "docker cold pull: image ID is the upstream's config digest"
    # docker 20.10 asks HEAD by tag, then GET by digest
    expect_reqs 1 "$C2_LOG" "$mc" '\(GET\|HEAD\)' library/e2eproxy/manifests/latest "docker asked the mirror for library/e2eproxy:latest"
    expect_reqs 3 "$U_LOG" "$m" GET library/e2eproxy/blobs/ "docker cold pull: the mirror fetched the 3 blobs from upstream once each"
    expect_cache 200 hit HEAD "http://$C2/v2/library/e2eproxy/manifests/$DOCK" "mirror: library/e2eproxy manifest by digest cached"
    dk image rm e2eproxy:latest >/dev/null
    m=$(log_mark "$U_LOG")
    mc=$(log_mark "$C2_LOG")
    out=$(dk pull docker.io/library/e2eproxy:latest)
    grep -q "Digest: $DOCK" <<<"$out" || fail "docker warm pull did not report $DOCK: $out"
    assert_eq "$DOCK_CONFIG" "$(dockercli image inspect --format '{{.Id}}' e2eproxy:latest)" "docker warm pull of docker.io/library/e2eproxy: same image ID"
    expect_reqs 3 "$C2_LOG" "$mc" GET library/e2eproxy/blobs/ "docker warm pull: the 3 blobs asked of the mirror"
    expect_reqs 0 "$U_LOG" "$m" GET library/e2eproxy/ "docker warm pull: no GET reached the upstream"
    # a multi-platform OCI index through the mirror: docker picks linux/amd64
    m=$(log_mark "$U_LOG")
    out=$(dk pull e2emulti)
    grep -q "Digest: $(manifest_digest "$U" library/e2emulti latest)" <<<"$out" ||
        fail "docker pull e2emulti did not report the upstream's index digest: $out"
    assert_eq "$DOCK_CONFIG" "$(dockercli image inspect --format '{{.Id}}' e2emulti:latest)" \
        "docker pull of a multi-platform index through the mirror: the amd64 image"
    amd=sha256:$(raw_manifest "oci:$L:dock" | sha256sum | cut -d' ' -f1)
    arm=sha256:$(raw_manifest "oci:$L:dockarm" | sha256sum | cut -d' ' -f1)
    expect_reqs 1 "$U_LOG" "$m" GET "library/e2emulti/manifests/$amd" "docker pull of the index: the amd64 child fetched from upstream"
    expect_reqs 0 "$U_LOG" "$m" GET "library/e2emulti/manifests/$arm" "docker pull of the index: the arm64 child not fetched"
    expect_reqs 0 "$U_LOG" "$m" GET library/e2emulti/blobs/ \
        "docker pull of the index: blobs cached for library/e2eproxy not fetched again"
    DOCKER_RUNNING=1
else
    log "docker part skipped (needs root, /usr/sbin/dockerd and /usr/bin/docker)"
fi
# the combined config: a prefix beside the top-level remoteurl
assert_eq "$DIST_V1" "$(manifest_digest "$C2" dist/e2e/dist v1)" "remoteurl + upstreams: prefix dist/ reaches Distribution"
assert_eq "$APP_V1" "$(manifest_digest "$C2" e2e/app v1)" "remoteurl + upstreams: other names reach the top-level remoteurl"

# ------------------------------------- 6. upstream down: served stale --

stop_registry "$PU"
if ((DOCKER_RUNNING)); then
    dk image rm e2eproxy:latest e2emulti:latest >/dev/null
    out=$(dk pull e2eproxy:latest)
    grep -q "Digest: $DOCK" <<<"$out" || fail "upstream stopped: docker pull through the mirror did not report $DOCK: $out"
    assert_eq "$DOCK_CONFIG" "$(dockercli image inspect --format '{{.Id}}' e2eproxy:latest)" \
        "upstream stopped: docker pull through the mirror still works"
    stop_dockerd
    # podman would read the private dockerd's client config (DOCKER_CONFIG, made by start_dockerd)
    unset DOCKER_CONFIG
fi
copy_image "docker://$C1/up/e2e/app:v1" "dir:$E2E_TMP/stale-app-v1"
check_same_dir "$E2E_TMP/stale-app-v1" "$E2E_TMP/want-app-v1" "upstream stopped: skopeo warm pull"
expect_cache 200 stale GET "http://$C1/v2/up/e2e/app/manifests/v1" "upstream stopped: manifest by tag served stale"
assert_eq "$APP_V1" "$(header "$E2E_TMP/h" Docker-Content-Digest)" "upstream stopped: the cached digest"
header "$E2E_TMP/h" Warning | grep -q '^110 .*Response is Stale' ||
    fail "upstream stopped: no 'Warning: 110 - \"Response is Stale\"' header: '$(header "$E2E_TMP/h" Warning)'"
pass "upstream stopped: Warning 110 Response is Stale"
grep WARN "$C1_LOG" | grep -q "$U" || fail "upstream stopped: no WARN log line naming the upstream $U"
pass "upstream stopped: a WARN log line names the upstream"
pm_clear
pm pull -q --tls-verify=false "$C1/up/e2e/pod:v1" >/dev/null
assert_eq "${POD_CONFIG#sha256:}" "$(pm image inspect --format '{{.Id}}' "$C1/up/e2e/pod:v1")" "upstream stopped: podman warm pull"
curl -sS "http://$C1/v2/up/e2e/app/tags/list" >"$E2E_TMP/tags.json"
jq -e '.tags | index("v1")' "$E2E_TMP/tags.json" >/dev/null || fail "upstream stopped: tag list lacks v1: $(cat "$E2E_TMP/tags.json")"
pass "upstream stopped: the tag list comes from the cache"
expect_error 503 UNAVAILABLE GET "http://$C1/v2/up/e2e/never/manifests/v1" "upstream stopped: never-cached manifest 503 UNAVAILABLE"
grep -q "$U\|$PU" "$E2E_TMP/b" || fail "upstream stopped: the 503 does not name the upstream: $(cat "$E2E_TMP/b")"
pass "upstream stopped: the 503 names the upstream"
clear_blob_info_cache
if skopeo --insecure-policy copy --src-tls-verify=false "docker://$C1/up/e2e/never:v1" "dir:$E2E_TMP/never" \
    >"$E2E_TMP/never.out" 2>&1; then
    fail "upstream stopped: pull of never-cached content succeeded"
fi
pass "upstream stopped: skopeo pull of never-cached content fails"

# the upstream back on its address: answers are confirmed again, no failure was cached
start_registry berth "$E2E_TMP/up" "$PU"
expect_cache 200 revalidated GET "http://$C1/v2/up/e2e/app/manifests/v1" "upstream back: manifest by tag revalidated again"
copy_image "docker://$C1/up/e2e/never:v1" "dir:$E2E_TMP/never"
assert_eq "sha256:$(raw_manifest "oci:$L:never" | sha256sum | cut -d' ' -f1)" "sha256:$(sha256 "$E2E_TMP/never/manifest.json")" \
    "upstream back: the image that failed while it was down now pulls"

e2e_finish
