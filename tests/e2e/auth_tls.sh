#!/usr/bin/env bash
# End-to-end test of TLS and authentication with real clients: a CA and
# certificates made here with openssl, users in an htpasswd file made with
# `htpasswd -B`, and berth's per-repository policy (berth only). Checks:
#   - curl: 401 + Basic challenge without credentials, 200 with, HTTP/2 by
#     ALPN, plain HTTP to the TLS port refused, a client not trusting the CA
#     refused;
#   - skopeo --creds --cert-dir: push and pull; the policy refuses a push by
#     a pull-only user (403) and lets anonymous pull public/**;
#   - podman login --cert-dir, push and pull back;
#   - docker login + push + pull through a private dockerd that trusts the CA
#     via /etc/docker/certs.d/<host:port>/ca.crt (rootful dockerd reads only
#     that directory); the registry is addressed by a non-loopback IP, since
#     docker treats 127.0.0.0/8 as insecure and would not verify the CA;
#   - mutual TLS (http.tls.clientcas): no client certificate and one from
#     another CA are refused at the handshake; skopeo, podman and docker
#     present client.cert/client.key from their cert dirs;
#   - certificate rotation: new files on disk are served without a restart;
#   - token auth (auth.token) with a test token server (token_server.py):
#     the Bearer challenge, skopeo, podman and docker fetching tokens, a
#     pull-only token refused a push;
#   - berth's own token server (auth.tokenserver, berth only): the challenge
#     points at berth's /token, clients get tokens limited by the policy.
#
# usage: tests/e2e/auth_tls.sh [berth|distribution]   (default: berth)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_init "$@"
require_tool openssl htpasswd skopeo podman umoci

# The address clients use: the first non-loopback IPv4 address, so docker
# verifies TLS for real (127.0.0.0/8 is an insecure registry to docker).
HOST_IP=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -n 1 || true)
HOST_IP=${HOST_IP:-127.0.0.1}
log "registry address: $HOST_IP"

# /etc/docker/certs.d entries made here are removed on exit, whatever happens.
CERTS_D_MADE=()
# shellcheck disable=SC2317 # run by the EXIT trap
_auth_tls_cleanup() {
    local rc=$? d
    # No ERR trap or errexit here: `(exit "$rc")` below would end the script before
    # lib.sh's cleanup stops the registries, dockerd and the token server.
    trap - ERR
    set +e
    for d in "${CERTS_D_MADE[@]}"; do rm -rf "$d"; done
    rmdir /etc/docker/certs.d 2>/dev/null
    (exit "$rc")
    _e2e_cleanup
}
trap _auth_tls_cleanup EXIT

# ------------------------------------------------------------------ PKI --
PKI=$E2E_TMP/pki
mkdir -p "$PKI"
# make_ca NAME: $PKI/NAME.crt and .key
make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=berth e2e $1" \
        -keyout "$PKI/$1.key" -out "$PKI/$1.crt" 2>/dev/null
}
# make_leaf CA NAME serverAuth|clientAuth: $PKI/NAME.crt and .key signed by CA
make_leaf() {
    local ca=$1 name=$2 usage=$3
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$name" \
        -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=%s\nsubjectAltName=IP:%s,IP:127.0.0.1,DNS:localhost\n' \
        "$usage" "$HOST_IP" >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
        -CAcreateserial -days 2 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}
make_ca ca
make_ca client-ca
make_ca other-ca
make_leaf ca server serverAuth
make_leaf ca server2 serverAuth
make_leaf client-ca client clientAuth
make_leaf other-ca intruder clientAuth
# cert dirs as containers/image reads them: *.crt are CAs, client.cert/.key an identity
mkdir -p "$E2E_TMP/certs" "$E2E_TMP/certs-mtls" "$E2E_TMP/certs-intruder"
cp "$PKI/ca.crt" "$E2E_TMP/certs/ca.crt"
for d in certs-mtls certs-intruder; do cp "$PKI/ca.crt" "$E2E_TMP/$d/ca.crt"; done
cp "$PKI/client.crt" "$E2E_TMP/certs-mtls/client.cert"
cp "$PKI/client.key" "$E2E_TMP/certs-mtls/client.key"
cp "$PKI/intruder.crt" "$E2E_TMP/certs-intruder/client.cert"
cp "$PKI/intruder.key" "$E2E_TMP/certs-intruder/client.key"
# files the registry serves, copied so rotation can replace them
cp "$PKI/server.crt" "$E2E_TMP/tls.crt"
cp "$PKI/server.key" "$E2E_TMP/tls.key"

# ---------------------------------------------------------------- users --
HT=$E2E_TMP/htpasswd
htpasswd -Bbc "$HT" alice alice-pw 2>/dev/null # admin
htpasswd -Bb "$HT" bob bob-pw 2>/dev/null      # pull on team/**
htpasswd -Bb "$HT" carol carol-pw 2>/dev/null  # pull and push on team/**
# shellcheck disable=SC2016 # a literal $2y$
grep -q '^alice:\$2y\$' "$HT" || fail "htpasswd -B did not write a bcrypt entry"

POLICY=
if [[ $E2E_KIND == berth ]]; then
    POLICY="
  policy:
    admins: [alice]
    groups: {team: [carol]}
    rules:
      - repositories: [\"team/**\"]
        users: [bob]
        actions: [pull]
      - repositories: [\"team/**\"]
        groups: [team]
        actions: [pull, push]
      - repositories: [\"public/**\"]
        anonymous: true
        actions: [pull]"
fi

# start_secure_registry PORT [CLIENT_CA]: the registry over TLS with htpasswd
# auth (and berth's policy), listening on every interface. start_registry
# cannot be used: its readiness probe is plain HTTP expecting 200.
start_secure_registry() {
    local port=$1 clientca=${2:-} conf logf pid i code
    conf=$E2E_TMP/registry-$port.yml
    logf=$E2E_TMP/registry-$port.log
    {
        printf 'version: 0.1\nlog:\n  level: debug\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$E2E_TMP/data"
        printf 'http:\n  addr: 0.0.0.0:%s\n  tls:\n    certificate: %s\n    key: %s\n' "$port" "$E2E_TMP/tls.crt" "$E2E_TMP/tls.key"
        if [[ -n $clientca ]]; then
            printf '    clientcas:\n      - %s\n' "$clientca"
        fi
        if [[ -n ${AUTH_YAML:-} ]]; then
            printf '%s\n' "$AUTH_YAML"
        else
            printf 'auth:\n  htpasswd:\n    realm: berth-e2e\n    path: %s%s\n' "$HT" "$POLICY"
        fi
    } >"$conf"
    mkdir -p "$E2E_TMP/data"
    case $E2E_KIND in
        berth) cmd=("$BERTH_PATH" serve "$conf") ;;
        distribution)
            require_tool docker-registry
            cmd=(docker-registry serve "$conf")
            ;;
    esac
    printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "${cmd[*]}" >>"$logf"
    "${cmd[@]}" >>"$logf" 2>&1 </dev/null &
    pid=$!
    E2E_REG_PIDS[$port]=$pid
    local cert_args=()
    [[ -n $clientca ]] && cert_args=(--cert "$PKI/client.crt" --key "$PKI/client.key")
    for ((i = 0; i < 300; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.crt" "${cert_args[@]}" \
            "https://$HOST_IP:$port/v2/" 2>/dev/null || true)
        if [[ $code == 401 ]]; then
            # shellcheck disable=SC2034 # lib.sh's variables, as start_registry sets them
            REG_PORT=$port REG_ADDR=$HOST_IP:$port REG_LOG=$logf REG_KIND=$E2E_KIND
            log "$E2E_KIND registry up on https://$HOST_IP:$port (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            unset "E2E_REG_PIDS[$port]"
            wait "$pid" 2>/dev/null || true
            fail "$E2E_KIND registry exited during startup (see $logf)"
        fi
        sleep 0.1
    done
    fail "registry did not answer 401 on https://$HOST_IP:$port/v2/ within 30s"
}

start_secure_registry "$(free_port)"
R=$REG_ADDR
U=https://$R

# ----------------------------------------------------------------- curl --
code() { curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.crt" "$@" 2>/dev/null || true; }
curl -s -D "$E2E_TMP/h" -o /dev/null --cacert "$PKI/ca.crt" "$U/v2/" || true
assert_eq 401 "$(status "$E2E_TMP/h")" "curl: anonymous GET /v2/ is 401"
assert_eq 'Basic realm="berth-e2e"' "$(header "$E2E_TMP/h" WWW-Authenticate)" "curl: the 401 carries the Basic challenge"
assert_eq 200 "$(code -u alice:alice-pw "$U/v2/")" "curl: GET /v2/ with the right password is 200"
assert_eq 401 "$(code -u alice:wrong "$U/v2/")" "curl: a wrong password is 401"
assert_eq 2 "$(curl -s -o /dev/null -w '%{http_version}' --http2 --cacert "$PKI/ca.crt" -u alice:alice-pw "$U/v2/")" \
    "curl: HTTP/2 negotiated by ALPN"
assert_eq 1.1 "$(curl -s -o /dev/null -w '%{http_version}' --http1.1 --cacert "$PKI/ca.crt" -u alice:alice-pw "$U/v2/")" \
    "curl: HTTP/1.1 by ALPN"
# berth closes the connection (000); Distribution (Go) answers a plain-text 400.
PLAIN=$(curl -s -o /dev/null -w '%{http_code}' "http://$R/v2/" 2>/dev/null || true)
[[ $PLAIN == 000 || $PLAIN == 400 ]] || fail "curl: plain HTTP to the TLS port answered $PLAIN"
pass "curl: plain HTTP to the TLS port is not served ($PLAIN)"
assert_eq 000 "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/other-ca.crt" "$U/v2/" 2>/dev/null || true)" \
    "curl: a client trusting another CA refuses the server"

# --------------------------------------------------------------- skopeo --
L=$E2E_TMP/layout
build_oci_image "$L" latest 300000
SK_TLS=(--dest-cert-dir "$E2E_TMP/certs")
clear_blob_info_cache
skopeo_run copy "${SK_TLS[@]}" --dest-creds alice:alice-pw "oci:$L:latest" "docker://$R/team/app:1"
pass "skopeo --dest-creds --dest-cert-dir: push over TLS as alice"
skopeo_run inspect --cert-dir "$E2E_TMP/certs" --creds bob:bob-pw --raw "docker://$R/team/app:1" >/dev/null
cmp -s <(skopeo --insecure-policy inspect --cert-dir "$E2E_TMP/certs" --creds bob:bob-pw --raw "docker://$R/team/app:1") \
    <(raw_manifest "oci:$L:latest") || fail "skopeo: the manifest read back differs"
pass "skopeo --creds --cert-dir: pull-only user reads the pushed manifest bit-identical"
skopeo_run copy --src-cert-dir "$E2E_TMP/certs" --src-creds bob:bob-pw "docker://$R/team/app:1" "dir:$E2E_TMP/pulled"
pass "skopeo: pull-only user copies the image out"
if ! skopeo --insecure-policy inspect --raw --creds alice:alice-pw "docker://$R/team/app:1" >"$E2E_TMP/notrust.out" 2>&1; then
    grep -qi 'certificate\|x509' "$E2E_TMP/notrust.out" || fail "skopeo without the CA failed, but not on the certificate: $(tail -n 3 "$E2E_TMP/notrust.out")"
    pass "skopeo without --cert-dir refuses the server certificate"
else
    fail "skopeo without --cert-dir trusted the test CA"
fi
if [[ $E2E_KIND == berth ]]; then
    clear_blob_info_cache
    if skopeo --insecure-policy copy "${SK_TLS[@]}" --dest-creds bob:bob-pw "oci:$L:latest" "docker://$R/team/bob:1" >"$E2E_TMP/deny.out" 2>&1; then
        fail "policy: bob (pull only) could push"
    fi
    grep -qi 'denied\|403\|unauthorized' "$E2E_TMP/deny.out" || fail "policy: bob's push failed for another reason: $(tail -n 3 "$E2E_TMP/deny.out")"
    pass "policy: a pull-only user's push is refused (denied)"
    skopeo_run copy "${SK_TLS[@]}" --dest-creds alice:alice-pw "oci:$L:latest" "docker://$R/public/tool:1"
    skopeo_run inspect --cert-dir "$E2E_TMP/certs" --no-creds --raw "docker://$R/public/tool:1" >/dev/null
    pass "policy: anonymous pull of public/** over TLS"
    assert_eq 401 "$(code "$U/v2/team/app/tags/list")" "policy: anonymous tags/list of team/app is 401"
    assert_eq '{"repositories":["public/tool","team/app"]}' "$(curl -s --cacert "$PKI/ca.crt" -u bob:bob-pw "$U/v2/_catalog")" \
        "policy: bob's catalog lists only what he may pull"
fi

# --------------------------------------------------------------- podman --
PM_OPTS=(
    --root "$E2E_TMP/podman/root" --runroot "$E2E_TMP/podman/runroot"
    --tmpdir "$E2E_TMP/podman/tmp" --storage-driver=vfs
    --cgroup-manager=cgroupfs --events-backend=file
)
export TMPDIR=$E2E_TMP/podman/vartmp
mkdir -p "$TMPDIR"
AUTHFILE=$E2E_TMP/podman-auth.json
pm() {
    local logf=$E2E_TMP/podman.log
    printf '$ podman %s\n' "$*" >>"$logf"
    if ! podman "${PM_OPTS[@]}" "$@" 2>>"$logf"; then
        tail -n 20 "$logf" >&2
        fail "podman $1 failed: podman $*"
    fi
}
echo carol-pw | pm login --authfile "$AUTHFILE" --cert-dir "$E2E_TMP/certs" -u carol --password-stdin "$R" >/dev/null
pass "podman login --cert-dir as carol"
ID=$(pm pull -q "oci:$L:latest")
pm push -q --authfile "$AUTHFILE" --cert-dir "$E2E_TMP/certs" "$ID" "docker://$R/team/podman:1"
pass "podman push over TLS with the login's credentials"
pm rmi -af >/dev/null
GOT=$(pm pull -q --authfile "$AUTHFILE" --cert-dir "$E2E_TMP/certs" "$R/team/podman:1")
assert_eq "$ID" "$GOT" "podman pull back: same image ID"
if echo wrong | podman "${PM_OPTS[@]}" login --authfile "$E2E_TMP/bad-auth.json" --cert-dir "$E2E_TMP/certs" -u carol --password-stdin "$R" >/dev/null 2>&1; then
    fail "podman login with a wrong password succeeded"
fi
pass "podman login with a wrong password fails"

# --------------------------------------------------------------- docker --
DOCKER_OK=0
if ((EUID == 0)) && [[ -x /usr/sbin/dockerd && -x /usr/bin/docker ]] && [[ $HOST_IP != 127.* ]]; then
    DOCKER_OK=1
fi
# trust_in_docker ADDR [CERTDIR]: /etc/docker/certs.d/ADDR from CERTDIR
trust_in_docker() {
    local d=/etc/docker/certs.d/$1
    mkdir -p "$d"
    CERTS_D_MADE+=("$d")
    cp "$2"/* "$d/"
}
dk() {
    local out=$E2E_TMP/docker.out
    if ! dockercli "$@" >"$out" 2>&1; then
        cat "$out" >&2
        fail "docker $1 failed: docker $*"
    fi
    cat "$out"
}
if ((DOCKER_OK)); then
    start_dockerd
    # Without the CA, docker refuses the registry.
    if echo alice-pw | dockercli login -u alice --password-stdin "$R" >"$E2E_TMP/dl.out" 2>&1; then
        fail "docker login succeeded without trusting the CA"
    fi
    grep -qi 'certificate\|x509' "$E2E_TMP/dl.out" || fail "docker login failed, but not on the certificate: $(cat "$E2E_TMP/dl.out")"
    pass "docker: a registry signed by an unknown CA is refused"
    trust_in_docker "$R" "$E2E_TMP/certs"
    echo alice-pw | dk login -u alice --password-stdin "$R" >/dev/null
    pass "docker login over TLS (CA from /etc/docker/certs.d/$R/ca.crt)"
    mkdir -p "$E2E_TMP/rootfs/etc"
    echo "berth e2e auth" >"$E2E_TMP/rootfs/etc/e2e-release"
    make_random_file "$E2E_TMP/rootfs/blob" 200000
    tar -C "$E2E_TMP/rootfs" -cf "$E2E_TMP/rootfs.tar" .
    dk import "$E2E_TMP/rootfs.tar" authtest >/dev/null
    DID=$(dockercli image inspect --format '{{.Id}}' authtest)
    dk tag authtest "$R/team/docker:1"
    dk push "$R/team/docker:1" >/dev/null
    pass "docker push over TLS as alice"
    dk rmi "$R/team/docker:1" authtest >/dev/null
    dk pull "$R/team/docker:1" >/dev/null
    assert_eq "$DID" "$(dockercli image inspect --format '{{.Id}}' "$R/team/docker:1")" "docker pull back: same image ID"
    DOCKER_IMG=$R/team/docker:1
    if [[ $E2E_KIND == berth ]]; then
        dk logout "$R" >/dev/null
        echo bob-pw | dk login -u bob --password-stdin "$R" >/dev/null
        dk tag "$R/team/docker:1" "$R/team/docker:bob"
        if dockercli push "$R/team/docker:bob" >"$E2E_TMP/dp.out" 2>&1; then
            fail "policy: docker push by pull-only bob succeeded"
        fi
        grep -qi 'denied' "$E2E_TMP/dp.out" || fail "policy: bob's docker push failed for another reason: $(cat "$E2E_TMP/dp.out")"
        pass "policy: docker push by a pull-only user is denied"
    fi
else
    log "docker part skipped (needs root, dockerd and a non-loopback address)"
fi

# ----------------------------------------------------------- rotation --
serial() {
    openssl s_client -connect "$R" -CAfile "$PKI/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -serial
}
if [[ $E2E_KIND == berth ]]; then
    BEFORE=$(serial)
    cp "$PKI/server2.crt" "$E2E_TMP/tls.crt.new" && mv "$E2E_TMP/tls.crt.new" "$E2E_TMP/tls.crt"
    cp "$PKI/server2.key" "$E2E_TMP/tls.key.new" && mv "$E2E_TMP/tls.key.new" "$E2E_TMP/tls.key"
    WANT=$(openssl x509 -noout -serial -in "$PKI/server2.crt")
    for ((i = 0; i < 80; i++)); do
        [[ $(serial) == "$WANT" ]] && break
        sleep 0.25
    done
    [[ $BEFORE != "$WANT" ]] || fail "rotation: test certificates have the same serial"
    assert_eq "$WANT" "$(serial)" "rotation: the replaced certificate is served without a restart"
    assert_eq 200 "$(code -u alice:alice-pw "$U/v2/")" "rotation: requests still succeed"
fi
stop_registry "$REG_PORT"

# ---------------------------------------------------------- mutual TLS --
start_secure_registry "$(free_port)" "$PKI/client-ca.crt"
R=$REG_ADDR
U=https://$R
MT=(--cacert "$PKI/ca.crt")
assert_eq 000 "$(curl -s -o /dev/null -w '%{http_code}' "${MT[@]}" -u alice:alice-pw "$U/v2/" 2>/dev/null || true)" \
    "mTLS: no client certificate is refused at the handshake"
assert_eq 000 "$(curl -s -o /dev/null -w '%{http_code}' "${MT[@]}" --cert "$PKI/intruder.crt" --key "$PKI/intruder.key" -u alice:alice-pw "$U/v2/" 2>/dev/null || true)" \
    "mTLS: a client certificate from another CA is refused at the handshake"
assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "${MT[@]}" --cert "$PKI/client.crt" --key "$PKI/client.key" -u alice:alice-pw "$U/v2/")" \
    "mTLS: the right client certificate and password are 200"
skopeo_run inspect --cert-dir "$E2E_TMP/certs-mtls" --creds alice:alice-pw --raw "docker://$R/team/app:1" >/dev/null
pass "mTLS: skopeo presents client.cert from --cert-dir"
if skopeo --insecure-policy inspect --cert-dir "$E2E_TMP/certs-intruder" --creds alice:alice-pw --raw "docker://$R/team/app:1" >/dev/null 2>&1; then
    fail "mTLS: skopeo with another CA's client certificate got through"
fi
pass "mTLS: skopeo with another CA's client certificate is refused"
echo alice-pw | pm login --authfile "$E2E_TMP/mtls-auth.json" --cert-dir "$E2E_TMP/certs-mtls" -u alice --password-stdin "$R" >/dev/null
pm pull -q --authfile "$E2E_TMP/mtls-auth.json" --cert-dir "$E2E_TMP/certs-mtls" "$R/team/podman:1" >/dev/null
pass "mTLS: podman login and pull with a client certificate"
if ((DOCKER_OK)); then
    trust_in_docker "$R" "$E2E_TMP/certs-mtls"
    echo alice-pw | dk login -u alice --password-stdin "$R" >/dev/null
    dk pull "$R/team/docker:1" >/dev/null
    pass "mTLS: docker login and pull with client.cert from certs.d"
fi

stop_registry "$REG_PORT"

# ----------------------------------------------------------- token auth --
# A token server (token_server.py: RS256 JWTs signed with openssl) and the
# registry trusting its certificate; the clients do the Bearer dance.
require_tool python3
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=berth e2e token signer" \
    -keyout "$PKI/token.key" -out "$PKI/token.crt" 2>/dev/null
TPORT=$(free_port)
python3 "$E2E_DIR/token_server.py" "$TPORT" "$PKI/token.key" "$PKI/token.crt" e2e-issuer e2e-registry \
    '{"alice": {"password": "alice-pw", "actions": ["*"]}, "bob": {"password": "bob-pw", "actions": ["pull"]}}' \
    >"$E2E_TMP/token-server.log" 2>&1 </dev/null &
E2E_BG_PIDS+=($!)
for ((i = 0; i < 100; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$TPORT/token?service=e2e-registry" 2>/dev/null && break
    sleep 0.1
done
TREALM=http://$HOST_IP:$TPORT/token
AUTH_YAML="auth:
  token:
    realm: $TREALM
    service: e2e-registry
    issuer: e2e-issuer
    rootcertbundle: $PKI/token.crt"
start_secure_registry "$(free_port)"
R=$REG_ADDR
U=https://$R
curl -s -D "$E2E_TMP/h" -o /dev/null --cacert "$PKI/ca.crt" "$U/v2/team/app/tags/list" || true
assert_eq 401 "$(status "$E2E_TMP/h")" "token: anonymous tags/list is 401"
assert_eq "Bearer realm=\"$TREALM\",service=\"e2e-registry\",scope=\"repository:team/app:pull\"" \
    "$(header "$E2E_TMP/h" WWW-Authenticate)" "token: the challenge names realm, service and scope"
TOKEN=$(curl -fsS -u alice:alice-pw "$TREALM?service=e2e-registry&scope=registry:catalog:*" | jq -r .token)
assert_eq 200 "$(code -H "Authorization: Bearer $TOKEN" "$U/v2/_catalog")" "token: a catalog token lists the catalog"
assert_eq 401 "$(code -H "Authorization: Bearer $TOKEN" "$U/v2/team/app/tags/list")" "token: the catalog token does not read tags"
skopeo_run inspect --cert-dir "$E2E_TMP/certs" --creds bob:bob-pw --raw "docker://$R/team/app:1" >/dev/null
pass "token: skopeo --creds gets a token and reads a manifest"
clear_blob_info_cache
if skopeo --insecure-policy copy "${SK_TLS[@]}" --dest-creds bob:bob-pw "oci:$L:latest" "docker://$R/team/tok:bob" >"$E2E_TMP/tdeny.out" 2>&1; then
    fail "token: bob's pull-only token could push"
fi
pass "token: a pull-only token cannot push"
clear_blob_info_cache
skopeo_run copy "${SK_TLS[@]}" --dest-creds alice:alice-pw "oci:$L:latest" "docker://$R/team/tok:1"
pass "token: skopeo pushes with a pull,push token"
echo alice-pw | pm login --authfile "$E2E_TMP/tok-auth.json" --cert-dir "$E2E_TMP/certs" -u alice --password-stdin "$R" >/dev/null
pm push -q --authfile "$E2E_TMP/tok-auth.json" --cert-dir "$E2E_TMP/certs" "$GOT" "docker://$R/team/tok:podman"
pm rmi -af >/dev/null
assert_eq "$GOT" "$(pm pull -q --authfile "$E2E_TMP/tok-auth.json" --cert-dir "$E2E_TMP/certs" "$R/team/tok:podman")" \
    "token: podman login, push and pull back"
if ((DOCKER_OK)); then
    trust_in_docker "$R" "$E2E_TMP/certs"
    echo alice-pw | dk login -u alice --password-stdin "$R" >/dev/null
    dk tag "$DOCKER_IMG" "$R/team/tok:docker"
    dk push "$R/team/tok:docker" >/dev/null
    dk rmi "$R/team/tok:docker" >/dev/null
    dk pull "$R/team/tok:docker" >/dev/null
    pass "token: docker login, push and pull through the token server"
fi

# ------------------------------------------- berth's own token server --
if [[ $E2E_KIND == berth ]]; then
    stop_registry "$REG_PORT"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=berth e2e own token signer" -keyout "$PKI/own.key" -out "$PKI/own.crt" 2>/dev/null
    OPORT=$(free_port)
    AUTH_YAML="auth:
  htpasswd:
    realm: berth-e2e
    path: $HT
  tokenserver:
    realm: https://$HOST_IP:$OPORT/token
    certificate: $PKI/own.crt
    key: $PKI/own.key
    expiry: 5m$POLICY"
    start_secure_registry "$OPORT"
    R=$REG_ADDR
    U=https://$R
    curl -s -D "$E2E_TMP/h" -o /dev/null --cacert "$PKI/ca.crt" "$U/v2/" || true
    assert_eq "Bearer realm=\"https://$R/token\",service=\"berth\"" "$(header "$E2E_TMP/h" WWW-Authenticate)" \
        "own token server: the challenge points at berth's /token"
    skopeo_run inspect --cert-dir "$E2E_TMP/certs" --creds bob:bob-pw --raw "docker://$R/team/app:1" >/dev/null
    pass "own token server: skopeo gets a token for bob and reads"
    clear_blob_info_cache
    if skopeo --insecure-policy copy "${SK_TLS[@]}" --dest-creds bob:bob-pw "oci:$L:latest" "docker://$R/team/own:bob" >/dev/null 2>&1; then
        fail "own token server: bob (pull only) could push"
    fi
    pass "own token server: bob's token does not let him push"
    echo carol-pw | pm login --authfile "$E2E_TMP/own-auth.json" --cert-dir "$E2E_TMP/certs" -u carol --password-stdin "$R" >/dev/null
    pm push -q --authfile "$E2E_TMP/own-auth.json" --cert-dir "$E2E_TMP/certs" "$GOT" "docker://$R/team/own:podman"
    pass "own token server: podman login and push as carol"
    if ((DOCKER_OK)); then
        trust_in_docker "$R" "$E2E_TMP/certs"
        echo alice-pw | dk login -u alice --password-stdin "$R" >/dev/null
        dk tag "$DOCKER_IMG" "$R/team/own:docker"
        dk push "$R/team/own:docker" >/dev/null
        dk rmi "$R/team/own:docker" >/dev/null
        dk pull "$R/team/own:docker" >/dev/null
        pass "own token server: docker login, push and pull with its tokens"
    fi
fi

e2e_finish
