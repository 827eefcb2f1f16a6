#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Bounded libFuzzer run of the parsers of untrusted input (BTF, profiles,
# kernel images, guest memory), from the seed corpus: builds the project
# with clang in $SPLITMEM_BUILD/fuzz and runs each target for FUZZ_SECONDS
# (default 20).  Exits non-zero if a target crashes, leaks or hangs, or
# if one input takes longer than FUZZ_TIMEOUT seconds (default 2: every
# parser has a fixed work budget, so a slow input is a bug); the
# reproducer is left in $SPLITMEM_BUILD/fuzz/artifacts.
set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
OUT=$BUILD/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-20}
TIMEOUT=${FUZZ_TIMEOUT:-2}
TARGETS=(fuzz-btf fuzz-profile fuzz-kimage fuzz-vmi)

command -v clang >/dev/null || { echo "run-fuzzers: clang is missing (scripts/install-deps.sh)"; exit 1; }
if [ ! -f "$OUT/build.ninja" ]; then
    CC=clang meson setup "$OUT" "$SRCDIR" >/dev/null
fi
meson compile -C "$OUT" fctrans/fuzz/make-seeds \
    "${TARGETS[@]/#/fctrans/fuzz/}" >/dev/null
seeds=$OUT/seeds
rm -rf "$seeds"
"$OUT/fctrans/fuzz/make-seeds" "$seeds"
mkdir -p "$OUT/artifacts"

# One TAP line per target, so that make check counts targets.
echo "1..${#TARGETS[@]}"
failed=0
n=0
for t in "${TARGETS[@]}"; do
    n=$((n + 1))
    corpus=$OUT/corpus/${t#fuzz-}
    mkdir -p "$corpus"
    log=$OUT/$t.log
    if "$OUT/fctrans/fuzz/$t" -max_total_time="$SECONDS_EACH" \
        -rss_limit_mb=2048 -timeout="$TIMEOUT" -max_len=262144 \
        -artifact_prefix="$OUT/artifacts/$t-" \
        "$corpus" "$seeds/${t#fuzz-}" > "$log" 2>&1; then
        echo "ok $n - $t: $(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1)"
    else
        echo "not ok $n - $t (log: $log)"
        { grep -E 'ERROR|SUMMARY|Test unit written' "$log" || true; } |
            head -n 5 | sed 's/^/# /'
        failed=1
    fi
done
exit $failed
