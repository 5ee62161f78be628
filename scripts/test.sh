#!/usr/bin/env bash
# The project's one test command (README.md; .ci/run calls it). Installs what the tests need
# on a fresh Debian machine (and builds Garage, an S3 server, once), then: format and lint
# checks, unit and HTTP integration tests (the storage driver suite against the filesystem
# and against Garage), end-to-end tests driving real clients (skopeo, podman, docker) and
# Distribution, on the filesystem and on S3 with three replicas (and a cluster of three Garage
# nodes and three replicas behind nginx, killed node by node), and a bounded fuzzing run of
# every parser that sees client input.
set -euo pipefail
cd "$(dirname "$0")/.."

export CI="${CI:-}"
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "installing test dependencies"
scripts/install-deps.sh

step "starting Garage, the S3 server the S3 driver's tests run against"
# Built once with cargo and cached (scripts/garage.sh); its own directory per run, so
# concurrent runs on one machine do not share a bucket.
BERTH_GARAGE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/berth-garage.XXXXXX")
export BERTH_GARAGE_DIR
trap 'scripts/garage.sh stop' EXIT
scripts/garage.sh start
eval "$(scripts/garage.sh env)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "the container image's static release build (tests/e2e/image.sh packs it)"
scripts/image.sh --context-only

step "end-to-end tests with real clients"
# `cargo test --workspace` has just built target/debug/berth (the berth crate's own tests need
# it); a separate `cargo build -p berth` would resolve features differently and rebuild the
# dependencies for nothing.
[ -x target/debug/berth ] || cargo build -p berth
BERTH_BIN="$PWD/target/debug/berth" tests/e2e/run.sh

step "end-to-end tests with berth on S3 (Garage), three replicas on one bucket, and a cluster under faults"
# cluster: scripts/cluster.sh's three Garage nodes, three replicas and nginx, with Garage nodes
# and replicas killed during pushes (its own Garage, not the one above).
BERTH_STORAGE=s3 BERTH_BIN="$PWD/target/debug/berth" \
    tests/e2e/run.sh berth skopeo podman docker s3_replicas cluster

step "fuzzing every parser that sees client input (30 s each)"
scripts/fuzz.sh 30

step "all tests passed"
