#!/usr/bin/env bash
# The default test suite's size and time as CI runs it: `.ci/run` (set-up, then `make test`) in a
# fresh clone of this repository's HEAD. Prints one Markdown sentence (README.md's Tests section).
#   benchmarks/time_test_suite.sh        (about as long as the set-up plus the suite)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
git clone --quiet "${repo}" "${tmp}/clone"
cd "${tmp}/clone"
start=${SECONDS}
if ! .ci/run > "${tmp}/log" 2>&1; then
    tail -n 30 "${tmp}/log" >&2
    echo "time_test_suite: .ci/run failed (log above)" >&2
    exit 1
fi
total=$((SECONDS - start))
# pytest's last line: "==== 756 passed, 3 deselected in 516.12s (0:08:36) ===="
summary=$(grep -E '^=+ .*[0-9]+ passed.* in [0-9.]+s' "${tmp}/log" | tail -n 1)
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<< "${summary}")
suite=$(sed -E 's/.* in ([0-9]+)(\.[0-9]+)?s.*/\1/' <<< "${summary}")
if [ -z "${summary}" ]; then
    echo "time_test_suite: no pytest summary line in the output of .ci/run" >&2
    exit 1
fi
mins() { echo "$(($1 / 60)) min $(($1 % 60)) s"; }
echo "The default suite (${passed} tests) took $(mins "${suite}") in a fresh-clone run of \`.ci/run\` ($(mins "${total}") with the set-up)."
