#!/usr/bin/env bash
# Garbage collection and `berth check` against Distribution, both directions (issue 7).
#
# 1. A data directory written by Distribution (Debian's docker-registry): `berth
#    garbage-collect --dry-run` lists exactly the blobs Distribution's own dry run lists; berth
#    then collects it, and Distribution serves the surviving image byte-identical.
# 2. A data directory written by berth: Distribution's `garbage-collect` deletes nothing a
#    berth tag reaches (berth pulls the image intact afterwards), and berth's collector deletes
#    the same blobs Distribution's does.
# 3. `berth check` passes on both clean directories, reports the layer links Distribution's
#    collector leaves behind, finds a corrupt blob, a missing blob, a temporary file and an
#    orphaned upload, and `--repair` removes what is safe.
# 4. Online: `berth serve` with storage.maintenance.garbagecollect enabled sweeps a deleted
#    image's blobs by itself while the kept image still pulls.
#
# usage: tests/e2e/gc.sh [berth]   (berth only: it tests berth's commands)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool skopeo umoci docker-registry jq
[[ $E2E_KIND == berth ]] || {
    skip "tests berth's garbage-collect and check commands"
    exit 0
}
resolve_berth_bin

L=$E2E_TMP/layout
build_oci_image "$L" a 262144
build_oci_image "$L" b 262144

# berth_config FILE DATADIR [MAINTENANCE]: a config for berth's offline commands.
berth_config() {
    cat >"$1" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $2}
  delete: {enabled: true}
  maintenance: ${3:-"{garbagecollect: {graceperiod: 0s}}"}
http: {addr: 127.0.0.1:$(free_port)}
EOF
}

# blobs_on_disk DATADIR: sorted digests of every blob stored.
blobs_on_disk() {
    find "$1/docker/registry/v2/blobs" -name data -type f | awk -F/ '{print "sha256:" $(NF-1)}' | sort
}

# pull_intact REF LAYOUT_TAG MSG: REF's manifest equals the layout's and every blob hashes right.
pull_intact() {
    local ref=$1 tag=$2 msg=$3 d size out=$E2E_TMP/pull-$RANDOM
    raw_manifest "$ref" >"$out.json"
    raw_manifest "oci:$L:$tag" >"$out.want.json"
    cmp -s "$out.json" "$out.want.json" || fail "$msg: manifest differs"
    copy_image "$ref" "dir:$out"
    while read -r d size; do
        check_blob "$out/${d#sha256:}" "$d" "$size" "$msg: blob $d"
    done < <(manifest_blobs "$out.json")
    pass "$msg"
}

# push_pair DATADIR KIND: a and b pushed, b deleted by digest; prints b's digest.
push_pair() {
    start_registry "$2" "$1" "$(free_port)"
    push_image "oci:$L:a" "docker://$REG_ADDR/e2e/gc:a"
    push_image "oci:$L:b" "docker://$REG_ADDR/e2e/gc:b"
    local b=sha256:$(raw_manifest "oci:$L:b" | sha256sum | cut -d' ' -f1)
    [[ $(http_code DELETE "http://$REG_ADDR/v2/e2e/gc/manifests/$b") == 202 ]] || fail "$2: DELETE b failed"
    stop_registry
}

# --- 1. Distribution's directory, berth's collector --------------------------------------
D=$E2E_TMP/distribution-data
push_pair "$D" distribution
write_registry_config "$E2E_TMP/dist.yml" "$D" "$(free_port)"
berth_config "$E2E_TMP/berth-d.yml" "$D"
"$BERTH_PATH" check "$E2E_TMP/berth-d.yml" >"$E2E_TMP/check-d.log" 2>&1 ||
    fail "berth check fails on a clean Distribution directory: $(cat "$E2E_TMP/check-d.log")"
pass "berth check: a directory Distribution wrote is clean"
docker-registry garbage-collect --dry-run "$E2E_TMP/dist.yml" >"$E2E_TMP/dist-dry.log" 2>&1
want=$(grep -o 'blob eligible for deletion: sha256:[0-9a-f]*' "$E2E_TMP/dist-dry.log" | awk '{print $NF}' | sort)
[[ -n $want ]] || fail "Distribution's dry run found nothing to delete"
"$BERTH_PATH" garbage-collect --dry-run "$E2E_TMP/berth-d.yml" >"$E2E_TMP/berth-dry.log" 2>&1
got=$(grep -o '^would delete blob sha256:[0-9a-f]*' "$E2E_TMP/berth-dry.log" | awk '{print $NF}' | sort)
assert_eq "$want" "$got" "berth's dry run lists exactly the blobs Distribution's dry run lists"
grep -q 'bytes freed (dry run)' "$E2E_TMP/berth-dry.log" || fail "the dry run does not say the bytes it would free"
before=$(blobs_on_disk "$D")
"$BERTH_PATH" garbage-collect "$E2E_TMP/berth-d.yml" >"$E2E_TMP/berth-gc.log" 2>&1 ||
    fail "berth garbage-collect failed: $(tail -n 5 "$E2E_TMP/berth-gc.log")"
assert_eq "$(comm -23 <(echo "$before") <(echo "$want"))" "$(blobs_on_disk "$D")" \
    "berth deleted exactly the unreferenced blobs of Distribution's directory"
"$BERTH_PATH" check "$E2E_TMP/berth-d.yml" >"$E2E_TMP/check-d2.log" 2>&1 ||
    fail "berth check after berth's gc: $(cat "$E2E_TMP/check-d2.log")"
pass "berth check: clean after berth's gc (old layer links to swept blobs removed too)"
start_registry distribution "$D" "$(free_port)"
pull_intact "docker://$REG_ADDR/e2e/gc:a" a "Distribution serves image a intact after berth's gc"
stop_registry

# --- 2. berth's directory, Distribution's collector --------------------------------------
E=$E2E_TMP/berth-data
push_pair "$E" berth
E2=$E2E_TMP/berth-data-dist-gc
cp -a "$E" "$E2"
write_registry_config "$E2E_TMP/dist-e2.yml" "$E2" "$(free_port)"
docker-registry garbage-collect "$E2E_TMP/dist-e2.yml" >"$E2E_TMP/dist-e2.log" 2>&1 ||
    fail "docker-registry garbage-collect failed on berth's directory: $(tail -n 5 "$E2E_TMP/dist-e2.log")"
start_registry berth "$E2" "$(free_port)"
pull_intact "docker://$REG_ADDR/e2e/gc:a" a "berth serves image a intact after Distribution's gc of its directory"
stop_registry
berth_config "$E2E_TMP/berth-e2.yml" "$E2"
rc=0
"$BERTH_PATH" check "$E2E_TMP/berth-e2.yml" >"$E2E_TMP/check-e2.log" 2>&1 || rc=$?
assert_eq "1 dangling-layer-link" "$rc $(grep -E '^[a-z-]+: /' "$E2E_TMP/check-e2.log" | cut -d: -f1 | sort -u | paste -sd,)" \
    "berth check reports the layer links Distribution's gc leaves to the blobs it deleted"
"$BERTH_PATH" check --repair "$E2E_TMP/berth-e2.yml" >"$E2E_TMP/check-e2r.log" 2>&1 ||
    fail "check --repair did not fix the dangling layer links: $(cat "$E2E_TMP/check-e2r.log")"
pass "berth check --repair removes them"
berth_config "$E2E_TMP/berth-e.yml" "$E"
"$BERTH_PATH" garbage-collect "$E2E_TMP/berth-e.yml" >"$E2E_TMP/berth-e.log" 2>&1
assert_eq "$(blobs_on_disk "$E2")" "$(blobs_on_disk "$E")" \
    "berth's and Distribution's collectors leave the same blobs of berth's directory"
"$BERTH_PATH" check "$E2E_TMP/berth-e.yml" >"$E2E_TMP/check-e.log" 2>&1 ||
    fail "berth check after gc: $(cat "$E2E_TMP/check-e.log")"
pass "berth check: berth's directory is clean after gc"

# --- 3. check finds damage, --repair removes what is safe ---------------------------------
a_layer=$(raw_manifest "oci:$L:a" | jq -r '.layers[-1].digest')
a_data=$E/docker/registry/v2/blobs/sha256/${a_layer:7:2}/${a_layer#sha256:}/data
printf 'x' >>"$a_data"
tmpfile=$E/docker/registry/v2/repositories/e2e/gc/_manifests/.link.tmp-0123456789abcdef
printf 'half' >"$tmpfile"
orphan=$E/docker/registry/v2/repositories/e2e/gc/_uploads/00000000-0000-4000-8000-000000000001
mkdir -p "$orphan"
printf 'partial' >"$orphan/data"
touch -d '2 hours ago' "$tmpfile" "$orphan/data" "$orphan"
rc=0
"$BERTH_PATH" check "$E2E_TMP/berth-e.yml" >"$E2E_TMP/check-bad.log" 2>&1 || rc=$?
assert_eq 1 "$rc" "berth check exits 1 on a damaged directory"
for kind in corrupt-blob temporary-file orphaned-upload; do
    grep -q "^$kind: " "$E2E_TMP/check-bad.log" || fail "berth check did not report $kind: $(cat "$E2E_TMP/check-bad.log")"
done
pass "berth check reports the corrupt blob, the temporary file and the orphaned upload"
"$BERTH_PATH" check --repair "$E2E_TMP/berth-e.yml" >"$E2E_TMP/check-repair.log" 2>&1 || true
[[ ! -e $tmpfile && ! -e $orphan && ! -e $a_data ]] || fail "check --repair left what it may remove: $(cat "$E2E_TMP/check-repair.log")"
rc=0
"$BERTH_PATH" check "$E2E_TMP/berth-e.yml" >"$E2E_TMP/check-after.log" 2>&1 || rc=$?
assert_eq "1 missing-blob" "$rc $(grep -E '^[a-z-]+: /' "$E2E_TMP/check-after.log" | cut -d: -f1 | sort -u | paste -sd,)" \
    "after --repair only the manifest whose layer was corrupt remains reported (missing-blob)"

# --- 4. online collection inside berth serve ---------------------------------------------
O=$E2E_TMP/online-data
mkdir -p "$O"
berth_config "$E2E_TMP/online.yml" "$O" \
    "{garbagecollect: {enabled: true, interval: 1s, graceperiod: 2s}}"
port=$(free_port)
sed -i "s/addr: 127.0.0.1:[0-9]*/addr: 127.0.0.1:$port/; s/level: warn/level: info/" "$E2E_TMP/online.yml"
"$BERTH_PATH" serve "$E2E_TMP/online.yml" >"$E2E_TMP/registry-$port.log" 2>&1 &
E2E_REG_PIDS[$port]=$!
for ((i = 0; i < 100; i++)); do curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && break; sleep 0.1; done
REG_PORT=$port REG_ADDR=127.0.0.1:$port
push_image "oci:$L:a" "docker://$REG_ADDR/e2e/gc:a"
push_image "oci:$L:b" "docker://$REG_ADDR/e2e/gc:b"
b_layer=$(raw_manifest "oci:$L:b" | jq -r '.layers[-1].digest')
b=sha256:$(raw_manifest "oci:$L:b" | sha256sum | cut -d' ' -f1)
assert_eq 202 "$(http_code DELETE "http://$REG_ADDR/v2/e2e/gc/manifests/$b")" "b deleted while online gc runs"
for ((i = 0; i < 150; i++)); do
    [[ -e $O/docker/registry/v2/blobs/sha256/${b_layer:7:2}/${b_layer#sha256:}/data ]] || break
    sleep 0.1
done
[[ ! -e $O/docker/registry/v2/blobs/sha256/${b_layer:7:2}/${b_layer#sha256:}/data ]] ||
    fail "online gc did not sweep b's layer within 15 s"
pass "online gc swept the deleted image's layer once it was older than the grace period"
pull_intact "docker://$REG_ADDR/e2e/gc:a" a "image a pulls intact while online gc runs"
grep -q 'garbage collection finished' "$E2E_TMP/registry-$port.log" || fail "no gc result in the log"
pass "online gc logs its results"
stop_registry

e2e_finish
