#!/usr/bin/env bash
# Fuzzes every parser that sees client input (the targets in fuzz/fuzz_targets/) for SECONDS
# each (default 60), one after the other, and fails on the first crash, panic, broken property
# or hang. Each run starts from the committed seeds in fuzz/corpus/<target>/ and writes what it
# discovers to a scratch directory, so the committed corpus stays small.
#
# libFuzzer needs nightly-only rustc flags (-Z sanitizer, coverage instrumentation); this
# machine has stable only, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. Targets are
# built in release mode with debug assertions (so integer overflow is a crash) and
# AddressSanitizer, cargo-fuzz's defaults otherwise.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

flags=(-O --debug-assertions)
echo "building ${#targets[@]} fuzz targets"
cargo fuzz build "${flags[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

summary=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    echo "=== fuzzing $t for ${secs}s"
    if cargo fuzz run "${flags[@]}" "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
        echo "--- $t failed; the end of its log:"
        tail -n 60 "$work/$t.log"
    fi
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" | tail -n 1)"
    corpus="$(find "$work/$t" -type f | wc -l)"
    summary+=("$(printf '%-14s %-7s %12s execs %9s execs/s %6s new inputs' \
        "$t" "$result" "${execs:-?}" "${rate:-?}" "$corpus")")
    if [ "$result" = FAILED ]; then
        break
    fi
done

echo
echo "=== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
    echo "a target crashed: the input is under fuzz/artifacts/<target>/; reproduce with"
    echo "  cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} <target> artifacts/<target>/<file>"
fi
exit "$status"
