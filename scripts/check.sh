#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# `make check`: every suite of the project, then one summary line
#   splitmem check: N passed, M failed
# N and M count tests: a program that reports subtests (TAP) counts as
# its subtests, any other program as one test. A skipped test counts as
# failed (a test that cannot run is not a pass) and is listed as skipped;
# a program that exits non-zero with no failed subtest is a failure.
#
#   scripts/check.sh [--only SUITE]...
#   suites: unit sanitize style qtest system
set -uo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
QEMU_BUILD=$BUILD/qemu/build
LOGDIR=$BUILD/check-logs
COUNT=$SRCDIR/scripts/count-tests.py
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

# System tests: name:command. Each exits non-zero on failure; one that
# prints TAP counts as its subtests. Guest kernels are named by their
# role in guest/kernels.
SYSTEM_TESTS=(
    "split-multihost:python3 tests/split/test_multihost.py"
    "split-devices:python3 tests/split/test_devices.py --quick"
    "split-reconnect:python3 tests/split/test_reconnect.py --quick"
    "split-blackhole:python3 tests/split/test_blackhole.py --quick"
    "vmi-default:python3 tests/vmi/vmi-validate.py"
    "vmi-trixie:python3 tests/vmi/vmi-validate.py --kernel-pkg trixie"
    "fuzz:FUZZ_SECONDS=20 fctrans/fuzz/run-fuzzers.sh"
)

# Sanitizer builds (separate meson build directories): which tests run
# under which sanitizer. Any report fails the test.
SAN_ASAN_TESTS=(test-vmi test-btf test-kimage test-ksymtab test-profile
                test-pagemap test-subhost test-subhost-config
                test-histogram test-bitmap test-export-id)
SAN_TSAN_TESTS=(test-subhost)

PASS=0
FAIL=0
SKIP=0
FAILED=()
ONLY=()
while [ $# -gt 0 ]; do
    case "$1" in
    --only) ONLY+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--only unit|sanitize|style|qtest|system]..." >&2; exit 2 ;;
    esac
done
mkdir -p "$LOGDIR"

want() {
    [ ${#ONLY[@]} -eq 0 ] && return 0
    local s
    for s in "${ONLY[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}
section() { printf '\n=== %s ===\n' "$1"; }

# Add the output of count-tests.py to the totals; list what failed.
tally() {
    local out p f s
    out=$(python3 "$COUNT" "$@") || { FAIL=$((FAIL + 1)); FAILED+=("count-tests $*"); return; }
    echo "$out" | grep -v '^totals '
    read -r p f s < <(echo "$out" | sed -n 's/^totals //p')
    PASS=$((PASS + p))
    FAIL=$((FAIL + f + s))
    SKIP=$((SKIP + s))
    while read -r line; do
        FAILED+=("$line")
    done < <(echo "$out" | sed -n 's/^  \(failed\|skipped\): /\1: /p')
}

# One test that is a single check (no subtests).
single() {
    local name=$1 rc=$2
    if [ "$rc" -eq 0 ]; then
        PASS=$((PASS + 1)); echo "$name: passed"
    else
        FAIL=$((FAIL + 1)); FAILED+=("failed: $name"); echo "$name: FAILED"
    fi
}

# `meson test` in DIR with extra arguments; counts every subtest.
meson_suite() {
    local label=$1 dir=$2 log json
    shift 2
    log=$LOGDIR/$label.log
    # meson appends a wrapper's name to the log's: checklog-setarch.json.
    rm -f "$dir"/meson-logs/checklog*.json
    meson test -C "$dir" --print-errorlogs --num-processes 2 \
        --logbase checklog "$@" > "$log" 2>&1
    rc=$?
    echo "($label: meson test exited $rc; log $log)"
    json=$(ls "$dir"/meson-logs/checklog*.json 2>/dev/null | head -n1)
    if [ -z "$json" ] || [ ! -s "$json" ]; then
        tail -n 30 "$log"
        single "$label: meson test ran nothing" 1
        return
    fi
    # The plain unit run names tests alone; sanitizer runs say which.
    local before=$FAIL
    if [ "$label" = unit ]; then tally meson "$json"; else tally meson "$json" "$label"; fi
    # meson stopped early (or failed outside any test): what never ran
    # is not in its log, so the run itself fails.
    if [ $rc -ne 0 ] && [ $FAIL -eq $before ]; then
        tail -n 20 "$log"
        single "$label: meson test exited $rc with no failed test" 1
    fi
}

if want unit; then
    section "unit tests (meson test -C build/splitmem)"
    meson_suite unit "$BUILD/splitmem"
fi

if want sanitize; then
    section "unit tests under ASan+UBSan and TSan, release build (build/asan, build/tsan, build/release)"
    # Reports abort the test, so a test with one fails. GLib 2.74's slice
    # allocator recycles memory between threads behind TSan's back (glib
    # is not instrumented): plain malloc instead. Only for these runs.
    san_env=(ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1
             UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
             TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1
             G_SLICE=always-malloc)
    for san in asan tsan; do
        dir=$BUILD/$san
        case $san in
        asan) opt=address,undefined; tests=("${SAN_ASAN_TESTS[@]}") ;;
        tsan) opt=thread; tests=("${SAN_TSAN_TESTS[@]}") ;;
        esac
        if [ ! -f "$dir/build.ninja" ]; then
            meson setup "$dir" "$SRCDIR" -Db_sanitize=$opt \
                -Dc_args=-fno-sanitize-recover=all \
                -Dc_link_args=-fno-sanitize-recover=all > "$LOGDIR/$san-setup.log" 2>&1 ||
                { tail -n 20 "$LOGDIR/$san-setup.log"; single "$san: meson setup" 1; continue; }
        fi
        if ! meson compile -C "$dir" "${tests[@]/#/fctrans/tests/}" \
            > "$LOGDIR/$san-build.log" 2>&1; then
            tail -n 30 "$LOGDIR/$san-build.log"; single "$san: build" 1; continue
        fi
        # TSan needs the address space layout it was built for: newer
        # kernels randomize mmap with more bits than GCC 12's runtime
        # accepts, so run it with randomization off.
        wrap=()
        [ $san = tsan ] && wrap=(--wrapper "setarch $(uname -m) -R")
        export "${san_env[@]}"
        meson_suite "$san" "$dir" "${wrap[@]}" "${tests[@]}"
        unset ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS G_SLICE
    done
    # A release build (-O3, so GCC's flow warnings such as
    # maybe-uninitialized) with -Werror compiles every target.
    dir=$BUILD/release
    { [ -f "$dir/build.ninja" ] || meson setup "$dir" "$SRCDIR" -Dbuildtype=release; } \
        > "$LOGDIR/release-build.log" 2>&1 &&
        meson compile -C "$dir" >> "$LOGDIR/release-build.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || grep -E 'error|warning' "$LOGDIR/release-build.log" | head -n 20
    single "release build with -Werror" $rc
fi

if want style; then
    section "style (the base tree's scripts/checkpatch.pl, patch export)"
    checkpatch=$BUILD/qemu/scripts/checkpatch.pl
    if [ ! -f "$checkpatch" ]; then
        echo "$checkpatch missing (run ./configure)"
        single "style: checkpatch" 1
    else
        mapfile -t files < <(cd "$SRCDIR" && git ls-files -- '*.c' '*.h' 2>/dev/null)
        bad=()
        for f in "${files[@]}"; do
            # checkpatch relaxes its rules for tests (g_assert_cmp*...) by
            # path: name a file under some/tests/ relative to some/.
            dir=$SRCDIR
            rel=$f
            case "$f" in
            */tests/*) dir=$SRCDIR/${f%%/tests/*}; rel=tests/${f#*/tests/} ;;
            esac
            if ! out=$(cd "$dir" && perl "$checkpatch" --no-tree --terse -f "$rel" 2>&1); then
                echo "$out" | grep -E 'ERROR' | head -n 10
                bad+=("$f")
            fi
        done
        for p in "$SRCDIR"/patches/*.patch; do
            [ -e "$p" ] || continue
            if ! out=$(perl "$checkpatch" --no-tree --terse "$p" 2>&1); then
                echo "$out" | grep -E 'ERROR' | head -n 10
                bad+=("patches/$(basename "$p")")
            fi
        done
        echo "checkpatch: ${#files[@]} source files and" \
             "$(ls "$SRCDIR"/patches/*.patch 2>/dev/null | wc -l) patches"
        [ ${#bad[@]} -eq 0 ] || echo "checkpatch: errors in ${bad[*]}"
        single "style: checkpatch" ${#bad[@]}
        # patches/ must be exactly what the base tree's commits export.
        "$SRCDIR/scripts/export-patches.sh" --check > "$LOGDIR/patches-roundtrip.log" 2>&1
        rc=$?
        [ $rc -eq 0 ] || tail -n 20 "$LOGDIR/patches-roundtrip.log"
        single "style: patches/ match build/qemu's commits" $rc
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
            echo "$bin not built"
            single "qtest $name" 1
            continue
        fi
        start=$SECONDS
        timeout 1800 "$bin" --tap -k ${path:+-p "$path"} > "$log" 2>&1
        rc=$?
        echo "(qtest $name: $((SECONDS - start)) s, exit $rc)"
        tally run "qtest $name" "$log" $rc
    done
fi

if want system; then
    section "system tests"
    echo "guest kernels (guest/kernels):"
    "$SRCDIR/scripts/guest-kit.sh" --list | sed 's/^/  /'
    for t in "${SYSTEM_TESTS[@]}"; do
        name=${t%%:*}
        cmd=${t#*:}
        log=$LOGDIR/system-$name.log
        start=$SECONDS
        echo "--- $name: $cmd"
        (cd "$SRCDIR" && eval "$cmd") 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        echo "--- $name: exit $rc ($((SECONDS - start)) s)"
        tally run "system $name" "$log" $rc
    done
fi

echo
for f in "${FAILED[@]}"; do echo "$f"; done
[ $SKIP -eq 0 ] || echo "($SKIP skipped, counted as failed)"
echo "splitmem check: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
