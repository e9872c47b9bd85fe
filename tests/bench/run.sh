#!/usr/bin/env bash
# Runs the conprof benchmarks (built by `make bench` into build/bench/) one after the other, shows
# what each prints, then one closing table "figure / value / target / ratio" gathered from their
# SUMMARY lines. ratio = value / target, so below 1 is within the target. Timings are reported,
# never asserted: the exit status is non-zero only when a benchmark could not run.
#
#   BENCH_ONLY="sample rss"   run only these (sample austin overhead slowdown rss discovery ...)
#   BUILD=dir                 where the binaries are (default: build)
# Every other knob is an environment variable of one benchmark; see tests/bench/README.md.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$repo/build}
# Ours first, in this order, then any other tests/bench/bench_*.c (e.g. discovery).
all="sample austin overhead slowdown rss"
for src in "$repo"/tests/bench/bench_*.c; do
    name=$(basename "$src" .c)
    name=${name#bench_}
    case " $all " in *" $name "*) ;; *) all="$all $name" ;; esac
done
only=${BENCH_ONLY:-$all}
logdir=$(mktemp -d "${TMPDIR:-/tmp}/conprof-bench-run.XXXXXX")
trap 'rm -rf "$logdir"' EXIT

failed=()
started=$(date +%s)
for name in $only; do
    bin="$build/bench/bench_$name"
    echo
    echo "=== bench_$name ==="
    if [ ! -x "$bin" ]; then
        echo "missing $bin (run 'make bench')"
        failed+=("$name")
        continue
    fi
    t0=$(date +%s)
    "$bin" | tee "$logdir/$name.log" | grep -v '^SUMMARY'
    status=${PIPESTATUS[0]}
    echo "(bench_$name: $(($(date +%s) - t0)) s, exit $status)"
    [ "$status" -eq 0 ] || failed+=("$name")
done

echo
echo "=== summary ($(($(date +%s) - started)) s; ratio = value / target, below 1 is within) ==="
for name in $only; do cat "$logdir/$name.log" 2>/dev/null; done | awk -F '\t' '
    $1 == "SUMMARY" { n++; fig[n] = $2; val[n] = $3; tgt[n] = $4; rat[n] = $5; note[n] = $6
                      if (length($2) > wf) wf = length($2)
                      if (length($3) > wv) wv = length($3) }
    END {
        if (wf < 6) wf = 6
        if (wv < 5) wv = 5
        printf "%-" wf "s  %-" wv "s  %-10s  %-6s  %s\n", "figure", "value", "target", "ratio", "note"
        for (i = 1; i <= n; i++)
            printf "%-" wf "s  %-" wv "s  %-10s  %-6s  %s\n", fig[i], val[i], tgt[i], rat[i], note[i]
        if (!n) print "(no figures)"
    }'
if [ ${#failed[@]} -gt 0 ]; then
    echo "benchmarks that could not run: ${failed[*]}"
    exit 1
fi
exit 0
