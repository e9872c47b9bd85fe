#!/usr/bin/env bash
# `make test`: unit tests (cmocka, ASan/UBSan), fuzz smoke runs (libFuzzer, ASan/UBSan) and the
# end-to-end suite (pytest, real Python processes). Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0

count_unit() { # cmocka prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)..."
    local log=$1 p f
    p=$(grep -o '\[  PASSED  \] [0-9]*' "$log" | awk '{s+=$NF} END {print s+0}')
    f=$(grep -o '\[  FAILED  \] [0-9]*' "$log" | awk '{s+=$NF} END {print s+0}')
    passed=$((passed + p)); failed=$((failed + f))
}

echo "== unit tests"
for t in build/unit/test_*; do
    [ -x "$t" ] || continue
    log=build/unit/$(basename "$t").log
    if ! "$t" >"$log" 2>&1; then
        cat "$log"
        grep -q '\[  FAILED  \]' "$log" || failed=$((failed + 1)) # crashed before its summary
    fi
    count_unit "$log"
    echo "$(basename "$t"): $(grep -o '\[  PASSED  \] [0-9]*' "$log" | awk '{s+=$NF} END {print s+0}') passed, $(grep -o '\[  FAILED  \] [0-9]*' "$log" | awk '{s+=$NF} END {print s+0}') failed"
done

echo "== fuzz smoke runs (${FUZZ_SECONDS:-20} s each)"
fuzz_log=build/fuzz-smoke.log
FUZZ_SECONDS=${FUZZ_SECONDS:-20} tests/fuzz/run.sh | tee "$fuzz_log"
p=$(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$fuzz_log")
f=$(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$fuzz_log")
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1}))

echo "== end-to-end tests"
e2e_log=build/e2e.log
/usr/bin/python3 -m pytest -q -rfE tests/e2e 2>&1 | tee "$e2e_log"
p=$(grep -Eo '[0-9]+ passed' "$e2e_log" | tail -1 | awk '{print $1}')
f=$(grep -Eo '[0-9]+ (failed|error)' "$e2e_log" | awk '{s+=$1} END {print s+0}')
[ -z "$p" ] && [ "$f" -eq 0 ] && f=1 # pytest did not run
passed=$((passed + ${p:-0})); failed=$((failed + f))

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
