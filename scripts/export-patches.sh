#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Regenerate patches/ from the commits on top of the base in build/qemu.
#
# Workflow: edit QEMU's files in build/qemu, commit there (one hook per
# commit, a message that says why), run this script, commit patches/.
# The output is stable: exporting an unchanged tree yields no diff.
set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
TREE=$BUILD/qemu

die() { echo "export-patches: $*" >&2; exit 1; }

git -C "$TREE" rev-parse -q --verify splitmem-base >/dev/null ||
    die "$TREE is not a configured base tree (run ./configure)"
[ -z "$(git -C "$TREE" status --porcelain --untracked-files=no)" ] ||
    die "uncommitted changes in $TREE: commit them first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$TREE" format-patch -q --zero-commit --no-signature --no-stat \
    --full-index --no-renames -o "$tmp" splitmem-base..HEAD

mkdir -p "$SRCDIR/patches"
rm -f "$SRCDIR"/patches/*.patch
shopt -s nullglob
for p in "$tmp"/*.patch; do
    cp "$p" "$SRCDIR/patches/"
done
n=$(ls "$SRCDIR"/patches/*.patch 2>/dev/null | wc -l)

# The tree now matches patches/: tell configure not to re-apply them.
cat "$SRCDIR"/patches/*.patch 2>/dev/null | sha256sum | cut -d' ' -f1 \
    > "$TREE/.git/splitmem-patches"
echo "export-patches: $n patch(es) in patches/"
git -C "$SRCDIR" status --short -- patches
