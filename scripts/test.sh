#!/usr/bin/env bash
# The project's one test command (README.md; .ci/run calls it). Installs what the tests need
# on a fresh Debian machine, then: format and lint checks, unit and HTTP integration tests,
# and end-to-end tests driving real clients (skopeo, podman, docker) and Distribution.
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
cargo build -p berth
BERTH_BIN="$PWD/target/debug/berth" tests/e2e/run.sh

step "all tests passed"
