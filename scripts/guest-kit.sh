#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the test guest: a stock Debian kernel (unpacked from its package,
# not installed) and an initramfs of busybox-static plus the project's
# guest programs (guest/*.c, linked static).
#
#   scripts/guest-kit.sh                  the kernel of role "default"
#   GUEST_KERNEL_PKG=trixie scripts/guest-kit.sh      a role of guest/kernels
#   GUEST_KERNEL_PKG=linux-image-6.1.0-57-amd64 ...   a package by name
#   scripts/guest-kit.sh --resolve ROLE|PKG   print the package, build nothing
#   scripts/guest-kit.sh --list           every role and its package today
#
# The roles and what selects their packages live in guest/kernels only.
# Output: build/guest/<kernel-release>/{vmlinuz,initrd.gz,kernel.deb}
# and build/guest/default -> the default kernel's directory. Prints the
# directory last, and the package it used on stderr. Cached: rebuilt only
# when an input (package version, guest sources, this script) changes.
set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
GUEST=$BUILD/guest
DL=$GUEST/dl

die() { echo "guest-kit: $*" >&2; exit 1; }

for c in apt-get apt-cache dpkg-deb cpio gzip gcc; do
    command -v "$c" >/dev/null || die "missing $c (run scripts/install-deps.sh)"
done

KERNELS=$SRCDIR/guest/kernels

# The selector of a role in guest/kernels; nothing if it is no role.
selector() {
    awk -v r="$1" '!/^[[:space:]]*(#|$)/ && $1 == r { print $2; exit }' "$KERNELS"
}

# A role or a package name -> the kernel package to use.
resolve() {
    local sel name
    sel=$(selector "$1")
    [ -n "$sel" ] || { echo "$1"; return; }
    case "$sel" in
    newest:*)
        name=$(apt-cache search --names-only "${sel#newest:}" | cut -d' ' -f1 |
               sort -V | tail -n1) ;;
    *)
        name=$(apt-cache depends "$sel" 2>/dev/null |
               sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1) ;;
    esac
    [ -n "$name" ] || die "kernel role $1 ($sel): no package found (run scripts/install-deps.sh)"
    echo "$name"
}

case "${1:-}" in
--resolve) resolve "${2:?usage: $0 --resolve ROLE|PKG}"; exit 0 ;;
--list)
    for role in $(awk '!/^[[:space:]]*(#|$)/ { print $1 }' "$KERNELS"); do
        p=$(resolve "$role") || exit 1
        echo "$role $p"
    done
    exit 0 ;;
"") ;;
*) die "usage: $0 [--resolve ROLE|PKG | --list]" ;;
esac

role=${GUEST_KERNEL_PKG:-default}
pkg=$(resolve "$role")
default=0
[ "$role" = default ] && default=1
mkdir -p "$DL"

# Download (once per package version) into the download cache.
cached() {
    local f
    for f in "$DL/${1}_"*.deb; do
        [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$2" ] && { echo "$f"; return; }
    done
    return 0
}

fetch() {
    local name=$1 ver file
    ver=$(apt-cache policy "$name" | sed -n 's/^ *Candidate: //p')
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "package $name is not available"
    file=$(cached "$name" "$ver")
    if [ -z "$file" ]; then
        (cd "$DL" && apt-get download -qq "$name=$ver" 2>&1 | grep -v unsandboxed >&2 || true)
        file=$(cached "$name" "$ver")
        [ -n "$file" ] || die "download of $name=$ver failed"
    fi
    echo "$file"
}

kdeb=$(fetch "$pkg")
echo "guest-kit: kernel $role: $pkg $(dpkg-deb -f "$kdeb" Version)" >&2
bdeb=$(fetch busybox-static)

# Everything the kit depends on, to decide whether to rebuild it.
inputs=$( { sha256sum "$kdeb" "$bdeb" "$0" "$SRCDIR"/guest/*.c "$SRCDIR"/guest/init; } |
          cut -d' ' -f1 | sha256sum | cut -d' ' -f1)

kver=$(dpkg-deb -f "$kdeb" Package | sed 's/^linux-image-//')
out=$GUEST/$kver
if [ -f "$out/.inputs" ] && [ "$(cat "$out/.inputs")" = "$inputs" ]; then
    [ $default = 1 ] && ln -sfn "$kver" "$GUEST/default"
    echo "$out"
    exit 0
fi

echo "guest-kit: building the guest for $kver" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

dpkg-deb -x "$kdeb" "$work/kernel"
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -n1)
[ -f "$vmlinuz" ] || die "$kdeb has no /boot/vmlinuz-*"
cp "$vmlinuz" "$out/vmlinuz"
cp "$kdeb" "$out/kernel.deb"

root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root}
dpkg-deb -x "$bdeb" "$work/busybox"
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
for src in "$SRCDIR"/guest/*.c; do
    gcc -O2 -static -Wall -Wextra -Werror -o "$root/bin/$(basename "$src" .c)" "$src" ||
        die "cannot build $src"
done
install -m 755 "$SRCDIR/guest/init" "$root/init"
(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) |
    gzip -9 > "$out/initrd.gz"
echo "$inputs" > "$out/.inputs"
[ $default = 1 ] && ln -sfn "$kver" "$GUEST/default"
echo "$out"
