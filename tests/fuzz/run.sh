#!/usr/bin/env bash
# Runs every fuzz target in build/fuzz for FUZZ_SECONDS (default 20) under ASan/UBSan, from its
# seed corpus in tests/fuzz/corpus/<name>/ when there is one. Prints one line per target and
# "fuzz: N passed, N failed"; exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-20}
passed=0 failed=0
mkdir -p build/fuzz-work
for bin in build/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin" | sed 's/^fuzz_//')
    work=build/fuzz-work/$name
    mkdir -p "$work/corpus"
    seeds=tests/fuzz/corpus/$name
    [ -d "$seeds" ] || seeds=""
    if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/" "$work/corpus" $seeds >"$work/log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | tail -1 | awk '{print $NF}')
        echo "fuzz $name: ok ($seconds s, ${runs:-?} runs, no crash)"
        passed=$((passed + 1))
    else
        echo "fuzz $name: FAILED (see $work/log)"; tail -30 "$work/log"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
