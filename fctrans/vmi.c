/*
 * fctrans: guest-free memory by introspection of the Linux buddy allocator
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * How the running kernel is found:
 *
 * - The vCPU's CR3 gives the page table.  With page-table isolation the
 *   vCPU may be on the user copy, which maps almost nothing of the kernel;
 *   the kernel copy is the 8 KiB-aligned page just below it, so bit 12 is
 *   cleared first.
 * - The kernel image is mapped in the top 1 GiB of the address space
 *   (__START_KERNEL_map, 0xffffffff80000000) with 2 MiB pages, shifted by
 *   KASLR in steps of CONFIG_PHYSICAL_ALIGN (2 MiB on Debian).  Each mapped
 *   2 MiB page there is a candidate for _text; a candidate is right when
 *   the banner of a profile is found at its link address plus the shift.
 *   That match both identifies the build (the banner names the release,
 *   the build number and date) and gives the text offset.
 * - vmemmap_base, page_offset_base and phys_base are read at their
 *   link-time addresses plus the text offset.
 *
 * How free memory is found: the struct page of pfn N is at vmemmap_base +
 * N * sizeof(struct page).  The head page of a free buddy block has the
 * buddy page type and its order in page->private; its tail pages carry
 * nothing, so the scan skips them after a head.  Heads must be aligned to
 * their order, as the buddy allocator guarantees; a misaligned or
 * out-of-range order is a torn read and is not counted.
 */
#include "vmi.h"
#include "vmi-internal.h"

#include <inttypes.h>
#include <stdlib.h>

#include <string.h>

#define VMI_PAGE_SHIFT 12
#define VMI_PAGE_SIZE (1ULL << VMI_PAGE_SHIFT)
#define VMI_DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define PTE_PRESENT 1ULL
#define PTE_PSE (1ULL << 7)
#define PTE_ADDR_MASK 0x000ffffffffff000ULL

#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define EFER_LMA (1ULL << 10)

/* The kernel image mapping of x86-64 Linux (asm/page_64_types.h) */
#define START_KERNEL_MAP 0xffffffff80000000ULL
#define KERNEL_IMAGE_SIZE (1ULL << 30)
#define KERNEL_ALIGN (2ULL << 20)

/* How much struct page data one read fetches. */
#define SCAN_CHUNK (1024 * 1024)

/*
 * Bounds on the search for the banner of an unknown kernel: mapped image
 * slots read, and occurrences of FCTRANS_BANNER_PREFIX looked at.  A
 * kernel has a handful of the latter; a guest with thousands is hostile,
 * and only loses the name of its kernel in the error message.
 */
#define FIND_BANNER_MAX_SLOTS 32
#define FIND_BANNER_MAX_HITS 4096

static uint64_t canonical(uint64_t va, bool la57)
{
    int bits = la57 ? 57 : 48;

    return (uint64_t)((int64_t)(va << (64 - bits)) >> (64 - bits));
}

static bool is_kernel_va(uint64_t va, bool la57)
{
    return canonical(va, la57) == va && (int64_t)va < 0;
}

bool fctrans_vmi_translate(const FctransVmiOps *ops, void *opaque,
                           uint64_t pgd, bool la57, uint64_t va,
                           uint64_t *pa, uint64_t *span)
{
    int levels = la57 ? 5 : 4;
    uint64_t table = pgd & PTE_ADDR_MASK;
    int level;

    if (canonical(va, la57) != va) {
        if (span) {
            /* Skip to the start of the upper canonical half. */
            *span = canonical(1ULL << (la57 ? 56 : 47), la57) - va;
        }
        return false;
    }
    for (level = levels; level >= 1; level--) {
        int shift = VMI_PAGE_SHIFT + 9 * (level - 1);
        uint64_t size = 1ULL << shift;
        uint64_t idx = (va >> shift) & 511;
        uint8_t raw[8];
        uint64_t pte;

        if (!ops->read_phys(opaque, table + idx * 8, raw, sizeof(raw))) {
            pte = 0;
        } else {
            pte = fctrans_ld64(raw);
        }
        if (!(pte & PTE_PRESENT)) {
            if (span) {
                *span = size - (va & (size - 1));
            }
            return false;
        }
        if (level == 1 || ((level == 2 || level == 3) && (pte & PTE_PSE))) {
            uint64_t base = pte & PTE_ADDR_MASK & ~(size - 1);

            *pa = base | (va & (size - 1));
            if (span) {
                *span = size - (va & (size - 1));
            }
            return true;
        }
        table = pte & PTE_ADDR_MASK;
    }
    g_assert_not_reached();
}

bool fctrans_vmi_read_virt(const FctransVmiOps *ops, void *opaque,
                           uint64_t pgd, bool la57, uint64_t va,
                           void *buf, size_t len)
{
    uint8_t *out = buf;

    while (len) {
        uint64_t pa, span;
        size_t n;

        if (!fctrans_vmi_translate(ops, opaque, pgd, la57, va, &pa, &span)) {
            return false;
        }
        n = MIN((uint64_t)len, span);
        if (!ops->read_phys(opaque, pa, out, n)) {
            return false;
        }
        out += n;
        va += n;
        len -= n;
    }
    return true;
}

static bool read_u64(const FctransVmiOps *ops, void *opaque,
                     const FctransVmiKernel *k, uint64_t link_addr,
                     uint64_t *val)
{
    uint8_t raw[8];

    if (!fctrans_vmi_read_virt(ops, opaque, k->pgd, k->la57,
                               link_addr + k->text_offset, raw, 8)) {
        return false;
    }
    *val = fctrans_ld64(raw);
    return true;
}

/* Does the banner of @p lie at its link address shifted by @offset? */
static bool banner_matches(const FctransVmiOps *ops, void *opaque,
                           uint64_t pgd, bool la57, const FctransProfile *p,
                           int64_t offset, char *buf)
{
    size_t n = strlen(p->banner);

    /* buf holds FCTRANS_PROFILE_MAX_BANNER + 1 bytes; n is bounded by it. */
    if (!fctrans_vmi_read_virt(ops, opaque, pgd, la57, p->banner_addr + offset,
                               buf, n + 1)) {
        return false;
    }
    return memcmp(buf, p->banner, n) == 0 && buf[n] == '\n';
}

/*
 * The first banner in @buf[0, @len) with a build number, the one the
 * kernel prints; else NULL, and the first banner at all in *@first if it
 * is still NULL.  Only hits starting before @limit count, and at most
 * *@hits_left of them (fctrans_banner_scan_next() keeps it linear).
 */
static char *banner_in(const uint8_t *buf, size_t len, size_t limit,
                       char **first, unsigned *hits_left)
{
    const size_t plen = strlen(FCTRANS_BANNER_PREFIX);
    FctransBannerScan scan;
    const char *b;
    size_t n;

    fctrans_banner_scan_init(&scan, buf, len, limit, hits_left);
    while (fctrans_banner_scan_next(&scan, &b, &n)) {
        if (n <= plen + 1) {
            continue;
        }
        if (fctrans_banner_numbered(b, n)) {
            return g_strndup(b, n);
        }
        if (!*first) {
            *first = g_strndup(b, n);
        }
    }
    return NULL;
}

/*
 * The banner of the running kernel, read from its image mapping, to name
 * the kernel when no profile matches.  It is in .rodata, a few tens of
 * MiB into the image: only the first FIND_BANNER_MAX_SLOTS mapped slots
 * are read, so that a guest mapping its whole image region costs little
 * more than a real kernel.
 */
static char *find_running_banner(const FctransVmiOps *ops, void *opaque,
                                 uint64_t pgd, bool la57,
                                 const uint64_t *cands, unsigned ncands)
{
    g_autofree uint8_t *page =
        g_malloc(KERNEL_ALIGN + FCTRANS_PROFILE_MAX_BANNER);
    g_autofree char *first = NULL;
    unsigned hits_left = FIND_BANNER_MAX_HITS;
    unsigned i;

    for (i = 0; i < MIN(ncands, FIND_BANNER_MAX_SLOTS) && hits_left; i++) {
        size_t len = KERNEL_ALIGN + FCTRANS_PROFILE_MAX_BANNER;
        char *found;

        if (!fctrans_vmi_read_virt(ops, opaque, pgd, la57, cands[i], page,
                                   len)) {
            len = KERNEL_ALIGN;
            if (!fctrans_vmi_read_virt(ops, opaque, pgd, la57, cands[i], page,
                                       len)) {
                continue;
            }
        }
        found = banner_in(page, len, KERNEL_ALIGN, &first, &hits_left);
        if (found) {
            return found;
        }
    }
    return g_steal_pointer(&first);
}

/* Mapped 2 MiB slots of the kernel image region, lowest first. */
static unsigned image_candidates(const FctransVmiOps *ops, void *opaque,
                                 uint64_t pgd, bool la57, uint64_t *cands)
{
    unsigned n = 0;
    uint64_t va = START_KERNEL_MAP;

    while (va - START_KERNEL_MAP < KERNEL_IMAGE_SIZE) {
        uint64_t pa, span;

        if (fctrans_vmi_translate(ops, opaque, pgd, la57, va, &pa, &span)) {
            cands[n++] = va;
            va += KERNEL_ALIGN;
        } else {
            /* Skip a whole unmapped table at once, in 2 MiB steps. */
            va += MAX(span, KERNEL_ALIGN) & ~(KERNEL_ALIGN - 1);
        }
    }
    return n;
}

bool fctrans_vmi_cpu_usable(const FctransVmiCpu *cpu)
{
    return (cpu->cr0 & CR0_PG) && (cpu->cr4 & CR4_PAE) &&
           (cpu->efer & EFER_LMA);
}

bool fctrans_vmi_recognise(const FctransVmiOps *ops, void *opaque,
                           const FctransVmiCpu *cpu, GPtrArray *profiles,
                           FctransVmiKernel *kernel, GError **errp)
{
    const unsigned max_cands = KERNEL_IMAGE_SIZE / KERNEL_ALIGN;
    g_autofree uint64_t *cands = g_new(uint64_t, max_cands);
    g_autofree char *buf = g_malloc(FCTRANS_PROFILE_MAX_BANNER + 1);
    g_autofree char *running = NULL;
    uint64_t roots[2];
    unsigned nroots, r, i, j, ncands = 0;
    bool la57;

    if (!fctrans_vmi_cpu_usable(cpu)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "the vCPU is not in 64-bit long mode with paging "
                    "(no kernel running yet?)");
        return false;
    }
    la57 = cpu->cr4 & CR4_LA57;
    roots[0] = cpu->cr3 & PTE_ADDR_MASK & ~VMI_PAGE_SIZE;
    roots[1] = cpu->cr3 & PTE_ADDR_MASK;
    nroots = roots[0] == roots[1] ? 1 : 2;

    for (r = 0; r < nroots; r++) {
        ncands = image_candidates(ops, opaque, roots[r], la57, cands);
        for (i = 0; i < profiles->len; i++) {
            const FctransProfile *p = profiles->pdata[i];

            for (j = 0; j < ncands; j++) {
                int64_t off = (int64_t)(cands[j] - p->text_addr);

                if (!banner_matches(ops, opaque, roots[r], la57, p, off,
                                    buf)) {
                    continue;
                }
                memset(kernel, 0, sizeof(*kernel));
                kernel->profile = p;
                kernel->pgd = roots[r];
                kernel->la57 = la57;
                kernel->text_offset = off;
                if (!read_u64(ops, opaque, kernel, p->vmemmap_base_addr,
                              &kernel->vmemmap_base) ||
                    !read_u64(ops, opaque, kernel, p->page_offset_base_addr,
                              &kernel->page_offset_base) ||
                    !read_u64(ops, opaque, kernel, p->phys_base_addr,
                              &kernel->phys_base)) {
                    g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                                "kernel %s recognised, but its memory map "
                                "variables are unreadable", p->release);
                    return false;
                }
                if (!is_kernel_va(kernel->vmemmap_base, la57) ||
                    (kernel->vmemmap_base & (VMI_PAGE_SIZE - 1)) ||
                    !is_kernel_va(kernel->page_offset_base, la57)) {
                    g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                                "kernel %s recognised, but vmemmap_base "
                                "0x%" PRIx64 " is implausible (still "
                                "booting?)", p->release,
                                kernel->vmemmap_base);
                    return false;
                }
                return true;
            }
        }
        if (ncands && !running) {
            running = find_running_banner(ops, opaque, roots[r], la57, cands,
                                          ncands);
        }
    }
    if (running) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "no profile for the running kernel '%s' (%u profiles "
                    "loaded)", running, profiles->len);
    } else {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "no Linux kernel found in the guest (%u kernel image "
                    "pages mapped, %u profiles loaded)", ncands,
                    profiles->len);
    }
    return false;
}

/* ---------------------------------------------------------------------- */
/* The scan */

typedef struct ScanState {
    const FctransVmiOps *ops;
    void *opaque;
    const FctransVmiKernel *k;
    GArray *ranges;
    FctransVmiStats *st;
    uint8_t *buf;
    uint64_t run_start;         /* current merged free range */
    uint64_t run_end;
} ScanState;

/* Append the current merged run of free pages to the result. */
static void emit_run(ScanState *s)
{
    if (s->run_end > s->run_start) {
        FctransPageRange r = { s->run_start, s->run_end - s->run_start };

        s->st->ranges++;
        if (s->ranges) {
            g_array_append_val(s->ranges, r);
        }
    }
    s->run_start = s->run_end = 0;
}

static void add_free(ScanState *s, uint64_t pfn, uint64_t count)
{
    s->st->blocks++;
    s->st->free_pages += count;
    if (s->run_end > s->run_start && s->run_end == pfn) {
        s->run_end += count;
        return;
    }
    emit_run(s);
    s->run_start = pfn;
    s->run_end = pfn + count;
}

/*
 * Look at the struct page of @pfn in @page.  Returns the number of pfns
 * to advance: 1, or the size of the free block it heads.
 */
static uint64_t scan_one(ScanState *s, const uint8_t *page, uint64_t pfn,
                         uint64_t end_pfn)
{
    const FctransProfile *p = s->k->profile;
    uint32_t type = fctrans_ld32(page + p->page_type_off);
    uint64_t order, count;

    if ((type & p->buddy_mask) != p->buddy_value) {
        return 1;
    }
    order = fctrans_ld64(page + p->page_private_off);
    if (order > p->max_order) {
        s->st->rejected++;
        return 1;
    }
    count = 1ULL << order;
    if ((pfn & (count - 1)) || count > end_pfn - pfn) {
        s->st->rejected++;
        return 1;
    }
    add_free(s, pfn, count);
    return count;
}

/* Scan pfns [pfn, end) of one RAM range. */
static void scan_range(ScanState *s, uint64_t pfn, uint64_t end)
{
    const FctransVmiKernel *k = s->k;
    const uint64_t psz = k->profile->page_size;

    while (pfn < end) {
        uint64_t va = k->vmemmap_base + pfn * psz;
        uint64_t pa, span, n, i;

        if (!fctrans_vmi_translate(s->ops, s->opaque, k->pgd, k->la57, va,
                                   &pa, &span)) {
            /* No struct pages here (a hole in the memory map). */
            n = MIN(VMI_DIV_ROUND_UP(span, psz), end - pfn);
            s->st->pfns_unmapped += n;
            pfn += n;
            continue;
        }
        n = MIN(span, (uint64_t)SCAN_CHUNK) / psz;
        n = MIN(n, end - pfn);
        if (n == 0) {
            /* A struct page straddles two mapping leaves. */
            if (!fctrans_vmi_read_virt(s->ops, s->opaque, k->pgd, k->la57,
                                       va, s->buf, psz)) {
                s->st->pfns_unmapped++;
                pfn++;
                continue;
            }
            s->st->bytes_read += psz;
            pfn += scan_one(s, s->buf, pfn, end);
            continue;
        }
        if (!s->ops->read_phys(s->opaque, pa, s->buf, n * psz)) {
            s->st->pfns_unmapped += n;
            pfn += n;
            continue;
        }
        s->st->bytes_read += n * psz;
        for (i = 0; i < n;) {
            i += scan_one(s, s->buf + i * psz, pfn + i, end);
        }
        /* A free block may extend past the chunk: skip its tail pages. */
        pfn += i;
    }
}

static gint cmp_ram(gconstpointer a, gconstpointer b)
{
    const FctransVmiRam *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

bool fctrans_vmi_scan(const FctransVmiOps *ops, void *opaque,
                      const FctransVmiKernel *kernel,
                      const FctransVmiRam *ram, size_t nram,
                      GArray *ranges, FctransVmiStats *stats, GError **errp)
{
    g_autofree FctransVmiRam *sorted = g_memdup2(ram, nram * sizeof(*ram));
    g_autofree uint8_t *buf = g_malloc(SCAN_CHUNK);
    ScanState s = {
        .ops = ops, .opaque = opaque, .k = kernel, .ranges = ranges,
        .st = stats, .buf = buf,
    };
    const uint64_t max_pfn = 1ULL << (FCTRANS_VMI_PHYS_BITS - VMI_PAGE_SHIFT);
    int64_t t0 = g_get_monotonic_time();
    uint64_t done = 0;          /* pfns below this were scanned already */
    size_t i;

    memset(stats, 0, sizeof(*stats));
    if (!kernel->profile || !is_kernel_va(kernel->vmemmap_base, kernel->la57)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "no memory map to scan");
        return false;
    }
    qsort(sorted, nram, sizeof(*sorted), cmp_ram);
    for (i = 0; i < nram; i++) {
        uint64_t first = VMI_DIV_ROUND_UP(sorted[i].start, VMI_PAGE_SIZE);
        uint64_t end = MIN(sorted[i].end / VMI_PAGE_SIZE, max_pfn);

        /* Overlapping ranges are scanned once. */
        first = MAX(first, done);
        if (first >= end) {
            continue;
        }
        stats->pfns += end - first;
        scan_range(&s, first, end);
        done = end;
    }
    emit_run(&s);
    stats->scan_ns = (g_get_monotonic_time() - t0) * 1000;
    return true;
}
