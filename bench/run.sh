#!/bin/sh
# One command for the migration benchmark: ferry -> ferry against
# qemu-system-x86_64 -> same, on this host, in the same run.
#
#   bench/run.sh [BUILDDIR] [bench.py options...]
#
# BUILDDIR defaults to build (relative to the source tree).  Results go to
# bench/results/<date>.json and a table on stdout; see bench/README.md.
set -eu
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=build
case "${1:-}" in
    ""|-*) ;;
    *) BUILD=$1; shift ;;
esac
case "$BUILD" in
    /*) ;;
    *) [ -d "$BUILD" ] && BUILD=$(cd "$BUILD" && pwd) || BUILD=$SRCDIR/$BUILD ;;
esac
if [ ! -x "$BUILD/ferry" ]; then
    echo "bench: $BUILD/ferry not found; build first (ninja -C $BUILD)" >&2
    exit 2
fi
rc=0
python3 "$SRCDIR/bench/bench.py" --build "$BUILD" "$@" || rc=$?
# postcopy against QEMU (bench/postcopy.py; its own options when run alone)
python3 "$SRCDIR/bench/postcopy.py" --build "$BUILD" || rc=$?
exit $rc
