/*
 * Write the seed corpora of the fuzz targets, made with the unit tests'
 * builders: DIR/btf/, DIR/profile/, DIR/kimage/, and synthetic guests for
 * DIR/vmi/
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "fuzz-vmi.h"
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

/*
 * A guest for fuzz-vmi: 64 KiB of memory, aliased every 64 KiB, with a
 * 4-level page table (or 5-level with @la57) mapping the kernel image
 * with a 2 MiB page (KASLR 42 MiB) and a struct page array with 4 KiB
 * pages, whose first 256 pfns hold a few free blocks.
 */
#define SEED_MEM 0x10000
#define SEED_KERNEL_PHYS 0x1000000      /* aliases offset 0 */
#define SEED_KASLR 0x2a00000ULL
#define SEED_VMEMMAP 0xffffea0000000000ULL
#define SEED_VMEMMAP_PHYS 0xa000
#define SEED_NPFN 256

static uint64_t seed_table(uint8_t *mem, uint64_t *next, uint64_t root,
                           bool la57, uint64_t va, int leaf_level)
{
    uint64_t table = root;
    int level;

    for (level = la57 ? 5 : 4; level > leaf_level; level--) {
        uint64_t slot = table + ((va >> (12 + 9 * (level - 1))) & 511) * 8;
        uint64_t e = fctrans_ld64(mem + slot);

        if (!(e & 1)) {
            e = *next | 3;
            *next += 0x1000;
            fctrans_st64(mem + slot, e);
        }
        table = e & 0x000ffffffffff000ULL;
    }
    return table + ((va >> (12 + 9 * (leaf_level - 1))) & 511) * 8;
}

static GBytes *vmi_seed(bool la57, unsigned page_size_sel)
{
    g_autofree uint8_t *in = g_malloc0(FUZZ_VMI_HDR + SEED_MEM);
    uint8_t *mem = in + FUZZ_VMI_HDR;
    const uint64_t root = 0x1000, text = FUZZ_VMI_TEXT + SEED_KASLR;
    uint64_t next = 0x2000, slot;
    unsigned psz = 32 + 8 * page_size_sel;
    const char banner[] = FUZZ_VMI_BANNER "\n";
    const struct { uint64_t pfn, order; } free[] = {
        { 0, 3 }, { 8, 3 }, { 32, 0 }, { 50, 2 }, { 64, 6 }, { 255, 0 },
    };
    unsigned i;

    fctrans_st64(in, root);
    in[8] = la57 ? FUZZ_VMI_LA57 : 0;
    in[9] = 1;
    in[10] = page_size_sel;
    in[11] = 10;
    fctrans_st32(in + 12, 1 << 20);             /* 4 GiB of RAM */
    fctrans_st32(in + 16, 0xf0000080);          /* buddy mask, value */
    fctrans_st32(in + 20, 0xf0000000);
    in[24] = 48;                                /* page_type */
    in[25] = 40;                                /* private */
    fctrans_st32(in + 32, 0);
    fctrans_st32(in + 36, SEED_NPFN);

    /* Kernel image: one 2 MiB page; the banner and variables in it. */
    slot = seed_table(mem, &next, root, la57, text, 2);
    fctrans_st64(mem + slot, SEED_KERNEL_PHYS | 0x83);
    memcpy(mem + FUZZ_VMI_BANNER_OFF, banner, strlen(banner));
    fctrans_st64(mem + FUZZ_VMI_VARS_OFF, SEED_VMEMMAP);
    fctrans_st64(mem + FUZZ_VMI_VARS_OFF + 8, 0xffff888000000000ULL);
    fctrans_st64(mem + FUZZ_VMI_VARS_OFF + 16, SEED_KERNEL_PHYS);
    g_assert(next <= FUZZ_VMI_BANNER_OFF);

    /* struct page array; every page in use but the free blocks. */
    next = 0x7000;
    for (i = 0; i * 0x1000 < SEED_NPFN * psz; i++) {
        slot = seed_table(mem, &next, root, la57, SEED_VMEMMAP + i * 0x1000,
                          1);
        fctrans_st64(mem + slot, (SEED_VMEMMAP_PHYS + i * 0x1000) | 3);
    }
    g_assert(next <= SEED_VMEMMAP_PHYS);
    for (i = 0; i < SEED_NPFN; i++) {
        fctrans_st32(mem + SEED_VMEMMAP_PHYS + i * psz + 48, 0xffffffff);
    }
    for (i = 0; i < G_N_ELEMENTS(free); i++) {
        uint8_t *sp = mem + SEED_VMEMMAP_PHYS + free[i].pfn * psz;

        fctrans_st32(sp + 48, 0xffffff7f);
        fctrans_st64(sp + 40, free[i].order);
    }
    g_assert(SEED_VMEMMAP_PHYS + SEED_NPFN * psz <= SEED_MEM);

    /* The seed must reach the scan, or it seeds nothing beyond parsing. */
    {
        g_autoptr(GPtrArray) profiles = fuzz_vmi_profiles(in);
        g_autoptr(GError) err = NULL;
        FctransVmiRam ram[FUZZ_VMI_MAX_RAM];
        FctransVmiCpu cpu;
        FctransVmiKernel k;
        FctransVmiStats st;
        FuzzMem m;
        uint64_t end_pfn;
        unsigned nram = fuzz_vmi_setup(in, FUZZ_VMI_HDR + SEED_MEM, &m, &cpu,
                                       ram, &end_pfn);

        if (!fctrans_vmi_recognise(&fuzz_ops, &m, &cpu, profiles, &k, &err) ||
            !fctrans_vmi_scan(&fuzz_ops, &m, &k, ram, nram, NULL, &st,
                              &err)) {
            fprintf(stderr, "vmi seed: %s\n", err->message);
            exit(1);
        }
        /* 16 + 1 + 64 + 1 pages free; pfn 50 misaligned for order 2. */
        g_assert(k.text_offset == SEED_KASLR);
        g_assert(st.free_pages == 82 && st.rejected == 1);
    }
    return g_bytes_new(in, FUZZ_VMI_HDR + SEED_MEM);
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
    {
        g_autoptr(GBytes) g4 = vmi_seed(false, 4);
        g_autoptr(GBytes) g5 = vmi_seed(true, 4);
        g_autoptr(GBytes) g4w = vmi_seed(false, 8);

        put(argv[1], "vmi", "guest-4level", g4);
        put(argv[1], "vmi", "guest-5level", g5);
        put(argv[1], "vmi", "guest-page-96", g4w);
    }
    return 0;
}
