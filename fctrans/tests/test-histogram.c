/*
 * Tests of the log-linear histogram (histogram.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "histogram.h"

#include <glib.h>
#include <stdlib.h>

static FctransHist *hist_new(void)
{
    return g_new0(FctransHist, 1);
}

/* |got - want| <= want / div, exact for want < 16 */
static void assert_close(uint64_t got, uint64_t want, unsigned div,
                         const char *what)
{
    uint64_t diff = got > want ? got - want : want - got;

    if (want < FCTRANS_HIST_SUB ? diff != 0 : diff > want / div) {
        g_error("%s: %" G_GUINT64_FORMAT " is not within 1/%u of %"
                G_GUINT64_FORMAT, what, got, div, want);
    }
}

static void test_empty(void)
{
    g_autofree FctransHist *h = hist_new();
    unsigned p;

    g_assert_cmpuint(fctrans_hist_count(h), ==, 0);
    g_assert_cmpuint(fctrans_hist_max(h), ==, 0);
    g_assert_cmpuint(fctrans_hist_mean(h), ==, 0);
    for (p = 0; p <= 1100; p += 50) {
        g_assert_cmpuint(fctrans_hist_percentile(h, p), ==, 0);
    }
}

/* Buckets: exact below 16, monotonic, every value within 1/32. */
static void test_buckets(void)
{
    GRand *r = g_rand_new_with_seed(1);
    unsigned i, prev = 0;
    uint64_t v;

    for (v = 0; v < FCTRANS_HIST_SUB; v++) {
        g_assert_cmpuint(fctrans_hist_index(v), ==, v);
        g_assert_cmpuint(fctrans_hist_bucket_value(v), ==, v);
    }
    for (v = 0; v < 100000; v++) {
        unsigned idx = fctrans_hist_index(v);

        g_assert_cmpuint(idx, >=, prev);
        prev = idx;
        assert_close(fctrans_hist_bucket_value(idx), v, 32, "bucket");
    }
    for (i = 0; i < 100000; i++) {
        unsigned bits = g_rand_int_range(r, 1, 65);
        uint64_t x = ((uint64_t)g_rand_int(r) << 32 | g_rand_int(r)) >>
                     (64 - bits);
        unsigned idx = fctrans_hist_index(x);

        g_assert_cmpuint(idx, <, FCTRANS_HIST_BUCKETS);
        assert_close(fctrans_hist_bucket_value(idx), x, 32, "bucket");
        /* The bucket's middle lands in the bucket */
        g_assert_cmpuint(fctrans_hist_index(fctrans_hist_bucket_value(idx)),
                         ==, idx);
    }
    g_assert_cmpuint(fctrans_hist_index(UINT64_MAX), ==,
                     FCTRANS_HIST_BUCKETS - 1);
    g_assert_cmpuint(fctrans_hist_index(UINT64_C(1) << 63), ==,
                     FCTRANS_HIST_BUCKETS - FCTRANS_HIST_SUB);
    g_rand_free(r);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The smallest sample with at least permille/1000 of them <= it */
static uint64_t true_percentile(const uint64_t *sorted, size_t n,
                                unsigned permille)
{
    size_t rank = (n * permille + 999) / 1000;

    return sorted[rank ? rank - 1 : 0];
}

/* Percentiles of several distributions within 1/16 of the true ones. */
static void test_percentiles(void)
{
    static const unsigned permilles[] = {
        0, 1, 10, 100, 250, 500, 750, 900, 990, 999, 1000,
    };
    const size_t n = 20000;
    g_autofree uint64_t *v = g_new(uint64_t, n);
    GRand *r = g_rand_new_with_seed(7);
    unsigned dist, i;

    for (dist = 0; dist < 4; dist++) {
        g_autofree FctransHist *h = hist_new();
        uint64_t sum = 0, max = 0;
        size_t k;

        for (k = 0; k < n; k++) {
            switch (dist) {
            case 0:     /* uniform, small: exact buckets and the first */
                v[k] = g_rand_int_range(r, 0, 100);
                break;
            case 1:     /* page-in latencies: 20-60 us, a slow tail */
                v[k] = g_rand_int_range(r, 20000, 60000);
                if (k % 100 == 0) {
                    v[k] *= 50;
                }
                break;
            case 2:     /* spread over 0 .. 2^40, about evenly per octave */
                v[k] = ((uint64_t)g_rand_int(r) << 32 | g_rand_int(r)) >>
                       g_rand_int_range(r, 24, 64);
                break;
            default:    /* two values far apart */
                v[k] = k % 3 ? 1000 : UINT64_C(1) << 40;
                break;
            }
            fctrans_hist_record(h, v[k]);
            sum += v[k];
            max = MAX(max, v[k]);
        }
        g_assert_cmpuint(fctrans_hist_count(h), ==, n);
        g_assert_cmpuint(fctrans_hist_max(h), ==, max);
        g_assert_cmpuint(fctrans_hist_mean(h), ==, sum / n);
        qsort(v, n, sizeof(v[0]), cmp_u64);
        for (i = 0; i < G_N_ELEMENTS(permilles); i++) {
            uint64_t got = fctrans_hist_percentile(h, permilles[i]);
            uint64_t want = true_percentile(v, n, permilles[i]);
            g_autofree char *what = g_strdup_printf("distribution %u, p%.1f",
                                                    dist,
                                                    permilles[i] / 10.0);

            assert_close(got, want, 16, what);
            g_assert_cmpuint(got, <=, max);
        }
        /* Above 1000 per mille is the top */
        g_assert_cmpuint(fctrans_hist_percentile(h, 5000), ==,
                         fctrans_hist_percentile(h, 1000));
    }
    g_rand_free(r);
}

/* One value: every percentile is it (or near), never above the max. */
static void test_single(void)
{
    static const uint64_t values[] = {
        0, 1, 15, 16, 17, 1000, 4096, 123456789, UINT64_C(1) << 63,
        UINT64_MAX - 1, UINT64_MAX,
    };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(values); i++) {
        g_autofree FctransHist *h = hist_new();

        fctrans_hist_record(h, values[i]);
        g_assert_cmpuint(fctrans_hist_count(h), ==, 1);
        g_assert_cmpuint(fctrans_hist_max(h), ==, values[i]);
        g_assert_cmpuint(fctrans_hist_mean(h), ==, values[i]);
        assert_close(fctrans_hist_percentile(h, 500), values[i], 32, "p50");
        g_assert_cmpuint(fctrans_hist_percentile(h, 990), <=, values[i]);
        g_assert_cmpuint(fctrans_hist_percentile(h, 0), ==,
                         fctrans_hist_percentile(h, 1000));
    }
    {
        /* 1000's bucket is [992, 1024): its middle is above the max */
        g_autofree FctransHist *h = hist_new();

        fctrans_hist_record(h, 1000);
        g_assert_cmpuint(fctrans_hist_percentile(h, 500), ==, 1000);
    }
}

static void test_huge(void)
{
    g_autofree FctransHist *h = hist_new();

    fctrans_hist_record(h, 10);
    fctrans_hist_record(h, UINT64_MAX);
    fctrans_hist_record(h, UINT64_MAX / 2);
    g_assert_cmpuint(fctrans_hist_count(h), ==, 3);
    g_assert_cmpuint(fctrans_hist_max(h), ==, UINT64_MAX);
    g_assert_cmpuint(fctrans_hist_percentile(h, 100), ==, 10);
    assert_close(fctrans_hist_percentile(h, 500), UINT64_MAX / 2, 32,
                 "p50");
    assert_close(fctrans_hist_percentile(h, 1000), UINT64_MAX, 32, "p100");
    /* Counts that would overflow a product with the per-mille */
    h->bucket[fctrans_hist_index(5)] = UINT64_MAX / 4;
    h->bucket[fctrans_hist_index(50)] = UINT64_MAX / 4;
    assert_close(fctrans_hist_percentile(h, 250), 5, 16, "p25 of 2^63");
    assert_close(fctrans_hist_percentile(h, 750), 50, 16, "p75 of 2^63");
}

static void test_reset(void)
{
    g_autofree FctransHist *h = hist_new();
    unsigned i;

    for (i = 0; i < 1000; i++) {
        fctrans_hist_record(h, i * 1000);
    }
    g_assert_cmpuint(fctrans_hist_count(h), ==, 1000);
    fctrans_hist_reset(h);
    g_assert_cmpuint(fctrans_hist_count(h), ==, 0);
    g_assert_cmpuint(fctrans_hist_max(h), ==, 0);
    g_assert_cmpuint(fctrans_hist_mean(h), ==, 0);
    g_assert_cmpuint(fctrans_hist_percentile(h, 500), ==, 0);
    for (i = 0; i < FCTRANS_HIST_BUCKETS; i++) {
        g_assert_cmpuint(h->bucket[i], ==, 0);
    }
    fctrans_hist_record(h, 42);
    g_assert_cmpuint(fctrans_hist_percentile(h, 500), ==, 42);
}

/* Threads record at once, with no lock: no sample is lost. */
#define REC_THREADS 4
#define REC_SAMPLES 200000

static FctransHist *shared;

static gpointer record_thread(gpointer opaque)
{
    uint64_t base = GPOINTER_TO_UINT(opaque);
    unsigned i;

    for (i = 0; i < REC_SAMPLES; i++) {
        fctrans_hist_record(shared, base + i % 1000);
    }
    return NULL;
}

static void test_threads(void)
{
    GThread *t[REC_THREADS];
    uint64_t sum = 0;
    unsigned i;

    shared = hist_new();
    for (i = 0; i < REC_THREADS; i++) {
        t[i] = g_thread_new("rec", record_thread,
                            GUINT_TO_POINTER(i * 1000000));
    }
    for (i = 0; i < REC_THREADS; i++) {
        g_thread_join(t[i]);
        sum += (uint64_t)REC_SAMPLES * (i * 1000000) +
               (uint64_t)REC_SAMPLES / 1000 * (999 * 1000 / 2);
    }
    g_assert_cmpuint(fctrans_hist_count(shared), ==,
                     REC_THREADS * REC_SAMPLES);
    g_assert_cmpuint(fctrans_hist_mean(shared), ==,
                     sum / (REC_THREADS * REC_SAMPLES));
    g_assert_cmpuint(fctrans_hist_max(shared), ==,
                     (REC_THREADS - 1) * 1000000 + 999);
    g_clear_pointer(&shared, g_free);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/histogram/empty", test_empty);
    g_test_add_func("/histogram/buckets", test_buckets);
    g_test_add_func("/histogram/percentiles", test_percentiles);
    g_test_add_func("/histogram/single", test_single);
    g_test_add_func("/histogram/huge", test_huge);
    g_test_add_func("/histogram/reset", test_reset);
    g_test_add_func("/histogram/threads", test_threads);
    return g_test_run();
}
