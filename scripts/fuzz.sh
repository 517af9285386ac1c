#!/bin/bash
# Run every libFuzzer target for a while, starting from its committed seed
# corpus, and keep what it finds.
#
#   scripts/fuzz.sh [-t SECONDS] [-b BUILDDIR] [TARGET...]
#   make fuzz FUZZ_SECONDS=N
#
# Prints, per target, the executions, the coverage libFuzzer saw (cov:
# edges, ft: features) and the crashes, then "BUILDDIR: N passed, N
# failed, 0 skipped" (a target with a crash fails).
# BUILDDIR must be configured for fuzzing (created if missing):
#   CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false
# New inputs go to BUILDDIR/fuzz-corpus/TARGET (the seeds are not touched);
# crashes to BUILDDIR/fuzz-artifacts/TARGET/.  Exit status 1 if any target
# crashed, with the reproducer paths printed.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=60
builddir=build-fuzz
while getopts "t:b:h" opt; do
    case $opt in
    t) secs=$OPTARG ;;
    b) builddir=$OPTARG ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

all_targets=$(sed -n "s/^  '\(fuzz-[a-z-]*\)':.*/\1/p" tests/fuzz/meson.build)
targets=${*:-$all_targets}

if [ ! -d "$builddir" ]; then
    CC=clang meson setup "$builddir" -Dfuzzing=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
for t in $targets; do
    ninja -C "$builddir" "tests/fuzz/$t" >/dev/null || {
        echo "$t: build failed (is $builddir configured with -Dfuzzing=true?)"
        exit 1
    }
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}"

# Inputs up to 1 MiB: the stream parsers' limits (PACKAGED depth,
# VMDESCRIPTION nesting) need long inputs to be reached.
max_len=${FUZZ_MAX_LEN:-1048576}
passed=0
failed=0
printf "%-22s %12s %8s %8s %8s\n" target execs cov ft crashes
for t in $targets; do
    corpus="$builddir/fuzz-corpus/$t"
    artifacts="$builddir/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$builddir/fuzz-artifacts/$t.log"
    # Stacks through GLib (no frame pointers) need the slow unwinder,
    # which costs 3-10x the executions; only the leak suppressions need
    # those stacks.  Only the command-line targets allocate for good per
    # input (g_intern_string); the others meet GLib's first-use
    # allocations before their first input (fuzz-qmp.c and
    # fuzz-stream-analyze.c warm up; the stream targets do in set-up).
    asan=$ASAN_OPTIONS
    case $t in
    fuzz-cmdline|fuzz-opts) ;;
    *) asan=${asan/fast_unwind_on_malloc=0/fast_unwind_on_malloc=1} ;;
    esac
    ASAN_OPTIONS=$asan "$builddir/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=4096 -max_len="$max_len" -len_control=200 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/corpus/$t" \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # the last status line: "#N  DONE   cov: C ft: F corp: ..."
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    crashes=$(find "$artifacts" -type f | wc -l)
    printf "%-22s %12s %8s %8s %8s\n" "$t" "${execs:-?}" "${cov:-?}" \
        "${ft:-?}" "$crashes"
    if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=$((failed + 1))
        echo "$t: CRASH (exit $rc), log $log:"
        grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5
    else
        passed=$((passed + 1))
    fi
done
echo "$(basename "$builddir"): $passed passed, $failed failed, 0 skipped"
[ $failed -eq 0 ]
