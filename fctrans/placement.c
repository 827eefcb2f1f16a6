/*
 * fctrans: where a split migration places each guest page
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "placement.h"

struct FctransPlacer {
    FctransPlacementPolicy policy;
    FctransPageMap *map;
    unsigned nsubhosts;
    uint64_t budget;
    uint64_t reserve;
    uint64_t capacity[FCTRANS_PAGEMAP_MAX_SUBHOSTS];
    bool excluded[FCTRANS_PAGEMAP_MAX_SUBHOSTS];
    /* Current extent of cold decisions: its sub-host and what is left. */
    int extent_k;
    unsigned extent_left;
};

FctransPlacer *fctrans_placer_new(FctransPlacementPolicy policy,
                                  FctransPageMap *map, uint64_t budget_pages,
                                  const uint64_t *capacity_pages)
{
    FctransPlacer *pl = g_new0(FctransPlacer, 1);
    unsigned k;

    g_assert(policy < FCTRANS_PLACEMENT__MAX);
    pl->policy = policy;
    pl->map = map;
    pl->nsubhosts = fctrans_pagemap_nsubhosts(map);
    pl->budget = budget_pages;
    pl->reserve = policy == FCTRANS_PLACEMENT_WORKING_SET ?
                  budget_pages / FCTRANS_PLACEMENT_RESERVE_DIV : 0;
    for (k = 0; k < pl->nsubhosts; k++) {
        pl->capacity[k] = capacity_pages[k];
    }
    pl->extent_k = -1;
    return pl;
}

void fctrans_placer_free(FctransPlacer *pl)
{
    g_free(pl);
}

void fctrans_placer_exclude(FctransPlacer *pl, unsigned k, bool excluded)
{
    g_assert(k < pl->nsubhosts);
    pl->excluded[k] = excluded;
    if (excluded && pl->extent_k == (int)k) {
        pl->extent_k = -1;
    }
}

bool fctrans_placer_fits(const FctransPlacer *pl)
{
    uint64_t total = pl->budget;
    unsigned k;

    for (k = 0; k < pl->nsubhosts; k++) {
        if (total + pl->capacity[k] < total) {
            return true;        /* overflow: more than enough */
        }
        total += pl->capacity[k];
    }
    return total >= fctrans_pagemap_npages(pl->map);
}

static uint64_t used(const FctransPlacer *pl, unsigned k)
{
    return fctrans_pagemap_count(pl->map, FCTRANS_LOC_SUBHOST(k));
}

static bool subhost_has_room(const FctransPlacer *pl, unsigned k)
{
    return !pl->excluded[k] && used(pl, k) < pl->capacity[k];
}

static bool main_has_room(const FctransPlacer *pl, uint64_t reserve)
{
    uint64_t n = fctrans_pagemap_count(pl->map, FCTRANS_LOC_MAIN);

    return n < pl->budget && pl->budget - n > reserve;
}

/* The sub-host with room that is least full relative to its capacity. */
static int least_full_subhost(const FctransPlacer *pl)
{
    int best = -1;
    unsigned k;

    for (k = 0; k < pl->nsubhosts; k++) {
        if (!subhost_has_room(pl, k)) {
            continue;
        }
        /* used_k / cap_k < used_best / cap_best, without division */
        if (best < 0 ||
            (__uint128_t)used(pl, k) * pl->capacity[best] <
            (__uint128_t)used(pl, best) * pl->capacity[k]) {
            best = k;
        }
    }
    return best;
}

static int first_subhost_with_room(const FctransPlacer *pl)
{
    unsigned k;

    for (k = 0; k < pl->nsubhosts; k++) {
        if (subhost_has_room(pl, k)) {
            return k;
        }
    }
    return -1;
}

/* A sub-host for a page that is not on one yet, spread, or -1. */
static int spread_subhost(FctransPlacer *pl)
{
    int k;

    if (pl->extent_k >= 0 && pl->extent_left &&
        subhost_has_room(pl, pl->extent_k)) {
        pl->extent_left--;
        return pl->extent_k;
    }
    k = least_full_subhost(pl);
    if (k >= 0) {
        pl->extent_k = k;
        pl->extent_left = FCTRANS_PLACEMENT_EXTENT_PAGES - 1;
    }
    return k;
}

/* A sub-host for a page that is not on one yet, or -1. */
static int pick_subhost(FctransPlacer *pl)
{
    if (pl->policy == FCTRANS_PLACEMENT_SEQUENTIAL) {
        return first_subhost_with_room(pl);
    }
    return spread_subhost(pl);
}

FctransPageLoc fctrans_placer_evict(FctransPlacer *pl, uint64_t page,
                                    bool zero)
{
    FctransPageLoc cur = fctrans_pagemap_get(pl->map, page);
    int k;

    if (zero) {
        return FCTRANS_LOC_UNUSED;
    }
    if (FCTRANS_LOC_IS_SUBHOST(cur) &&
        !pl->excluded[FCTRANS_LOC_SUBHOST_INDEX(cur)]) {
        return cur;
    }
    k = spread_subhost(pl);
    return k >= 0 ? FCTRANS_LOC_SUBHOST(k) : FCTRANS_LOC_NONE;
}

FctransPageLoc fctrans_placer_decide(FctransPlacer *pl, uint64_t page,
                                     bool zero, bool hot)
{
    FctransPageLoc cur = fctrans_pagemap_get(pl->map, page);
    bool on_subhost = FCTRANS_LOC_IS_SUBHOST(cur);
    int k;

    if (zero) {
        return FCTRANS_LOC_UNUSED;
    }
    if (cur == FCTRANS_LOC_MAIN) {
        return FCTRANS_LOC_MAIN;
    }

    if (pl->policy == FCTRANS_PLACEMENT_SEQUENTIAL) {
        if (on_subhost) {
            return cur;
        }
        if (main_has_room(pl, 0)) {
            return FCTRANS_LOC_MAIN;
        }
    } else if (hot) {
        /* Written during the migration: the main host if it has room. */
        if (main_has_room(pl, 0)) {
            return FCTRANS_LOC_MAIN;
        }
        if (on_subhost) {
            return cur;
        }
    } else {
        if (on_subhost) {
            return cur;
        }
        if (main_has_room(pl, pl->reserve)) {
            return FCTRANS_LOC_MAIN;
        }
    }

    k = pick_subhost(pl);
    if (k >= 0) {
        return FCTRANS_LOC_SUBHOST(k);
    }
    /* Sub-hosts full: use the reserve rather than fail. */
    if (main_has_room(pl, 0)) {
        return FCTRANS_LOC_MAIN;
    }
    return FCTRANS_LOC_NONE;
}
