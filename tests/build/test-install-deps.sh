#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# scripts/install-deps.sh derives its apt entries (deb-src trixie,
# bookworm-backports, trixie) from the machine's main Debian entry, in
# either apt layout. Feed it fake /etc/apt trees through --print-sources
# (reads only, needs no root) and compare what it would write. TAP output.
set -uo pipefail

SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
SCRIPT=$SRCDIR/scripts/install-deps.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
N=0
FAILS=0

ok() { N=$((N + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAILS=$((FAILS + 1)); echo "not ok $N - $1"; }

# A fresh fake /etc/apt; prints its path.
new_etc() {
    local d
    d=$(mktemp -d "$TMP/etc.XXXX")
    mkdir -p "$d/sources.list.d" "$d/preferences.d"
    echo "$d"
}

# What install-deps should write for mirror $1, with Signed-By value $2
# (may be several lines, or empty for none).
expected() {
    local t
    for t in deb-src:trixie deb:bookworm-backports deb:trixie; do
        [ "$t" = deb-src:trixie ] || echo
        printf 'Types: %s\nURIs: %s\nSuites: %s\nComponents: main\n' \
            "${t%%:*}" "$1" "${t#*:}"
        [ -z "$2" ] || printf 'Signed-By: %s\n' "$2"
    done
}

# check NAME ETC URI SIGNED: the printed entries are exactly expected().
check() {
    local name=$1 etc=$2 out
    if ! out=$(timeout 10 "$SCRIPT" --print-sources --apt-etc="$etc" 2>"$TMP/err"); then
        not_ok "$name (failed: $(head -n1 "$TMP/err"))"
        return
    fi
    if [ "$out" = "$(expected "$3" "$4")" ]; then
        ok "$name"
    else
        not_ok "$name"
        diff <(expected "$3" "$4") <(printf '%s\n' "$out") | sed 's/^/#   /'
    fi
}

# check_fails NAME ETC: exits non-zero, prints nothing on stdout, and
# the error names both files apt could hold the mirror in.
check_fails() {
    local name=$1 etc=$2 out rc=0
    out=$(timeout 10 "$SCRIPT" --print-sources --apt-etc="$etc" 2>"$TMP/err") || rc=$?
    if [ $rc -ne 0 ] && [ -z "$out" ] &&
       grep -qF "$etc/sources.list.d/debian.sources" "$TMP/err" &&
       grep -qF "$etc/sources.list:" "$TMP/err"; then
        ok "$name"
    else
        not_ok "$name (rc $rc, stderr: $(tr '\n' ' ' < "$TMP/err"))"
    fi
}

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# --- deb822 ---------------------------------------------------------------

etc=$(new_etc)
cat > "$etc/sources.list.d/debian.sources" <<EOF
# Security first, so that order alone does not pick the right stanza.
Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: $KEYRING

Types: deb-src
URIs: http://src-only.example.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
# a comment inside the stanza
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: $KEYRING

Types: deb
URIs: http://second.example.org/debian
Suites: bookworm
Components: main
EOF
check "deb822: main stanza among security, deb-src-only, disabled ones" \
    "$etc" http://mirror.example.org/debian "$KEYRING"

etc=$(new_etc)
cat > "$etc/sources.list.d/debian.sources" <<EOF
types: deb
uris: https://mirror.example.org/debian/
suites: bookworm
components: main
EOF
check "deb822: lower-case field names, https, no Signed-By" \
    "$etc" https://mirror.example.org/debian/ ""

# An embedded key: the continuation lines are part of the value.
etc=$(new_etc)
cat > "$etc/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://mirror.example.org/debian
Suites:
 bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----
EOF
check "deb822: folded Suites, embedded multi-line Signed-By kept" \
    "$etc" http://mirror.example.org/debian "
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----"

# --- one-line sources.list --------------------------------------------------

etc=$(new_etc)
cat > "$etc/sources.list" <<EOF
#deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1 with firmware 20240210-11:28]/ bookworm contrib main non-free-firmware

deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1 with firmware 20240210-11:28]/ bookworm contrib main non-free-firmware
deb [signed-by=$KEYRING] http://security.example.org/debian-security bookworm-security main non-free-firmware
deb-src http://src-only.example.org/debian/ bookworm main
# deb http://commented.example.org/debian/ bookworm main
   deb [arch=amd64 signed-by=$KEYRING] http://mirror.example.org/debian/ bookworm main non-free-firmware # the main one
deb http://mirror.example.org/debian/ bookworm-updates main non-free-firmware
deb http://second.example.org/debian/ bookworm main
EOF
check "one-line: main line among cdrom, security, deb-src, comments" \
    "$etc" http://mirror.example.org/debian/ "$KEYRING"

etc=$(new_etc)
printf 'deb [ signed-by=/etc/apt/keyrings/local.gpg ]\thttp://mirror.example.org/debian bookworm main\n' \
    > "$etc/sources.list"
check "one-line: spaced options, tab" \
    "$etc" http://mirror.example.org/debian /etc/apt/keyrings/local.gpg

etc=$(new_etc)
echo "deb http://mirror.example.org/debian bookworm main" > "$etc/sources.list"
check "one-line: no options, no Signed-By" \
    "$etc" http://mirror.example.org/debian ""

# --- both files, neither, nothing usable -------------------------------------

# debian.sources with only a security stanza (as after a partial
# conversion): the main entry is in sources.list.
etc=$(new_etc)
cat > "$etc/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
EOF
echo "deb http://mirror.example.org/debian bookworm main" > "$etc/sources.list"
check "both: deb822 without a main stanza, main line in sources.list" \
    "$etc" http://mirror.example.org/debian ""

etc=$(new_etc)
cat > "$etc/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb822.example.org/debian
Suites: bookworm
Components: main
EOF
echo "deb http://oneline.example.org/debian bookworm main" > "$etc/sources.list"
check "both usable: deb822 wins" "$etc" http://deb822.example.org/debian ""

# Our own output is never a source of the mirror.
etc=$(new_etc)
expected http://mirror.example.org/debian "" > "$etc/sources.list.d/splitmem.sources"
check_fails "neither file (own splitmem.sources ignored)" "$etc"

etc=$(new_etc)
cat > "$etc/sources.list" <<EOF
# deb http://mirror.example.org/debian bookworm main
deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1]/ bookworm main
deb http://security.example.org/debian-security bookworm-security main
deb http://mirror.example.org/debian trixie main
EOF
cat > "$etc/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
EOF
check_fails "only cdrom, security, commented and other-suite entries" "$etc"

# --apt-etc is for reading only: never with a real install.
if out=$(timeout 10 "$SCRIPT" --apt-etc="$TMP" 2>&1); then
    not_ok "--apt-etc without --print-sources refused"
elif [[ $out == *"only for --print-sources"* ]]; then
    ok "--apt-etc without --print-sources refused"
else
    not_ok "--apt-etc without --print-sources refused (said: $out)"
fi

echo "1..$N"
[ $FAILS -eq 0 ]
