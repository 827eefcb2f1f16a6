/*
 * libFuzzer target: guest introspection (kernel recognition and the free
 * page scan) over guest memory and registers that the input describes;
 * see fuzz-vmi.h for the format
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "vmi.h"
#include "vmi-internal.h"
#include "fuzz.h"
#include "fuzz-vmi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GPtrArray) profiles = NULL;
    g_autoptr(GArray) ranges = NULL;
    FctransVmiRam ram[FUZZ_VMI_MAX_RAM];
    FctransVmiCpu cpu = { 0 };
    FctransVmiKernel k;
    FctransVmiStats st;
    FuzzMem m;
    uint64_t pa, span, end_pfn, total = 0;
    unsigned nram, i;

    if (size <= FUZZ_VMI_HDR) {
        return 0;
    }
    nram = fuzz_vmi_setup(data, size, &m, &cpu, ram, &end_pfn);

    /* A failed translation always moves a walker on. */
    if (!fctrans_vmi_translate(&fuzz_ops, &m, cpu.cr3,
                               data[8] & FUZZ_VMI_LA57,
                               (fctrans_ld64(data + 24) & ~0xffffULL) |
                               (1ULL << 63), &pa, &span)) {
        g_assert(span > 0);
    }

    profiles = fuzz_vmi_profiles(data);
    if (!fctrans_vmi_recognise(&fuzz_ops, &m, &cpu, profiles, &k, NULL)) {
        return 0;
    }
    g_assert(k.profile);

    ranges = g_array_new(false, false, sizeof(FctransPageRange));
    g_assert(fctrans_vmi_scan(&fuzz_ops, &m, &k, ram, nram, ranges, &st,
                              NULL));
    /* Free ranges are ascending, disjoint, merged and inside RAM. */
    for (i = 0; i < ranges->len; i++) {
        FctransPageRange *r = &g_array_index(ranges, FctransPageRange, i);

        g_assert(r->count > 0);
        g_assert(r->start + r->count <= end_pfn);
        if (i) {
            g_assert(r[-1].start + r[-1].count < r->start);
        }
        total += r->count;
    }
    g_assert(total == st.free_pages);
    g_assert(st.ranges == ranges->len);
    g_assert(st.free_pages <= st.pfns);
    return 0;
}
