/*
 * fctrans: ranges of bits in a bitmap (one bit per page)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * fctrans builds without QEMU, so it cannot use qemu/bitmap.h; this is
 * the little it needs: set or clear a range of bits and learn how many
 * changed, count a range, test a bit. The layout is QEMU's (bit i is bit
 * i % FCTRANS_BITS_PER_LONG of word i / FCTRANS_BITS_PER_LONG), so a map
 * could be handed over as it is. Ranges must lie inside the map; no
 * function here locks: callers serialize access to a map.
 */
#ifndef FCTRANS_BITMAP_H
#define FCTRANS_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FCTRANS_BITS_PER_LONG   (8 * sizeof(unsigned long))

/* Words that hold @nbits bits */
static inline uint64_t fctrans_bitmap_words(uint64_t nbits)
{
    return nbits / FCTRANS_BITS_PER_LONG +
           (nbits % FCTRANS_BITS_PER_LONG != 0);
}

/* A zeroed map of @nbits bits (at least one word), or NULL; g_free() it. */
unsigned long *fctrans_bitmap_try_new(uint64_t nbits);

static inline bool fctrans_bitmap_test(const unsigned long *map,
                                       uint64_t bit)
{
    return map[bit / FCTRANS_BITS_PER_LONG] >>
           (bit % FCTRANS_BITS_PER_LONG) & 1;
}

/* Bits set in [first, first + n) */
uint64_t fctrans_bitmap_count(const unsigned long *map, uint64_t first,
                              uint64_t n);

/* Set [first, first + n); returns how many were clear before. */
uint64_t fctrans_bitmap_set_range(unsigned long *map, uint64_t first,
                                  uint64_t n);

/* Clear [first, first + n); returns how many were set before. */
uint64_t fctrans_bitmap_clear_range(unsigned long *map, uint64_t first,
                                    uint64_t n);

/*
 * Clear the bits of [first, first + n) that are not set in @keep (a map
 * of the same size); returns how many it cleared.
 */
uint64_t fctrans_bitmap_clear_range_except(unsigned long *map,
                                           const unsigned long *keep,
                                           uint64_t first, uint64_t n);

#endif /* FCTRANS_BITMAP_H */
