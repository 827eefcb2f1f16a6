#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the test guest: a stock Debian kernel (unpacked from its package,
# not installed) and an initramfs of busybox-static plus the project's
# guest programs (guest/*.c, linked static).
#
#   scripts/guest-kit.sh            kernel: what linux-image-amd64 depends on
#   GUEST_KERNEL_PKG=linux-image-6.12.NN+deb12-amd64 scripts/guest-kit.sh
#
# Output: build/guest/<kernel-release>/{vmlinuz,initrd.gz,kernel.deb}
# and build/guest/default -> the default kernel's directory. Prints the
# directory. Cached: rebuilt only when an input (package version, guest
# sources, this script) changes.
set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
GUEST=$BUILD/guest
DL=$GUEST/dl

die() { echo "guest-kit: $*" >&2; exit 1; }

for c in apt-get apt-cache dpkg-deb cpio gzip gcc; do
    command -v "$c" >/dev/null || die "missing $c (run scripts/install-deps.sh)"
done

pkg=${GUEST_KERNEL_PKG:-}
default=0
if [ -z "$pkg" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a kernel package"
    default=1
fi
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
