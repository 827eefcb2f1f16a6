/*
 * fctrans: a log-linear histogram of 64-bit values (latencies)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * 16 linear buckets per power of two: a percentile is reported as the
 * middle of its bucket, within 1/32 of the true value, over the whole
 * uint64_t range, in under 8 KiB. Values below 16 are exact. One type for
 * the whole tree: the sub-host channel's per-operation latencies and the
 * pager's page-in latencies.
 *
 * Threads: every counter is updated with relaxed atomics, so any number
 * of threads may record into one histogram at once without a lock. A
 * reader running meanwhile sees every counter exact, but not one
 * snapshot: a sample may be counted in the total and not yet in its
 * bucket, which moves a percentile by at most that sample. A reset
 * concurrent with recording may keep part of a sample (its bucket but
 * not its count, say); reset only when a glitch of one sample does not
 * matter, or when nothing records.
 *
 * A zero-filled FctransHist is empty; there is nothing to free.
 */
#ifndef FCTRANS_HISTOGRAM_H
#define FCTRANS_HISTOGRAM_H

#include <stdint.h>

#define FCTRANS_HIST_SUB_BITS   4
#define FCTRANS_HIST_SUB        (1u << FCTRANS_HIST_SUB_BITS)
#define FCTRANS_HIST_BUCKETS    ((64 - FCTRANS_HIST_SUB_BITS + 1) * \
                                 FCTRANS_HIST_SUB)

typedef struct FctransHist {
    uint64_t count;
    uint64_t sum;               /* wraps past 2^64 (584 years of ns) */
    uint64_t max;
    uint64_t bucket[FCTRANS_HIST_BUCKETS];
} FctransHist;

void fctrans_hist_record(FctransHist *h, uint64_t v);

uint64_t fctrans_hist_count(const FctransHist *h);
/* Largest value recorded, exact; 0 when empty. */
uint64_t fctrans_hist_max(const FctransHist *h);
/* Mean of the values recorded, exact (sum / count); 0 when empty. */
uint64_t fctrans_hist_mean(const FctransHist *h);

/*
 * The smallest value v such that at least @permille / 1000 of the
 * samples are <= v (500: the median, 990: p99), within 1/32; never more
 * than the maximum recorded. 0 when empty; @permille above 1000 counts
 * as 1000.
 */
uint64_t fctrans_hist_percentile(const FctransHist *h, unsigned permille);

/* Empty the histogram; see the note on threads above. */
void fctrans_hist_reset(FctransHist *h);

/*
 * The bucket of @v, and the middle of bucket @i's range: exposed for the
 * unit test.
 */
unsigned fctrans_hist_index(uint64_t v);
uint64_t fctrans_hist_bucket_value(unsigned i);

#endif /* FCTRANS_HISTOGRAM_H */
