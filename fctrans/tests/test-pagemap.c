/*
 * Unit tests: the page-location map, its wire encoding, and placement
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>

#include "pagemap.h"
#include "placement.h"

static void test_basic(void)
{
    FctransPageMap *map = fctrans_pagemap_new(1000, 2);
    FctransPageLoc loc;

    g_assert_cmpuint(fctrans_pagemap_npages(map), ==, 1000);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_UNUSED), ==, 1000);
    g_assert_cmpuint(fctrans_pagemap_changed(map), ==, 0);
    g_assert_true(fctrans_pagemap_loc_valid(map, FCTRANS_LOC_SUBHOST(1)));
    g_assert_false(fctrans_pagemap_loc_valid(map, FCTRANS_LOC_SUBHOST(2)));

    fctrans_pagemap_set(map, 10, FCTRANS_LOC_MAIN);
    fctrans_pagemap_set_range(map, 100, 50, FCTRANS_LOC_SUBHOST(1));
    g_assert_cmpuint(fctrans_pagemap_get(map, 10), ==, FCTRANS_LOC_MAIN);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_MAIN), ==, 1);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(1)),
                     ==, 50);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_UNUSED), ==, 949);
    g_assert_cmpuint(fctrans_pagemap_changed(map), ==, 51);

    /* Setting the same location again changes nothing. */
    fctrans_pagemap_set(map, 10, FCTRANS_LOC_MAIN);
    g_assert_cmpuint(fctrans_pagemap_changed(map), ==, 51);

    g_assert_cmpuint(fctrans_pagemap_run(map, 100, &loc), ==, 50);
    g_assert_cmpuint(loc, ==, FCTRANS_LOC_SUBHOST(1));
    g_assert_cmpuint(fctrans_pagemap_run(map, 11, &loc), ==, 89);
    g_assert_cmpuint(loc, ==, FCTRANS_LOC_UNUSED);
    g_assert_cmpuint(fctrans_pagemap_run(map, 1000, &loc), ==, 0);
    fctrans_pagemap_free(map);
}

static FctransPageMap *roundtrip(FctransPageMap *src, size_t max_bytes,
                                 size_t *chunks)
{
    FctransPageMap *dst = fctrans_pagemap_new(fctrans_pagemap_npages(src),
                                              fctrans_pagemap_nsubhosts(src));
    GByteArray *buf = g_byte_array_new();

    *chunks = 0;
    while (fctrans_pagemap_changed(src)) {
        GError *err = NULL;
        size_t runs;

        g_byte_array_set_size(buf, 0);
        runs = fctrans_pagemap_encode_changes(src, buf, max_bytes);
        g_assert_cmpuint(runs, >, 0);
        g_assert_cmpuint(buf->len, <=, MAX(max_bytes, 21));
        g_assert_true(fctrans_pagemap_decode(dst, buf->data, buf->len, &err));
        g_assert_no_error(err);
        (*chunks)++;
    }
    g_byte_array_free(buf, TRUE);
    return dst;
}

static void assert_maps_equal(FctransPageMap *a, FctransPageMap *b)
{
    uint64_t p, n = fctrans_pagemap_npages(a);
    unsigned l;

    g_assert_cmpuint(n, ==, fctrans_pagemap_npages(b));
    for (p = 0; p < n; p++) {
        g_assert_cmpuint(fctrans_pagemap_get(a, p), ==,
                         fctrans_pagemap_get(b, p));
    }
    for (l = 0; l < FCTRANS_LOC_COUNT; l++) {
        g_assert_cmpuint(fctrans_pagemap_count(a, l), ==,
                         fctrans_pagemap_count(b, l));
    }
}

static void test_roundtrip_random(void)
{
    GRand *rand = g_rand_new_with_seed(42);
    unsigned iter;

    for (iter = 0; iter < 50; iter++) {
        uint64_t npages = g_rand_int_range(rand, 1, 20000);
        unsigned nsub = g_rand_int_range(rand, 0, 5);
        FctransPageMap *src = fctrans_pagemap_new(npages, nsub);
        FctransPageMap *dst;
        unsigned i, nruns = g_rand_int_range(rand, 0, 300);
        size_t chunks;

        for (i = 0; i < nruns; i++) {
            uint64_t start = g_rand_int_range(rand, 0, npages);
            uint64_t count = g_rand_int_range(rand, 1, 200);
            FctransPageLoc loc = g_rand_int_range(rand, 0, 2 + nsub);

            count = MIN(count, npages - start);
            fctrans_pagemap_set_range(src, start, count, loc);
        }
        dst = roundtrip(src, g_rand_int_range(rand, 1, 4096), &chunks);
        assert_maps_equal(src, dst);
        g_assert_cmpuint(fctrans_pagemap_changed(src), ==, 0);
        g_assert_cmpuint(fctrans_pagemap_changed(dst), ==, 0);
        fctrans_pagemap_free(src);
        fctrans_pagemap_free(dst);
    }
    g_rand_free(rand);
}

/* Incremental changes applied to a map that already has older ones. */
static void test_incremental(void)
{
    FctransPageMap *src = fctrans_pagemap_new(4096, 3);
    FctransPageMap *dst = fctrans_pagemap_new(4096, 3);
    GByteArray *buf = g_byte_array_new();
    GError *err = NULL;

    fctrans_pagemap_set_range(src, 0, 1024, FCTRANS_LOC_MAIN);
    fctrans_pagemap_set_range(src, 1024, 2048, FCTRANS_LOC_SUBHOST(2));
    fctrans_pagemap_encode_changes(src, buf, SIZE_MAX);
    g_assert_true(fctrans_pagemap_decode(dst, buf->data, buf->len, &err));

    /* A page moves back and forth: only its final location matters. */
    fctrans_pagemap_set(src, 5, FCTRANS_LOC_SUBHOST(0));
    fctrans_pagemap_set(src, 5, FCTRANS_LOC_MAIN);
    fctrans_pagemap_set(src, 2000, FCTRANS_LOC_UNUSED);
    fctrans_pagemap_set(src, 4095, FCTRANS_LOC_SUBHOST(1));
    g_byte_array_set_size(buf, 0);
    fctrans_pagemap_encode_changes(src, buf, SIZE_MAX);
    g_assert_true(fctrans_pagemap_decode(dst, buf->data, buf->len, &err));
    g_assert_no_error(err);
    assert_maps_equal(src, dst);
    g_byte_array_free(buf, TRUE);
    fctrans_pagemap_free(src);
    fctrans_pagemap_free(dst);
}

/* Long runs are cheap: a whole map in a handful of bytes. */
static void test_compact(void)
{
    FctransPageMap *src = fctrans_pagemap_new(1 << 24, 2);  /* 64 GiB */
    GByteArray *buf = g_byte_array_new();
    uint64_t p;

    fctrans_pagemap_set_range(src, 0, 1 << 22, FCTRANS_LOC_MAIN);
    fctrans_pagemap_set_range(src, 1 << 22, 1 << 22, FCTRANS_LOC_SUBHOST(0));
    fctrans_pagemap_set_range(src, 1 << 23, 1 << 22, FCTRANS_LOC_SUBHOST(1));
    fctrans_pagemap_encode_changes(src, buf, SIZE_MAX);
    g_assert_cmpuint(buf->len, <=, 3 * 6);

    /* Nearby changes of one location merge over unchanged pages. */
    for (p = 0; p < 4096; p += 8) {
        fctrans_pagemap_set(src, (1 << 23) + p, FCTRANS_LOC_SUBHOST(0));
    }
    g_byte_array_set_size(buf, 0);
    g_assert_cmpuint(fctrans_pagemap_encode_changes(src, buf, SIZE_MAX),
                     ==, 512);
    for (p = 0; p < 4096; p += 8) {
        fctrans_pagemap_set(src, (1 << 23) + p, FCTRANS_LOC_SUBHOST(1));
    }
    g_byte_array_set_size(buf, 0);
    g_assert_cmpuint(fctrans_pagemap_encode_changes(src, buf, SIZE_MAX),
                     ==, 1);
    g_byte_array_free(buf, TRUE);
    fctrans_pagemap_free(src);
}

static void expect_decode_error(FctransPageMap *map, const uint8_t *buf,
                                size_t len, const char *what)
{
    GError *err = NULL;

    g_assert_false(fctrans_pagemap_decode(map, buf, len, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, what));
    g_error_free(err);
}

static void test_decode_invalid(void)
{
    FctransPageMap *map = fctrans_pagemap_new(100, 1);
    /* A valid run (pages 0-9 -> main) then a bad one. */
    const uint8_t past_end[] = { 0, 9, 1, 0, 90, 1 };
    const uint8_t bad_loc[] = { 0, 9, 1, 0, 0, 3 };
    const uint8_t truncated[] = { 0, 9 };
    const uint8_t cont[] = { 0x80 };
    const uint8_t overlong[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0xff, 0x7f, 0, 1 };
    const uint8_t huge_skip[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0x01, 0, 1 };
    const uint8_t ok[] = { 5, 4, 2, 10, 0, 1 };
    GError *err = NULL;

    expect_decode_error(map, past_end, sizeof(past_end), "past the last");
    expect_decode_error(map, bad_loc, sizeof(bad_loc), "invalid location");
    expect_decode_error(map, truncated, sizeof(truncated), "truncated");
    expect_decode_error(map, cont, sizeof(cont), "truncated");
    expect_decode_error(map, overlong, sizeof(overlong), "malformed");
    expect_decode_error(map, huge_skip, sizeof(huge_skip), "past the last");
    /* Nothing of the rejected chunks was applied. */
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_UNUSED), ==, 100);

    g_assert_true(fctrans_pagemap_decode(map, ok, sizeof(ok), &err));
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(0)),
                     ==, 5);
    g_assert_cmpuint(fctrans_pagemap_get(map, 5), ==, FCTRANS_LOC_SUBHOST(0));
    g_assert_cmpuint(fctrans_pagemap_get(map, 19), ==, FCTRANS_LOC_UNUSED);
    g_assert_cmpuint(fctrans_pagemap_get(map, 20), ==, FCTRANS_LOC_MAIN);
    g_assert_cmpuint(fctrans_pagemap_changed(map), ==, 0);
    /* An empty chunk is valid. */
    g_assert_true(fctrans_pagemap_decode(map, ok, 0, &err));
    fctrans_pagemap_free(map);
}

/* Random bytes never crash the decoder nor corrupt the counts. */
static void test_decode_fuzz(void)
{
    GRand *rand = g_rand_new_with_seed(7);
    FctransPageMap *map = fctrans_pagemap_new(5000, 3);
    uint8_t buf[64];
    unsigned iter, i, l;

    for (iter = 0; iter < 20000; iter++) {
        size_t len = g_rand_int_range(rand, 0, sizeof(buf));
        uint64_t total = 0;

        for (i = 0; i < len; i++) {
            /* bias towards small values so that some chunks are valid */
            buf[i] = g_rand_boolean(rand) ? g_rand_int_range(rand, 0, 6) :
                                            g_rand_int_range(rand, 0, 256);
        }
        fctrans_pagemap_decode(map, buf, len, NULL);
        for (l = 0; l < FCTRANS_LOC_COUNT; l++) {
            total += fctrans_pagemap_count(map, l);
        }
        g_assert_cmpuint(total, ==, 5000);
    }
    g_rand_free(rand);
    fctrans_pagemap_free(map);
}

/* Place every page of @map once, in order; @zero_from: zero pages after. */
static void place_pass(FctransPlacer *pl, FctransPageMap *map,
                       uint64_t zero_from, bool hot)
{
    uint64_t p;

    for (p = 0; p < fctrans_pagemap_npages(map); p++) {
        FctransPageLoc loc = fctrans_placer_decide(pl, p, p >= zero_from, hot);

        g_assert_cmpuint(loc, !=, FCTRANS_LOC_NONE);
        fctrans_pagemap_set(map, p, loc);
    }
}

static void test_place_working_set(void)
{
    /* 4096 pages; budget 2048; sub-hosts of 1024 and 3072 pages */
    FctransPageMap *map = fctrans_pagemap_new(4096, 2);
    const uint64_t cap[2] = { 1024, 3072 };
    FctransPlacer *pl = fctrans_placer_new(FCTRANS_PLACEMENT_WORKING_SET,
                                           map, 2048, cap);
    uint64_t p, s0, s1;

    g_assert_true(fctrans_placer_fits(pl));
    /* First pass: pages 3584.. are zero */
    place_pass(pl, map, 3584, false);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_UNUSED), ==, 512);
    /* The main host keeps a quarter of its budget for hot pages */
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_MAIN),
                     ==, 2048 - 512);
    /* The rest is spread by capacity (1:3) in extents */
    s0 = fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(0));
    s1 = fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(1));
    g_assert_cmpuint(s0 + s1, ==, 4096 - 512 - 1536);
    g_assert_cmpuint(s0, <=, s1 / 3 + FCTRANS_PLACEMENT_EXTENT_PAGES);
    g_assert_cmpuint(s1, <=, 3 * s0 + FCTRANS_PLACEMENT_EXTENT_PAGES);

    /* Hot pages on sub-hosts move to the main host while it has room */
    for (p = 3000; p < 3584; p++) {
        FctransPageLoc loc = fctrans_placer_decide(pl, p, false, true);

        if (p < 3000 + 512) {
            g_assert_cmpuint(loc, ==, FCTRANS_LOC_MAIN);
        } else {
            /* budget reached: the page stays where it is */
            g_assert_cmpuint(loc, ==, fctrans_pagemap_get(map, p));
        }
        fctrans_pagemap_set(map, p, loc);
    }
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_MAIN), ==, 2048);

    /* A cold page already placed does not move; a zeroed one is unused */
    g_assert_cmpuint(fctrans_placer_decide(pl, 1700, false, false), ==,
                     fctrans_pagemap_get(map, 1700));
    g_assert_cmpuint(fctrans_placer_decide(pl, 0, true, true), ==,
                     FCTRANS_LOC_UNUSED);
    g_assert_cmpuint(fctrans_placer_decide(pl, 0, false, false), ==,
                     FCTRANS_LOC_MAIN);
    fctrans_placer_free(pl);
    fctrans_pagemap_free(map);
}

/*
 * Page-out on the main host: a page keeps its slot on its sub-host; a
 * page with none goes where there is room, spread by capacity; zero pages
 * go nowhere; with every sub-host full or excluded, nowhere to go.
 */
static void test_place_evict(void)
{
    FctransPageMap *map = fctrans_pagemap_new(4096, 2);
    const uint64_t cap[2] = { 512, 1536 };
    FctransPlacer *pl = fctrans_placer_new(FCTRANS_PLACEMENT_SEQUENTIAL,
                                           map, 0, cap);
    uint64_t p, s0, s1;

    fctrans_pagemap_set_range(map, 0, 4096, FCTRANS_LOC_MAIN);
    fctrans_pagemap_set(map, 7, FCTRANS_LOC_SUBHOST(1));
    g_assert_cmpuint(fctrans_placer_evict(pl, 7, false), ==,
                     FCTRANS_LOC_SUBHOST(1));
    g_assert_cmpuint(fctrans_placer_evict(pl, 7, true), ==,
                     FCTRANS_LOC_UNUSED);
    /* Excluded: its slot there does not count, the page goes elsewhere */
    fctrans_placer_exclude(pl, 1, true);
    g_assert_cmpuint(fctrans_placer_evict(pl, 7, false), ==,
                     FCTRANS_LOC_SUBHOST(0));
    fctrans_placer_exclude(pl, 1, false);

    /* Spread 1:3 even under the sequential policy, until both are full */
    for (p = 100; p < 100 + 2047; p++) {
        FctransPageLoc loc = fctrans_placer_evict(pl, p, false);

        g_assert_true(FCTRANS_LOC_IS_SUBHOST(loc));
        fctrans_pagemap_set(map, p, loc);
    }
    s0 = fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(0));
    s1 = fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(1));
    g_assert_cmpuint(s0, ==, 512);
    g_assert_cmpuint(s1, ==, 1536);
    g_assert_cmpuint(fctrans_placer_evict(pl, 3000, false), ==,
                     FCTRANS_LOC_NONE);
    /* A page with a slot still goes there when the sub-host is full */
    g_assert_cmpuint(fctrans_placer_evict(pl, 7, false), ==,
                     FCTRANS_LOC_SUBHOST(1));
    fctrans_placer_free(pl);
    fctrans_pagemap_free(map);
}

static void test_place_sequential(void)
{
    FctransPageMap *map = fctrans_pagemap_new(1000, 2);
    const uint64_t cap[2] = { 300, 300 };
    FctransPlacer *pl = fctrans_placer_new(FCTRANS_PLACEMENT_SEQUENTIAL,
                                           map, 400, cap);
    FctransPageLoc loc;

    g_assert_true(fctrans_placer_fits(pl));
    place_pass(pl, map, 1000, false);
    g_assert_cmpuint(fctrans_pagemap_run(map, 0, &loc), ==, 400);
    g_assert_cmpuint(loc, ==, FCTRANS_LOC_MAIN);
    g_assert_cmpuint(fctrans_pagemap_run(map, 400, &loc), ==, 300);
    g_assert_cmpuint(loc, ==, FCTRANS_LOC_SUBHOST(0));
    g_assert_cmpuint(fctrans_pagemap_run(map, 700, &loc), ==, 300);
    g_assert_cmpuint(loc, ==, FCTRANS_LOC_SUBHOST(1));
    /* Hot or not, placed pages stay */
    place_pass(pl, map, 1000, true);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_MAIN), ==, 400);
    fctrans_placer_free(pl);
    fctrans_pagemap_free(map);
}

static void test_place_full(void)
{
    FctransPageMap *map = fctrans_pagemap_new(1000, 2);
    const uint64_t cap[2] = { 100, 100 };
    FctransPlacer *pl = fctrans_placer_new(FCTRANS_PLACEMENT_WORKING_SET,
                                           map, 400, cap);
    uint64_t p;

    g_assert_false(fctrans_placer_fits(pl));
    for (p = 0; p < 600; p++) {
        FctransPageLoc loc = fctrans_placer_decide(pl, p, false, false);

        g_assert_cmpuint(loc, !=, FCTRANS_LOC_NONE);
        fctrans_pagemap_set(map, p, loc);
    }
    /* Reserve used once the sub-hosts are full; then nothing is left */
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_MAIN), ==, 400);
    g_assert_cmpuint(fctrans_placer_decide(pl, 600, false, false), ==,
                     FCTRANS_LOC_NONE);
    /* ...but zero pages are always fine */
    g_assert_cmpuint(fctrans_placer_decide(pl, 600, true, false), ==,
                     FCTRANS_LOC_UNUSED);
    fctrans_placer_free(pl);
    fctrans_pagemap_free(map);
}

static void test_place_exclude(void)
{
    FctransPageMap *map = fctrans_pagemap_new(1000, 2);
    const uint64_t cap[2] = { 1000, 1000 };
    FctransPlacer *pl = fctrans_placer_new(FCTRANS_PLACEMENT_WORKING_SET,
                                           map, 0, cap);
    uint64_t p;

    fctrans_placer_exclude(pl, 0, true);
    place_pass(pl, map, 1000, false);
    g_assert_cmpuint(fctrans_pagemap_count(map, FCTRANS_LOC_SUBHOST(1)),
                     ==, 1000);
    /* A page already on an excluded sub-host may stay there */
    fctrans_placer_exclude(pl, 0, false);
    fctrans_pagemap_set(map, 5, FCTRANS_LOC_SUBHOST(0));
    fctrans_placer_exclude(pl, 0, true);
    g_assert_cmpuint(fctrans_placer_decide(pl, 5, false, false), ==,
                     FCTRANS_LOC_SUBHOST(0));
    fctrans_placer_exclude(pl, 1, true);
    for (p = 10; p < 20; p++) {
        fctrans_pagemap_set(map, p, FCTRANS_LOC_UNUSED);
        g_assert_cmpuint(fctrans_placer_decide(pl, p, false, false), ==,
                         FCTRANS_LOC_NONE);
    }
    fctrans_placer_free(pl);
    fctrans_pagemap_free(map);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/pagemap/basic", test_basic);
    g_test_add_func("/pagemap/roundtrip-random", test_roundtrip_random);
    g_test_add_func("/pagemap/incremental", test_incremental);
    g_test_add_func("/pagemap/compact", test_compact);
    g_test_add_func("/pagemap/decode-invalid", test_decode_invalid);
    g_test_add_func("/pagemap/decode-fuzz", test_decode_fuzz);
    g_test_add_func("/placement/working-set", test_place_working_set);
    g_test_add_func("/placement/sequential", test_place_sequential);
    g_test_add_func("/placement/evict", test_place_evict);
    g_test_add_func("/placement/full", test_place_full);
    g_test_add_func("/placement/exclude", test_place_exclude);
    return g_test_run();
}
