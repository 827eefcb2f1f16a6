#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Install every package splitmem needs to build, test and demo, with apt.
#
# Extra suites are derived from the machine's own main Debian entry, in
# /etc/apt/sources.list.d/debian.sources (deb822) or else in
# /etc/apt/sources.list (one-line; what the Debian 12 installer writes):
# same mirror and Signed-By, so no host name is written into the
# repository. They go to /etc/apt/sources.list.d/splitmem.sources:
#   - deb-src trixie:        Debian's qemu 10.0 source package (the base)
#   - deb bookworm-backports: meson >= 1.5, python3-pycotap, qemu-system-data
#   - deb trixie (pinned to 1): only for `apt-get download` of newer kernels
#
# Idempotent: when every package is present it does nothing but check.
set -euo pipefail

BUILD_PKGS=(
    build-essential dpkg-dev git xz-utils ca-certificates ccache pkg-config
    ninja-build flex bison python3-venv python3-tomli
    libglib2.0-dev libpixman-1-dev libslirp-dev libfdt-dev zlib1g-dev
    libcap-ng-dev libattr1-dev libgnutls28-dev libzstd-dev liblzma-dev
    libnbd-dev
)
# gdb: the discard-disabled refusal qtest calls QEMU's own
# ram_block_discard_disable() in the running QEMUs (no VFIO here).
TEST_PKGS=(
    seabios ipxe-qemu iproute2 cpio nbdkit libnbd-bin gnutls-bin socat
    clang llvm libclang-rt-14-dev perl gdb
)
BPO_PKGS=(meson python3-pycotap qemu-system-data)

die() { echo "install-deps: $*" >&2; exit 1; }

usage() {
    cat <<USAGE
Usage: scripts/install-deps.sh            (as root) install what is missing
       scripts/install-deps.sh --print-sources [--apt-etc=DIR]
           print the apt entries it would add, derived from DIR
           (default /etc/apt); changes nothing, needs no root
USAGE
}

APT_ETC=/etc/apt
PRINT_ONLY=0
for arg in "$@"; do
    case "$arg" in
    --print-sources) PRINT_ONLY=1 ;;
    --apt-etc=*) APT_ETC=${arg#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$arg'" ;;
    esac
done
# Another apt directory is only ever read, never written to.
[ "$APT_ETC" = /etc/apt ] || [ "$PRINT_ONLY" = 1 ] ||
    die "--apt-etc is only for --print-sources"

DEB822=$APT_ETC/sources.list.d/debian.sources
ONELINE=$APT_ETC/sources.list
OUT=$APT_ETC/sources.list.d/splitmem.sources
PIN=$APT_ETC/preferences.d/splitmem-trixie

# The machine's main Debian entry: Type deb, suite exactly "bookworm" (so
# not bookworm-security or -updates), not a cdrom, not disabled. Prints
# its URI(s) on the first line, then its Signed-By value if it has one
# (an embedded key keeps its continuation lines). Nothing when none.
mirror_from_deb822() {
    awk '
    function reset() { types = ""; uris = ""; suites = ""; enabled = "";
                       signed = ""; field = "" }
    function has(list, word,    n, i, w) {
        n = split(list, w)
        for (i = 1; i <= n; i++) if (w[i] == word) return 1
        return 0
    }
    function stanza_end() {
        if (!found && has(types, "deb") && has(suites, "bookworm") &&
            tolower(enabled) != "no" && uris != "" && uris !~ /^cdrom:/) {
            found = 1
            print uris
            if (signed != "") print signed
        }
        reset()
    }
    BEGIN { reset() }
    /^[ \t]*$/ { stanza_end(); next }
    /^#/ { next }
    /^[ \t]/ {
        # A continuation line: Signed-By keeps it as it is (a key).
        if (field == "signed-by") signed = signed "\n" $0
        else if (field == "types") types = types " " $0
        else if (field == "suites") suites = suites " " $0
        else if (field == "uris") uris = uris " " $0
        next
    }
    {
        i = index($0, ":")
        if (i == 0) { field = ""; next }
        field = tolower(substr($0, 1, i - 1))
        value = substr($0, i + 1)
        sub(/^[ \t]+/, "", value)
        sub(/[ \t]+$/, "", value)
        if (field == "types") types = value
        else if (field == "uris") uris = value
        else if (field == "suites") suites = value
        else if (field == "enabled") enabled = value
        else if (field == "signed-by") signed = value
    }
    END {
        stanza_end()
    }' "$1" | sed '1s/[[:space:]]\{1,\}/ /g'
}

mirror_from_oneline() {
    awk '
    {
        line = $0
        sub(/#.*/, "", line)
        sub(/^[ \t]+/, "", line)
        if (line !~ /^deb[ \t]/) next
        line = substr(line, 4)
        sub(/^[ \t]+/, "", line)
        opts = ""
        if (substr(line, 1, 1) == "[") {
            e = index(line, "]")
            if (e == 0) next
            opts = substr(line, 2, e - 2)
            line = substr(line, e + 1)
        }
        if (split(line, t) < 2 || t[1] ~ /^cdrom:/ || t[2] != "bookworm") next
        signed = ""
        n = split(opts, o)
        for (i = 1; i <= n; i++)
            if (o[i] ~ /^signed-by=/) signed = substr(o[i], 11)
        print t[1]
        if (signed != "") print signed
        exit
    }' "$1"
}

# Sets MIRROR_URIS and MIRROR_SIGNED (maybe empty) from whichever of the
# two files has a main bookworm entry; the deb822 file first.
find_mirror() {
    local out=
    if [ -r "$DEB822" ]; then
        out=$(mirror_from_deb822 "$DEB822")
    fi
    if [ -z "$out" ] && [ -r "$ONELINE" ]; then
        out=$(mirror_from_oneline "$ONELINE")
    fi
    [ -n "$out" ] || die "no main Debian bookworm entry (type deb, suite bookworm, not cdrom)
  in $DEB822 nor in $ONELINE:
  cannot derive the extra suites; add the mirror there (see sources.list(5))"
    MIRROR_URIS=${out%%$'\n'*}
    MIRROR_SIGNED=
    if [[ $out == *$'\n'* ]]; then
        MIRROR_SIGNED=${out#*$'\n'}
    fi
}

# Our stanzas: the main entry's URIs and Signed-By, other suites.
splitmem_sources() {
    local type_suite type suite first=1
    find_mirror
    for type_suite in deb-src:trixie deb:bookworm-backports deb:trixie; do
        type=${type_suite%%:*}
        suite=${type_suite#*:}
        [ $first = 1 ] || echo
        first=0
        printf 'Types: %s\nURIs: %s\nSuites: %s\nComponents: main\n' \
            "$type" "$MIRROR_URIS" "$suite"
        if [ -n "$MIRROR_SIGNED" ]; then
            printf 'Signed-By: %s\n' "$MIRROR_SIGNED"
        fi
    done
}

if [ "$PRINT_ONLY" = 1 ]; then
    splitmem_sources
    exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (apt-get install)"

write_sources() {
    local tmp
    find_mirror     # fails here, before a temporary file exists
    tmp=$(mktemp)
    splitmem_sources > "$tmp"
    if ! cmp -s "$tmp" "$OUT" 2>/dev/null; then
        install -m 644 "$tmp" "$OUT"
        UPDATE=1
    fi
    rm -f "$tmp"
    # trixie binaries are for `apt-get download` only: never install or
    # upgrade from it.
    local pin='Package: *
Pin: release n=trixie
Pin-Priority: 1'
    if [ "$(cat "$PIN" 2>/dev/null)" != "$pin" ]; then
        printf '%s\n' "$pin" > "$PIN"
        UPDATE=1
    fi
}

missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
            echo "$p"
    done
}

UPDATE=0
write_sources
meson_ok() {
    command -v meson >/dev/null && dpkg --compare-versions "$(meson --version)" ge 1.5
}

need=$(missing "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}")
need_bpo=$(missing "${BPO_PKGS[@]}")
meson_ok || need_bpo="$need_bpo meson"
if [ -z "$need" ] && [ -z "$need_bpo" ] && [ "$UPDATE" = 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if [ "$UPDATE" = 1 ] || [ -n "$need$need_bpo" ]; then
    apt-get update -qq || apt-get update -qq || die "apt-get update failed"
fi
if [ -n "$need" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need
fi
if [ -n "$need_bpo" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends -t bookworm-backports $need_bpo
fi
meson_ok || die "meson >= 1.5 is required (bookworm-backports)"
echo "install-deps: done"
