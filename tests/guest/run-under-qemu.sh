#!/bin/bash
# Boot the test guest under real QEMU, let every vCPU finish a few sweeps,
# stop it, dump RAM with pmemsave and run guest-check on the dump.
#
#   tests/guest/run-under-qemu.sh [--build DIR] [--smp N] [--ncpus N]
#       [--accel kvm|tcg] [--sweeps K] [--append "key=val ..."] [--corrupt]
#
# --corrupt damages one page of the dump before checking and expects the
# check to FAIL.  Exit status: 0 if the outcome is the expected one.
set -euo pipefail

BUILD=build
SMP=2
NCPUS=
ACCEL=kvm
SWEEPS=3
APPEND=
CORRUPT=0
MEM_MB=512
TIMEOUT=120

while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --smp) SMP=$2; shift 2 ;;
    --ncpus) NCPUS=$2; shift 2 ;;
    --accel) ACCEL=$2; shift 2 ;;
    --sweeps) SWEEPS=$2; shift 2 ;;
    --append) APPEND=$2; shift 2 ;;
    --corrupt) CORRUPT=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--smp N] [--ncpus N] [--accel A]" \
            "[--sweeps K] [--append STR] [--corrupt]" >&2; exit 2 ;;
    esac
done
NCPUS=${NCPUS:-$SMP}

SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
case "$BUILD" in /*) ;; *) BUILD=$SRCDIR/$BUILD ;; esac
GUEST=$BUILD/tests/guest/guest.bin
CHECK=$BUILD/tests/guest/guest-check
for f in "$GUEST" "$CHECK"; do
    [ -e "$f" ] || { echo "missing $f: build first" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/guest-qemu.XXXXXX)
QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

OUT=$TMP/serial.out
SOCK=$TMP/qmp.sock
DUMP=$TMP/ram.dump
: > "$OUT"

qemu-system-x86_64 -M pc -accel "$ACCEL" -m "$MEM_MB" -smp "$SMP" \
    -nodefaults -display none -serial "file:$OUT" \
    -kernel "$GUEST" -append "ncpus=$NCPUS $APPEND" \
    -qmp "unix:$SOCK,server=on,wait=off" 2>"$TMP/qemu.err" &
QEMU_PID=$!

# Wait for the parameter line and SWEEPS markers from every CPU.
deadline=$((SECONDS + TIMEOUT))
params=
while :; do
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
        echo "QEMU exited early:" >&2; cat "$TMP/qemu.err" "$OUT" >&2; exit 2
    fi
    params=$(grep -m1 '^guest: ncpus=' "$OUT" || true)
    if grep -q '!' "$OUT"; then
        echo "guest exception:" >&2; cat "$OUT" >&2; exit 2
    fi
    if [ -n "$params" ]; then
        n=$(sed 's/.*ncpus=\([0-9]*\).*/\1/' <<<"$params")
        marks=$(sed -n '/^guest: ncpus=/,$p' "$OUT" | tail -n +2 | tr -d '\n')
        done_all=1
        for ((i = 0; i < n; i++)); do
            c=$(tr -cd "$((i % 10))" <<<"$marks" | wc -c)
            # digits of CPUs i and i+10... share a character; good enough
            [ "$c" -ge "$SWEEPS" ] || done_all=0
        done
        [ $done_all = 1 ] && break
    fi
    if [ $SECONDS -ge $deadline ]; then
        echo "timeout waiting for sweeps; serial so far:" >&2
        cat "$OUT" >&2; exit 2
    fi
    sleep 0.5
done
echo "$params"

python3 - "$SOCK" "$DUMP" "$MEM_MB" <<'EOF'
import json, socket, sys
sock_path, dump, mem_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)
f = s.makefile('rw')
def cmd(name, **args):
    f.write(json.dumps({'execute': name, 'arguments': args}) + '\n')
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if 'return' in msg:
            return msg['return']
        if 'error' in msg:
            sys.exit('QMP %s failed: %s' % (name, msg['error']))
json.loads(f.readline())                    # greeting
cmd('qmp_capabilities')
cmd('stop')
cmd('pmemsave', val=0, size=mem_mb << 20, filename=dump)
cmd('quit')
EOF
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
echo "serial: $(sed -n '/^guest: ncpus=/,$p' "$OUT" | tail -n +2 | tr -d '\n' | head -c 200)"

get() { sed "s/.* $1=\([0-9a-fx]*\).*/\1/" <<<"$params"; }
START=$(get start)
if [ $CORRUPT = 1 ]; then
    # Overwrite one word in the middle of CPU 0's slice with garbage.
    python3 - "$DUMP" "$START" <<'EOF'
import sys
dump, start = sys.argv[1], int(sys.argv[2], 0)
with open(dump, 'r+b') as f:
    f.seek(start + 64 * 4096 + 8 * 100)
    f.write(b'\xa5' * 8)
print('corrupted one word at 0x%x' % (start + 64 * 4096 + 800))
EOF
fi

set +e
"$CHECK" --dump "$DUMP" --ncpus "$(get ncpus)" --start "$START" \
    --end "$(get end)" --seed "$(get seed)" --min-sweeps 1
rc=$?
set -e
if [ $CORRUPT = 1 ]; then
    [ $rc = 1 ] && { echo "PASS: corrupted dump rejected"; exit 0; }
    echo "FAIL: corrupted dump not rejected (rc=$rc)"; exit 1
fi
[ $rc = 0 ] && { echo "PASS: dump consistent"; exit 0; }
echo "FAIL: guest-check rc=$rc"; exit 1
