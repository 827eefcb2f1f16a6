/*
 * Input format of the fuzz-vmi target, shared with make-seeds
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A FUZZ_VMI_HDR-byte header, then guest-physical memory: byte P of the
 * memory part is guest-physical address P modulo the memory part's
 * length, up to the header's RAM end (reads at or above it fail).  The
 * aliasing lets a small input hold page tables, 2 MiB kernel pages and a
 * struct page array at the addresses a kernel would use.
 *
 * Header, little-endian:
 *   0  u64  CR3
 *   8  u8   flags: FUZZ_VMI_LA57, FUZZ_VMI_NO_PAGING
 *   9  u8   number of RAM ranges (at most FUZZ_VMI_MAX_RAM)
 *  10  u8   struct page size: 32 + 8 * (v % 13)
 *  11  u8   max order: v % 11
 *  12  u32  RAM end, in 4 KiB pages
 *  16  u32  buddy mask
 *  20  u32  buddy value
 *  24  u8   page_type offset (v, made 4-aligned and in the struct)
 *  25  u8   private offset (v, made 8-aligned and in the struct)
 *  26  u8[6] bits 16-62 of a virtual address to translate (bit 63 set)
 *  32  FUZZ_VMI_MAX_RAM x { u32 first pfn, u32 pfns (at most 16384) }
 */
#ifndef FCTRANS_FUZZ_VMI_H
#define FCTRANS_FUZZ_VMI_H

#include "vmi.h"
#include "vmi-internal.h"

#define FUZZ_VMI_HDR 64
#define FUZZ_VMI_MAX_RAM 4
#define FUZZ_VMI_MAX_RAM_PFNS 16384

#define FUZZ_VMI_LA57 1
#define FUZZ_VMI_NO_PAGING 2

/* The profile the target recognises, at link-time addresses. */
#define FUZZ_VMI_TEXT 0xffffffff81000000ULL
#define FUZZ_VMI_BANNER_OFF 0x5000
#define FUZZ_VMI_VARS_OFF 0x6000  /* vmemmap_base, page_offset_base, phys */
#define FUZZ_VMI_BANNER \
    "Linux version 6.1.0-fuzz (fuzz@example) (gcc) #1 SMP Fuzz"

typedef struct FuzzMem {
    const uint8_t *mem;
    size_t len;
    uint64_t ram_end;
} FuzzMem;

static inline bool fuzz_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    FuzzMem *m = opaque;
    uint8_t *out = buf;

    if (gpa >= m->ram_end || len > m->ram_end - gpa) {
        return false;
    }
    while (len) {
        size_t off = gpa % m->len;
        size_t n = MIN(len, m->len - off);

        memcpy(out, m->mem + off, n);
        out += n;
        gpa += n;
        len -= n;
    }
    return true;
}

static const FctransVmiOps fuzz_ops = { .read_phys = fuzz_read };

/* Memory, registers and RAM ranges of an input; returns the RAM ranges. */
static inline unsigned fuzz_vmi_setup(const uint8_t *data, size_t size,
                                      FuzzMem *m, FctransVmiCpu *cpu,
                                      FctransVmiRam *ram, uint64_t *end_pfn)
{
    unsigned nram, i;

    m->mem = data + FUZZ_VMI_HDR;
    m->len = size - FUZZ_VMI_HDR;
    m->ram_end = (uint64_t)fctrans_ld32(data + 12) * FCTRANS_VMI_PAGE_SIZE;

    cpu->cr3 = fctrans_ld64(data);
    cpu->cr0 = data[8] & FUZZ_VMI_NO_PAGING ? 0x50033 : 0x80050033;
    cpu->cr4 = 0x20 | (data[8] & FUZZ_VMI_LA57 ? 0x1000 : 0);
    cpu->efer = 0xd01;
    nram = MIN(data[9], FUZZ_VMI_MAX_RAM);
    *end_pfn = 0;
    for (i = 0; i < nram; i++) {
        uint64_t first = fctrans_ld32(data + 32 + 8 * i);
        uint64_t n = MIN(fctrans_ld32(data + 36 + 8 * i),
                         FUZZ_VMI_MAX_RAM_PFNS);

        ram[i].start = first * FCTRANS_VMI_PAGE_SIZE;
        ram[i].end = (first + n) * FCTRANS_VMI_PAGE_SIZE;
        *end_pfn = MAX(*end_pfn, first + n);
    }
    return nram;
}

static inline FctransProfile *fuzz_profile(const uint8_t *h, const char *banner)
{
    FctransProfile *p = g_new0(FctransProfile, 1);
    uint32_t psz = 32 + 8 * (h[10] % 13);

    p->release = g_strdup("6.1.0-fuzz");
    p->banner = g_strdup(banner);
    p->text_addr = FUZZ_VMI_TEXT;
    p->banner_addr = FUZZ_VMI_TEXT + FUZZ_VMI_BANNER_OFF;
    p->vmemmap_base_addr = FUZZ_VMI_TEXT + FUZZ_VMI_VARS_OFF;
    p->page_offset_base_addr = FUZZ_VMI_TEXT + FUZZ_VMI_VARS_OFF + 8;
    p->phys_base_addr = FUZZ_VMI_TEXT + FUZZ_VMI_VARS_OFF + 16;
    p->page_size = psz;
    p->max_order = h[11] % 11;
    p->buddy_mask = fctrans_ld32(h + 16);
    p->buddy_value = fctrans_ld32(h + 20) & p->buddy_mask;
    p->page_type_off = (h[24] % (psz - 3)) & ~3u;
    p->page_private_off = (h[25] % (psz - 7)) & ~7u;
    return p;
}

/* Two profiles: one of another build, then that of FUZZ_VMI_BANNER. */
static inline GPtrArray *fuzz_vmi_profiles(const uint8_t *data)
{
    GPtrArray *profiles = g_ptr_array_new_with_free_func(
        (GDestroyNotify)fctrans_profile_free);

    g_ptr_array_add(profiles, fuzz_profile(data, FUZZ_VMI_BANNER "-other"));
    g_ptr_array_add(profiles, fuzz_profile(data, FUZZ_VMI_BANNER));
    return profiles;
}

#endif /* FCTRANS_FUZZ_VMI_H */
