/*
 * fctrans: the page-location map of a split-memory VM
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>

#include "pagemap.h"

/* Unchanged pages of the same location a run may bridge to merge runs. */
#define PAGEMAP_MERGE_GAP 64
/* Largest encoded run: two 10-byte varints and the location byte. */
#define PAGEMAP_RUN_MAX_BYTES 21

struct FctransPageMap {
    uint64_t npages;
    unsigned nsubhosts;
    uint64_t nchanged;
    uint8_t *loc;
    uint64_t *changed;          /* bitmap, one bit per page */
    uint64_t count[FCTRANS_LOC_COUNT];
};

static inline bool changed_test(const FctransPageMap *map, uint64_t page)
{
    return map->changed[page / 64] & (UINT64_C(1) << (page % 64));
}

static inline void changed_set(FctransPageMap *map, uint64_t page)
{
    uint64_t bit = UINT64_C(1) << (page % 64);

    if (!(map->changed[page / 64] & bit)) {
        map->changed[page / 64] |= bit;
        map->nchanged++;
    }
}

static inline void changed_clear(FctransPageMap *map, uint64_t page)
{
    uint64_t bit = UINT64_C(1) << (page % 64);

    if (map->changed[page / 64] & bit) {
        map->changed[page / 64] &= ~bit;
        map->nchanged--;
    }
}

/* First changed page at or after @page, or npages. */
static uint64_t changed_next(const FctransPageMap *map, uint64_t page)
{
    uint64_t nwords = (map->npages + 63) / 64;
    uint64_t w = page / 64;
    uint64_t word;

    if (page >= map->npages) {
        return map->npages;
    }
    word = map->changed[w] & (~UINT64_C(0) << (page % 64));
    while (!word) {
        if (++w >= nwords) {
            return map->npages;
        }
        word = map->changed[w];
    }
    page = w * 64 + __builtin_ctzll(word);
    return page < map->npages ? page : map->npages;
}

FctransPageMap *fctrans_pagemap_new(uint64_t npages, unsigned nsubhosts)
{
    FctransPageMap *map;

    g_assert(nsubhosts <= FCTRANS_PAGEMAP_MAX_SUBHOSTS);
    map = g_new0(FctransPageMap, 1);
    map->npages = npages;
    map->nsubhosts = nsubhosts;
    map->loc = g_malloc0(MAX(npages, 1));
    map->changed = g_new0(uint64_t, MAX((npages + 63) / 64, 1));
    map->count[FCTRANS_LOC_UNUSED] = npages;
    return map;
}

void fctrans_pagemap_free(FctransPageMap *map)
{
    if (!map) {
        return;
    }
    g_free(map->loc);
    g_free(map->changed);
    g_free(map);
}

uint64_t fctrans_pagemap_npages(const FctransPageMap *map)
{
    return map->npages;
}

unsigned fctrans_pagemap_nsubhosts(const FctransPageMap *map)
{
    return map->nsubhosts;
}

bool fctrans_pagemap_loc_valid(const FctransPageMap *map, unsigned loc)
{
    return loc < FCTRANS_LOC_SUBHOST0 + map->nsubhosts;
}

FctransPageLoc fctrans_pagemap_get(const FctransPageMap *map, uint64_t page)
{
    g_assert(page < map->npages);
    return map->loc[page];
}

static inline void pagemap_store(FctransPageMap *map, uint64_t page,
                                 FctransPageLoc loc)
{
    FctransPageLoc old = map->loc[page];

    if (old != loc) {
        map->count[old]--;
        map->count[loc]++;
        map->loc[page] = loc;
    }
}

void fctrans_pagemap_set(FctransPageMap *map, uint64_t page,
                         FctransPageLoc loc)
{
    g_assert(page < map->npages);
    g_assert(fctrans_pagemap_loc_valid(map, loc));
    if (map->loc[page] != loc) {
        pagemap_store(map, page, loc);
        changed_set(map, page);
    }
}

void fctrans_pagemap_set_range(FctransPageMap *map, uint64_t start,
                               uint64_t count, FctransPageLoc loc)
{
    uint64_t page;

    g_assert(start <= map->npages && count <= map->npages - start);
    g_assert(fctrans_pagemap_loc_valid(map, loc));
    for (page = start; page < start + count; page++) {
        if (map->loc[page] != loc) {
            pagemap_store(map, page, loc);
            changed_set(map, page);
        }
    }
}

uint64_t fctrans_pagemap_count(const FctransPageMap *map, FctransPageLoc loc)
{
    return loc < FCTRANS_LOC_COUNT ? map->count[loc] : 0;
}

uint64_t fctrans_pagemap_run(const FctransPageMap *map, uint64_t start,
                             FctransPageLoc *loc)
{
    uint64_t end;

    if (start >= map->npages) {
        return 0;
    }
    *loc = map->loc[start];
    end = start + 1;
    while (end < map->npages && map->loc[end] == *loc) {
        end++;
    }
    return end - start;
}

uint64_t fctrans_pagemap_changed(const FctransPageMap *map)
{
    return map->nchanged;
}

void fctrans_pagemap_mark_all_changed(FctransPageMap *map)
{
    uint64_t page;

    for (page = 0; page < map->npages; page++) {
        changed_set(map, page);
    }
}

static void put_varint(GByteArray *out, uint64_t v)
{
    uint8_t buf[10];
    unsigned n = 0;

    do {
        buf[n] = v & 0x7f;
        v >>= 7;
        if (v) {
            buf[n] |= 0x80;
        }
        n++;
    } while (v);
    g_byte_array_append(out, buf, n);
}

size_t fctrans_pagemap_encode_changes(FctransPageMap *map, GByteArray *out,
                                      size_t max_bytes)
{
    size_t start_len = out->len;
    size_t runs = 0;
    uint64_t prev_end = 0;
    uint64_t page = changed_next(map, 0);

    while (page < map->npages) {
        FctransPageLoc loc = map->loc[page];
        uint64_t last = page;   /* last changed page in the run */
        uint64_t q = page + 1;
        uint64_t p;
        uint8_t locbyte = loc;

        if (runs && out->len - start_len + PAGEMAP_RUN_MAX_BYTES > max_bytes) {
            break;
        }
        /*
         * Extend over pages of the same location; unchanged ones only
         * while a changed one follows within PAGEMAP_MERGE_GAP pages.
         */
        while (q < map->npages && map->loc[q] == loc &&
               q - last <= PAGEMAP_MERGE_GAP) {
            if (changed_test(map, q)) {
                last = q;
            }
            q++;
        }
        put_varint(out, page - prev_end);
        put_varint(out, last - page);
        g_byte_array_append(out, &locbyte, 1);
        for (p = page; p <= last; p++) {
            changed_clear(map, p);
        }
        runs++;
        prev_end = last + 1;
        page = changed_next(map, prev_end);
    }
    return runs;
}

static bool get_varint(const uint8_t *buf, size_t len, size_t *pos,
                       uint64_t *v)
{
    uint64_t r = 0;
    unsigned shift = 0;

    for (;;) {
        uint8_t b;

        if (*pos >= len || shift > 63) {
            return false;
        }
        b = buf[(*pos)++];
        if (shift == 63 && (b & 0x7e)) {
            return false;       /* more than 64 bits */
        }
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            break;
        }
        shift += 7;
    }
    *v = r;
    return true;
}

/* Walk a chunk; apply the runs when @apply. */
static bool pagemap_walk(FctransPageMap *map, const uint8_t *buf, size_t len,
                         bool apply, GError **errp)
{
    size_t pos = 0;
    uint64_t next = 0;
    uint64_t run = 0;

    while (pos < len) {
        uint64_t skip, count, start, p;
        uint8_t loc;

        if (!get_varint(buf, len, &pos, &skip) ||
            !get_varint(buf, len, &pos, &count) || pos >= len) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "page map: run %" G_GUINT64_FORMAT
                        " truncated or malformed", run);
            return false;
        }
        loc = buf[pos++];
        if (skip > map->npages - next || count >= map->npages - next - skip) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "page map: run %" G_GUINT64_FORMAT
                        " goes past the last page (%" G_GUINT64_FORMAT ")",
                        run, map->npages);
            return false;
        }
        if (!fctrans_pagemap_loc_valid(map, loc)) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "page map: run %" G_GUINT64_FORMAT
                        " has invalid location %u (%u sub-hosts)",
                        run, loc, map->nsubhosts);
            return false;
        }
        start = next + skip;
        count++;
        if (apply) {
            for (p = start; p < start + count; p++) {
                pagemap_store(map, p, loc);
            }
        }
        next = start + count;
        run++;
    }
    return true;
}

bool fctrans_pagemap_decode(FctransPageMap *map, const uint8_t *buf,
                            size_t len, GError **errp)
{
    if (!pagemap_walk(map, buf, len, false, errp)) {
        return false;
    }
    return pagemap_walk(map, buf, len, true, NULL);
}
