#!/usr/bin/env bash
# A private single-node Garage (an S3 server, https://garagehq.deuxfleurs.fr) on loopback, for
# the S3 driver's tests, the S3 end-to-end runs and scripts/bench-s3.sh. Garage is built once
# with cargo (pinned version, cached under ${XDG_CACHE_HOME:-~/.cache}/berth-tools/, so later
# runs reuse it); there is no Debian package.
#
# usage: scripts/garage.sh install       build Garage unless the cached binary exists
#        scripts/garage.sh start         install, then start Garage with bucket "berth" and a key
#        scripts/garage.sh env           print `export BERTH_TEST_S3_*=...` for the running one
#        scripts/garage.sh stop          stop it and delete its data
#        scripts/garage.sh bin           print the path of the garage binary
# BERTH_GARAGE_DIR: where the running instance keeps config, data and state
# (default ${TMPDIR:-/tmp}/berth-garage).

set -euo pipefail

GARAGE_VERSION=2.5.0
tools=${XDG_CACHE_HOME:-$HOME/.cache}/berth-tools
prefix=$tools/garage-$GARAGE_VERSION
garage_bin=$prefix/bin/garage
dir=${BERTH_GARAGE_DIR:-${TMPDIR:-/tmp}/berth-garage}

say() { printf 'garage.sh: %s\n' "$*" >&2; }

install() {
    if [[ -x $garage_bin ]]; then
        return 0
    fi
    command -v cargo >/dev/null || {
        say "cargo is needed to build Garage"
        exit 1
    }
    say "building Garage $GARAGE_VERSION into $prefix (once; about 8 minutes on 2 cores)"
    mkdir -p "$tools"
    # lmdb instead of the default sqlite+lmdb, bundled C libraries: nothing from apt needed.
    # A test server needs no LTO, one codegen unit or debug info: without them the build
    # takes 40% less CPU (measured: 9.7 instead of 16.5 CPU-minutes, 12 instead of 22.5
    # minutes on a loaded 2-core machine), and Garage still serves far faster than the tests ask.
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
        --features bundled-libs,lmdb --root "$prefix"
    [[ -x $garage_bin ]] || {
        say "build finished but $garage_bin is missing"
        exit 1
    }
}

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    say "no free port"
    exit 1
}

g() { "$garage_bin" -c "$dir/garage.toml" "$@"; }

start() {
    install
    if [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        say "already running (pid $(cat "$dir/pid")); $dir/env has its variables"
        return 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir/meta" "$dir/data"
    local rpc s3 secret node i
    rpc=$(free_port)
    s3=$(free_port)
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOF
    # Garage speaks plain HTTP here; a CA bundle meant for other endpoints is of no use to it.
    env -u AWS_CA_BUNDLE RUST_LOG=garage=warn "$garage_bin" -c "$dir/garage.toml" server \
        >"$dir/garage.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    for ((i = 0; i < 100; i++)); do
        if node=$(g node id -q 2>/dev/null); then
            break
        fi
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || {
            tail -n 20 "$dir/garage.log" >&2
            say "garage exited during startup"
            exit 1
        }
        sleep 0.2
    done
    [[ -n ${node:-} ]] || {
        say "garage did not answer within 20 s"
        exit 1
    }
    g layout assign -z dc1 -c 1G "${node%%@*}" >/dev/null
    g layout apply --version 1 >/dev/null
    # The layout takes a moment to reach the S3 API.
    for ((i = 0; i < 50; i++)); do
        g bucket create berth >/dev/null 2>&1 && break
        sleep 0.2
    done
    g bucket info berth >/dev/null
    g key create berth-key >/dev/null
    g bucket allow --read --write --owner berth --key berth-key >/dev/null
    local info key_id key_secret
    info=$(g key info berth-key --show-secret)
    key_id=$(awk -F': *' '/^Key ID/ {print $2; exit}' <<<"$info" | tr -d ' ')
    key_secret=$(awk -F': *' '/^Secret key/ {print $2; exit}' <<<"$info" | tr -d ' ')
    [[ -n $key_id && -n $key_secret ]] || {
        printf '%s\n' "$info" >&2
        say "could not read the key from 'garage key info'"
        exit 1
    }
    cat >"$dir/env" <<EOF
export BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$s3
export BERTH_TEST_S3_REGION=garage
export BERTH_TEST_S3_BUCKET=berth
export BERTH_TEST_S3_ACCESS_KEY=$key_id
export BERTH_TEST_S3_SECRET_KEY=$key_secret
EOF
    say "Garage up on http://127.0.0.1:$s3 (pid $(cat "$dir/pid"), data $dir); eval \"\$(scripts/garage.sh env)\""
}

stop() {
    if [[ -f $dir/pid ]]; then
        local pid
        pid=$(cat "$dir/pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
    fi
    rm -rf "$dir"
}

case ${1:-} in
    install) install ;;
    start) start ;;
    env)
        [[ -f $dir/env ]] || {
            say "not running: scripts/garage.sh start"
            exit 1
        }
        cat "$dir/env"
        ;;
    stop) stop ;;
    bin) echo "$garage_bin" ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
esac
