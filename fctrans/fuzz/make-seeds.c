/*
 * Write the seed corpora of the fuzz targets, made with the unit tests'
 * builders: DIR/btf/, DIR/profile/, DIR/kimage/
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "profile.h"
#include "test-kernel-image.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

static void put(const char *dir, const char *sub, const char *name,
                GBytes *b)
{
    g_autofree char *d = g_build_filename(dir, sub, NULL);
    g_autofree char *p = g_build_filename(d, name, NULL);

    g_mkdir_with_parents(d, 0755);
    if (!g_file_set_contents(p, g_bytes_get_data(b, NULL),
                             g_bytes_get_size(b), NULL)) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    g_autoptr(GBytes) v61 = test_vmlinux(NULL, false, true);
    g_autoptr(GBytes) v612 = test_vmlinux("6.12.99-amd64", true, true);
    g_autoptr(GBytes) btf = test_kernel_btf(true);
    g_autoptr(GBytes) bz = test_bzimage(v61, FCTRANS_COMPRESSION_XZ);
    g_autoptr(GBytes) bzz = test_bzimage(v612, FCTRANS_COMPRESSION_ZSTD);
    g_autoptr(GBytes) bzg = test_bzimage(v61, FCTRANS_COMPRESSION_GZIP);
    g_autoptr(GBytes) deb = test_deb(bz, TV_RELEASE, FCTRANS_COMPRESSION_XZ);
    g_autoptr(FctransProfile) p = NULL;
    g_autofree char *text = NULL;
    g_autoptr(GBytes) tb = NULL;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    p = fctrans_profile_from_vmlinux(g_bytes_get_data(v61, NULL),
                                     g_bytes_get_size(v61), NULL);
    g_assert(p);
    text = fctrans_profile_to_text(p);
    tb = g_bytes_new(text, strlen(text));
    put(argv[1], "btf", "kernel.btf", btf);
    put(argv[1], "profile", "6.1.profile", tb);
    put(argv[1], "kimage", "vmlinux-6.12", v612);
    put(argv[1], "kimage", "bzimage-xz", bz);
    put(argv[1], "kimage", "bzimage-zstd", bzz);
    put(argv[1], "kimage", "bzimage-gzip", bzg);
    put(argv[1], "kimage", "linux-image.deb", deb);
    return 0;
}
