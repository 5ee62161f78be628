#!/usr/bin/env bash
# Builds the berth container image (image/Dockerfile): a FROM scratch image holding the
# release binary linked statically (as /bin/registry, with /bin/berth beside it), the
# registry:2 default config at /etc/docker/registry/config.yml, CA certificates for S3 and
# webhooks over HTTPS, an empty /var/lib/registry and /tmp. No base image is pulled and
# nothing is downloaded beyond what cargo needs, so it builds offline too.
#
# usage: scripts/image.sh [--context-only] [TAG]
#   TAG             image name (default: berth)
#   --context-only  assemble target/image (Dockerfile + rootfs/) without running docker;
#                   the repository's root Dockerfile uses this inside its build stage
#   DOCKER          the client to build with (default: docker; podman works too)
#   BERTH_IMAGE_SOURCE  the org.opencontainers.image.source label (default: git remote origin)
#
# Then, as with registry:2:
#   docker run -d -p 5000:5000 --name registry --restart=always \
#       -v "$(pwd)"/registry:/var/lib/registry berth

set -euo pipefail
cd "$(dirname "$0")/.."

context_only=0
tag=berth
for arg in "$@"; do
    case $arg in
        --context-only) context_only=1 ;;
        -*)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
            exit 2
            ;;
        *) tag=$arg ;;
    esac
done

# --- the binary: static, so the image needs no libc, loader or NSS modules -------------------
# glibc's getaddrinfo resolves through /etc/hosts and DNS without loading modules (both are
# built into glibc since 2.34; the image's /etc/nsswitch.conf names only those two).
host=$(rustc -vV | sed -n 's/^host: //p')
echo "image.sh: cargo build --release -p berth --target $host (static)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p berth --target "$host"
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/$host/release/berth
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked'; then
    echo "image.sh: $bin is dynamically linked:" >&2
    ldd "$bin" >&2
    exit 1
fi
version=$("$bin" --version | awk '{print $2}')

# --- the build context -----------------------------------------------------------------------
ctx=$target_dir/image
rm -rf "$ctx"
mkdir -p "$ctx"/rootfs/{bin,etc/docker/registry,etc/ssl/certs,tmp,var/lib/registry}
root=$ctx/rootfs
# line tables are kept in the release profile for backtraces; the image leaves them out
strip --strip-debug -o "$root/bin/registry" "$bin"
ln -s registry "$root/bin/berth"
install -m 644 image/config.yml "$root/etc/docker/registry/config.yml"
certs=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [[ ! -s $certs ]]; then
    echo "image.sh: no CA bundle at $certs (apt-get install ca-certificates)" >&2
    exit 1
fi
install -m 644 "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 644 "$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chmod 755 "$root/var/lib/registry" "$root/bin"
install -m 644 image/Dockerfile "$ctx/Dockerfile"

# The root Dockerfile (for `docker build .` on a connected machine) ends with the same
# instructions as image/Dockerfile; refuse to build if they have drifted apart.
instructions() {
    awk '/^COPY /{n=NR} {l[NR]=$0} END{for(i=n+1;i<=NR;i++) print l[i]}' "$1" | sed '/^#/d;/^$/d'
}
if ! diff <(instructions image/Dockerfile) <(instructions Dockerfile) >/dev/null; then
    echo "image.sh: Dockerfile and image/Dockerfile differ after their COPY line:" >&2
    diff <(instructions image/Dockerfile) <(instructions Dockerfile) >&2 || true
    exit 1
fi

if ! grep -qx "ARG VERSION=$version" image/Dockerfile; then
    echo "image.sh: berth is $version: set ARG VERSION=$version in image/Dockerfile and Dockerfile" >&2
    exit 1
fi

if ((context_only)); then
    echo "image.sh: build context in $ctx" >&2
    exit 0
fi

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=${BERTH_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
docker=${DOCKER:-docker}
format=()
# podman builds OCI images by default, which have no HEALTHCHECK
if $docker --version 2>/dev/null | grep -qi podman; then
    format=(--format docker)
fi
echo "image.sh: $docker build -t $tag $ctx (version $version)" >&2
$docker build "${format[@]}" -t "$tag" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "SOURCE=$source_url" \
    "$ctx"
size=$($docker image inspect "$tag" --format '{{.Size}}')
echo "image.sh: built $tag ($version), $((size / 1024)) KiB" >&2
