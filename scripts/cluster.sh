#!/usr/bin/env bash
# A registry cluster on loopback in one command: three Garage nodes holding one bucket with
# replication factor 3, three berth replicas sharing that bucket (no shared secret, no
# affinity), and nginx in front of both: one server balancing the registry API round robin
# over the replicas, one balancing S3 over the Garage nodes (what the replicas use as their
# endpoint, so a dead Garage node is routed around). Every process is private to the state
# directory: own configs, data, logs, pid files and ports, nothing installed system-wide (nginx
# runs with its own prefix, not as the system service). Garage comes from scripts/garage.sh
# (built once), nginx from Debian (scripts/install-deps.sh).
#
# usage: scripts/cluster.sh start         start everything; the registry is $BERTH_CLUSTER_URL
#        scripts/cluster.sh env           print `export BERTH_CLUSTER_*=...` (and BERTH_TEST_S3_*)
#        scripts/cluster.sh status        one line per process: running or down; exit 1 if any is down
#        scripts/cluster.sh stop          stop everything and delete the state directory
#        scripts/cluster.sh kill NAME     SIGKILL one process (fault drills): garage1..3, berth1..3, nginx
#        scripts/cluster.sh revive NAME   start it again on its config, data and port; waits until it serves
#        scripts/cluster.sh restart NAME  stop it gracefully (SIGTERM), then revive it
# BERTH_CLUSTER_DIR: the state directory (default ${TMPDIR:-/tmp}/berth-cluster-run).
# BERTH_CLUSTER_KEEP=1: stop keeps the directory (configs, data, logs).
# BERTH_CLUSTER_PORT: nginx's registry port (default: a free one).
# BERTH_BIN: the berth binary (default target/release/berth, else target/debug/berth).
# REGISTRY_* variables in the environment of start or revive reach the replicas (Distribution's
# overrides), e.g. REGISTRY_STORAGE_MAINTENANCE_GARBAGECOLLECT_ENABLED=true for online GC.

set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BERTH_CLUSTER_DIR:-${TMPDIR:-/tmp}/berth-cluster-run}
N=3

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

garage_bin() { "$root/scripts/garage.sh" bin; }

berth_bin() {
    local b
    if [[ -n ${BERTH_BIN:-} ]]; then
        b=$BERTH_BIN
        [[ $b == /* ]] || b=$root/$b
        [[ -x $b ]] || die "BERTH_BIN=$BERTH_BIN is not an executable file"
        echo "$b"
        return 0
    fi
    for b in "$root/target/release/berth" "$root/target/debug/berth"; do
        [[ -x $b ]] && {
            echo "$b"
            return 0
        }
    done
    die "no berth binary: cargo build --release, or set BERTH_BIN"
}

# Ports the kernel's ephemeral range does not hand out, not listening, not given twice.
declare -A given=()
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 12000))
        [[ -z ${given[$port]:-} ]] || continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            given[$port]=1
            echo "$port"
            return 0
        fi
    done
    die "no free port"
}

# The state file: ports and the S3 key, written by start, read by everything else.
load() {
    [[ -f $dir/state ]] || die "not running (no $dir/state): scripts/cluster.sh start"
    # shellcheck source=/dev/null
    source "$dir/state"
}

# pid_of NAME: the pid in NAME's pid file if that process is alive and is NAME (pid files
# outlive their process; a recycled pid must not count), else nothing.
pid_of() {
    local name=$1 pid cmd st
    pid=$(cat "$dir/$name/pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
    [[ $st != Z ]] || return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    [[ $cmd == *"$dir/$name/"* ]] || return 0
    echo "$pid"
}

# stop_pid PID [SIGNAL]: signal it and wait (5 s, then SIGKILL) until it is gone.
stop_pid() {
    local pid=$1 sig=${2:-TERM} st i
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 1; i <= 100; i++)); do
        st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
        [[ $st == Z ]] && return 0
        ((i == 50)) && kill -KILL "$pid" 2>/dev/null
        sleep 0.1
    done
}

# ------------------------------------------------------------------------------ Garage --

g() {
    local n=$1
    shift
    "$(garage_bin)" -c "$dir/garage$n/garage.toml" "$@"
}

garage_config() {
    local n=$1 rpc=$2 s3=$3 secret=$4 d=$dir/garage$1
    mkdir -p "$d/meta" "$d/data"
    cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "lmdb"
# every object on all three nodes; reads and writes need two of them (the default quorums)
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOF
}

# start_garage N: start node N (config written), wait until it answers RPC (`node id` reads
# only the key file, `status` asks the server).
start_garage() {
    local n=$1 d=$dir/garage$1 pid
    # Garage speaks plain HTTP here; a CA bundle meant for other endpoints is of no use to it.
    env -u AWS_CA_BUNDLE RUST_LOG=garage=warn "$(garage_bin)" -c "$d/garage.toml" server \
        >>"$d/garage.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$d/pid"
    for _ in $(seq 150); do
        g "$n" status >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$d/garage.log" >&2
            die "garage$n exited during startup"
        }
        sleep 0.2
    done
    die "garage$n did not answer within 30 s"
}

# garage_healthy N [STRICT]: how many nodes node N sees as up; with STRICT=1 only those it has
# had a status from (until then a node shows "?" as its host name).
garage_healthy() {
    g "$1" status 2>/dev/null | awk -v strict="${2:-0}" \
        '/HEALTHY NODES/ {on = 1; next} /====/ {on = 0}
         on && /^[0-9a-f]+ / && (strict == 0 || $2 != "?") {c++} END {print c + 0}'
}

# garage_all_see STRICT N...: each of these nodes sees all of them as up (garage_healthy).
garage_all_see() {
    local strict=$1 n
    shift
    for n in "$@"; do
        (($(garage_healthy "$n" "$strict") >= $#)) || return 1
    done
}

# --------------------------------------------------------------------------- berth --

berth_config() {
    local n=$1 port=$2 d=$dir/berth$1
    mkdir -p "$d"
    cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  s3:
    region: garage
    regionendpoint: http://127.0.0.1:$S3_LB_PORT
    bucket: berth
    accesskey: $KEY_ID
    secretkey: $KEY_SECRET
    rootdirectory: /registry
    forcepathstyle: true
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  trustedproxies: [127.0.0.1]
EOF
}

start_berth() {
    local n=$1 d=$dir/berth$1 port pid code
    port=$(awk '/addr:/ {sub(/.*:/, "", $2); print $2}' "$d/config.yml")
    printf '=== %s: start\n' "$(date -u +%FT%TZ)" >>"$d/berth.log"
    env -u AWS_CA_BUNDLE "$(berth_bin)" serve "$d/config.yml" >>"$d/berth.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$d/pid"
    for _ in $(seq 300); do
        code=$(curl -sS -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null || true)
        [[ $code == 200 ]] && return 0
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$d/berth.log" >&2
            die "berth$n exited during startup"
        }
        sleep 0.1
    done
    die "berth$n did not answer GET /v2/ on port $port within 30 s"
}

# --------------------------------------------------------------------------- nginx --

nginx_config() {
    local d=$dir/nginx user='' n
    mkdir -p "$d/tmp"
    # nginx started as root runs its workers as nobody, who could not write the state
    # directory; this is a private instance, so keep the caller's user.
    ((EUID == 0)) && user="user root root;"
    {
        cat <<EOF
# scripts/cluster.sh: the registry on $REGISTRY_PORT, Garage's S3 API on $S3_LB_PORT.
$user
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
    log_format cluster '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent '
                       'upstream=\$upstream_addr upstream_status=\$upstream_status \$request_time';
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;

    # Round robin, no affinity: each request of an upload may reach another replica (the
    # upload's state is in the bucket). A replica that refuses a connection is left out for
    # fail_timeout.
    upstream berth {
EOF
        for n in $(seq $N); do
            printf '        server 127.0.0.1:%s max_fails=1 fail_timeout=5s;\n' "${BERTH_PORTS[n - 1]}"
        done
        cat <<EOF
        keepalive 32;
    }
    upstream garage_s3 {
EOF
        for n in $(seq $N); do
            printf '        server 127.0.0.1:%s max_fails=1 fail_timeout=5s;\n' "${GARAGE_S3_PORTS[n - 1]}"
        done
        cat <<EOF
        keepalive 32;
    }

    server {
        listen 127.0.0.1:$REGISTRY_PORT;
        access_log $d/registry-access.log cluster;
        # as Distribution's nginx recipe: no size limit, bodies streamed both ways
        client_max_body_size 0;
        chunked_transfer_encoding on;
        location / {
            proxy_pass http://berth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;        # Location headers name this server
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_read_timeout 900;
            proxy_request_buffering off;
            proxy_buffering off;
            # Refused connections and GETs/HEADs cut off before an answer go to the next
            # replica; a POST, PATCH or PUT that reached one is never replayed (nginx's
            # default, kept on purpose: a half-sent chunk cannot be re-sent), the client asks
            # the upload's offset and resumes.
            proxy_next_upstream error timeout;
        }
    }

    server {
        listen 127.0.0.1:$S3_LB_PORT;
        access_log $d/s3-access.log cluster;
        client_max_body_size 0;
        location / {
            proxy_pass http://garage_s3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;        # signed by SigV4 (and presigned URLs)
            proxy_read_timeout 900;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }
    }
}
EOF
    } >"$d/nginx.conf"
}

start_nginx() {
    local d=$dir/nginx pid
    nginx -t -q -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" || die "nginx rejects $d/nginx.conf"
    nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;' \
        >>"$d/nginx.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$d/pid"
    for _ in $(seq 100); do
        # listening, and not someone else on a port taken since it was picked
        if [[ $(ss -Htlnp "( sport = :$REGISTRY_PORT or sport = :$S3_LB_PORT )" 2>/dev/null |
            grep -c "pid=$pid,") -ge 2 ]]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$d/error.log" "$d/nginx.out" >&2 || true
            die "nginx exited during startup"
        }
        sleep 0.1
    done
    die "nginx did not listen within 10 s"
}

# -------------------------------------------------------------------------- commands --

start() {
    command -v nginx >/dev/null || die "nginx is missing: scripts/install-deps.sh (or apt-get install nginx)"
    berth_bin >/dev/null
    if [[ -f $dir/state ]]; then
        if status >/dev/null 2>&1; then
            say "already running; eval \"\$(scripts/cluster.sh env)\""
            return 0
        fi
        die "$dir holds a cluster that is partly down: scripts/cluster.sh status, revive or stop"
    fi
    "$root/scripts/garage.sh" install
    stop_processes # a start that failed before writing the state file may have left some
    rm -rf "$dir"
    mkdir -p "$dir"
    # a start that fails part way stops what it started
    trap '[[ -f $dir/state ]] || { say "start failed: stopping what it started (logs in $dir)"; stop_processes; }' EXIT
    local n secret ids=() info
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    GARAGE_RPC_PORTS=() GARAGE_S3_PORTS=() BERTH_PORTS=()
    for n in $(seq $N); do
        GARAGE_RPC_PORTS+=("$(free_port)")
        GARAGE_S3_PORTS+=("$(free_port)")
    done

    for n in $(seq $N); do
        garage_config "$n" "${GARAGE_RPC_PORTS[n - 1]}" "${GARAGE_S3_PORTS[n - 1]}" "$secret"
        start_garage "$n"
        ids+=("$(g "$n" node id -q)")
    done
    for n in $(seq 2 $N); do
        g 1 node connect "${ids[n - 1]}" >/dev/null
    done
    # Node 1 introduces the others to each other. As after a revive, wait until each node has
    # every other's status (about 10 s): until then the nodes may still drop and redial a
    # connection for a moment, and a node lost then would take the quorum away.
    for _ in $(seq 150); do
        garage_all_see 1 $(seq $N) && break
        sleep 0.4
    done
    garage_all_see 1 $(seq $N) || die "the Garage nodes do not all see each other within 60 s"
    for n in $(seq $N); do
        # one zone per node: Garage then puts one copy of each object on each node
        g 1 layout assign -z "dc$n" -c 1G "${ids[n - 1]%%@*}" >/dev/null
    done
    g 1 layout apply --version 1 >/dev/null
    for _ in $(seq 100); do
        g 1 bucket create berth >/dev/null 2>&1 && break
        sleep 0.2
    done
    g 1 bucket info berth >/dev/null
    g 1 key create berth-key >/dev/null
    g 1 bucket allow --read --write --owner berth --key berth-key >/dev/null
    info=$(g 1 key info berth-key --show-secret)
    KEY_ID=$(awk -F': *' '/^Key ID/ {print $2; exit}' <<<"$info" | tr -d ' ')
    KEY_SECRET=$(awk -F': *' '/^Secret key/ {print $2; exit}' <<<"$info" | tr -d ' ')
    [[ -n $KEY_ID && -n $KEY_SECRET ]] || die "could not read the key from 'garage key info'"

    # the other ports only now, just before they are bound (Garage took seconds)
    for n in $(seq $N); do
        BERTH_PORTS+=("$(free_port)")
    done
    REGISTRY_PORT=${BERTH_CLUSTER_PORT:-$(free_port)}
    S3_LB_PORT=$(free_port)
    nginx_config
    start_nginx
    for n in $(seq $N); do
        berth_config "$n" "${BERTH_PORTS[n - 1]}"
        start_berth "$n"
    done
    {
        printf 'GARAGE_RPC_PORTS=(%s)\n' "${GARAGE_RPC_PORTS[*]}"
        printf 'GARAGE_S3_PORTS=(%s)\n' "${GARAGE_S3_PORTS[*]}"
        printf 'BERTH_PORTS=(%s)\n' "${BERTH_PORTS[*]}"
        printf 'REGISTRY_PORT=%s\nS3_LB_PORT=%s\nKEY_ID=%s\nKEY_SECRET=%s\n' \
            "$REGISTRY_PORT" "$S3_LB_PORT" "$KEY_ID" "$KEY_SECRET"
    } >"$dir/state"
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REGISTRY_PORT/v2/" || true)
    [[ $code == 200 ]] || die "GET /v2/ through nginx answered $code"
    say "up: registry http://127.0.0.1:$REGISTRY_PORT (nginx over berth on ${BERTH_PORTS[*]}), S3 http://127.0.0.1:$S3_LB_PORT (nginx over Garage on ${GARAGE_S3_PORTS[*]}); eval \"\$(scripts/cluster.sh env)\""
}

env_() {
    load
    local n pidfiles=() gpidfiles=() pids=() gpids=()
    for n in $(seq $N); do
        pidfiles+=("$dir/berth$n/pid")
        gpidfiles+=("$dir/garage$n/pid")
        pids+=("$(pid_of "berth$n")")
        gpids+=("$(pid_of "garage$n")")
    done
    cat <<EOF
export BERTH_CLUSTER_DIR=$dir
export BERTH_CLUSTER_URL=http://127.0.0.1:$REGISTRY_PORT
export BERTH_CLUSTER_ADDR=127.0.0.1:$REGISTRY_PORT
export BERTH_CLUSTER_REPLICA_PORTS="${BERTH_PORTS[*]}"
export BERTH_CLUSTER_REPLICA_PIDFILES="${pidfiles[*]}"
export BERTH_CLUSTER_REPLICA_PIDS="${pids[*]}"
export BERTH_CLUSTER_REPLICA_CONFIGS="$(for n in $(seq $N); do printf '%s ' "$dir/berth$n/config.yml"; done | sed 's/ $//')"
export BERTH_CLUSTER_GARAGE_S3_PORTS="${GARAGE_S3_PORTS[*]}"
export BERTH_CLUSTER_GARAGE_PIDFILES="${gpidfiles[*]}"
export BERTH_CLUSTER_GARAGE_PIDS="${gpids[*]}"
export BERTH_CLUSTER_NGINX_PIDFILE=$dir/nginx/pid
export BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_LB_PORT
export BERTH_TEST_S3_REGION=garage
export BERTH_TEST_S3_BUCKET=berth
export BERTH_TEST_S3_ACCESS_KEY=$KEY_ID
export BERTH_TEST_S3_SECRET_KEY=$KEY_SECRET
EOF
}

status() {
    load
    local name pid down=0 extra
    for name in garage1 garage2 garage3 berth1 berth2 berth3 nginx; do
        pid=$(pid_of "$name")
        extra=
        case $name in
            garage*) extra="s3 127.0.0.1:${GARAGE_S3_PORTS[${name#garage} - 1]}" ;;
            berth*) extra="http://127.0.0.1:${BERTH_PORTS[${name#berth} - 1]}" ;;
            nginx) extra="http://127.0.0.1:$REGISTRY_PORT, s3 127.0.0.1:$S3_LB_PORT" ;;
        esac
        if [[ -n $pid ]]; then
            printf '%-8s running  pid %-8s %s\n' "$name" "$pid" "$extra"
        else
            printf '%-8s DOWN              %s\n' "$name" "$extra"
            down=1
        fi
    done
    ((down == 0))
}

check_name() {
    case ${1:-} in
        garage[1-3] | berth[1-3] | nginx) ;;
        *) die "NAME is garage1..3, berth1..3 or nginx" ;;
    esac
}

kill_() {
    check_name "$1"
    load
    local pid workers='' w
    pid=$(pid_of "$1")
    [[ -n $pid ]] || die "$1 is not running"
    # nginx's workers outlive a killed master and keep serving on its ports: they go too
    [[ $1 != nginx ]] || workers=$(ps -o pid= --ppid "$pid" || true)
    stop_pid "$pid" KILL
    for w in $workers; do stop_pid "$w" KILL; done
    say "$1 (pid $pid) killed with SIGKILL"
}

revive() {
    check_name "$1"
    load
    local name=$1 pid n other
    pid=$(pid_of "$name")
    [[ -z $pid ]] || die "$name is running (pid $pid)"
    case $name in
        garage*)
            n=${name#garage}
            start_garage "$n"
            # A restarted node and its peers redial each other only after a backoff (up to
            # about 20 s, while the others count it as down): dial both ways now. Then wait
            # until every running node sees every other one up and has its status (10 to 20 s:
            # before that a node may still drop the revived one for a moment, and a second
            # node lost then would take the quorum away).
            local up=() id
            id=$(g "$n" node id -q)
            for other in $(seq $N); do
                ((other == n)) || [[ -z $(pid_of "garage$other") ]] || up+=("$other")
            done
            for other in "${up[@]}"; do
                g "$n" node connect "$(g "$other" node id -q)" >/dev/null
                g "$other" node connect "$id" >/dev/null
            done
            up+=("$n")
            for _ in $(seq 150); do
                garage_all_see 1 "${up[@]}" && break
                sleep 0.4
            done
            garage_all_see 1 "${up[@]}" || die "$name started but the nodes do not all see each other within 60 s"
            ;;
        berth*) start_berth "${name#berth}" ;;
        nginx) start_nginx ;;
    esac
    say "$name revived (pid $(pid_of "$name"))"
}

restart() {
    check_name "$1"
    load
    local pid
    pid=$(pid_of "$1")
    [[ -z $pid ]] || stop_pid "$pid"
    revive "$1"
}

stop_processes() {
    local name pid
    [[ -d $dir ]] || return 0
    for name in nginx berth1 berth2 berth3 garage1 garage2 garage3; do
        pid=$(pid_of "$name")
        [[ -z $pid ]] || stop_pid "$pid"
    done
}

stop() {
    stop_processes
    if [[ ${BERTH_CLUSTER_KEEP:-0} == 1 ]]; then
        rm -f "$dir/state"
        [[ ! -d $dir ]] || say "stopped; kept $dir"
    else
        rm -rf "$dir"
    fi
}

case ${1:-} in
    start) start ;;
    env) env_ ;;
    status) status ;;
    stop) stop ;;
    kill) kill_ "${2:-}" ;;
    revive) revive "${2:-}" ;;
    restart) restart "${2:-}" ;;
    *)
        sed -n '2,24p' "$0" >&2
        exit 2
        ;;
esac
