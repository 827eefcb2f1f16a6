/*
 * fctrans: ranges of bits in a bitmap (one bit per page)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every range function walks the range a word at a time: the first and
 * last words through a mask, the words between whole. See bitmap.h.
 */
#include "bitmap.h"

#include <glib.h>

typedef enum {
    RANGE_COUNT,
    RANGE_SET,
    RANGE_CLEAR,
} RangeOp;

/* Mask of bits [bit, bit + span) of a word; span >= 1. */
static unsigned long range_mask(unsigned bit, unsigned span)
{
    return span == FCTRANS_BITS_PER_LONG ? ~0ul
                                         : ((1ul << span) - 1) << bit;
}

/*
 * Apply @op to [first, first + n), skipping the bits set in @keep (NULL:
 * none); returns how many bits changed (RANGE_SET, RANGE_CLEAR) or are
 * set (RANGE_COUNT).
 */
static uint64_t range_op(unsigned long *map, const unsigned long *keep,
                         uint64_t first, uint64_t n, RangeOp op)
{
    uint64_t changed = 0;

    while (n) {
        uint64_t word = first / FCTRANS_BITS_PER_LONG;
        unsigned bit = first % FCTRANS_BITS_PER_LONG;
        unsigned span = MIN(n, FCTRANS_BITS_PER_LONG - bit);
        unsigned long mask = range_mask(bit, span);
        unsigned long flip;

        if (keep) {
            mask &= ~keep[word];
        }
        switch (op) {
        case RANGE_COUNT:
            flip = map[word] & mask;
            break;
        case RANGE_SET:
            flip = ~map[word] & mask;
            map[word] |= flip;
            break;
        default:
            flip = map[word] & mask;
            map[word] &= ~flip;
            break;
        }
        changed += __builtin_popcountl(flip);
        first += span;
        n -= span;
    }
    return changed;
}

unsigned long *fctrans_bitmap_try_new(uint64_t nbits)
{
    uint64_t words = MAX(1, fctrans_bitmap_words(nbits));

    if (words > SIZE_MAX / sizeof(unsigned long)) {
        return NULL;
    }
    return g_try_malloc0(words * sizeof(unsigned long));
}

uint64_t fctrans_bitmap_count(const unsigned long *map, uint64_t first,
                              uint64_t n)
{
    /* RANGE_COUNT only reads the map */
    return range_op((unsigned long *)map, NULL, first, n, RANGE_COUNT);
}

uint64_t fctrans_bitmap_set_range(unsigned long *map, uint64_t first,
                                  uint64_t n)
{
    return range_op(map, NULL, first, n, RANGE_SET);
}

uint64_t fctrans_bitmap_clear_range(unsigned long *map, uint64_t first,
                                    uint64_t n)
{
    return range_op(map, NULL, first, n, RANGE_CLEAR);
}

uint64_t fctrans_bitmap_clear_range_except(unsigned long *map,
                                           const unsigned long *keep,
                                           uint64_t first, uint64_t n)
{
    return range_op(map, keep, first, n, RANGE_CLEAR);
}
