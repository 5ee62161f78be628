#!/usr/bin/env bash
# Installs the external tools that berth's end-to-end tests and benchmarks
# drive (tests/e2e): real registry clients (skopeo, podman, docker), the
# reference registry (CNCF Distribution, Debian's docker-registry), umoci to
# build test images without network, nginx (the load balancer of
# scripts/cluster.sh) and curl/jq/wrk/hyperfine; for the web UI's browser
# tests (tests/e2e/ui.sh) Debian's chromium and Playwright from PyPI in a
# virtualenv at $BERTH_E2E_VENV (/opt/berth-e2e/venv; Playwright drives
# /usr/bin/chromium, so `playwright install` is never run). CI machines start
# without them, so CI runs this first. Idempotent: it only calls apt (and
# `apt-get update`) when a package is missing, and pip only when the
# virtualenv lacks Playwright. Debian 12, as root.
#
# usage: scripts/install-deps.sh

set -euo pipefail

PACKAGES=(
    skopeo podman umoci docker-registry docker.io containerd
    curl jq wrk hyperfine
    # used by the e2e helpers: ss (free ports), sha256sum/tar/gzip
    iproute2 coreutils tar gzip
    # auth_tls.sh: a CA and certificates (openssl), bcrypt htpasswd files (htpasswd -B),
    # the test token server (python3, standard library only)
    openssl apache2-utils python3
    # uid maps and a fuse overlay for podman/containers tooling
    uidmap fuse-overlayfs
    # mounts the cgroup v1 hierarchies on init-less machines (dockerd)
    cgroupfs-mount
    # image.sh: the image's CA bundle, and systemd-analyze for contrib/systemd/berth.service
    ca-certificates systemd
    # cluster.sh (scripts/ and tests/e2e/): the load balancer in front of three replicas
    nginx
    # ui.sh: the browser, and a virtualenv for Playwright (Debian's pip refuses system installs)
    chromium python3-venv
)

# Playwright's Python package, pinned: its driver speaks to the Chromium above.
PLAYWRIGHT_VERSION=1.65.3
VENV=${BERTH_E2E_VENV:-/opt/berth-e2e/venv}

# install_playwright: the virtualenv with Playwright, unless it is there already.
install_playwright() {
    if "$VENV/bin/python" -c 'import playwright' 2>/dev/null; then
        echo "install-deps.sh: playwright already installed in $VENV"
        return 0
    fi
    echo "install-deps.sh: installing playwright $PLAYWRIGHT_VERSION into $VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
    "$VENV/bin/python" -c 'import playwright' || {
        echo "install-deps.sh: playwright did not install" >&2
        exit 1
    }
}

if ((EUID != 0)); then
    echo "install-deps.sh: must run as root (apt-get)" >&2
    exit 1
fi

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps.sh: all packages already installed"
    install_playwright
    exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start daemons (dockerd, docker-registry,
# containerd) on this machine: the tests start their own private instances.
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# temporary, from berth scripts/install-deps.sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
remove_policy() {
    if ((created_policy)); then
        rm -f /usr/sbin/policy-rc.d
    fi
}
trap remove_policy EXIT

apt-get update -q
apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

for p in "${missing[@]}"; do
    is_installed "$p" || {
        echo "install-deps.sh: $p did not install" >&2
        exit 1
    }
done
install_playwright
echo "install-deps.sh: done"
