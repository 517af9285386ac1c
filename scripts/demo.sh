#!/bin/sh
# The main job: see README.md.  scripts/demo.sh [BUILDDIR]
set -e
builddir="${1:-build}"
cd "$(dirname "$0")/.."
ninja -C "$builddir" >/dev/null
FERRY_BUILD="$PWD/$builddir" exec python3 scripts/demo.py
