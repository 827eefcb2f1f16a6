/*
 * Tests of the bit range helpers (bitmap.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "bitmap.h"

#include <glib.h>
#include <string.h>

#define NBITS   1000    /* not a multiple of the word size */

/* Every bit of @map against the model @ref */
static void assert_same(const unsigned long *map, const bool *ref,
                        uint64_t nbits)
{
    uint64_t i;

    for (i = 0; i < nbits; i++) {
        if (fctrans_bitmap_test(map, i) != ref[i]) {
            g_error("bit %" G_GUINT64_FORMAT ": %d, expected %d", i,
                    fctrans_bitmap_test(map, i), ref[i]);
        }
    }
}

static void test_words_and_new(void)
{
    g_autofree unsigned long *empty = fctrans_bitmap_try_new(0);
    g_autofree unsigned long *one = fctrans_bitmap_try_new(1);
    g_autofree unsigned long *map = fctrans_bitmap_try_new(NBITS);
    uint64_t i;

    g_assert_cmpuint(fctrans_bitmap_words(0), ==, 0);
    g_assert_cmpuint(fctrans_bitmap_words(1), ==, 1);
    g_assert_cmpuint(fctrans_bitmap_words(FCTRANS_BITS_PER_LONG), ==, 1);
    g_assert_cmpuint(fctrans_bitmap_words(FCTRANS_BITS_PER_LONG + 1), ==, 2);
    g_assert_cmpuint(fctrans_bitmap_words(UINT64_MAX), ==,
                     UINT64_MAX / FCTRANS_BITS_PER_LONG + 1);
    /* At least one word, zeroed */
    g_assert_nonnull(empty);
    g_assert_cmpuint(empty[0], ==, 0);
    g_assert_nonnull(one);
    g_assert_nonnull(map);
    for (i = 0; i < NBITS; i++) {
        g_assert_false(fctrans_bitmap_test(map, i));
    }
}

/* Ranges on and across word boundaries, and empty ones */
static void test_edges(void)
{
    const unsigned w = FCTRANS_BITS_PER_LONG;
    g_autofree unsigned long *map = fctrans_bitmap_try_new(4 * w);

    g_assert_cmpuint(fctrans_bitmap_set_range(map, 5, 0), ==, 0);
    g_assert_cmpuint(fctrans_bitmap_count(map, 0, 4 * w), ==, 0);

    /* One whole word */
    g_assert_cmpuint(fctrans_bitmap_set_range(map, w, w), ==, w);
    g_assert_cmpuint(map[0], ==, 0);
    g_assert_cmpuint(map[1], ==, ~0ul);
    g_assert_cmpuint(map[2], ==, 0);
    g_assert_cmpuint(fctrans_bitmap_set_range(map, w, w), ==, 0);
    /* The last bit of one word and the first of the next */
    g_assert_cmpuint(fctrans_bitmap_set_range(map, w - 1, 2), ==, 1);
    g_assert_cmpuint(map[0], ==, 1ul << (w - 1));
    g_assert_cmpuint(fctrans_bitmap_set_range(map, 2 * w - 1, 2), ==, 1);
    g_assert_cmpuint(map[2], ==, 1);
    g_assert_cmpuint(fctrans_bitmap_count(map, 0, 4 * w), ==, w + 2);
    g_assert_cmpuint(fctrans_bitmap_count(map, w - 1, 1), ==, 1);
    g_assert_cmpuint(fctrans_bitmap_count(map, w - 2, 1), ==, 0);
    /* Clear across three words */
    g_assert_cmpuint(fctrans_bitmap_clear_range(map, w - 1, w + 2), ==,
                     w + 2);
    g_assert_cmpuint(map[0] | map[1] | map[2] | map[3], ==, 0);
    g_assert_cmpuint(fctrans_bitmap_clear_range(map, 0, 4 * w), ==, 0);
    /* The very last bit */
    g_assert_cmpuint(fctrans_bitmap_set_range(map, 4 * w - 1, 1), ==, 1);
    g_assert_true(fctrans_bitmap_test(map, 4 * w - 1));
    g_assert_cmpuint(map[3], ==, 1ul << (w - 1));
    /* The whole map */
    g_assert_cmpuint(fctrans_bitmap_set_range(map, 0, 4 * w), ==,
                     4 * w - 1);
    g_assert_cmpuint(fctrans_bitmap_count(map, 0, 4 * w), ==, 4 * w);
}

static void test_clear_except(void)
{
    g_autofree unsigned long *map = fctrans_bitmap_try_new(NBITS);
    g_autofree unsigned long *keep = fctrans_bitmap_try_new(NBITS);

    fctrans_bitmap_set_range(map, 10, 200);
    fctrans_bitmap_set_range(keep, 50, 20);     /* inside the range */
    fctrans_bitmap_set_range(keep, 300, 10);    /* outside */
    g_assert_cmpuint(fctrans_bitmap_clear_range_except(map, keep, 0, NBITS),
                     ==, 180);
    g_assert_cmpuint(fctrans_bitmap_count(map, 0, NBITS), ==, 20);
    g_assert_cmpuint(fctrans_bitmap_count(map, 50, 20), ==, 20);
    /* @keep is left alone */
    g_assert_cmpuint(fctrans_bitmap_count(keep, 0, NBITS), ==, 30);
    g_assert_cmpuint(fctrans_bitmap_clear_range_except(map, keep, 0, NBITS),
                     ==, 0);
}

/* Random operations against a model, one bool per bit */
static void test_random(void)
{
    g_autofree unsigned long *map = fctrans_bitmap_try_new(NBITS);
    g_autofree unsigned long *keep = fctrans_bitmap_try_new(NBITS);
    bool ref[NBITS] = { false }, kref[NBITS] = { false };
    GRand *r = g_rand_new_with_seed(3);
    unsigned iter;

    for (iter = 0; iter < 20000; iter++) {
        uint64_t first = g_rand_int_range(r, 0, NBITS);
        uint64_t n = g_rand_int_range(r, 0, MIN(NBITS - first, 300) + 1);
        uint64_t want = 0, got, i;
        unsigned op = g_rand_int_range(r, 0, 5);

        switch (op) {
        case 0:
            for (i = first; i < first + n; i++) {
                want += !ref[i];
                ref[i] = true;
            }
            got = fctrans_bitmap_set_range(map, first, n);
            break;
        case 1:
            for (i = first; i < first + n; i++) {
                want += ref[i];
                ref[i] = false;
            }
            got = fctrans_bitmap_clear_range(map, first, n);
            break;
        case 2:
            for (i = first; i < first + n; i++) {
                want += ref[i] && !kref[i];
                ref[i] = ref[i] && kref[i];
            }
            got = fctrans_bitmap_clear_range_except(map, keep, first, n);
            break;
        case 3:
            for (i = first; i < first + n; i++) {
                want += ref[i];
            }
            got = fctrans_bitmap_count(map, first, n);
            break;
        default:        /* change @keep */
            for (i = first; i < first + n; i++) {
                kref[i] = iter & 1;
            }
            if (iter & 1) {
                fctrans_bitmap_set_range(keep, first, n);
            } else {
                fctrans_bitmap_clear_range(keep, first, n);
            }
            got = want;
            break;
        }
        if (got != want) {
            g_error("iteration %u, op %u on [%" G_GUINT64_FORMAT ", +%"
                    G_GUINT64_FORMAT "): %" G_GUINT64_FORMAT ", expected %"
                    G_GUINT64_FORMAT, iter, op, first, n, got, want);
        }
        if (iter % 1000 == 0) {
            assert_same(map, ref, NBITS);
            assert_same(keep, kref, NBITS);
        }
    }
    assert_same(map, ref, NBITS);
    /* Nothing past the last bit was touched */
    g_assert_cmpuint(map[fctrans_bitmap_words(NBITS) - 1] >>
                     (NBITS % FCTRANS_BITS_PER_LONG), ==, 0);
    g_rand_free(r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/bitmap/words-and-new", test_words_and_new);
    g_test_add_func("/bitmap/edges", test_edges);
    g_test_add_func("/bitmap/clear-except", test_clear_except);
    g_test_add_func("/bitmap/random", test_random);
    return g_test_run();
}
