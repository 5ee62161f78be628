#!/usr/bin/env bash
# End-to-end test of the berth container image (scripts/image.sh, image/Dockerfile) run the
# way registry:2 is run, with Debian's docker.io daemon and with podman; and of the systemd
# unit (contrib/systemd/berth.service) with `systemd-analyze`.
#
# The one change to the walkthrough's command: this machine's dockerd runs without bridge
# networking (tests/e2e/lib.sh, start_dockerd: --bridge=none --iptables=false), so `-p
# 5000:5000` cannot publish; the container runs with `--network host` added (docker then
# ignores -p) and its config.yml, which the walkthrough mounts anyway, listens on a free port
# instead of 5000 so parallel test runs do not collide. podman needs two more changes on this
# machine, said where it runs (runc instead of crun; open-file and process limits).
#
# Checks: the image's size (< 30 MB), labels and metadata; push with docker, `docker
# restart`, a crash (SIGKILL of the container's process: --restart=always brings it back),
# `docker kill` and `docker start`, each followed by a pull giving back the same image ID and
# manifest digest; a data
# directory written by Distribution (Debian's docker-registry, root-owned files) served by a
# second container started as registry:2 is (`IMAGE /etc/docker/registry/config.yml`, the
# port from REGISTRY_HTTP_ADDR); `--user 1000:1000` on a volume that user owns;
# garbage-collect through the entrypoint; the HEALTHCHECK turning healthy; `docker stop`
# while an upload is in flight (the upload completes); podman loading and running the image.
#
# usage: tests/e2e/image.sh [berth]   (the image is berth's: `distribution` skips)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
[[ $E2E_KIND == berth ]] || skip "the image is berth's"
require_tool /usr/sbin/dockerd /usr/bin/docker docker-registry systemd-analyze podman cargo
if ((EUID != 0)); then
    skip "dockerd needs root"
fi

# ------------------------------------------------------------------ systemd unit --
# `systemd-analyze verify` wants the ExecStart binary to exist: a copy of the unit names the
# binary this test runs instead of /usr/local/bin/berth.
UNIT=$REPO_ROOT/contrib/systemd/berth.service
mkdir -p "$E2E_TMP/systemd"
sed "s|^ExecStart=/usr/local/bin/berth |ExecStart=$BERTH_PATH |" "$UNIT" >"$E2E_TMP/systemd/berth.service"
if ! systemd-analyze verify "$E2E_TMP/systemd/berth.service" >"$E2E_TMP/verify.out" 2>&1; then
    cat "$E2E_TMP/verify.out" >&2
    fail "systemd-analyze verify contrib/systemd/berth.service"
fi
[[ ! -s $E2E_TMP/verify.out ]] || { cat "$E2E_TMP/verify.out" >&2; fail "systemd-analyze verify printed warnings"; }
pass "systemd-analyze verify contrib/systemd/berth.service: no errors or warnings"
# The exposure score, from the file alone (no running systemd needed).
if systemd-analyze security --offline=true "$E2E_TMP/systemd/berth.service" >"$E2E_TMP/security.out" 2>&1; then
    score=$(sed -n 's/.*Overall exposure level for berth.service: \([0-9.]*\).*/\1/p' "$E2E_TMP/security.out")
    [[ -n $score ]] || { cat "$E2E_TMP/security.out" >&2; fail "no exposure level in systemd-analyze security"; }
    awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' ||
        { grep '✗' "$E2E_TMP/security.out" >&2 || true; fail "exposure level $score, above 2.0"; }
    pass "systemd-analyze security --offline: exposure level $score"
else
    log "systemd-analyze security --offline unavailable: $(head -n 3 "$E2E_TMP/security.out")"
fi

# ------------------------------------------------------------------------ the image --
start_dockerd
export DOCKER_HOST=unix://$DOCKERD_SOCK

# dk ARGS...: the docker client; output kept, shown on failure.
dk() {
    local out=$E2E_TMP/docker.out
    if ! dockercli "$@" >"$out" 2>&1; then
        printf -- '----- docker %s -----\n' "$*" >&2
        cat "$out" >&2
        fail "docker $1 failed: docker $*"
    fi
    cat "$out"
}

start=$SECONDS
if ! DOCKER=/usr/bin/docker "$REPO_ROOT/scripts/image.sh" berth >"$E2E_TMP/image-build.log" 2>&1; then
    tail -n 40 "$E2E_TMP/image-build.log" >&2
    fail "scripts/image.sh failed"
fi
pass "scripts/image.sh built the image in $((SECONDS - start))s"
BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/image/rootfs/bin/registry
VERSION=$("$BIN" --version | awk '{print $2}')

size=$(dockercli image inspect berth --format '{{.Size}}')
log "image size: $size bytes ($((size / 1024 / 1024)) MiB)"
((size < 30 * 1024 * 1024)) || fail "image is $size bytes, over 30 MB"
pass "image is $((size / 1024)) KiB, under 30 MB"
dockercli image inspect berth --format '{{json .Config}}' >"$E2E_TMP/config.json"
jq -e --arg v "$VERSION" '.Labels["org.opencontainers.image.version"] == $v' "$E2E_TMP/config.json" >/dev/null ||
    fail "label org.opencontainers.image.version is not $VERSION: $(jq -c .Labels "$E2E_TMP/config.json")"
pass "label org.opencontainers.image.version is the binary's version ($VERSION)"
jq -e '.Entrypoint == ["/bin/registry"] and .Cmd == ["serve", "/etc/docker/registry/config.yml"]
    and (.ExposedPorts | has("5000/tcp")) and (.Volumes | has("/var/lib/registry"))
    and .StopSignal == "SIGTERM"
    and .Healthcheck.Test == ["CMD", "/bin/registry", "healthcheck", "/etc/docker/registry/config.yml"]' \
    "$E2E_TMP/config.json" >/dev/null || fail "image config: $(cat "$E2E_TMP/config.json")"
pass "entrypoint, cmd, port 5000, volume /var/lib/registry, SIGTERM, shell-less HEALTHCHECK"
dk run --rm --network none --entrypoint /bin/registry berth --version >"$E2E_TMP/v"
grep -qx "berth $VERSION" "$E2E_TMP/v" || fail "berth --version in the image: $(cat "$E2E_TMP/v")"
if dockercli run --rm --network none berth healthcheck --url http://127.0.0.1:9/ --timeout 1s >/dev/null 2>&1; then
    fail "healthcheck succeeded with nothing listening"
fi
pass "the image runs (static binary, no libc) and healthcheck fails when nothing listens"

# ---------------------------------------------------------------- the walkthrough --
# A test image, built FROM scratch (nothing to pull).
mkdir -p "$E2E_TMP/ctx"
make_random_file "$E2E_TMP/ctx/blob.bin" 1500000
echo "berth image e2e" >"$E2E_TMP/ctx/release"
printf 'FROM scratch\nCOPY release /etc/release\nCOPY blob.bin /data/blob.bin\n' >"$E2E_TMP/ctx/Dockerfile"
dk build -q -t test "$E2E_TMP/ctx" >/dev/null
TEST_ID=$(dockercli image inspect --format '{{.Id}}' test)

# pushed_digest PUSH_OUTPUT: the "digest: sha256:..." docker push prints.
pushed_digest() {
    sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p' <<<"$1" | tail -n 1
}

# wait_v2 PORT: until GET /v2/ answers 200 (30 s).
wait_v2() {
    local i
    for ((i = 0; i < 300; i++)); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/v2/" 2>/dev/null && return 0
        sleep 0.1
    done
    dockercli ps -a >&2 || true
    fail "nothing answers GET /v2/ on port $1 within 30s"
}

# pull_check PORT REPO DIGEST MSG: remove the image (every tag of it, so no layer is left
# locally), pull it, check the image ID (the config, which names every layer's content
# digest) and the manifest digest; tag it `test` again.
pull_check() {
    local ref=localhost:$1/$2 out
    dk image rm -f "$TEST_ID" >/dev/null
    out=$(dk pull "$ref")
    grep -q "Digest: $3" <<<"$out" || fail "$4: docker pull did not report $3: $out"
    assert_eq "$TEST_ID" "$(dockercli image inspect --format '{{.Id}}' "$ref")" "$4: same image ID and digest"
    dk image tag "$ref" test >/dev/null
}

# health_wait NAME: until the container's HEALTHCHECK says healthy (60 s).
health_wait() {
    local i s
    for ((i = 0; i < 120; i++)); do
        s=$(dockercli inspect --format '{{.State.Health.Status}}' "$1")
        [[ $s == healthy ]] && return 0
        [[ $s == unhealthy ]] && break
        sleep 0.5
    done
    dockercli inspect --format '{{json .State.Health}}' "$1" >&2
    fail "container $1 is not healthy: $s"
}

P=$(free_port)
W=$E2E_TMP/walk
mkdir -p "$W"
# The walkthrough's own config.yml: the image's default with this test's port.
sed "s/^  addr: :5000$/  addr: :$P/" "$REPO_ROOT/image/config.yml" >"$W/config.yml"
grep -q "addr: :$P" "$W/config.yml" || fail "image/config.yml has no 'addr: :5000' line"
(
    cd "$W"
    # the walkthrough's command verbatim, plus --network host (see the top of this file)
    dockercli run -d -p 5000:5000 --network host --name registry --restart=always \
        -v "$(pwd)"/registry:/var/lib/registry \
        -v "$(pwd)"/config.yml:/etc/docker/registry/config.yml berth
) >"$E2E_TMP/run.out" 2>&1 || { cat "$E2E_TMP/run.out" >&2; fail "docker run (the walkthrough's command)"; }
wait_v2 "$P"
pass "docker run -d -p 5000:5000 --network host --name registry --restart=always -v ... berth: serving"

dk image tag test "localhost:$P/my_test" >/dev/null
out=$(dk push "localhost:$P/my_test")
DIGEST=$(pushed_digest "$out")
[[ -n $DIGEST ]] || fail "docker push printed no digest: $out"
pass "docker push localhost:$P/my_test ($DIGEST)"
[[ -f $W/registry/docker/registry/v2/repositories/my_test/_manifests/tags/latest/current/link ]] ||
    fail "the push is not in the volume ($W/registry)"
pass "the data is in the volume mounted at /var/lib/registry"
health_wait registry
pass "HEALTHCHECK: healthy ($(dockercli inspect --format '{{(index .State.Health.Log 0).Output}}' registry | head -n 1))"
pull_check "$P" my_test "$DIGEST" "pull after push"
grep -qx "berth $VERSION" <(dk exec registry registry --version) || fail "docker exec registry registry --version"
pass "docker exec registry registry ... (the binary is on the default PATH as in registry:2)"

dk restart registry >/dev/null
wait_v2 "$P"
pull_check "$P" my_test "$DIGEST" "pull after docker restart"

# A crash: SIGKILL the container's process; --restart=always starts it again.
pid=$(dockercli inspect --format '{{.State.Pid}}' registry)
restarts=$(dockercli inspect --format '{{.RestartCount}}' registry)
kill -KILL "$pid"
for ((i = 0; i < 300; i++)); do
    [[ $(dockercli inspect --format '{{.RestartCount}} {{.State.Running}}' registry) == "$((restarts + 1)) true" ]] && break
    sleep 0.1
done
assert_eq "$((restarts + 1)) true" "$(dockercli inspect --format '{{.RestartCount}} {{.State.Running}}' registry)" \
    "killed (SIGKILL): --restart=always restarted it"
wait_v2 "$P"
pull_check "$P" my_test "$DIGEST" "pull after the crash"
# `docker kill` counts as a manual stop (as for registry:2, no restart); start it again.
dk kill registry >/dev/null
assert_eq "false 137" "$(dockercli inspect --format '{{.State.Running}} {{.State.ExitCode}}' registry)" \
    "docker kill: stopped (SIGKILL), not restarted"
dk start registry >/dev/null
wait_v2 "$P"
pull_check "$P" my_test "$DIGEST" "pull after docker kill and docker start"

# garbage-collect through the entrypoint, as `docker run registry:2 garbage-collect ...`
out=$(dk run --rm --network host -v "$W/registry:/var/lib/registry" \
    -v "$W/config.yml:/etc/docker/registry/config.yml" \
    berth garbage-collect --dry-run /etc/docker/registry/config.yml)
grep -q 'marked' <<<"$out" || fail "garbage-collect --dry-run printed: $out"
pass "docker run berth garbage-collect --dry-run /etc/docker/registry/config.yml"

# --------------------------------------------- docker stop with an upload in flight --
# A monolithic blob PUT whose body arrives in two halves 3 s apart; `docker stop` (SIGTERM)
# is sent between them. berth stops accepting but drains: the upload completes.
make_random_file "$E2E_TMP/inflight.bin" 2000000
BLOB=sha256:$(sha256 "$E2E_TMP/inflight.bin")
curl -sS -D "$E2E_TMP/post.h" -o /dev/null -X POST "http://127.0.0.1:$P/v2/inflight/blobs/uploads/"
loc=$(header "$E2E_TMP/post.h" Location)
[[ $loc == http* ]] || loc=http://127.0.0.1:$P$loc
[[ $loc == *\?* ]] && sep='&' || sep='?'
{
    head -c 1000000 "$E2E_TMP/inflight.bin"
    sleep 3
    tail -c +1000001 "$E2E_TMP/inflight.bin"
} | curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
    -T - "$loc${sep}digest=$BLOB" >"$E2E_TMP/put.code" 2>"$E2E_TMP/put.err" &
put_pid=$!
sleep 1
stop_start=$SECONDS
dk stop -t 30 registry >/dev/null
wait "$put_pid" || true
assert_eq 201 "$(cat "$E2E_TMP/put.code")" "docker stop during an upload: the upload completed (201)"
log "docker stop took $((SECONDS - stop_start))s"
assert_eq "false 0" "$(dockercli inspect --format '{{.State.Running}} {{.State.ExitCode}}' registry)" \
    "docker stop: berth exited 0 after draining, and stays stopped"
dk start registry >/dev/null
wait_v2 "$P"
assert_eq 200 "$(http_code HEAD "http://127.0.0.1:$P/v2/inflight/blobs/$BLOB")" "the drained upload's blob is there after a restart"

# ---------------------------------------- a registry:2 data directory, served as it is --
# Distribution writes it (as root, like registry:2's container); a second container starts
# the way registry:2's is (`IMAGE /etc/docker/registry/config.yml`: the config file as the
# only argument), its port set by REGISTRY_HTTP_ADDR, the image's own config.yml otherwise.
start_registry distribution "$E2E_TMP/reg2" "$(free_port)"
dk image tag test "$REG_ADDR/from/distribution" >/dev/null
out=$(dk push "$REG_ADDR/from/distribution")
D2=$(pushed_digest "$out")
stop_registry
assert_eq "0" "$(stat -c %u "$E2E_TMP/reg2/docker/registry/v2/blobs")" "the Distribution data directory is root-owned"
P2=$(free_port)
dk run -d --network host --name registry2 -e "REGISTRY_HTTP_ADDR=:$P2" \
    -v "$E2E_TMP/reg2:/var/lib/registry" berth /etc/docker/registry/config.yml >/dev/null
wait_v2 "$P2"
pull_check "$P2" from/distribution "$D2" "a registry:2 volume served as it is"
health_wait registry2
pass "HEALTHCHECK follows REGISTRY_HTTP_ADDR: healthy"

# ------------------------------------------------------ --user 1000:1000 (non-root) --
mkdir -p "$E2E_TMP/user"
chown 1000:1000 "$E2E_TMP/user"
P3=$(free_port)
dk run -d --network host --name registry3 --user 1000:1000 -e "REGISTRY_HTTP_ADDR=:$P3" \
    -v "$E2E_TMP/user:/var/lib/registry" berth >/dev/null
wait_v2 "$P3"
dk image tag test "localhost:$P3/as/user" >/dev/null
D3=$(pushed_digest "$(dk push "localhost:$P3/as/user")")
pull_check "$P3" as/user "$D3" "--user 1000:1000: push and pull"
owners=$(find "$E2E_TMP/user" -printf '%U:%G\n' | sort -u | tr '\n' ' ')
assert_eq "1000:1000 " "$owners" "--user 1000:1000: every file in the volume is the user's"
dk rm -f registry2 registry3 >/dev/null

# -------------------------------------------------------------------------- podman --
PM_OPTS=(
    --root "$E2E_TMP/podman/root" --runroot "$E2E_TMP/podman/runroot"
    --tmpdir "$E2E_TMP/podman/tmp" --storage-driver=vfs
    --cgroup-manager=cgroupfs --events-backend=file
)
export TMPDIR=$E2E_TMP/podman/vartmp
mkdir -p "$TMPDIR"
# podman would read the private dockerd's client config (DOCKER_CONFIG, made by start_dockerd)
PODMAN=(env -u DOCKER_CONFIG -u DOCKER_HOST podman "${PM_OPTS[@]}")
pm() {
    local logf=$E2E_TMP/podman.log
    printf '$ podman %s\n' "$*" >>"$logf"
    if ! "${PODMAN[@]}" "$@" 2>>"$logf"; then
        tail -n 30 "$logf" >&2
        fail "podman $1 failed: podman $*"
    fi
}
PODMAN_STARTED=0
stop_podman_containers() {
    ((PODMAN_STARTED)) && "${PODMAN[@]}" rm -f -t 5 registry >/dev/null 2>&1
    return 0
}
# (lib.sh's cleanup reads the exit status from $?: hand it over, with errexit and the ERR
# trap off so that handing it over does not end the trap early)
trap 'rc=$?; trap - ERR; set +e; stop_podman_containers; (exit $rc); _e2e_cleanup' EXIT
dockercli save berth | pm load -q >/dev/null
P4=$(free_port)
# podman, unlike docker, does not create a missing bind-mount source
mkdir -p "$E2E_TMP/pm/registry"
sed "s/^  addr: :5000$/  addr: :$P4/" "$REPO_ROOT/image/config.yml" >"$E2E_TMP/pm/config.yml"
PODMAN_STARTED=1
# Besides --network host, two changes this machine needs, not the image: runc, since crun
# refuses the mixed cgroup v1/v2 mounts start_dockerd's cgroupfs-mount leaves; and open-file
# and process limits within this machine's (podman asks for 1048576 as root, which the
# sandbox this runs in refuses).
PM_RUN=(--runtime runc --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
pm run "${PM_RUN[@]}" -d -p 5000:5000 --network host --name registry --restart=always \
    -v "$E2E_TMP/pm/registry:/var/lib/registry" \
    -v "$E2E_TMP/pm/config.yml:/etc/docker/registry/config.yml" berth >/dev/null
wait_v2 "$P4"
pass "podman run (the walkthrough's command, --network host): serving"
dk image tag test "localhost:$P4/my_test" >/dev/null
D4=$(pushed_digest "$(dk push "localhost:$P4/my_test")")
pm pull -q --tls-verify=false "localhost:$P4/my_test" >/dev/null
assert_eq "$D4" "$(pm image inspect --format '{{.Digest}}' "localhost:$P4/my_test")" \
    "podman pulls back from berth in podman the digest docker pushed"
for ((i = 0; i < 20; i++)); do
    "${PODMAN[@]}" healthcheck run registry >/dev/null 2>&1 && break
    sleep 0.5
done
pm healthcheck run registry >/dev/null
pass "podman healthcheck run: healthy"
pm stop -t 30 registry >/dev/null
assert_eq 0 "$(pm inspect --format '{{.State.ExitCode}}' registry)" "podman stop: berth exited 0"

e2e_finish
