#!/bin/bash
# Run every libFuzzer target for a while, starting from its committed seed
# corpus, and keep what it finds.
#
#   scripts/fuzz.sh [-t SECONDS] [-b BUILDDIR] [TARGET...]
#
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
    *) sed -n '2,12p' "$0"; exit 2 ;;
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

failed=0
for t in $targets; do
    corpus="$builddir/fuzz-corpus/$t"
    artifacts="$builddir/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$builddir/fuzz-artifacts/$t.log"
    echo "== $t: ${secs}s"
    "$builddir/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/corpus/$t" \
        >"$log" 2>&1
    rc=$?
    grep -E "^stat::number_of_executed_units|^#[0-9]+ *DONE" "$log" | tail -2
    if [ $rc -ne 0 ]; then
        failed=1
        echo "$t: CRASH (exit $rc), log $log:"
        grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5
    fi
done
exit $failed
