#!/bin/bash
# Run the whole test suite of one build directory and print a closing line
# "BUILD: N passed, N failed, N skipped".  Exit status 1 if anything failed.
#   scripts/run-tests.sh [BUILDDIR] [extra meson test args]
set -uo pipefail
builddir="${1:-build}"
shift || true
cd "$(dirname "$0")/.."

ninja -C "$builddir" >/dev/null || { echo "$(basename "$builddir"): build failed"; echo "0 passed, 1 failed"; exit 1; }

# Sanitizer builds: fail on the first report, keep the reports readable.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp:print_suppressions=0}"

# ThreadSanitizer builds run the unit and functional suites only (interop
# drives QEMU, fuzz replays are single-threaded) and fail on any report:
# exitcode makes a reporting ferry child exit non-zero too.
sanitize=$(python3 - "$builddir" <<'PY'
import json, sys
opts = json.load(open(sys.argv[1] + "/meson-info/intro-buildoptions.json"))
print(next((o["value"] for o in opts if o["name"] == "b_sanitize"), "none"))
PY
)
suites=()
if [ "$sanitize" = thread ]; then
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:exitcode=66:suppressions=$PWD/scripts/tsan.supp}"
    # GLib 2.74's slice allocator recycles blocks between threads under
    # its own futex locks: plain malloc lets TSan see who owns what.
    export G_SLICE=always-malloc
    suites=(--suite unit --suite functional)
elif [ "$sanitize" != none ]; then
    # The libvirt suite runs in the plain build only: libvirtd and QEMU
    # are not instrumented, and it would start its daemons once more.
    suites=(--no-suite libvirt)
fi

meson test -C "$builddir" --print-errorlogs "${suites[@]}" "$@"
rc=$?

log="$builddir/meson-logs/testlog.json"
read -r passed failed skipped < <(python3 - "$log" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result", "")
        if r in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif r == "SKIP":
            s += 1
        else:
            f += 1
except OSError:
    f = 1
print(p, f, s)
PY
)
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo "$(basename "$builddir"): $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
