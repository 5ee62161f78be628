# Shared helpers for the end-to-end tests in tests/e2e. Those tests drive REAL
# clients (skopeo, podman, docker, curl) against a registry process that is
# either berth or CNCF Distribution (Debian's docker-registry), so the very
# same scripts prove that berth is a drop-in replacement for `registry:2`.
# Source this file from a test script; it is not meant to be run.
#
# Conventions:
#   - a test script is run as `tests/e2e/<name>.sh [berth|distribution]`;
#     call `e2e_init "$@"` first, `e2e_finish` last.
#   - `pass MSG` records a passing check, `fail MSG` aborts the script with a
#     non-zero exit; any unexpected failing command aborts it too (ERR trap).
#   - the last line printed is "<name>: N passed, N failed" (or a SKIP line).
#   - everything a test creates lives under $E2E_TMP, which is removed on
#     exit (set E2E_KEEP_TMP=1 to keep it for debugging); every background
#     process started through these helpers is stopped on exit.
#   - variables set here avoid the REGISTRY_ prefix on purpose: Distribution
#     reads REGISTRY_* environment variables as configuration overrides.
# shellcheck shell=bash

set -Eeuo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_DIR/../.." && pwd)
E2E_NAME=$(basename "$0" .sh)
E2E_PASSED=0
E2E_KIND=
E2E_TMP=
E2E_DONE=0
# pids of registries started by start_registry, keyed by port
declare -A E2E_REG_PIDS=()
# other background processes to kill on exit
E2E_BG_PIDS=()
# set by start_registry for the most recently started registry
REG_PORT=
REG_ADDR=
REG_LOG=
REG_KIND=
# set by start_dockerd
DOCKERD_DIR=
DOCKERD_SOCK=
DOCKERD_PID=

log() {
    printf '[%s] %s\n' "$E2E_NAME" "$*" >&2
}

pass() {
    E2E_PASSED=$((E2E_PASSED + 1))
    printf 'PASS: %s: %s\n' "$E2E_NAME" "$*"
}

# Show the end of each registry log, to make a failure diagnosable from CI output.
_e2e_dump_logs() {
    local f
    [[ -n $E2E_TMP && -d $E2E_TMP ]] || return 0
    for f in "$E2E_TMP"/registry-*.log "$E2E_TMP"/dockerd.log; do
        [[ -f $f ]] || continue
        printf -- '----- last lines of %s -----\n' "${f#"$E2E_TMP"/}" >&2
        tail -n 25 "$f" >&2 || true
    done
}

fail() {
    if ((BASH_SUBSHELL > 0)); then
        # inside $(...): stdout is captured; the parent reports the failure
        printf 'FAIL: %s: %s\n' "$E2E_NAME" "$*" >&2
        exit 1
    fi
    printf 'FAIL: %s: %s\n' "$E2E_NAME" "$*"
    _e2e_dump_logs
    E2E_DONE=1
    printf '%s: %d passed, 1 failed\n' "$E2E_NAME" "$E2E_PASSED"
    exit 1
}

# A command failed outside of a condition: report it like a failed check.
_e2e_on_err() {
    local rc=$1 line=$2 cmd=$3
    trap - ERR
    fail "command exited $rc at ${BASH_SOURCE[1]##*/}:$line: $cmd"
}

# Skip the whole test (not a failure). Exits with $E2E_SKIP_EXIT (default 0;
# run.sh sets 77 to tell skips from passes).
skip() {
    printf 'SKIP: %s: %s\n' "$E2E_NAME" "$*"
    E2E_DONE=1
    exit "${E2E_SKIP_EXIT:-0}"
}

# require_tool TOOL...: a missing tool fails the test under CI=true (CI must
# have installed it: scripts/install-deps.sh) and skips it otherwise.
require_tool() {
    local t missing=()
    for t in "$@"; do
        if [[ $t == /* ]]; then
            [[ -x $t ]] || missing+=("$t")
        else
            command -v "$t" >/dev/null 2>&1 || missing+=("$t")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    if [[ ${CI:-} == true ]]; then
        fail "required tool(s) missing: ${missing[*]} (run scripts/install-deps.sh)"
    fi
    skip "required tool(s) missing: ${missing[*]} (run scripts/install-deps.sh)"
}

# e2e_init [KIND]: parse the registry kind, create $E2E_TMP, install traps.
e2e_init() {
    E2E_KIND=${1:-berth}
    case $E2E_KIND in
        berth | distribution) ;;
        *)
            echo "usage: $0 [berth|distribution]" >&2
            exit 2
            ;;
    esac
    # lowercase only: podman derives image names from oci: layout paths
    local i suffix
    for ((i = 0; i < 100; i++)); do
        suffix=$(tr -dc 'a-z0-9' </dev/urandom | head -c 8 || true)
        E2E_TMP=${TMPDIR:-/tmp}/e2e-$E2E_NAME.$suffix
        mkdir -m 700 "$E2E_TMP" 2>/dev/null && break
        E2E_TMP=
    done
    [[ -n $E2E_TMP ]] || { echo "cannot create a scratch directory" >&2; exit 1; }
    trap _e2e_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap '_e2e_on_err $? $LINENO "$BASH_COMMAND"' ERR
    require_tool curl jq
    if [[ $E2E_KIND == berth ]]; then
        resolve_berth_bin
        log "berth binary: $BERTH_PATH"
    fi
    log "registry kind: $E2E_KIND, scratch dir: $E2E_TMP"
}

e2e_finish() {
    E2E_DONE=1
    printf '%s: %d passed, 0 failed\n' "$E2E_NAME" "$E2E_PASSED"
    exit 0
}

_e2e_kill_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

_e2e_cleanup() {
    local rc=$? port pid mnt
    trap - ERR
    set +e
    if ((rc != 0 && E2E_DONE == 0)); then
        # died without a report (e.g. set -u): still print the closing line
        printf 'FAIL: %s: exited %d\n' "$E2E_NAME" "$rc"
        _e2e_dump_logs
        printf '%s: %d passed, 1 failed\n' "$E2E_NAME" "$E2E_PASSED"
    fi
    stop_dockerd
    for port in "${!E2E_REG_PIDS[@]}"; do
        _e2e_kill_pid "${E2E_REG_PIDS[$port]}"
    done
    for pid in "${E2E_BG_PIDS[@]}"; do
        _e2e_kill_pid "$pid"
    done
    if [[ -n $E2E_TMP && -d $E2E_TMP ]]; then
        # nothing should be mounted there, but never rm -rf through a mount
        while read -r _ mnt _; do
            case $mnt in "$E2E_TMP"/*) umount -l "$mnt" 2>/dev/null ;; esac
        done </proc/mounts
        if [[ ${E2E_KEEP_TMP:-0} == 1 ]]; then
            log "kept scratch dir $E2E_TMP"
        else
            rm -rf "$E2E_TMP"
        fi
    fi
    exit "$rc"
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on. Picks
# below the Linux ephemeral range so outgoing connections don't collide.
declare -A _E2E_PORTS_GIVEN=()
free_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((10000 + RANDOM % 22000))
        [[ -z ${_E2E_PORTS_GIVEN[$port]:-} ]] || continue
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        if command -v ss >/dev/null 2>&1 &&
            [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]]; then
            continue
        fi
        _E2E_PORTS_GIVEN[$port]=1
        echo "$port"
        return 0
    done
    fail "no free TCP port found"
}

# resolve_berth_bin: set BERTH_PATH to the berth binary to test: $BERTH_BIN,
# else target/release/berth, else target/debug/berth.
BERTH_PATH=
resolve_berth_bin() {
    local b
    if [[ -n ${BERTH_BIN:-} ]]; then
        b=$BERTH_BIN
        [[ $b == /* ]] || b=$REPO_ROOT/$b
        [[ -x $b ]] || fail "BERTH_BIN=$BERTH_BIN is not an executable file"
        BERTH_PATH=$b
        return 0
    fi
    for b in "$REPO_ROOT/target/release/berth" "$REPO_ROOT/target/debug/berth"; do
        if [[ -x $b ]]; then
            BERTH_PATH=$b
            return 0
        fi
    done
    fail "no berth binary: build it (cargo build --release) or set BERTH_BIN"
}

# write_registry_config FILE DATADIR PORT [EXTRA_YAML]: a Distribution-format
# config.yml (berth reads the same file). EXTRA_YAML is appended verbatim, so
# it may only add top-level keys that are not already there (e.g. log:).
#
# With BERTH_STORAGE=s3 the registry stores in the S3 bucket the BERTH_TEST_S3_*
# variables name (scripts/garage.sh env) instead, under a root directory
# derived from DATADIR: registries given the same DATADIR share storage, as
# they share a directory on the filesystem.
write_registry_config() {
    local file=$1 datadir=$2 port=$3 extra=${4:-}
    if [[ ${BERTH_STORAGE:-filesystem} == s3 ]]; then
        [[ -n ${BERTH_TEST_S3_ENDPOINT:-} ]] ||
            fail "BERTH_STORAGE=s3 needs BERTH_TEST_S3_* (eval \"\$(scripts/garage.sh env)\")"
        cat >"$file" <<EOF
version: 0.1
storage:
  s3:
    region: $BERTH_TEST_S3_REGION
    regionendpoint: $BERTH_TEST_S3_ENDPOINT
    bucket: $BERTH_TEST_S3_BUCKET
    accesskey: $BERTH_TEST_S3_ACCESS_KEY
    secretkey: $BERTH_TEST_S3_SECRET_KEY
    rootdirectory: /e2e$datadir
    forcepathstyle: true
    secure: false
  redirect:
    disable: ${E2E_S3_REDIRECT_DISABLE:-false}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    else
        cat >"$file" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $datadir
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    fi
    if [[ -n $extra ]]; then
        printf '%s\n' "$extra" >>"$file"
    fi
}

# start_registry KIND DATADIR PORT [EXTRA_YAML]: start a registry in the
# background, logging to $E2E_TMP/registry-PORT.log, and wait until
# GET /v2/ answers (200, or 401 if EXTRA_YAML adds auth). Sets REG_PORT,
# REG_ADDR (127.0.0.1:PORT), REG_LOG, REG_KIND.
start_registry() {
    local kind=$1 datadir=$2 port=$3 extra=${4:-}
    local conf=$E2E_TMP/registry-$port.yml logf=$E2E_TMP/registry-$port.log
    local cmd pid i
    mkdir -p "$datadir"
    datadir=$(cd "$datadir" && pwd)
    write_registry_config "$conf" "$datadir" "$port" "$extra"
    case $kind in
        distribution)
            require_tool docker-registry
            cmd=(docker-registry serve "$conf")
            ;;
        berth)
            resolve_berth_bin
            cmd=("$BERTH_PATH" serve "$conf")
            # berth logs one line per request at debug level: keep them, so
            # a failure's log dump shows the requests (unless the caller
            # configures logging itself)
            if ! grep -q '^log:' "$conf"; then
                printf 'log:\n  level: %s\n' "${E2E_BERTH_LOG_LEVEL:-debug}" >>"$conf"
            fi
            ;;
        *) fail "start_registry: unknown kind '$kind'" ;;
    esac
    printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "${cmd[*]}" >>"$logf"
    # Distribution's S3 driver would load a CA bundle some machines set for other
    # endpoints; Garage on loopback speaks plain HTTP.
    env -u AWS_CA_BUNDLE "${cmd[@]}" >>"$logf" 2>&1 </dev/null &
    pid=$!
    E2E_REG_PIDS[$port]=$pid
    for ((i = 0; i < 300; i++)); do
        # 200, or 401 when EXTRA_YAML configures auth
        if [[ $(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null) =~ ^(200|401)$ ]]; then
            # shellcheck disable=SC2034 # used by the test scripts
            REG_PORT=$port REG_ADDR=127.0.0.1:$port REG_LOG=$logf REG_KIND=$kind
            log "$kind registry up on 127.0.0.1:$port (pid $pid, data $datadir)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            unset "E2E_REG_PIDS[$port]"
            wait "$pid" 2>/dev/null || true
            fail "$kind registry exited during startup (see $logf)"
        fi
        sleep 0.1
    done
    fail "$kind registry did not answer GET /v2/ on port $port within 30s"
}

# stop_registry [PORT]: stop the registry on PORT (default: the last started).
stop_registry() {
    local port=${1:-$REG_PORT}
    local pid=${E2E_REG_PIDS[$port]:-}
    [[ -n $pid ]] || return 0
    _e2e_kill_pid "$pid"
    unset "E2E_REG_PIDS[$port]"
    log "registry on port $port stopped"
}

# clear_blob_info_cache: skopeo/podman (containers/image) remember where they
# have seen each blob and turn a re-push into a cross-repo mount; clearing
# the cache makes every push upload its blobs for real.
clear_blob_info_cache() {
    rm -rf /var/lib/containers/cache
    if [[ -n $E2E_TMP ]]; then
        rm -rf "$E2E_TMP"/podman/root/cache
    fi
}

# sha256 FILE: print the hex sha256 of a file.
sha256() {
    sha256sum "$1" | cut -d' ' -f1
}

# assert_eq EXPECTED ACTUAL MSG
assert_eq() {
    if [[ $1 == "$2" ]]; then
        pass "$3"
    else
        fail "$3: expected '$1', got '$2'"
    fi
}

# make_random_file PATH BYTES: incompressible content, so layers keep their size.
make_random_file() {
    head -c "$2" /dev/urandom >"$1"
}

# ---------------------------------------------------------------- dockerd --

# start_dockerd [DOCKERD_ARGS...]: a private dockerd (own data root, exec root
# and socket, no networking setup, vfs storage) under $E2E_TMP/dockerd, with
# DOCKERD_ARGS added (e.g. --registry-mirror URL). Use `dockercli`.
start_dockerd() {
    require_tool /usr/sbin/dockerd /usr/bin/docker
    local d=$E2E_TMP/dockerd i
    # unix socket paths are limited to 108 bytes; containerd's socket is deep
    if ((${#d} > 60)); then
        d=$(mktemp -d /tmp/e2e-dockerd.XXXXXX)
    fi
    mkdir -p "$d"
    # dockerd needs the cgroup hierarchies; an init-less machine may lack them
    if [[ ! -e /sys/fs/cgroup/cgroup.controllers && ! -d /sys/fs/cgroup/devices ]] &&
        command -v cgroupfs-mount >/dev/null 2>&1; then
        log "no cgroup hierarchies mounted: running cgroupfs-mount for dockerd"
        cgroupfs-mount || true
    fi
    DOCKERD_DIR=$d
    DOCKERD_SOCK=$d/docker.sock
    export DOCKER_CONFIG=$d/client-config DOCKER_BUILDKIT=0
    mkdir -p "$DOCKER_CONFIG"
    /usr/sbin/dockerd \
        --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
        --storage-driver=vfs \
        --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/docker.pid" -H "unix://$DOCKERD_SOCK" "$@" \
        >"$E2E_TMP/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    for ((i = 0; i < 600; i++)); do
        if dockercli version >/dev/null 2>&1; then
            log "dockerd up (pid $DOCKERD_PID, socket $DOCKERD_SOCK)"
            return 0
        fi
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            wait "$DOCKERD_PID" 2>/dev/null || true
            DOCKERD_PID=
            tail -n 30 "$E2E_TMP/dockerd.log" >&2 || true
            fail "dockerd exited during startup (see dockerd.log above)"
        fi
        sleep 0.1
    done
    fail "dockerd did not answer on $DOCKERD_SOCK within 60s"
}

# dockercli ARGS...: the Debian docker client (matches the daemon's API)
# talking to our private dockerd.
dockercli() {
    /usr/bin/docker -H "unix://$DOCKERD_SOCK" "$@"
}

stop_dockerd() {
    [[ -n $DOCKERD_PID ]] || return 0
    local cpid=
    if [[ -f $DOCKERD_DIR/exec/containerd/containerd.pid ]]; then
        cpid=$(cat "$DOCKERD_DIR/exec/containerd/containerd.pid" 2>/dev/null || true)
    fi
    _e2e_kill_pid "$DOCKERD_PID"
    DOCKERD_PID=
    # dockerd stops the containerd it started; make sure of it
    if [[ -n $cpid ]] && kill -0 "$cpid" 2>/dev/null; then
        kill -TERM "$cpid" 2>/dev/null || true
        sleep 1
        kill -KILL "$cpid" 2>/dev/null || true
    fi
    if [[ $DOCKERD_DIR != "$E2E_TMP"/* ]]; then
        rm -rf "$DOCKERD_DIR"
    fi
    log "dockerd stopped"
}

# ------------------------------------------------------------ test images --

# build_oci_image LAYOUT TAG [BIG_BYTES]: build, without any network, an OCI
# image tagged TAG in the OCI layout LAYOUT (created if needed), with two
# layers: a few small generated files, then one incompressible file of
# BIG_BYTES (default 2 MiB). Every call makes different content.
build_oci_image() {
    local layout=$1 tag=$2 big=${3:-2097152}
    local bundle rootless=()
    require_tool umoci
    ((EUID == 0)) || rootless=(--rootless)
    [[ -f $layout/index.json ]] || umoci init --layout "$layout"
    bundle=$(mktemp -d "$E2E_TMP/bundle.XXXXXX")
    rmdir "$bundle"
    umoci new --image "$layout:$tag"
    umoci unpack "${rootless[@]}" --image "$layout:$tag" "$bundle"
    mkdir -p "$bundle/rootfs/etc" "$bundle/rootfs/data"
    printf 'berth e2e image %s built %s\n' "$tag" "$(date -u +%FT%TZ)" >"$bundle/rootfs/etc/e2e-release"
    make_random_file "$bundle/rootfs/data/small-1" 1024
    make_random_file "$bundle/rootfs/data/small-2" 3000
    head -c 4096 /dev/zero | tr '\0' 'x' >"$bundle/rootfs/data/text"
    umoci repack --image "$layout:$tag" "$bundle"
    rm -rf "$bundle"
    umoci unpack "${rootless[@]}" --image "$layout:$tag" "$bundle"
    make_random_file "$bundle/rootfs/data/big" "$big"
    umoci repack --image "$layout:$tag" "$bundle"
    rm -rf "$bundle"
    umoci config --image "$layout:$tag" --os linux --architecture amd64 \
        --config.cmd /bin/true --config.label "org.example.e2e=$tag"
}

# oci_manifest_desc LAYOUT TAG: the descriptor (JSON) of TAG in index.json.
oci_manifest_desc() {
    jq -ec --arg t "$2" \
        '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)] | last' \
        "$1/index.json"
}

# oci_blob LAYOUT DIGEST: path of a blob in an OCI layout.
oci_blob() {
    echo "$1/blobs/${2%%:*}/${2#*:}"
}

# oci_retag_arch LAYOUT SRC_TAG DST_TAG ARCH: DST_TAG = SRC_TAG's layers with
# a config for another architecture (for building multi-arch indexes).
oci_retag_arch() {
    umoci tag --image "$1:$2" "$3"
    umoci config --image "$1:$3" --architecture "$4" --config.label "org.example.e2e=$3"
}

# build_oci_index LAYOUT TAG CHILD_TAG...: add an OCI image index tagged TAG
# to LAYOUT that lists the manifests of CHILD_TAG... with their platforms.
build_oci_index() {
    local layout=$1 tag=$2 child desc cfg manifests='[]' index digest
    shift 2
    for child in "$@"; do
        desc=$(oci_manifest_desc "$layout" "$child")
        cfg=$(jq -r .config.digest "$(oci_blob "$layout" "$(jq -r .digest <<<"$desc")")")
        desc=$(jq -c --slurpfile c "$(oci_blob "$layout" "$cfg")" \
            '{mediaType, digest, size, platform: {architecture: $c[0].architecture, os: $c[0].os}}' \
            <<<"$desc")
        manifests=$(jq -c --argjson d "$desc" '. + [$d]' <<<"$manifests")
    done
    index=$(jq -cj --argjson m "$manifests" -n \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}')
    digest=$(printf '%s' "$index" | sha256sum | cut -d' ' -f1)
    printf '%s' "$index" >"$layout/blobs/sha256/$digest"
    jq --arg t "$tag" --arg d "sha256:$digest" --argjson s "${#index}" \
        '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
           annotations: {"org.opencontainers.image.ref.name": $t}}]' \
        "$layout/index.json" >"$layout/index.json.new"
    mv "$layout/index.json.new" "$layout/index.json"
}

# ----------------------------------------------------------------- skopeo --

_E2E_SKOPEO_N=0
# skopeo_run ARGS...: skopeo with --debug captured to a numbered log under
# $E2E_TMP; on failure shows the HTTP exchange that went wrong and fails.
# Sets SKOPEO_LOG to the log file of the last call.
skopeo_run() {
    _E2E_SKOPEO_N=$((_E2E_SKOPEO_N + 1))
    SKOPEO_LOG=$E2E_TMP/skopeo-$_E2E_SKOPEO_N.log
    printf '$ skopeo %s\n' "$*" >"$SKOPEO_LOG"
    if ! skopeo --insecure-policy --debug "$@" >>"$SKOPEO_LOG" 2>&1; then
        printf -- '----- skopeo %s (last lines of %s) -----\n' "$*" "${SKOPEO_LOG##*/}" >&2
        grep -v 'No credentials\|registries\|certs.d\|sigstore\|policy\|Requirement\|Overall' \
            "$SKOPEO_LOG" | tail -n 30 >&2 || true
        fail "skopeo $1 failed: skopeo $*"
    fi
}

# push_image SRC DST [FLAGS...]: `skopeo copy` to/from the registry (plain
# HTTP) after clearing the blob-info cache, so blobs are really uploaded.
push_image() {
    clear_blob_info_cache
    copy_image "$@"
}

# copy_image SRC DST [FLAGS...]: `skopeo copy` keeping the blob-info cache.
copy_image() {
    local src=$1 dst=$2
    shift 2
    skopeo_run copy --src-tls-verify=false --dest-tls-verify=false "$@" "$src" "$dst"
}

# raw_manifest REF: the raw manifest bytes of REF (any skopeo transport).
raw_manifest() {
    local tls=()
    [[ $1 == docker://* ]] && tls=(--tls-verify=false)
    skopeo --insecure-policy inspect --raw "${tls[@]}" "$1"
}

# check_blob FILE DIGEST SIZE MSG: FILE's content hashes to DIGEST and has SIZE bytes.
check_blob() {
    local file=$1 digest=$2 size=$3 msg=$4
    [[ -f $file ]] || fail "$msg: missing file $file"
    local got_digest got_size
    got_digest=sha256:$(sha256 "$file")
    got_size=$(stat -c %s "$file")
    [[ $got_digest == "$digest" ]] || fail "$msg: content hashes to $got_digest, expected $digest"
    [[ $got_size == "$size" ]] || fail "$msg: $got_size bytes, expected $size"
}

# manifest_blobs MANIFEST_FILE: "digest size" lines for config and layers.
manifest_blobs() {
    jq -r '(.config, .layers[]) | "\(.digest) \(.size)"' "$1"
}

# ------------------------------------------------------------------- http --

# header FILE NAME: value of the last NAME header in a curl -D/-I dump
# (case-insensitive; CR stripped; empty if absent).
header() {
    { grep -i "^$2:" "$1" || true; } | tail -n 1 | cut -d: -f2- | sed 's/^ *//' | tr -d '\r'
}

# status FILE: status code of the last response in a curl -D/-I dump.
status() {
    { grep -E '^HTTP/[0-9.]+ [0-9]{3}' "$1" || true; } | tail -n 1 | cut -d' ' -f2
}

# http_code METHOD URL [CURL_ARGS...]: print just the status code.
http_code() {
    local m=$1 u=$2
    shift 2
    if [[ $m == HEAD ]]; then
        curl -sS -o /dev/null -w '%{http_code}' -I "$@" "$u"
    else
        curl -sS -o /dev/null -w '%{http_code}' -X "$m" "$@" "$u"
    fi
}

# schema1_canonical_digest FILE: the digest Distribution assigns to a signed
# schema 1 manifest (JWS): sha256 of the payload without the signatures.
schema1_canonical_digest() {
    local prot len tail
    prot=$(jq -r '.signatures[0].protected' "$1" | tr '_-' '/+')
    while ((${#prot} % 4)); do prot+='='; done
    prot=$(base64 -d <<<"$prot")
    len=$(jq -r .formatLength <<<"$prot")
    tail=$(jq -r .formatTail <<<"$prot" | tr '_-' '/+')
    while ((${#tail} % 4)); do tail+='='; done
    { head -c "$len" "$1"; base64 -d <<<"$tail"; } | sha256sum | cut -d' ' -f1
}
