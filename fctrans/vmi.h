/*
 * fctrans: guest-free memory by introspection of the Linux buddy allocator
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * From guest physical memory and one vCPU's control registers only, this
 * module recognises the running x86-64 Linux kernel (matching its version
 * banner against the loaded profiles, which also yields the KASLR text
 * offset), reads where the kernel put its memory map (vmemmap_base,
 * randomised by memory KASLR), and scans the struct page array for the
 * head pages of free buddy blocks.
 *
 * The guest may run meanwhile.  Every read is of a snapshot that can be
 * stale or torn; every walk is bounded by construction (fixed page-table
 * depth, a linear pass over the pfns), and every value read from the guest
 * is range-checked before use.  A racy read can give a wrong answer about
 * a page, never a crash or an endless loop.  The cost is fixed whatever
 * the guest writes: recognition tries at most the 512 2 MiB slots of the
 * kernel image region per profile and, to name an unknown kernel, reads
 * at most 64 MiB of them per page-table root tried (the vCPU's, and the
 * kernel's own under PTI: two at most); the scan reads each struct page
 * of RAM once.
 */
#ifndef FCTRANS_VMI_H
#define FCTRANS_VMI_H

#include "fctrans.h"
#include "profile.h"

#include <stdbool.h>
#include <stddef.h>

/* How the introspection reaches the guest. */
typedef struct FctransVmiOps {
    /*
     * Copy @len bytes of guest-physical memory at @gpa into @buf.  Return
     * false if any part of the range is not readable RAM.
     */
    bool (*read_phys)(void *opaque, uint64_t gpa, void *buf, size_t len);
} FctransVmiOps;

/* The vCPU state that introspection needs (x86-64). */
typedef struct FctransVmiCpu {
    uint64_t cr0;
    uint64_t cr3;
    uint64_t cr4;
    uint64_t efer;
} FctransVmiCpu;

/* A range of guest-physical RAM, [start, end), in bytes. */
typedef struct FctransVmiRam {
    uint64_t start;
    uint64_t end;
} FctransVmiRam;

/* What recognition found out about the running kernel. */
typedef struct FctransVmiKernel {
    const FctransProfile *profile;  /* borrowed from the profile list */
    uint64_t pgd;                   /* physical address of the page table */
    bool la57;                      /* 5-level paging */
    int64_t text_offset;            /* KASLR: runtime _text - link _text */
    uint64_t phys_base;             /* where the kernel was loaded */
    uint64_t page_offset_base;      /* direct map (memory KASLR) */
    uint64_t vmemmap_base;          /* struct page array (memory KASLR) */
} FctransVmiKernel;

typedef struct FctransVmiStats {
    uint64_t pfns;              /* pfns of RAM covered by the scan */
    uint64_t pfns_unmapped;     /* of those, without a mapped struct page */
    uint64_t free_pages;        /* pages in free buddy blocks */
    uint64_t blocks;            /* free buddy blocks */
    uint64_t ranges;            /* disjoint free ranges after merging */
    uint64_t rejected;          /* marked free but implausible (torn read) */
    uint64_t bytes_read;        /* guest memory read */
    int64_t scan_ns;            /* duration of the scan */
} FctransVmiStats;

/* The guest page size, that of pfns and FctransPageRange. */
#define FCTRANS_VMI_PAGE_SIZE 4096

/* Highest physical address bit that x86-64 page tables can hold. */
#define FCTRANS_VMI_PHYS_BITS 52

/*
 * Translate the guest-virtual @va with the page table at @pgd.  On
 * success, @pa receives the physical address.  @span (if not NULL)
 * receives the number of bytes from @va to the end of the mapping leaf
 * on success, or to the end of the unmapped region on failure, so that a
 * caller walking a range can skip a hole in one step.
 */
bool fctrans_vmi_translate(const FctransVmiOps *ops, void *opaque,
                           uint64_t pgd, bool la57, uint64_t va,
                           uint64_t *pa, uint64_t *span);

/* Read guest-virtual memory, page by page; false if any part is unmapped. */
bool fctrans_vmi_read_virt(const FctransVmiOps *ops, void *opaque,
                           uint64_t pgd, bool la57, uint64_t va,
                           void *buf, size_t len);

/*
 * Whether @cpu is in 64-bit long mode with paging, so that recognition
 * from it is conclusive: every such vCPU maps the same kernel, and a
 * failure on one is a failure on all (do not retry on the next vCPU,
 * which would repeat the whole search).  Others (still in firmware, or
 * an AP not brought up yet) are refused before anything is read.
 */
bool fctrans_vmi_cpu_usable(const FctransVmiCpu *cpu);

/*
 * Recognise the running kernel among @profiles (an array of
 * FctransProfile).  Fails with FCTRANS_ERROR_UNSUPPORTED and a message
 * naming the running kernel when none matches, or when the vCPU is not in
 * 64-bit long mode with paging (before the kernel has booted, say).
 */
bool fctrans_vmi_recognise(const FctransVmiOps *ops, void *opaque,
                           const FctransVmiCpu *cpu, GPtrArray *profiles,
                           FctransVmiKernel *kernel, GError **errp);

/*
 * Scan the struct pages of @ram for free buddy blocks.  Free page ranges
 * (in pfns, ascending and merged) are appended to @ranges, a GArray of
 * FctransPageRange, unless it is NULL.  Fails only if the memory map
 * cannot be located at all.
 */
bool fctrans_vmi_scan(const FctransVmiOps *ops, void *opaque,
                      const FctransVmiKernel *kernel,
                      const FctransVmiRam *ram, size_t nram,
                      GArray *ranges, FctransVmiStats *stats, GError **errp);

#endif /* FCTRANS_VMI_H */
