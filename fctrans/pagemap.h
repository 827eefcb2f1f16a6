/*
 * fctrans: the page-location map of a split-memory VM
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every guest page of a split-memory VM has exactly one location: it is
 * resident on the main host, stored on one sub-host, or unused (all zero,
 * never touched, or freed by the guest: no copy exists anywhere and the
 * first touch gets a zero page). The map holds one byte per page.
 *
 * The source of a split migration fills the map while it places pages and
 * sends the changes to the main host as compact run-length records
 * (fctrans_pagemap_encode_changes()), which the main host applies with
 * fctrans_pagemap_decode(). The map itself is not thread-safe: one thread
 * changes it, or the caller locks.
 *
 * Wire format of one chunk of changes, a sequence of runs:
 *   varint skip      pages between the end of the previous run (or page 0
 *                    for the first run of a chunk) and this run's start
 *   varint len - 1   number of pages in the run, minus one
 *   u8     loc       location of every page in the run
 * Varints are unsigned LEB128 of at most 10 bytes. A chunk is framed (its
 * byte length) by the caller.
 */
#ifndef FCTRANS_PAGEMAP_H
#define FCTRANS_PAGEMAP_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fctrans.h"

typedef uint8_t FctransPageLoc;

/* No copy anywhere: the first touch gets a zero page (local page-in). */
#define FCTRANS_LOC_UNUSED      0
/* Resident on the main host. */
#define FCTRANS_LOC_MAIN        1
/* Stored on sub-host k: FCTRANS_LOC_SUBHOST(k). */
#define FCTRANS_LOC_SUBHOST0    2
#define FCTRANS_LOC_SUBHOST(k)  ((FctransPageLoc)(FCTRANS_LOC_SUBHOST0 + (k)))
#define FCTRANS_LOC_IS_SUBHOST(l) ((l) >= FCTRANS_LOC_SUBHOST0)
#define FCTRANS_LOC_SUBHOST_INDEX(l) ((unsigned)(l) - FCTRANS_LOC_SUBHOST0)
/* Not a location: "nowhere fits" from the placement policy. */
#define FCTRANS_LOC_NONE        0xff

#define FCTRANS_PAGEMAP_MAX_SUBHOSTS 64
#define FCTRANS_LOC_COUNT (FCTRANS_LOC_SUBHOST0 + FCTRANS_PAGEMAP_MAX_SUBHOSTS)

typedef struct FctransPageMap FctransPageMap;

/*
 * A map of @npages pages, all FCTRANS_LOC_UNUSED and unchanged, whose
 * valid locations are UNUSED, MAIN and sub-hosts 0 .. @nsubhosts - 1
 * (@nsubhosts <= FCTRANS_PAGEMAP_MAX_SUBHOSTS).
 */
FctransPageMap *fctrans_pagemap_new(uint64_t npages, unsigned nsubhosts);
void fctrans_pagemap_free(FctransPageMap *map);

uint64_t fctrans_pagemap_npages(const FctransPageMap *map);
unsigned fctrans_pagemap_nsubhosts(const FctransPageMap *map);
bool fctrans_pagemap_loc_valid(const FctransPageMap *map, unsigned loc);

FctransPageLoc fctrans_pagemap_get(const FctransPageMap *map, uint64_t page);

/*
 * Set the location of @page (or of @count pages from @start) and mark it
 * changed when it differs. Pages outside the map or invalid locations are
 * programming errors (asserted).
 */
void fctrans_pagemap_set(FctransPageMap *map, uint64_t page,
                         FctransPageLoc loc);
void fctrans_pagemap_set_range(FctransPageMap *map, uint64_t start,
                               uint64_t count, FctransPageLoc loc);

/* Number of pages whose location is @loc. */
uint64_t fctrans_pagemap_count(const FctransPageMap *map, FctransPageLoc loc);

/*
 * Length of the run of pages with the same location starting at @start
 * (0 when @start is past the end); the location goes to *@loc.
 */
uint64_t fctrans_pagemap_run(const FctransPageMap *map, uint64_t start,
                             FctransPageLoc *loc);

/* Number of pages changed since they were last encoded. */
uint64_t fctrans_pagemap_changed(const FctransPageMap *map);

/* Mark every page changed (to send a whole map). */
void fctrans_pagemap_mark_all_changed(FctransPageMap *map);

/*
 * Append to @out the runs covering changed pages, in page order, and
 * forget that those pages changed. Stops before the chunk would exceed
 * @max_bytes (at least one run is always emitted when something changed;
 * a run takes at most 21 bytes). Returns the number of runs appended.
 * A run may also cover unchanged pages of the same location, so that
 * nearby changes merge.
 */
size_t fctrans_pagemap_encode_changes(FctransPageMap *map, GByteArray *out,
                                      size_t max_bytes);

/*
 * Apply one chunk produced by fctrans_pagemap_encode_changes(). Every run
 * is checked (inside the map, valid location, well-formed varints) before
 * anything is applied: on error the map is unchanged and @errp is set
 * (FCTRANS_ERROR_INVALID). Decoded pages are not marked changed.
 */
bool fctrans_pagemap_decode(FctransPageMap *map, const uint8_t *buf,
                            size_t len, GError **errp);

#endif /* FCTRANS_PAGEMAP_H */
