/*
 * fctrans: the main host's resident budget and its page-out watermarks
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A split-memory VM's main host keeps at most its budget of guest pages
 * resident. Page-out starts when the resident pages pass the high
 * watermark and stops at the low one, so that it works in batches, off
 * the fault path, and the faults rarely find the budget full: a fault
 * waits only when a page-in would go past the budget itself.
 */
#ifndef FCTRANS_BUDGET_H
#define FCTRANS_BUDGET_H

#include <stdint.h>

/* The smallest budget: room for the faults of every vCPU and prefetch. */
#define FCTRANS_BUDGET_MIN_PAGES        1024
/* The gap between budget, high and low watermark: 1/N of the budget... */
#define FCTRANS_BUDGET_GAP_DIV          32
/* ... at least this many pages (a batch of page-ins and prefetch) ... */
#define FCTRANS_BUDGET_GAP_MIN_PAGES    32
/* ... and at most this many (64 MiB of 4 KiB pages). */
#define FCTRANS_BUDGET_GAP_MAX_PAGES    16384

typedef struct FctransWatermarks {
    uint64_t budget;            /* pages: page-ins never go past it */
    uint64_t high;              /* page-out starts above it */
    uint64_t low;               /* and stops at it */
} FctransWatermarks;

/*
 * The watermarks of @budget_pages, which must be at least
 * FCTRANS_BUDGET_MIN_PAGES: budget > high > low.
 */
void fctrans_budget_watermarks(uint64_t budget_pages, FctransWatermarks *wm);

#endif /* FCTRANS_BUDGET_H */
