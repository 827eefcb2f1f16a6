/*
 * libFuzzer target: a kernel image (vmlinux, bzImage, compressed image
 * or .deb) all the way to a generated profile
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "kimage.h"
#include "profile.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GBytes) vmlinux = NULL;
    g_autoptr(FctransProfile) p = NULL;
    g_autofree char *release = NULL;
    const void *elf;
    size_t len;

    /*
     * A bound well below the default, so that a bomb fails within the
     * per-input time limit even instrumented; the seeds are far smaller.
     */
    vmlinux = fctrans_kimage_vmlinux_bounded(data, size, 64 * 1024 * 1024,
                                             &release, NULL);
    if (!vmlinux) {
        return 0;
    }
    elf = g_bytes_get_data(vmlinux, &len);
    p = fctrans_profile_from_vmlinux(elf, len, NULL);
    if (p) {
        g_autofree char *text = fctrans_profile_to_text(p);
        g_autoptr(FctransProfile) q = fctrans_profile_parse(text,
                                                            strlen(text),
                                                            NULL);
        /* A generated profile always satisfies the parser's checks. */
        g_assert(q);
    }
    return 0;
}
