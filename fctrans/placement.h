/*
 * fctrans: where a split migration places each guest page
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The source of a split migration asks the placer, for every page it sends,
 * whether the page goes to the main host (which will run the VM, within a
 * resident budget), to one of the sub-hosts (each within its capacity), or
 * nowhere (an all-zero page is only recorded as unused). The placer reads
 * the current occupancy from the page map; the caller records the decision
 * in the map once the page was sent.
 *
 * Policies:
 * - working-set: pages that the guest wrote while the migration ran (they
 *   are sent again after a dirty-bitmap sync) are likely to be accessed and
 *   go to the main host while the budget allows; pages sent only in the
 *   first pass fill the main host up to the budget minus a reserve kept for
 *   such pages, the rest goes to the sub-hosts, in proportion to their
 *   capacities, in extents of consecutive decisions (so that neighbouring
 *   pages share a sub-host: short map runs, useful prefetch). A page that
 *   was already placed only moves when it becomes hot and the main host has
 *   room, or when it becomes zero.
 * - sequential: fill the main host up to the budget, then sub-host 0, then
 *   sub-host 1, ...; placed pages do not move. Deterministic, for tests and
 *   comparisons.
 */
#ifndef FCTRANS_PLACEMENT_H
#define FCTRANS_PLACEMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "pagemap.h"

typedef enum FctransPlacementPolicy {
    FCTRANS_PLACEMENT_WORKING_SET,
    FCTRANS_PLACEMENT_SEQUENTIAL,
    FCTRANS_PLACEMENT__MAX,
} FctransPlacementPolicy;

/* Consecutive cold decisions that go to the same sub-host. */
#define FCTRANS_PLACEMENT_EXTENT_PAGES 256
/* working-set: share of the budget kept for hot pages (1/N). */
#define FCTRANS_PLACEMENT_RESERVE_DIV 4

typedef struct FctransPlacer FctransPlacer;

/*
 * A placer over @map (which must outlive it), for a main host that may
 * hold @budget_pages pages of the map and sub-hosts that may hold
 * @capacity_pages[k] pages each, k < fctrans_pagemap_nsubhosts(@map).
 */
FctransPlacer *fctrans_placer_new(FctransPlacementPolicy policy,
                                  FctransPageMap *map, uint64_t budget_pages,
                                  const uint64_t *capacity_pages);
void fctrans_placer_free(FctransPlacer *pl);

/*
 * Where page @page goes now. @zero: its content is all zero. @hot: the
 * guest wrote it while the migration ran. Returns a location, or
 * FCTRANS_LOC_NONE when nothing has room (impossible while the budget
 * and capacities add up to the map's size and nothing is excluded).
 * Does not change the map.
 */
FctransPageLoc fctrans_placer_decide(FctransPlacer *pl, uint64_t page,
                                     bool zero, bool hot);

/*
 * Where page @page goes when the main host pages it out: nowhere
 * (FCTRANS_LOC_UNUSED) when @zero; the sub-host that holds its slot
 * already, if that one is not excluded (no new space used there); else
 * the sub-host with room that is least full relative to its capacity,
 * in extents as for cold pages, whatever the policy. FCTRANS_LOC_NONE
 * when no sub-host has room. Does not change the map.
 */
FctransPageLoc fctrans_placer_evict(FctransPlacer *pl, uint64_t page,
                                    bool zero);

/*
 * Stop (or resume) choosing sub-host @k for pages that are not already
 * there, e.g. after it refused a write for lack of space.
 */
void fctrans_placer_exclude(FctransPlacer *pl, unsigned k, bool excluded);

/* Whether the budget plus the capacities can hold every page of the map. */
bool fctrans_placer_fits(const FctransPlacer *pl);

#endif /* FCTRANS_PLACEMENT_H */
