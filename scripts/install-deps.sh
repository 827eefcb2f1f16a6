#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Install every package splitmem needs to build, test and demo, with apt.
#
# Extra suites are derived from the machine's own Debian sources file, so
# no mirror host name is written into the repository:
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
TEST_PKGS=(
    seabios ipxe-qemu iproute2 cpio nbdkit libnbd-bin gnutls-bin socat
    clang llvm libclang-rt-14-dev perl
)
BPO_PKGS=(meson python3-pycotap qemu-system-data)

die() { echo "install-deps: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get install)"

SRC=/etc/apt/sources.list.d/debian.sources
OUT=/etc/apt/sources.list.d/splitmem.sources
PIN=/etc/apt/preferences.d/splitmem-trixie

# Derive our stanzas from the machine's main Debian stanza: same URIs and
# Signed-By, other suites.
write_sources() {
    local uris signed
    [ -r "$SRC" ] || die "$SRC not found: cannot derive the extra suites"
    uris=$(awk -v RS= '/Suites:[^\n]*bookworm( |$|\n)/ && !/security/' "$SRC" |
           sed -n 's/^URIs:[[:space:]]*//p' | head -n1)
    signed=$(awk -v RS= '/Suites:[^\n]*bookworm( |$|\n)/ && !/security/' "$SRC" |
             sed -n 's/^Signed-By:[[:space:]]*//p' | head -n1)
    [ -n "$uris" ] || die "no main bookworm stanza with URIs in $SRC"
    local tmp
    tmp=$(mktemp)
    {
        printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\n' "$uris"
        [ -n "$signed" ] && printf 'Signed-By: %s\n' "$signed"
        printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' "$uris"
        [ -n "$signed" ] && printf 'Signed-By: %s\n' "$signed"
        printf '\nTypes: deb\nURIs: %s\nSuites: trixie\nComponents: main\n' "$uris"
        [ -n "$signed" ] && printf 'Signed-By: %s\n' "$signed"
    } > "$tmp"
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
