/*
 * fctrans: a log-linear histogram of 64-bit values (latencies)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Bucket i < 16 holds the value i. Above, a value whose highest set bit
 * is b (b >= 4) lands in one of 16 buckets of width 2^(b - 4) that split
 * [2^b, 2^(b+1)), picked by the 4 bits below b: the relative width of a
 * bucket is at most 1/16, so its middle is within 1/32 of any value in
 * it. See histogram.h for the contract.
 */
#include "histogram.h"

#include <stdbool.h>

unsigned fctrans_hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < FCTRANS_HIST_SUB) {
        return v;
    }
    msb = 63 - __builtin_clzll(v);
    shift = msb - FCTRANS_HIST_SUB_BITS;
    return (shift + 1) * FCTRANS_HIST_SUB +
           ((v >> shift) & (FCTRANS_HIST_SUB - 1));
}

uint64_t fctrans_hist_bucket_value(unsigned i)
{
    unsigned shift;
    uint64_t low;

    if (i < FCTRANS_HIST_SUB) {
        return i;
    }
    shift = i / FCTRANS_HIST_SUB - 1;
    low = (uint64_t)(FCTRANS_HIST_SUB + i % FCTRANS_HIST_SUB) << shift;
    return low + ((UINT64_C(1) << shift) >> 1);
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void store(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

void fctrans_hist_record(FctransHist *h, uint64_t v)
{
    uint64_t cur = load(&h->max);

    __atomic_fetch_add(&h->bucket[fctrans_hist_index(v)], 1,
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum, v, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    while (v > cur &&
           !__atomic_compare_exchange_n(&h->max, &cur, v, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        /* cur was reloaded */
    }
}

uint64_t fctrans_hist_count(const FctransHist *h)
{
    return load(&h->count);
}

uint64_t fctrans_hist_max(const FctransHist *h)
{
    return load(&h->max);
}

uint64_t fctrans_hist_mean(const FctransHist *h)
{
    uint64_t n = load(&h->count);

    return n ? load(&h->sum) / n : 0;
}

uint64_t fctrans_hist_percentile(const FctransHist *h, unsigned permille)
{
    uint64_t total = 0, rank, seen = 0, max = load(&h->max);
    unsigned i;

    /*
     * Rank against the buckets' own total, not the count: with samples
     * being recorded meanwhile, the walk below must reach its rank.
     */
    for (i = 0; i < FCTRANS_HIST_BUCKETS; i++) {
        total += load(&h->bucket[i]);
    }
    if (!total) {
        return 0;
    }
    if (permille > 1000) {
        permille = 1000;
    }
    /* At least permille/1000 of the samples: round the rank up. */
    rank = total / 1000 * permille + (total % 1000 * permille + 999) / 1000;
    if (!rank) {
        rank = 1;
    }
    for (i = 0; i < FCTRANS_HIST_BUCKETS; i++) {
        seen += load(&h->bucket[i]);
        if (seen >= rank) {
            break;
        }
    }
    if (i == FCTRANS_HIST_BUCKETS) {
        /* Reset meanwhile: buckets emptied under the walk */
        return max;
    }
    /*
     * The middle of the top bucket can lie above its largest sample;
     * max may be behind a sample still being recorded, hence max > 0.
     */
    if (max && fctrans_hist_bucket_value(i) > max) {
        return max;
    }
    return fctrans_hist_bucket_value(i);
}

void fctrans_hist_reset(FctransHist *h)
{
    unsigned i;

    store(&h->count, 0);
    store(&h->sum, 0);
    store(&h->max, 0);
    for (i = 0; i < FCTRANS_HIST_BUCKETS; i++) {
        store(&h->bucket[i], 0);
    }
}
