#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Regenerate patches/ from the commits on top of the base in build/qemu.
#
# Workflow: edit QEMU's files in build/qemu, commit there (one hook per
# commit, a message that says why), run this script, commit patches/.
# The output is stable: exporting an unchanged tree yields no diff.
#
#   scripts/export-patches.sh --check   only compare: exit 1 when the
#                                       tree's commits differ from patches/
set -euo pipefail

CHECK=0
[ "${1:-}" = --check ] && CHECK=1

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SPLITMEM_BUILD:-$SRCDIR/build}
TREE=$BUILD/qemu

die() { echo "export-patches: $*" >&2; exit 1; }

git -C "$TREE" rev-parse -q --verify splitmem-base >/dev/null ||
    die "$TREE is not a configured base tree (run ./configure)"
[ $CHECK = 1 ] || [ -z "$(git -C "$TREE" status --porcelain --untracked-files=no)" ] ||
    die "uncommitted changes in $TREE: commit them first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$TREE" format-patch -q -N --zero-commit --no-signature --stat=80 \
    --full-index --no-renames -o "$tmp" splitmem-base..HEAD

# QEMU wants a Signed-off-by on every patch: add the author's where the
# commit has none, before the "---" that opens the diffstat. It derives
# from the patch itself, so the round trip (configure applies the patch
# with its sign-off, export again, on any machine, as anyone) gives the
# same text.
for p in "$tmp"/*.patch; do
    [ -e "$p" ] || continue
    grep -q '^Signed-off-by: ' "$p" && continue
    author=$(sed -n 's/^From: //p' "$p" | head -n1)
    awk -v sob="Signed-off-by: $author" '
        !done && $0 == "---" { if (prev != "") print ""; print sob; done = 1 }
        { print; prev = $0 }' "$p" > "$p.new" && mv "$p.new" "$p"
done

if [ $CHECK = 1 ]; then
    mkdir -p "$tmp/want"
    cp "$SRCDIR"/patches/*.patch "$tmp/want/" 2>/dev/null || true
    mkdir -p "$tmp/have"
    mv "$tmp"/*.patch "$tmp/have/" 2>/dev/null || true
    if diff -r -u "$tmp/want" "$tmp/have"; then
        echo "export-patches: patches/ matches $TREE"
        exit 0
    fi
    echo "export-patches: patches/ differs from the commits in $TREE" >&2
    exit 1
fi

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
