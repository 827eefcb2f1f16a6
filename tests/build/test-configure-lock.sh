#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# qemu.lock is a lock: when the archive no longer serves the pinned qemu
# version, ./configure fails naming --allow-other-base and what is
# served; only with that flag does it take the newest 10.0.y, record it
# in build/qemu-base.used, and reuse the record later. Runs a copy of
# configure with --download-only (no build packages needed) against a
# fake qemu.lock and fake apt-cache/apt-get on PATH. TAP output.
set -uo pipefail

SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
N=0
FAILS=0
ok() { N=$((N + 1)); echo "ok $N - $1"; }
not_ok() {
    N=$((N + 1)); FAILS=$((FAILS + 1)); echo "not ok $N - $1"
    sed 's/^/#   stderr: /' "$TMP/err"
}

# configure looks for qemu.lock next to itself.
mkdir -p "$TMP/src" "$TMP/bin"
cp "$SRCDIR/configure" "$TMP/src/configure"
export SPLITMEM_BUILD=$TMP/build
DL=$TMP/build/dl
USED=$TMP/build/qemu-base.used
export FAKE_LOG=$TMP/apt-get.log

# The fake archive serves the versions in $FAKE_SERVED; a downloaded file
# holds "fake <name>".
cat > "$TMP/bin/apt-cache" <<'EOF'
#!/bin/sh
[ "$1 $2" = "showsrc qemu" ] || exit 100
for v in $FAKE_SERVED; do printf 'Package: qemu\nVersion: %s\n\n' "$v"; done
EOF
cat > "$TMP/bin/apt-get" <<'EOF'
#!/bin/sh
[ "$1" = source ] || exit 100
for a; do case "$a" in qemu=*) v=${a#qemu=} ;; esac; done
echo "$v" >> "$FAKE_LOG"
case " $FAKE_SERVED " in *" $v "*) ;; *) echo "E: Can not find version '$v' of package 'qemu'" >&2; exit 100 ;; esac
d=${v#*:}
for f in "qemu_$d.dsc" "qemu_${d%-*}.orig.tar.xz" "qemu_$d.debian.tar.xz"; do
    echo "fake $f" > "$f"
done
EOF
chmod +x "$TMP/bin/apt-cache" "$TMP/bin/apt-get"
export PATH=$TMP/bin:$PATH

# Sums of what the fake archive serves for version $1, in lock format.
fake_sums() {
    local d=${1#*:} f
    for f in "qemu_$d.dsc" "qemu_${d%-*}.orig.tar.xz" "qemu_$d.debian.tar.xz"; do
        echo "sha256 $(echo "fake $f" | sha256sum | cut -d' ' -f1) $f"
    done
}
# write_lock VERSION [bad]: a qemu.lock pinning VERSION (wrong sums: bad).
write_lock() {
    {
        echo "# test lock"
        echo "version $1"
        if [ "${2:-}" = bad ]; then
            fake_sums "$1" | sed 's/^sha256 ./sha256 0/'
        else
            fake_sums "$1"
        fi
    } > "$TMP/src/qemu.lock"
}
# run ARGS...: configure --download-only; sets RC, OUT, stderr in $TMP/err.
run() {
    : > "$FAKE_LOG"
    RC=0
    OUT=$(cd "$TMP/src" && timeout 20 ./configure --download-only "$@" 2>"$TMP/err") || RC=$?
}
err_has() { grep -qF -- "$1" "$TMP/err"; }
fetched() { [ -s "$FAKE_LOG" ]; }

PIN=1:10.0.13+ds-0+deb13u1
# Debian order, not string order: u10 is newer than u2, 10.0.14 than 10.0.9.
OTHERS="1:10.0.9+ds-0+deb13u1 1:10.0.14+ds-0+deb13u2 1:10.0.14+ds-0+deb13u10"
NEWEST=1:10.0.14+ds-0+deb13u10
NOT_10_0="1:9.2.3+ds-1 1:10.1.0+ds-1"

# --- the pinned version is served ---------------------------------------------

export FAKE_SERVED="$PIN $OTHERS $NOT_10_0"
write_lock "$PIN"
run
if [ $RC = 0 ] && [[ $OUT == *"base obtained: debian $PIN "* ]] && [ ! -e "$USED" ]; then
    ok "pinned and served: downloaded and taken"
else
    not_ok "pinned and served: downloaded and taken (rc $RC: $OUT)"
fi
run
if [ $RC = 0 ] && [[ $OUT == *"debian $PIN "* ]] && ! fetched; then
    ok "pinned and already downloaded: no apt call"
else
    not_ok "pinned and already downloaded: no apt call (rc $RC, apt-get: $(cat "$FAKE_LOG"))"
fi
# Only the version line edited: the sums downloaded above are not for it.
{ echo "version 1:10.0.12+ds-0+deb13u1"; fake_sums "$PIN"; } > "$TMP/src/qemu.lock"
run
if [ $RC != 0 ] && err_has "no sha256 line for qemu_10.0.12+ds-0+deb13u1.dsc" &&
   [[ $OUT != *"base obtained"* ]]; then
    ok "version line edited without its sums: fails, though other files verify"
else
    not_ok "version line edited without its sums: fails, though other files verify (rc $RC: $OUT)"
fi
rm -rf "$TMP/build"
write_lock "$PIN" bad
run
if [ $RC != 0 ] && err_has "does not match the sha256 sums in qemu.lock"; then
    ok "pinned and served with other sums: fails"
else
    not_ok "pinned and served with other sums: fails (rc $RC)"
fi

# --- the pinned version is not served ------------------------------------------

rm -rf "$TMP/build"
export FAKE_SERVED="$OTHERS $NOT_10_0"
write_lock "$PIN"
run
if [ $RC != 0 ] && err_has "--allow-other-base" && err_has "$PIN" && [ ! -e "$USED" ] && ! fetched; then
    ok "not served, default: fails naming --allow-other-base, downloads nothing"
else
    not_ok "not served, default: fails naming --allow-other-base, downloads nothing (rc $RC)"
fi
listed=1
for v in $OTHERS; do err_has "$v" || listed=0; done
for v in $NOT_10_0; do ! err_has "$v" || listed=0; done
if [ $RC != 0 ] && [ $listed = 1 ]; then
    ok "not served, default: lists the 10.0.y served, and only those"
else
    not_ok "not served, default: lists the 10.0.y served, and only those"
fi

run --allow-other-base
if [ $RC = 0 ] && [[ $OUT == *"debian $NEWEST "* ]] && err_has "--allow-other-base"; then
    ok "not served, --allow-other-base: takes the newest 10.0.y ($NEWEST), warns"
else
    not_ok "not served, --allow-other-base: takes the newest 10.0.y ($NEWEST), warns (rc $RC: $OUT)"
fi
if [ -f "$USED" ] && grep -qx "version $NEWEST" "$USED" &&
   [ "$(grep '^sha256 ' "$USED" | sort)" = "$(fake_sums "$NEWEST" | sort)" ]; then
    ok "the choice is recorded with its sums in qemu-base.used"
else
    not_ok "the choice is recorded with its sums in qemu-base.used"
fi

run
if [ $RC = 0 ] && [[ $OUT == *"debian $NEWEST "* ]] && ! fetched && err_has "$USED"; then
    ok "later run without the flag: reuses the record, no download, says so"
else
    not_ok "later run without the flag: reuses the record, no download, says so (rc $RC)"
fi

rm -f "$DL"/qemu_*
run
if [ $RC = 0 ] && [[ $OUT == *"debian $NEWEST "* ]] && [ "$(cat "$FAKE_LOG")" = "$NEWEST" ]; then
    ok "record kept, files gone: downloads the recorded version again"
else
    not_ok "record kept, files gone: downloads the recorded version again (rc $RC, apt-get: $(cat "$FAKE_LOG"))"
fi

# The archive moved on past the recorded version too.
rm -f "$DL"/qemu_*
export FAKE_SERVED="1:10.0.15+ds-0+deb13u1"
run
if [ $RC != 0 ] && err_has "--allow-other-base" && err_has "1:10.0.15+ds-0+deb13u1"; then
    ok "recorded version gone too, default: fails naming the flag"
else
    not_ok "recorded version gone too, default: fails naming the flag (rc $RC: $OUT)"
fi
run --allow-other-base
if [ $RC = 0 ] && [[ $OUT == *"debian 1:10.0.15+ds-0+deb13u1 "* ]] &&
   grep -qx "version 1:10.0.15+ds-0+deb13u1" "$USED"; then
    ok "recorded version gone too, --allow-other-base: chooses and records again"
else
    not_ok "recorded version gone too, --allow-other-base: chooses and records again (rc $RC: $OUT)"
fi

# A record is for the pin it was made under only.
write_lock 1:10.0.12+ds-0+deb13u1
run
if [ $RC != 0 ] && err_has "--allow-other-base"; then
    ok "record made under another pin: not used, fails"
else
    not_ok "record made under another pin: not used, fails (rc $RC: $OUT)"
fi

# qemu.lock moves to a served version: the lock wins, the record goes.
write_lock 1:10.0.15+ds-0+deb13u1
run
if [ $RC = 0 ] && [[ $OUT == *"debian 1:10.0.15+ds-0+deb13u1 "* ]] && [ ! -e "$USED" ]; then
    ok "lock pins a served version again: taken, record removed"
else
    not_ok "lock pins a served version again: taken, record removed (rc $RC: $OUT)"
fi

rm -rf "$TMP/build"
export FAKE_SERVED="$NOT_10_0"
write_lock "$PIN"
run --allow-other-base
if [ $RC != 0 ] && err_has "no other 10.0.y" && err_has "scripts/install-deps.sh" && [ ! -e "$USED" ]; then
    ok "no 10.0.y served at all, even with the flag: fails pointing at install-deps"
else
    not_ok "no 10.0.y served at all, even with the flag: fails pointing at install-deps (rc $RC: $OUT)"
fi

echo "1..$N"
[ $FAILS -eq 0 ]
