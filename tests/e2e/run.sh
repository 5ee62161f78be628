#!/usr/bin/env bash
# Runs every end-to-end test in tests/e2e against one registry kind (berth by
# default) and prints a summary; exits non-zero if any test failed. This is
# what CI calls to prove berth works with real clients. It builds nothing:
# berth is $BERTH_BIN, else target/release/berth (else target/debug/berth).
#
# usage: tests/e2e/run.sh [berth|distribution] [TEST...]
#   TEST: walkthrough_curl skopeo podman docker containerd interop gc_untagged gc auth_tls image proxy
#         ui (default: all), or s3_replicas, cluster
#   E2E_TIMEOUT: seconds allowed per test script (default 600)
#   BERTH_STORAGE=s3: registries store in the S3 bucket BERTH_TEST_S3_* names
#     (scripts/garage.sh env) instead of a directory; s3_replicas needs it. cluster starts
#     its own three Garage nodes, three replicas and nginx (scripts/cluster.sh) either way.

set -euo pipefail

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$dir/../.." && pwd)
kind=${1:-berth}
shift || true
case $kind in
    berth | distribution) ;;
    *)
        echo "usage: $0 [berth|distribution] [TEST...]" >&2
        exit 2
        ;;
esac
tests=("$@")
if ((${#tests[@]} == 0)); then
    tests=(walkthrough_curl skopeo podman docker containerd interop gc_untagged gc auth_tls image proxy ui)
fi
echo "run.sh: storage: ${BERTH_STORAGE:-filesystem}"

if [[ $kind == berth ]]; then
    if [[ -n ${BERTH_BIN:-} ]]; then
        echo "run.sh: berth binary: $BERTH_BIN"
    elif [[ -x $root/target/release/berth ]]; then
        echo "run.sh: berth binary: target/release/berth"
    elif [[ -x $root/target/debug/berth ]]; then
        echo "run.sh: berth binary: target/debug/berth (no release build found)"
    else
        echo "run.sh: no berth binary: build it (cargo build --release) or set BERTH_BIN" >&2
        exit 1
    fi
fi

# a test that skips (missing tool outside CI) exits 77
export E2E_SKIP_EXIT=77
declare -A result=() secs=()
passed=0 failed=0 skipped=0
for t in "${tests[@]}"; do
    script=$dir/$t.sh
    if [[ ! -x $script ]]; then
        echo "run.sh: no such test: $t" >&2
        result[$t]=FAIL secs[$t]=0 failed=$((failed + 1))
        continue
    fi
    echo "=== $t ($kind)"
    start=$SECONDS
    rc=0
    timeout --kill-after=15 "${E2E_TIMEOUT:-600}" "$script" "$kind" || rc=$?
    secs[$t]=$((SECONDS - start))
    case $rc in
        0) result[$t]=PASS passed=$((passed + 1)) ;;
        77) result[$t]=SKIP skipped=$((skipped + 1)) ;;
        124 | 137) result[$t]="FAIL (timed out)" failed=$((failed + 1)) ;;
        *) result[$t]="FAIL (exit $rc)" failed=$((failed + 1)) ;;
    esac
done

echo
echo "=== e2e summary ($kind)"
for t in "${tests[@]}"; do
    printf '  %-18s %-18s %4ss\n' "$t" "${result[$t]}" "${secs[$t]}"
done
echo "e2e: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
