# `docker build -t berth .` on a machine that can pull images: compiles berth in a Rust
# container, then builds the same FROM scratch image as scripts/image.sh (image/Dockerfile),
# whose instructions this file repeats after its COPY line (scripts/image.sh refuses to build
# when they differ). Where no base image can be pulled, run scripts/image.sh instead, which
# needs only cargo and docker. The test command cannot pull rust:1-bookworm, so this file is
# not built by it; scripts/image.sh --context-only, its one build step, is.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/image.sh --context-only

FROM scratch
COPY --from=build /src/target/image/rootfs/ /

# the crate version (scripts/image.sh checks it; passes the binary's own as well)
ARG VERSION=0.1.0
ARG REVISION=unknown
# where the source is (scripts/image.sh: $BERTH_IMAGE_SOURCE, else the git remote `origin`)
ARG SOURCE=
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="A container registry: a drop-in for CNCF Distribution (registry:2)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

VOLUME ["/var/lib/registry"]
EXPOSE 5000
# registry:2's entrypoint is a shell script that runs `registry serve FILE` for a file
# argument and `registry ARGS` otherwise; berth does the same itself (no shell here):
# `docker run berth garbage-collect /etc/docker/registry/config.yml` works as with registry:2.
ENTRYPOINT ["/bin/registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
# berth stops accepting, lets requests in flight finish (http.draintimeout, 30 s by
# default; `docker stop` waits 10 s unless given -t or the container --stop-timeout).
STOPSIGNAL SIGTERM
# GET /readyz on the port http.addr names (no shell or curl needed): healthy while the
# storage answers and no `health` check fails.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/bin/registry", "healthcheck", "/etc/docker/registry/config.yml"]
