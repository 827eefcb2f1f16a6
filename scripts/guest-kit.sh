#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the test guest: a stock Debian kernel (unpacked from its package,
# not installed) and an initramfs of busybox-static, the project's guest
# programs (guest/*.c, linked static; guest/devices) and the virtio
# drivers of that same kernel package with their dependencies
# (/lib/modules/splitmem/*.ko, load order in .../order; .ko.xz modules
# are decompressed here, since busybox's insmod reads plain .ko).
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

for c in apt-get apt-cache dpkg-deb cpio gzip gcc xz; do
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
inputs=$( { sha256sum "$kdeb" "$bdeb" "$0" "$SRCDIR"/guest/*.c "$SRCDIR"/guest/init \
                    "$SRCDIR"/guest/devices; } |
          cut -d' ' -f1 | sha256sum | cut -d' ' -f1)

kver=$(dpkg-deb -f "$kdeb" Package | sed 's/^linux-image-//')
out=$GUEST/$kver
if [ -f "$out/.inputs" ] && [ "$(cat "$out/.inputs")" = "$inputs" ]; then
    [ $default = 1 ] && ln -sfn "$kver" "$GUEST/default"
    echo "$out"
    exit 0
fi

# The drivers of the test guest's devices; their dependencies come along.
WANT_MODULES="virtio_pci virtio_blk virtio_net virtio_rng virtio_balloon"

# The module file of module NAME under DIR ('-' and '_' are the same in
# module names), plain or xz-compressed; nothing if there is none.
module_file() {
    find "$1" -regex ".*/$(echo "$2" | sed 's/[-_]/[-_]/g')\.ko\(\.xz\)?" |
        head -n1
}

# add_modules MODDIR OUT: copy the wanted modules and everything they
# depend on (the depends= of their .modinfo) to OUT as plain .ko, and
# write OUT/order, dependencies first. A module built into the kernel
# (modules.builtin) is skipped; a missing one leaves the kit without
# devices (no order file), which `devices setup` reports in the guest.
add_modules() {
    local moddir=$1 out=$2 m
    mkdir -p "$out"
    : > "$out/order"
    for m in $WANT_MODULES; do
        add_module "$moddir" "$out" "$m" ||
            { rm -f "$out/order"; return 0; }
    done
}

add_module() {
    local moddir=$1 out=$2 name=${3//-/_} file dep
    grep -qx "$name" "$out/order" && return 0
    file=$(module_file "$moddir" "$name")
    if [ -z "$file" ]; then
        grep -q "/$(echo "$name" | sed 's/[-_]/[-_]/g')\.ko" \
            "$moddir/modules.builtin" && return 0
        echo "guest-kit: $kver has no module $name: this kit has no devices" >&2
        return 1
    fi
    case "$file" in
    *.xz) xz -dc "$file" > "$out/$name.ko" ;;
    *) cp "$file" "$out/$name.ko" ;;
    esac
    for dep in $(tr '\0' '\n' < "$out/$name.ko" | sed -n 's/^depends=//p' |
                 head -n1 | tr ',' ' '); do
        add_module "$moddir" "$out" "$dep" || return 1
    done
    echo "$name" >> "$out/order"
}

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
install -m 755 "$SRCDIR/guest/devices" "$root/bin/devices"
ln -s devices "$root/bin/devcheck"
# Debian 13's packages keep modules in /usr/lib/modules (merged /usr).
moddir=$work/kernel/usr/lib/modules/$kver
[ -d "$moddir" ] || moddir=$work/kernel/lib/modules/$kver
[ -d "$moddir" ] || die "$kdeb has no lib/modules/$kver"
add_modules "$moddir" "$root/lib/modules/splitmem"
(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) |
    gzip -9 > "$out/initrd.gz"
echo "$inputs" > "$out/.inputs"
[ $default = 1 ] && ln -sfn "$kver" "$GUEST/default"
echo "$out"
