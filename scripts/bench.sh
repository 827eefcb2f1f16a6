#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# `make bench`: every benchmark, each printing its figures beside the
# reference it is measured against in the same run (never asserted: these
# machines are shared and noisy).
#   scripts/bench.sh [subhost|split|devices|reconnect|blackhole]...
set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
which=("$@")
[ ${#which[@]} -gt 0 ] || which=(subhost split devices reconnect blackhole)

for b in "${which[@]}"; do
    case "$b" in
    subhost)
        echo "=== sub-host channel against nbdkit, beside plain TCP ==="
        "$BUILD/splitmem/bench/subhost-bench" ;;
    split)
        echo "=== split migration against QEMU's precopy (1 Gbit/s link) ==="
        python3 "$SRCDIR/bench/split-migration.py" ;;
    devices)
        echo "=== split migration of the device-rich guest, full size ==="
        python3 "$SRCDIR/tests/split/test_devices.py" ;;
    reconnect)
        echo "=== sub-host reconnection after a connection loss, full size ==="
        python3 "$SRCDIR/tests/split/test_reconnect.py" ;;
    blackhole)
        echo "=== a silent sub-host and the source's monitor, full size ==="
        python3 "$SRCDIR/tests/split/test_blackhole.py" ;;
    *)
        echo "bench: unknown benchmark '$b'" \
             "(subhost, split, devices, reconnect, blackhole)" >&2
        exit 2 ;;
    esac
done
