/*
 * Unit tests of fctrans/vmi.c on synthetic guest memory: page-table
 * walks (4 and 5 levels, large pages, loops), kernel recognition under
 * KASLR and page-table isolation, the buddy scan, and robustness against
 * garbage and failing reads.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "vmi.h"
#include "vmi-internal.h"
#include "test-bound.h"

#include <inttypes.h>
#include <string.h>

#define PG 4096ULL
#define ROUND_UP(n, d) (((n) + (d) - 1) / (d) * (d))
#define P_PRESENT 1ULL
#define P_RW 2ULL
#define P_PSE (1ULL << 7)

#define TEXT_LINK 0xffffffff81000000ULL
#define KASLR 0x2a00000ULL          /* 42 MiB, 2 MiB-aligned */
#define KERNEL_PHYS 0x1000000ULL    /* 16 MiB */
#define BANNER_OFF 0x123440ULL      /* banner, from _text */
#define VMEMMAP_VAR_OFF 0x200000ULL
#define POB_VAR_OFF 0x200008ULL
#define PHYS_BASE_VAR_OFF 0x200010ULL
#define VMEMMAP_BASE 0xffffea8040000000ULL
#define PAGE_OFFSET_BASE 0xffff9a0000000000ULL
#define VMEMMAP_PHYS 0x4000000ULL   /* struct pages live at 64 MiB */

static const char banner[] =
    "Linux version 6.1.0-99-amd64 (test@example) (gcc) #1 SMP Test";

/* Sparse guest-physical memory: absent pages read as zeroes. */
typedef struct FakeMem {
    GHashTable *pages;          /* pfn -> 4 KiB */
    uint64_t ram_end;           /* reads at or above fail */
    uint64_t next_table;        /* allocator for page-table pages */
    unsigned fail_every;        /* make every Nth read fail (0: never) */
    unsigned reads;
    uint64_t bytes;             /* read successfully */
} FakeMem;

static uint8_t *mem_page(FakeMem *m, uint64_t pfn)
{
    uint8_t *p = g_hash_table_lookup(m->pages, GSIZE_TO_POINTER(pfn + 1));

    if (!p) {
        p = g_malloc0(PG);
        g_hash_table_insert(m->pages, GSIZE_TO_POINTER(pfn + 1), p);
    }
    return p;
}

static void mem_write(FakeMem *m, uint64_t gpa, const void *data, size_t len)
{
    const uint8_t *d = data;

    while (len) {
        size_t n = MIN(len, PG - (gpa & (PG - 1)));

        memcpy(mem_page(m, gpa / PG) + (gpa & (PG - 1)), d, n);
        gpa += n;
        d += n;
        len -= n;
    }
}

static void mem_w64(FakeMem *m, uint64_t gpa, uint64_t v)
{
    uint8_t b[8];

    fctrans_st64(b, v);
    mem_write(m, gpa, b, 8);
}

static void mem_w32(FakeMem *m, uint64_t gpa, uint32_t v)
{
    uint8_t b[4];

    fctrans_st32(b, v);
    mem_write(m, gpa, b, 4);
}

static uint64_t mem_r64(FakeMem *m, uint64_t gpa)
{
    return fctrans_ld64(mem_page(m, gpa / PG) + (gpa & (PG - 1)));
}

static bool fake_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    FakeMem *m = opaque;
    uint8_t *out = buf;

    m->reads++;
    if (m->fail_every && m->reads % m->fail_every == 0) {
        return false;
    }
    if (gpa >= m->ram_end || len > m->ram_end - gpa) {
        return false;
    }
    m->bytes += len;
    while (len) {
        size_t n = MIN(len, PG - (gpa & (PG - 1)));
        uint8_t *p = g_hash_table_lookup(m->pages,
                                         GSIZE_TO_POINTER(gpa / PG + 1));

        if (p) {
            memcpy(out, p + (gpa & (PG - 1)), n);
        } else {
            memset(out, 0, n);
        }
        gpa += n;
        out += n;
        len -= n;
    }
    return true;
}

static const FctransVmiOps fake_ops = { .read_phys = fake_read };

static FakeMem *mem_new(uint64_t ram_end)
{
    FakeMem *m = g_new0(FakeMem, 1);

    m->pages = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                     g_free);
    m->ram_end = ram_end;
    m->next_table = 0x100000;   /* page tables from 1 MiB up */
    return m;
}

static void mem_free(FakeMem *m)
{
    g_hash_table_unref(m->pages);
    g_free(m);
}

static uint64_t alloc_table(FakeMem *m)
{
    uint64_t t = m->next_table;

    m->next_table += PG;
    mem_page(m, t / PG);
    return t;
}

/*
 * Map @va to @pa with a leaf at @leaf_level (1: 4 KiB, 2: 2 MiB,
 * 3: 1 GiB) in the page table rooted at @root.
 */
static void map(FakeMem *m, uint64_t root, bool la57, uint64_t va,
                uint64_t pa, int leaf_level)
{
    uint64_t table = root;
    int level;

    for (level = la57 ? 5 : 4; level > leaf_level; level--) {
        int shift = 12 + 9 * (level - 1);
        uint64_t slot = table + ((va >> shift) & 511) * 8;
        uint64_t e = mem_r64(m, slot);

        if (!(e & P_PRESENT)) {
            e = alloc_table(m) | P_PRESENT | P_RW;
            mem_w64(m, slot, e);
        }
        table = e & 0x000ffffffffff000ULL;
    }
    mem_w64(m, table + ((va >> (12 + 9 * (leaf_level - 1))) & 511) * 8,
            pa | P_PRESENT | P_RW | (leaf_level > 1 ? P_PSE : 0));
}

static FctransProfile *test_profile(const char *b)
{
    FctransProfile *p = g_new0(FctransProfile, 1);

    p->release = g_strdup("6.1.0-99-amd64");
    p->banner = g_strdup(b);
    p->banner_addr = TEXT_LINK + BANNER_OFF;
    p->text_addr = TEXT_LINK;
    p->vmemmap_base_addr = TEXT_LINK + VMEMMAP_VAR_OFF;
    p->page_offset_base_addr = TEXT_LINK + POB_VAR_OFF;
    p->phys_base_addr = TEXT_LINK + PHYS_BASE_VAR_OFF;
    p->page_size = 64;
    p->page_flags_off = 0;
    p->page_private_off = 40;
    p->page_type_off = 48;
    p->buddy_mask = 0xf0000080;
    p->buddy_value = 0xf0000000;
    p->max_order = 10;
    return p;
}

typedef struct Guest {
    FakeMem *m;
    uint64_t root;
    bool la57;
    uint64_t npfn;
    FctransVmiCpu cpu;
    GPtrArray *profiles;
} Guest;

/* Write the struct page of @pfn as a free buddy head of @order. */
static void set_buddy(Guest *g, uint64_t pfn, uint64_t order)
{
    uint64_t sp = VMEMMAP_PHYS + pfn * 64;

    /* page_type: all bits set but PG_buddy, as __SetPageBuddy leaves it */
    mem_w32(g->m, sp + 48, 0xffffff7f);
    mem_w64(g->m, sp + 40, order);
}

/*
 * A guest with @mib MiB of RAM, its kernel text at TEXT_LINK + KASLR,
 * the struct page array mapped with 2 MiB pages (4 KiB pages for the
 * first 2 MiB, to exercise both), every page "in use" (page_type -1).
 */
static Guest *guest_new(uint64_t mib, bool la57, bool pti)
{
    Guest *g = g_new0(Guest, 1);
    uint64_t va, off, vm_bytes;

    g->m = mem_new(MAX(mib << 20, VMEMMAP_PHYS + (32ULL << 20)));
    g->la57 = la57;
    g->npfn = (mib << 20) / PG;
    /* With PTI the kernel's PGD is the first of an 8 KiB pair. */
    g->root = alloc_table(g->m);
    if (pti) {
        g->root = alloc_table(g->m);    /* 0x101000: odd page */
        g->root = alloc_table(g->m);    /* 0x102000: 8 KiB aligned */
        alloc_table(g->m);              /* 0x103000: the user copy */
    }
    /* Kernel image: 8 MiB of 2 MiB pages. */
    for (off = 0; off < (8ULL << 20); off += 2ULL << 20) {
        map(g->m, g->root, la57, TEXT_LINK + KASLR + off, KERNEL_PHYS + off,
            2);
    }
    mem_write(g->m, KERNEL_PHYS + BANNER_OFF, banner, strlen(banner));
    mem_write(g->m, KERNEL_PHYS + BANNER_OFF + strlen(banner), "\n", 2);
    mem_w64(g->m, KERNEL_PHYS + VMEMMAP_VAR_OFF, VMEMMAP_BASE);
    mem_w64(g->m, KERNEL_PHYS + POB_VAR_OFF, PAGE_OFFSET_BASE);
    mem_w64(g->m, KERNEL_PHYS + PHYS_BASE_VAR_OFF, KERNEL_PHYS);

    /* struct page array. */
    vm_bytes = ROUND_UP(g->npfn * 64, 2ULL << 20);
    for (off = 0; off < vm_bytes;) {
        va = VMEMMAP_BASE + off;
        if (off < (2ULL << 20)) {
            map(g->m, g->root, la57, va, VMEMMAP_PHYS + off, 1);
            off += PG;
        } else {
            map(g->m, g->root, la57, va, VMEMMAP_PHYS + off, 2);
            off += 2ULL << 20;
        }
    }
    for (off = 0; off < g->npfn; off++) {
        mem_w32(g->m, VMEMMAP_PHYS + off * 64 + 48, 0xffffffff);
    }
    g->cpu.cr0 = 0x80050033;
    g->cpu.cr4 = 0x20 | (la57 ? 0x1000 : 0);
    g->cpu.efer = 0xd01;
    g->cpu.cr3 = pti ? (g->root | PG | 5) : g->root;   /* PCID 5 */
    g->profiles = g_ptr_array_new_with_free_func(
        (GDestroyNotify)fctrans_profile_free);
    g_ptr_array_add(g->profiles, test_profile(banner));
    return g;
}

static void guest_free(Guest *g)
{
    g_ptr_array_unref(g->profiles);
    mem_free(g->m);
    g_free(g);
}

static void test_translate(void)
{
    int i;

    for (i = 0; i < 2; i++) {
        bool la57 = i;
        FakeMem *m = mem_new(1ULL << 32);
        uint64_t root = alloc_table(m);
        uint64_t va = la57 ? 0xff11223344556000ULL : 0xffff888012345000ULL;
        uint64_t pa, span;

        map(m, root, la57, va, 0x7000000, 1);
        map(m, root, la57, 0xffffffffc0000000ULL, 0x40000000, 3);
        map(m, root, la57, 0xffffffff80200000ULL, 0x600000, 2);

        g_assert_true(fctrans_vmi_translate(&fake_ops, m, root, la57,
                                            va + 0x123, &pa, &span));
        g_assert_cmphex(pa, ==, 0x7000123);
        g_assert_cmpuint(span, ==, PG - 0x123);
        g_assert_true(fctrans_vmi_translate(&fake_ops, m, root, la57,
                                            0xffffffffc0012345ULL, &pa,
                                            &span));
        g_assert_cmphex(pa, ==, 0x40012345);
        g_assert_cmpuint(span, ==, (1ULL << 30) - 0x12345);
        g_assert_true(fctrans_vmi_translate(&fake_ops, m, root, la57,
                                            0xffffffff80212345ULL, &pa,
                                            &span));
        g_assert_cmphex(pa, ==, 0x612345);
        /* Unmapped: the span covers the rest of the empty 2 MiB slot. */
        g_assert_false(fctrans_vmi_translate(&fake_ops, m, root, la57,
                                             0xffffffff80400000ULL, &pa,
                                             &span));
        g_assert_cmpuint(span, ==, 2ULL << 20);
        /*
         * Non-canonical addresses are never mapped, even where the bits
         * that index the tables select a mapping: flipping a bit above
         * the top indexed one (47 or 56) keeps every index of @va, so a
         * walk that ignored canonicality would translate it.  The span
         * skips to the start of the upper half.
         */
        {
            uint64_t bad = va ^ (1ULL << (la57 ? 60 : 50));
            uint64_t upper = la57 ? 0xff00000000000000ULL
                                  : 0xffff800000000000ULL;

            g_assert_false(fctrans_vmi_translate(&fake_ops, m, root, la57,
                                                 bad, &pa, &span));
            g_assert_cmphex(bad + span, ==, upper);
            /* The lowest non-canonical address of each width. */
            g_assert_false(fctrans_vmi_translate(&fake_ops, m, root, la57,
                                                 la57 ? 1ULL << 56
                                                      : 1ULL << 47,
                                                 &pa, &span));
        }
        /*
         * @va of the 5-level case is canonical only with 57 bits: with 4
         * levels it is refused, although its 4-level indices are mapped.
         */
        if (la57) {
            uint64_t root4 = alloc_table(m);

            map(m, root4, false, va, 0x7000000, 1);
            /* Same indices, canonical with 48 bits (bit 47 is clear). */
            g_assert_true(fctrans_vmi_translate(&fake_ops, m, root4, false,
                                                va & 0xffffffffffffULL,
                                                &pa, &span));
            g_assert_false(fctrans_vmi_translate(&fake_ops, m, root4, false,
                                                 va, &pa, &span));
        }
        mem_free(m);
    }
}

static void test_translate_loop(void)
{
    FakeMem *m = mem_new(1ULL << 32);
    uint64_t root = alloc_table(m);
    uint64_t pa, span, i;

    /* Every entry of the root points back at the root (a loop). */
    for (i = 0; i < 512; i++) {
        mem_w64(m, root + i * 8, root | P_PRESENT);
    }
    for (i = 0; i < 64; i++) {
        uint64_t va = g_test_rand_int() | ((uint64_t)g_test_rand_int() << 32);

        /* Terminates: at most 4 levels, whatever the entries say. */
        fctrans_vmi_translate(&fake_ops, m, root, false, va, &pa, &span);
    }
    /* Entries pointing outside RAM read as not present. */
    mem_w64(m, root, 0x000ffffffffff000ULL | P_PRESENT);
    g_assert_false(fctrans_vmi_translate(&fake_ops, m, root, false, 0x1000,
                                         &pa, &span));
    mem_free(m);
}

static void check_recognise(bool la57, bool pti)
{
    Guest *g = guest_new(64, la57, pti);
    FctransVmiKernel k;
    g_autoptr(GError) err = NULL;

    g_assert_true(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                        g->profiles, &k, &err));
    g_assert_no_error(err);
    g_assert_cmpint(k.text_offset, ==, KASLR);
    g_assert_cmphex(k.vmemmap_base, ==, VMEMMAP_BASE);
    g_assert_cmphex(k.page_offset_base, ==, PAGE_OFFSET_BASE);
    g_assert_cmphex(k.phys_base, ==, KERNEL_PHYS);
    g_assert_cmphex(k.pgd, ==, g->root);
    g_assert_true(k.la57 == la57);
    g_assert_true(k.profile == g->profiles->pdata[0]);
    guest_free(g);
}

static void test_recognise(void)
{
    check_recognise(false, false);
    check_recognise(true, false);
    check_recognise(false, true);
    check_recognise(true, true);
}

static void test_recognise_refused(void)
{
    Guest *g = guest_new(64, false, false);
    FctransVmiKernel k;
    GError *err = NULL;
    FctransVmiCpu real = g->cpu;

    /* Not in long mode (firmware, early boot). */
    g->cpu.efer = 0;
    g_assert_false(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                         g->profiles, &k, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(err->message, "long mode"));
    g_clear_error(&err);
    g->cpu = real;

    /* A profile of another build: refused, and the running kernel named. */
    g_ptr_array_set_size(g->profiles, 0);
    g_ptr_array_add(g->profiles, test_profile(
        "Linux version 6.1.0-99-amd64 (test@example) (gcc) #2 SMP Test"));
    g_assert_false(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                         g->profiles, &k, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(err->message, banner));
    g_clear_error(&err);

    /* No profiles at all. */
    g_ptr_array_set_size(g->profiles, 0);
    g_assert_false(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                         g->profiles, &k, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_clear_error(&err);

    /* Recognised, but vmemmap_base is garbage (a kernel still booting). */
    g_ptr_array_add(g->profiles, test_profile(banner));
    mem_w64(g->m, KERNEL_PHYS + VMEMMAP_VAR_OFF, 0x1234);
    g_assert_false(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                         g->profiles, &k, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_FAILED);
    g_clear_error(&err);
    guest_free(g);
}

/*
 * Recognition refused, quickly, reading at most @max_bytes, with an
 * error message containing @what (if not NULL).
 */
static void expect_refused(FakeMem *m, const FctransVmiCpu *cpu,
                           GPtrArray *profiles, const char *what,
                           uint64_t max_bytes)
{
    g_autoptr(GTimer) timer = NULL;
    g_autoptr(GError) err = NULL;
    FctransVmiKernel k;

    m->bytes = 0;
    timer = g_timer_new();
    g_assert_false(fctrans_vmi_recognise(&fake_ops, m, cpu, profiles, &k,
                                         &err));
    g_test_message("refused in %.3f s, %" PRIu64 " MiB read: %s",
                   g_timer_elapsed(timer, NULL), m->bytes >> 20,
                   err->message);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    if (what) {
        g_assert_nonnull(strstr(err->message, what));
    }
    g_assert_cmpfloat(g_timer_elapsed(timer, NULL), <, TEST_INPUT_SECONDS);
    g_assert_cmpuint(m->bytes, <=, max_bytes);
}

/*
 * A hostile guest: its whole 1 GiB kernel image region mapped, every
 * 2 MiB slot (aliases of one physical 2 MiB) full of near-miss banners:
 * first "Linux version " over and over with no newline in reach, then the
 * real banner, then "Linux version \1" over and over.  No profile
 * matches, so the running banner is searched for: that must cost one
 * linear pass over a bounded number of slots and hits, not a pass per
 * hit, and end in the error naming the kernel.
 */
static void test_banner_near_miss(void)
{
    const uint64_t slot_phys = 0x8000000;   /* 128 MiB */
    const uint64_t slot = 2ULL << 20;
    const char junk[] = "Linux version ";
    const size_t jlen = strlen(junk);
    FakeMem *m = mem_new(256ULL << 20);
    uint64_t root = alloc_table(m);
    g_autoptr(GPtrArray) profiles = g_ptr_array_new_with_free_func(
        (GDestroyNotify)fctrans_profile_free);
    g_autofree uint8_t *fill = g_malloc0(slot);
    FctransVmiCpu cpu = {
        .cr0 = 0x80050033, .cr4 = 0x20, .efer = 0xd01, .cr3 = root,
    };
    uint64_t off;
    const size_t bpos = slot / 2;

    for (off = 0; off + jlen < bpos; off += jlen) {
        memcpy(fill + off, junk, jlen);
    }
    fill[bpos - 1] = '\0';    /* the near misses end without a newline */
    memcpy(fill + bpos, banner, strlen(banner));
    fill[bpos + strlen(banner)] = '\n';
    for (off = bpos + 4096; off + jlen + 1 <= slot; off += jlen + 1) {
        memcpy(fill + off, junk, jlen);
        fill[off + jlen] = 1;
    }
    mem_write(m, slot_phys, fill, slot);
    for (off = 0; off < (1ULL << 30); off += slot) {
        map(m, root, false, 0xffffffff80000000ULL + off, slot_phys, 2);
    }
    g_ptr_array_add(profiles, test_profile(
        "Linux version 6.1.0-99-amd64 (test@example) (gcc) #2 SMP Test"));

    /* The banner is found and named. */
    expect_refused(m, &cpu, profiles, banner, 1ULL << 30);
    /*
     * Without the banner every slot is a near miss: a bounded part of
     * the 1 GiB region is read, not all of it.
     */
    memset(fill, 'x', 4096);
    mem_write(m, slot_phys + bpos, fill, 4096);
    expect_refused(m, &cpu, profiles, "no Linux kernel found", 80ULL << 20);
    /* Few hits per slot: the number of slots read is what is bounded. */
    memset(fill, 0, slot / 2);
    mem_write(m, slot_phys + bpos, fill, slot / 2);
    expect_refused(m, &cpu, profiles, NULL, 80ULL << 20);
    mem_free(m);
}

/* Only a vCPU in long mode with paging is conclusive. */
static void test_cpu_usable(void)
{
    FctransVmiCpu cpu = { .cr0 = 0x80050033, .cr4 = 0x20, .efer = 0xd01 };

    g_assert_true(fctrans_vmi_cpu_usable(&cpu));
    cpu.efer = 0x1;             /* no LMA: not yet in long mode */
    g_assert_false(fctrans_vmi_cpu_usable(&cpu));
    cpu.efer = 0xd01;
    cpu.cr0 &= ~(1ULL << 31);   /* paging off */
    g_assert_false(fctrans_vmi_cpu_usable(&cpu));
}

static void assert_range(GArray *r, guint i, uint64_t start, uint64_t count)
{
    FctransPageRange *x = &g_array_index(r, FctransPageRange, i);

    g_assert_cmpuint(x->start, ==, start);
    g_assert_cmpuint(x->count, ==, count);
}

static void test_scan(void)
{
    Guest *g = guest_new(64, false, false);
    g_autoptr(GArray) ranges = g_array_new(false, false,
                                           sizeof(FctransPageRange));
    g_autoptr(GError) err = NULL;
    FctransVmiRam ram[] = {
        { 0x100000, 0xa00000 },     /* overlaps the next: scanned once */
        { 0, 64ULL << 20 },
    };
    FctransVmiKernel k;
    FctransVmiStats st;

    set_buddy(g, 0, 3);             /* pfns 0-7 */
    set_buddy(g, 8, 3);             /* 8-15: merges with the first */
    set_buddy(g, 32, 0);            /* 32 */
    set_buddy(g, 50, 2);            /* misaligned: rejected */
    set_buddy(g, 64, 11);           /* order above max: rejected */
    set_buddy(g, 1024, 10);         /* 1024-2047 */
    set_buddy(g, 2048, 10);         /* 2048-3071: merges */
    set_buddy(g, 16383, 0);         /* the last pfn */
    set_buddy(g, 16380, 4);         /* would run past the end: rejected */
    g_assert_true(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                        g->profiles, &k, &err));
    g_assert_true(fctrans_vmi_scan(&fake_ops, g->m, &k, ram,
                                   G_N_ELEMENTS(ram), ranges, &st, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(ranges->len, ==, 4);
    assert_range(ranges, 0, 0, 16);
    assert_range(ranges, 1, 32, 1);
    assert_range(ranges, 2, 1024, 2048);
    assert_range(ranges, 3, 16383, 1);
    g_assert_cmpuint(st.free_pages, ==, 16 + 1 + 2048 + 1);
    g_assert_cmpuint(st.blocks, ==, 6);
    g_assert_cmpuint(st.ranges, ==, 4);
    g_assert_cmpuint(st.rejected, ==, 3);
    g_assert_cmpuint(st.pfns, ==, 16384);
    g_assert_cmpuint(st.pfns_unmapped, ==, 0);
    g_assert_cmpint(st.scan_ns, >=, 0);

    guest_free(g);
}

/* The 4 KiB-mapped part of vmemmap with one leaf missing. */
static void test_scan_hole(void)
{
    Guest *g = guest_new(64, false, false);
    g_autoptr(GError) err = NULL;
    FctransVmiRam ram = { 0, 64ULL << 20 };
    FctransVmiKernel k;
    FctransVmiStats st;
    uint64_t t, e;
    int level;

    set_buddy(g, 64, 6);            /* in the hole: not seen */
    set_buddy(g, 128, 6);
    /* Walk to the level-1 entry of the second vmemmap page and clear it. */
    t = g->root;
    for (level = 4; level > 1; level--) {
        e = mem_r64(g->m, t + (((VMEMMAP_BASE + PG) >>
                                (12 + 9 * (level - 1))) & 511) * 8);
        t = e & 0x000ffffffffff000ULL;
    }
    mem_w64(g->m, t + (((VMEMMAP_BASE + PG) >> 12) & 511) * 8, 0);

    g_assert_true(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                        g->profiles, &k, &err));
    g_assert_true(fctrans_vmi_scan(&fake_ops, g->m, &k, &ram, 1, NULL, &st,
                                   &err));
    g_assert_cmpuint(st.pfns_unmapped, ==, 64);
    g_assert_cmpuint(st.free_pages, ==, 64);
    g_assert_cmpuint(st.blocks, ==, 1);
    guest_free(g);
}

/* Racy or hostile guest memory: never a crash, never an endless walk. */
static void test_garbage(void)
{
    Guest *g = guest_new(64, false, false);
    g_autoptr(GError) err = NULL;
    FctransVmiRam ram = { 0, 64ULL << 20 };
    FctransVmiKernel k;
    FctransVmiStats st;
    uint64_t pfn, i;

    g_assert_true(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                        g->profiles, &k, &err));
    /* Random struct pages: whatever is found is aligned and in range. */
    for (pfn = 0; pfn < g->npfn; pfn++) {
        uint64_t sp = VMEMMAP_PHYS + pfn * 64;

        for (i = 0; i < 64; i += 4) {
            mem_w32(g->m, sp + i, g_test_rand_int());
        }
        if (g_test_rand_bit()) {
            mem_w32(g->m, sp + 48, 0xf0000000 | g_test_rand_int());
            mem_w64(g->m, sp + 40, g_test_rand_int_range(0, 13));
        }
    }
    {
        g_autoptr(GArray) ranges = g_array_new(false, false,
                                               sizeof(FctransPageRange));
        uint64_t total = 0;

        g_assert_true(fctrans_vmi_scan(&fake_ops, g->m, &k, &ram, 1, ranges,
                                       &st, &err));
        for (i = 0; i < ranges->len; i++) {
            FctransPageRange *r = &g_array_index(ranges, FctransPageRange, i);

            g_assert_cmpuint(r->start + r->count, <=, g->npfn);
            if (i) {
                FctransPageRange *p = r - 1;

                g_assert_cmpuint(p->start + p->count, <, r->start);
            }
            total += r->count;
        }
        g_assert_cmpuint(total, ==, st.free_pages);
        g_assert_cmpuint(st.rejected, >, 0);
    }

    /* Reads failing now and then: still terminates. */
    g->m->fail_every = 7;
    fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu, g->profiles, &k, NULL);
    fctrans_vmi_scan(&fake_ops, g->m, &k, &ram, 1, NULL, &st, NULL);
    g->m->fail_every = 0;

    /* Page tables of random bytes. */
    for (i = 0x100000; i < g->m->next_table; i += 8) {
        mem_w64(g->m, i, ((uint64_t)g_test_rand_int() << 32) |
                g_test_rand_int());
    }
    g_clear_error(&err);
    if (!fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu, g->profiles, &k,
                               &err)) {
        g_assert_nonnull(err);
    } else {
        fctrans_vmi_scan(&fake_ops, g->m, &k, &ram, 1, NULL, &st, NULL);
    }
    guest_free(g);
}

/* Scan cost grows linearly; a 1 GiB guest takes well under a second. */
static void test_scan_speed(void)
{
    uint64_t sizes[] = { 256, 1024 };
    int64_t ns[2];
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(sizes); i++) {
        Guest *g = guest_new(sizes[i], false, false);
        g_autoptr(GError) err = NULL;
        FctransVmiRam ram = { 0, sizes[i] << 20 };
        FctransVmiKernel k;
        FctransVmiStats st;
        uint64_t pfn;

        for (pfn = 0; pfn < g->npfn; pfn += 16) {
            set_buddy(g, pfn, 2);   /* many small blocks: the worst case */
        }
        g_assert_true(fctrans_vmi_recognise(&fake_ops, g->m, &g->cpu,
                                            g->profiles, &k, &err));
        g_assert_true(fctrans_vmi_scan(&fake_ops, g->m, &k, &ram, 1, NULL,
                                       &st, &err));
        g_assert_cmpuint(st.free_pages, ==, g->npfn / 4);
        g_assert_cmpuint(st.ranges, ==, g->npfn / 16);
        ns[i] = st.scan_ns;
        g_test_message("%" PRIu64 " MiB: %" PRId64 " us", sizes[i],
                       ns[i] / 1000);
        guest_free(g);
    }
    g_assert_cmpint(ns[1], <, 1000 * 1000 * 1000);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vmi/translate", test_translate);
    g_test_add_func("/vmi/translate-loop", test_translate_loop);
    g_test_add_func("/vmi/recognise", test_recognise);
    g_test_add_func("/vmi/recognise-refused", test_recognise_refused);
    g_test_add_func("/vmi/banner-near-miss", test_banner_near_miss);
    g_test_add_func("/vmi/cpu-usable", test_cpu_usable);
    g_test_add_func("/vmi/scan", test_scan);
    g_test_add_func("/vmi/scan-hole", test_scan_hole);
    g_test_add_func("/vmi/garbage", test_garbage);
    g_test_add_func("/vmi/scan-speed", test_scan_speed);
    return g_test_run();
}
