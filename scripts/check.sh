#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# `make check`: every suite of the project, then one summary line
#   splitmem check: N passed, M failed
# Skipped tests count as failed: a test that cannot run is not a pass.
#
#   scripts/check.sh [--only SUITE]...      suites: unit style qtest system
set -uo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
QEMU_BUILD=$BUILD/qemu/build
LOGDIR=$BUILD/check-logs
export QTEST_QEMU_BINARY=$QEMU_BUILD/qemu-system-x86_64

# Upstream qtests that prove the fork keeps QEMU's migration working,
# then the project's own (binary:path; a path runs every test under it).
QTESTS=(
    "migration-test:/x86_64/migration/precopy/tcp/plain"
    "migration-test:/x86_64/migration/postcopy/plain"
    "qmp-cmd-test:"
    "test-hmp:"
    "migration-test:/x86_64/migration/split"
)

# System tests: name:command. Each prints its own findings and exits
# non-zero on failure.
SYSTEM_TESTS=(
    "split-multihost:python3 tests/split/test_multihost.py"
    "vmi-bookworm:python3 tests/vmi/vmi-validate.py"
    "vmi-trixie:python3 tests/vmi/vmi-validate.py --kernel-pkg trixie"
    "fuzz:FUZZ_SECONDS=20 fctrans/fuzz/run-fuzzers.sh"
)

PASS=0
FAIL=0
FAILED=()
ONLY=()
while [ $# -gt 0 ]; do
    case "$1" in
    --only) ONLY+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--only unit|style|qtest|system]..." >&2; exit 2 ;;
    esac
done
mkdir -p "$LOGDIR"

want() {
    [ ${#ONLY[@]} -eq 0 ] && return 0
    local s
    for s in "${ONLY[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}
pass() { PASS=$((PASS + 1)); }
fail() { FAIL=$((FAIL + 1)); FAILED+=("$1"); echo "FAIL: $1"; }
section() { printf '\n=== %s ===\n' "$1"; }

# Count TAP results of one log: ok lines pass; not ok, and ok lines
# marked SKIP, fail.
count_tap() {
    local name=$1 log=$2 ok notok skip
    ok=$(grep -cE '^ok [0-9]+' "$log" || true)
    skip=$(grep -cE '^ok [0-9]+.*# *SKIP' "$log" || true)
    notok=$(grep -cE '^not ok [0-9]+' "$log" || true)
    PASS=$((PASS + ok - skip))
    local i
    for ((i = 0; i < notok + skip; i++)); do
        FAIL=$((FAIL + 1))
    done
    if [ $((notok + skip)) -gt 0 ]; then
        FAILED+=("$name ($notok failed, $skip skipped)")
        grep -E '^not ok|# *SKIP' "$log" | sed 's/^/  /'
    fi
    echo "$name: $((ok - skip)) passed, $((notok + skip)) failed"
    [ "$ok" -gt 0 ] || [ "$notok" -gt 0 ] || fail "$name (no test ran)"
}

if want unit; then
    section "unit tests (meson test -C build/splitmem)"
    log=$LOGDIR/unit.log
    meson test -C "$BUILD/splitmem" --print-errorlogs --num-processes 2 \
        > "$log" 2>&1
    rc=$?
    grep -E '^ *[0-9]+/[0-9]+ ' "$log"
    ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$log" | tail -n1)
    bad=0
    for k in Fail Timeout Skipped 'Unexpected Pass'; do
        n=$(sed -n "s/^$k: *\([0-9]*\).*/\1/p" "$log" | tail -n1)
        bad=$((bad + ${n:-0}))
    done
    if [ -z "$ok" ]; then
        if grep -q 'No tests defined' "$log"; then
            echo "no unit tests defined"
        else
            tail -n 30 "$log"; fail "unit tests did not run"
        fi
    else
        PASS=$((PASS + ok))
        for ((i = 0; i < bad; i++)); do FAIL=$((FAIL + 1)); done
        [ "$bad" -eq 0 ] && [ $rc -eq 0 ] || { FAILED+=("unit tests ($bad)"); tail -n 60 "$log"; }
    fi
fi

if want style; then
    section "style (the base tree's scripts/checkpatch.pl)"
    checkpatch=$BUILD/qemu/scripts/checkpatch.pl
    if [ ! -f "$checkpatch" ]; then
        fail "style: $checkpatch missing (run ./configure)"
    else
        mapfile -t files < <(cd "$SRCDIR" && git ls-files -- '*.c' '*.h' 2>/dev/null)
        for f in "${files[@]}"; do
            # checkpatch relaxes its rules for tests (g_assert_cmp*...) by
            # path: name a file under some/tests/ relative to some/.
            dir=$SRCDIR
            rel=$f
            case "$f" in
            */tests/*) dir=$SRCDIR/${f%%/tests/*}; rel=tests/${f#*/tests/} ;;
            esac
            if out=$(cd "$dir" && perl "$checkpatch" --no-tree --terse -f "$rel" 2>&1); then
                pass
            else
                echo "$out" | grep -E 'ERROR' | head -n 10
                fail "style: $f"
            fi
        done
        for p in "$SRCDIR"/patches/*.patch; do
            [ -e "$p" ] || continue
            if out=$(perl "$checkpatch" --no-tree --terse "$p" 2>&1); then
                pass
            else
                echo "$out" | grep -E 'ERROR' | head -n 10
                fail "style: patches/$(basename "$p")"
            fi
        done
        # patches/ must be exactly what the base tree's commits export.
        if "$SRCDIR/scripts/export-patches.sh" --check > "$LOGDIR/patches-roundtrip.log" 2>&1; then
            pass
        else
            tail -n 20 "$LOGDIR/patches-roundtrip.log"
            fail "patches/ does not match build/qemu's commits"
        fi
        echo "style: ${#files[@]} source files and $(ls "$SRCDIR"/patches/*.patch 2>/dev/null | wc -l) patches checked"
    fi
fi

if want qtest; then
    section "migration qtests (upstream's and splitmem's)"
    for t in "${QTESTS[@]}"; do
        bin=$QEMU_BUILD/tests/qtest/${t%%:*}
        path=${t#*:}
        name=${t%%:*}${path}
        log=$LOGDIR/qtest-$(echo "$name" | tr '/' '_').log
        if [ ! -x "$bin" ]; then
            fail "qtest $name: $bin not built"
            continue
        fi
        start=$SECONDS
        timeout 900 "$bin" --tap -k ${path:+-p "$path"} > "$log" 2>&1
        rc=$?
        count_tap "qtest $name ($((SECONDS - start)) s)" "$log"
        if [ $rc -ne 0 ] && ! grep -qE '^not ok' "$log"; then
            tail -n 20 "$log"; fail "qtest $name exited with $rc"
        fi
    done
fi

if want system; then
    section "system tests"
    for t in "${SYSTEM_TESTS[@]}"; do
        name=${t%%:*}
        cmd=${t#*:}
        log=$LOGDIR/system-$name.log
        start=$SECONDS
        echo "--- $name: $cmd"
        if (cd "$SRCDIR" && eval "$cmd") > >(tee "$log") 2>&1; then
            pass; echo "--- $name: passed ($((SECONDS - start)) s)"
        else
            fail "system: $name ($((SECONDS - start)) s; log $log)"
        fi
    done
fi

echo
for f in "${FAILED[@]}"; do echo "failed: $f"; done
echo "splitmem check: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
