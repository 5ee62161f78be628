#!/usr/bin/env bash
# The project's one test command (README.md; .ci/run calls it). Installs what the tests need
# on a fresh Debian machine, then: format and lint checks, unit and HTTP integration tests,
# end-to-end tests driving real clients (skopeo, podman, docker) and Distribution, and a
# bounded fuzzing run of every parser that sees client input.
set -euo pipefail
cd "$(dirname "$0")/.."

export CI="${CI:-}"
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "installing test dependencies"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "end-to-end tests with real clients"
# `cargo test --workspace` has just built target/debug/berth (the berth crate's own tests need
# it); a separate `cargo build -p berth` would resolve features differently and rebuild the
# dependencies for nothing.
[ -x target/debug/berth ] || cargo build -p berth
BERTH_BIN="$PWD/target/debug/berth" tests/e2e/run.sh

step "fuzzing every parser that sees client input (30 s each)"
scripts/fuzz.sh 30

step "all tests passed"
