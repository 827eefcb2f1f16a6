/*
 * Split migration, main host side: page-out, which keeps a split-memory
 * VM within its resident budget
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A thread of its own ("split-pageout") pages guest memory out to the
 * sub-hosts when the resident pages pass the high watermark, down to the
 * low one (fctrans/budget.h); a page-in that would go past the budget
 * itself waits on the fault thread until page-out made room. Nothing here
 * runs on the fault path, and nothing takes the BQL.
 *
 * Victims: a CLOCK over the pages' states. The REF flag is set when a
 * page is paged in and when the guest writes to a write-protected page;
 * the hand clears it. A dirty page the hand finds without REF is
 * write-protected (PROBED) rather than taken: it is a victim only if the
 * guest did not write to it for a whole turn. A clean page without REF
 * is a victim at once. That is what every kernel gives without touching
 * the guest: sync write-protect faults (6.1 and 6.12 alike) and the
 * pager's own fault history. Reads of a resident page are not seen: the
 * clock approximates LRU by page-in and write recency.
 *
 * One batch of up to SPLIT_PAGEOUT_BATCH victims at a time, each moved
 * to EVICTING by compare-and-swap from PRESENT or CLEAN:
 *   1. a dirty page is write-protected (UFFDIO_WRITEPROTECT, which goes
 *      through the mmu notifiers: KVM and TCG writers fault from then on),
 *      copied and checked for zeros; a clean one already is protected and
 *      its sub-host copy is current;
 *   2. a dirty page that is not all zero is written to the sub-host that
 *      holds its slot, or to the one with room that is least full
 *      relative to its capacity (fctrans_placer_evict()), on the bulk
 *      lane, and only through a connection whose export was checked;
 *   3. once the sub-host acknowledged the write (a clean or zero page
 *      needs none), under place_lock: the map records the new location,
 *      the page is dropped (ram_block_discard_range()), set ABSENT, and
 *      its waiters are woken; they fault again and page it in.
 * A write during 1-3 is a write-protect fault on an EVICTING page: the
 * fault thread flags it WRITTEN and the writer waits; at step 3 such a
 * page stays (its protection lifted, which lets the writer through, and
 * dirty). A write fault not read yet at step 3 finds the page dropped:
 * the writer is woken, faults again and pages in what was written, then
 * writes. A fault for a missing page that is EVICTING waits for the wake
 * of step 3. A page the guest discards meanwhile (flag DISCARDED) ends as
 * unused. A failed write gives the eviction up: the page stays dirty.
 *
 * Pages that a device has mapped to write into (split_dma_begin(), from
 * address_space_map()) are not dropped: checked after the protection,
 * which a later mapping's kernel pin faults on.
 *
 * Page-out pauses while an outgoing migration may keep pages on a
 * sub-host (split_pager_handover_begin()) and for good once one was
 * handed over: the budget is not enforced then. It is not enforced
 * either while nothing can be paged out (no sub-host connected or with
 * room): faults go past the budget then rather than wait for ever, and
 * the memory cgroup guard of split-pager.c still holds.
 */
#include "qemu/osdep.h"
#include "qemu/coroutine.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-split.h"
#include "qobject/qdict.h"
#include "monitor/hmp.h"
#include "exec/cpu-common.h"
#include "exec/ramblock.h"
#include "fctrans/budget.h"
#include "fctrans/placement.h"
#include "migration/split-memory.h"
#include "split-pager.h"
#include "trace.h"

/* Victims per batch */
#define SPLIT_PAGEOUT_BATCH     64
/* Pages the hand passes with place_lock held at once */
#define SPLIT_PAGEOUT_SCAN      (64 * 1024)
/* After a batch that paged nothing out, wait this long before the next */
#define SPLIT_PAGEOUT_STALL_MS  100
/* split-set-budget gives up once page-out stalled for this long */
#define SPLIT_BUDGET_STALL_MS   2000

typedef struct SplitVictim {
    SplitPageout *po;
    uint64_t g;
    SplitBlock *b;
    bool clean;                 /* was CLEAN: nothing to write */
    bool protected;             /* write-protected by this batch */
    bool zero;
    int k;                      /* destination sub-host, or -1 */
    bool written;               /* acknowledged; callbacks set it under lock */
    bool commit;                /* to be dropped */
    unsigned run;               /* pages from here sent in one write */
} SplitVictim;

struct SplitPageout {
    SplitPager *pg;
    QemuThread thread;
    QemuMutex lock;
    QemuCond cond;              /* work to do, or a write completed */
    /* Under lock: */
    bool kicked;
    unsigned writes;            /* writes of the batch in flight */
    /* Atomic: read by the fault thread and the monitor */
    uint64_t budget;            /* pages */
    uint64_t high;
    uint64_t low;
    bool room_wanted;           /* a fault waits for room */
    bool stalled;               /* the last batch paged nothing out */
    int64_t stalled_since;      /* ns */
    unsigned holds;             /* outgoing migrations keeping sub-hosts */
    /* The thread's own */
    uint64_t hand;
    FctransPlacer *placer;
    uint8_t *buf;
    SplitVictim v[SPLIT_PAGEOUT_BATCH];
    /* Statistics, atomic */
    uint64_t page_outs;         /* written to a sub-host, then dropped */
    uint64_t clean_drops;       /* dropped, their sub-host copy current */
    uint64_t zero_drops;        /* all zero: dropped, now unused */
    uint64_t aborted;           /* written to meanwhile, or write failed */
    uint64_t write_errors;
    uint64_t dma_busy;          /* kept: a device had it mapped to write */
    uint64_t probes;            /* dirty pages write-protected by the hand */
    uint64_t over_budget;       /* page-ins let past the budget */
    FctransHist lat;            /* batch start to drop, ns */
};

/*
 * Ranges of split RAM that devices have mapped for writing. Few at once
 * (the requests in flight), so a list under a lock.
 */
typedef struct SplitDmaRange {
    RAMBlock *rb;
    ram_addr_t offset;
    uint64_t len;
    unsigned refs;
} SplitDmaRange;

static QemuMutex split_dma_lock;
static GArray *split_dma_ranges;        /* under split_dma_lock */

/* The range mapped at @offset of @rb, with split_dma_lock held; or NULL */
static SplitDmaRange *split_dma_find(RAMBlock *rb, ram_addr_t offset,
                                     guint *index)
{
    guint i;

    for (i = 0; i < split_dma_ranges->len; i++) {
        SplitDmaRange *e = &g_array_index(split_dma_ranges, SplitDmaRange, i);

        if (e->rb == rb && e->offset == offset) {
            *index = i;
            return e;
        }
    }
    return NULL;
}

void split_dma_begin(RAMBlock *rb, ram_addr_t offset, uint64_t len)
{
    SplitPager *pg = split_pager_get();
    SplitDmaRange r = { .rb = rb, .offset = offset, .len = len, .refs = 1 };
    SplitDmaRange *e;
    guint i;

    if (!pg || !pg->po) {
        return;
    }
    WITH_QEMU_LOCK_GUARD(&split_dma_lock) {
        e = split_dma_find(rb, offset, &i);
        if (e) {
            e->len = MAX(e->len, len);
            e->refs++;
        } else {
            g_array_append_val(split_dma_ranges, r);
        }
    }
}

void split_dma_end(RAMBlock *rb, ram_addr_t offset)
{
    SplitPager *pg = split_pager_get();
    SplitDmaRange *e;
    guint i;

    if (!pg || !pg->po) {
        return;
    }
    WITH_QEMU_LOCK_GUARD(&split_dma_lock) {
        /* None: mapped before page-out started */
        e = split_dma_find(rb, offset, &i);
        if (e && !--e->refs) {
            g_array_remove_index_fast(split_dma_ranges, i);
        }
    }
}

/* Whether a device has page @g of @b mapped for writing */
static bool split_dma_busy(SplitPager *pg, SplitBlock *b, uint64_t g)
{
    ram_addr_t off = (g - b->first_page) * pg->page_size;
    guint i;

    WITH_QEMU_LOCK_GUARD(&split_dma_lock) {
        for (i = 0; i < split_dma_ranges->len; i++) {
            SplitDmaRange *e = &g_array_index(split_dma_ranges,
                                              SplitDmaRange, i);

            if (e->rb == b->rb && off + pg->page_size > e->offset &&
                off < e->offset + e->len) {
                return true;
            }
        }
    }
    return false;
}

SplitBlock *split_pager_block_of(SplitPager *pg, uint64_t g)
{
    SplitLayout *layout = &pg->si->layout;
    unsigned i;

    for (i = 0; i < layout->nblocks; i++) {
        SplitBlock *b = &layout->blocks[i];

        if (g >= b->first_page && g - b->first_page < b->npages) {
            return b;
        }
    }
    g_assert_not_reached();
}

static void split_pageout_kick(SplitPageout *po)
{
    WITH_QEMU_LOCK_GUARD(&po->lock) {
        if (!po->kicked) {
            po->kicked = true;
            qemu_cond_broadcast(&po->cond);
        }
    }
}

/* Whether page-out keeps the VM within its budget now */
static bool split_pageout_enforced(SplitPageout *po)
{
    return !qatomic_read(&po->holds) && !qatomic_read(&po->stalled) &&
           qatomic_read(&po->pg->load_state) == SPLIT_LOAD_MAY_RUN;
}

uint32_t split_pageout_room(SplitPageout *po, uint32_t want)
{
    SplitPager *pg = po->pg;
    uint64_t used = qatomic_read(&pg->resident) + qatomic_read(&pg->inflight);
    uint64_t budget = qatomic_read(&po->budget);

    if (used < budget) {
        return MIN(want, budget - used);
    }
    if (!split_pageout_enforced(po)) {
        qatomic_inc(&po->over_budget);
        return want;
    }
    qatomic_set(&po->room_wanted, true);
    split_pageout_kick(po);
    return 0;
}

void split_pageout_placed(SplitPageout *po)
{
    if (qatomic_read(&po->pg->resident) > qatomic_read(&po->high)) {
        split_pageout_kick(po);
    }
}

uint64_t split_pageout_budget(SplitPageout *po)
{
    return qatomic_read(&po->budget);
}

static void split_pageout_set_watermarks(SplitPageout *po, uint64_t pages)
{
    FctransWatermarks wm;

    fctrans_budget_watermarks(pages, &wm);
    qatomic_set(&po->low, wm.low);
    qatomic_set(&po->high, wm.high);
    qatomic_set(&po->budget, wm.budget);
    trace_split_pageout_budget(wm.budget, wm.high, wm.low);
}

/*
 * Whether a clean page whose copy is on sub-host @k may be dropped: only
 * while that copy can be paged in again.
 */
static bool split_pageout_copy_reachable(SplitPager *pg, unsigned k)
{
    SplitPagerSubhost *sub = &pg->si->sub[k];

    return !qatomic_read(&sub->lost) && !qatomic_read(&sub->handed_over) &&
           fctrans_subhost_is_connected(sub->sh);
}

/*
 * Which sub-hosts page-out may write to now: connected, checked since
 * the last reconnect, not kept by an outgoing migration.
 */
static void split_pageout_exclude(SplitPageout *po)
{
    SplitPager *pg = po->pg;
    unsigned k;

    for (k = 0; k < pg->si->nsubhosts; k++) {
        SplitRecon *r = &pg->recon[k];
        bool usable;

        WITH_QEMU_LOCK_GUARD(&r->lock) {
            usable = !r->active && !r->unverified && !r->keep;
        }
        usable = usable && split_pageout_copy_reachable(pg, k);
        fctrans_placer_exclude(po->placer, k, !usable);
    }
}

/* Take up to @want victims from the clock, with place_lock held. */
static unsigned split_pageout_select(SplitPageout *po, unsigned want)
{
    SplitPager *pg = po->pg;
    uint64_t npages = pg->si->layout.npages;
    uint64_t scanned;
    unsigned n = 0;

    /* Two turns: the first may only clear REF flags */
    for (scanned = 0; n < want && scanned < 2 * npages; scanned++) {
        uint64_t g = po->hand;
        uint8_t s = qatomic_read(&pg->state[g]);
        unsigned st = SPLIT_PAGE_STATE(s);
        SplitVictim *v;

        po->hand = g + 1 == npages ? 0 : g + 1;
        if (scanned && !(scanned % SPLIT_PAGEOUT_SCAN)) {
            /* Let a guest discard in */
            g_rw_lock_reader_unlock(&pg->place_lock);
            g_rw_lock_reader_lock(&pg->place_lock);
        }
        if (st != SPLIT_PAGE_PRESENT && st != SPLIT_PAGE_CLEAN) {
            continue;
        }
        if (s & SPLIT_PAGE_REF) {
            qatomic_cmpxchg(&pg->state[g], s, s & ~SPLIT_PAGE_REF);
            continue;
        }
        if (st == SPLIT_PAGE_PRESENT && !(s & SPLIT_PAGE_PROBED)) {
            /*
             * Dirty and not seen since: a write before the next turn
             * is a write-protect fault, which sets REF again.
             */
            if (qatomic_cmpxchg(&pg->state[g], s, s | SPLIT_PAGE_PROBED) ==
                s) {
                SplitBlock *b = split_pager_block_of(pg, g);

                if (split_uffd_protect(pg, split_page_host(b, g,
                                                           pg->page_size),
                                       pg->page_size, true)) {
                    qatomic_and(&pg->state[g], (uint8_t)~SPLIT_PAGE_PROBED);
                }
                qatomic_inc(&po->probes);
            }
            continue;
        }
        if (st == SPLIT_PAGE_CLEAN) {
            FctransPageLoc loc = fctrans_pagemap_get(pg->si->map, g);

            if (!FCTRANS_LOC_IS_SUBHOST(loc) ||
                !split_pageout_copy_reachable(pg,
                                              FCTRANS_LOC_SUBHOST_INDEX(loc))) {
                continue;
            }
        }
        if (qatomic_cmpxchg(&pg->state[g], s, SPLIT_PAGE_EVICTING) != s) {
            continue;           /* a fault took it meanwhile */
        }
        v = &po->v[n++];
        *v = (SplitVictim) {
            .po = po, .g = g, .b = split_pager_block_of(pg, g),
            .clean = st == SPLIT_PAGE_CLEAN, .k = -1,
        };
    }
    return n;
}

static void split_pageout_write_done(void *opaque, const GError *err)
{
    SplitVictim *v = opaque;
    SplitPageout *po = v->po;
    SplitRecon *r = &po->pg->recon[v->k];

    if (err) {
        qatomic_inc(&po->write_errors);
        trace_split_pageout_write_failed(v->k, v->g, err->message);
    }
    /* A handover waits for it (see split_pageout_send()) */
    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (!--r->trims) {
            qemu_cond_broadcast(&r->cond);
        }
    }
    WITH_QEMU_LOCK_GUARD(&po->lock) {
        unsigned i;

        for (i = 0; i < v->run; i++) {
            v[i].written = !err;
        }
        if (!--po->writes) {
            qemu_cond_broadcast(&po->cond);
        }
    }
}

/*
 * Send the copies of v->run pages from @v on to sub-host v->k, under its
 * reconnect lock: never to an export a reconnect has not checked yet,
 * nor to one an outgoing migration keeps. False when it was not sent.
 */
static bool split_pageout_send(SplitPageout *po, SplitVictim *v,
                               const uint8_t *buf)
{
    SplitPager *pg = po->pg;
    SplitRecon *r = &pg->recon[v->k];
    g_autoptr(GError) gerr = NULL;
    bool sent = false;

    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (r->unverified || r->keep ||
            qatomic_read(&pg->si->sub[v->k].handed_over)) {
            break;
        }
        /*
         * Counted with the discard trims: a handover waits for both, so
         * that none lands after the outgoing migration's own writes.
         */
        r->trims++;
        WITH_QEMU_LOCK_GUARD(&po->lock) {
            po->writes++;
        }
        sent = fctrans_subhost_write(pg->si->sub[v->k].sh,
                                     v->g * pg->page_size,
                                     (size_t)v->run * pg->page_size, buf,
                                     FCTRANS_SUBHOST_REQ_BULK,
                                     split_pageout_write_done, v, &gerr);
        if (!sent) {
            r->trims--;
            WITH_QEMU_LOCK_GUARD(&po->lock) {
                po->writes--;
            }
            trace_split_pageout_write_failed(v->k, v->g, gerr->message);
        }
    }
    return sent;
}

/*
 * Give the eviction of @v up, with place_lock held: the page stays,
 * dirty. Lifting the protection lets a writer that waits through.
 */
static void split_pageout_abort(SplitPageout *po, SplitVictim *v,
                                uint8_t *host, uint8_t s)
{
    SplitPager *pg = po->pg;
    int ret = split_uffd_protect(pg, host, pg->page_size, false);

    if (ret) {
        error_report("split: cannot let a write to guest page %" PRIu64
                     " through: %s", v->g, strerror(-ret));
        qatomic_set(&pg->failed, true);
    }
    if (v->written && v->k >= 0 &&
        fctrans_pagemap_get(pg->si->map, v->g) != FCTRANS_LOC_SUBHOST(v->k)) {
        /* Its slot there: a later eviction writes there again */
        fctrans_pagemap_set(pg->si->map, v->g, FCTRANS_LOC_SUBHOST(v->k));
    }
    qatomic_set(&pg->state[v->g], SPLIT_PAGE_PRESENT |
                (s & SPLIT_PAGE_WRITTEN ? SPLIT_PAGE_REF : 0));
    qatomic_inc(&po->aborted);
    trace_split_pageout_abort(v->g, s);
}

/*
 * Drop the @n victims from @v on, consecutive pages of one block, with
 * place_lock held: one discard and one wake for the run. False when the
 * drop failed (nothing changed then).
 */
static bool split_pageout_commit(SplitPageout *po, SplitVictim *v,
                                 unsigned n, int64_t t0)
{
    SplitPager *pg = po->pg;
    SplitIncoming *si = pg->si;
    uint32_t ps = pg->page_size;
    uint8_t *host = split_page_host(v->b, v->g, ps);
    int64_t ns;
    unsigned i;

    if (ram_block_discard_range(v->b->rb, (v->g - v->b->first_page) * ps,
                                (size_t)n * ps)) {
        error_report_once("split: page-out cannot drop guest pages %" PRIu64
                          "+%u", v->g, n);
        return false;
    }
    ns = MAX(get_clock() - t0, 0);
    for (i = 0; i < n; i++, v++) {
        uint8_t s = qatomic_read(&pg->state[v->g]);
        bool discarded = s & SPLIT_PAGE_DISCARDED;
        FctransPageLoc loc = discarded || v->zero ? FCTRANS_LOC_UNUSED :
                             FCTRANS_LOC_SUBHOST(v->k);

        if (fctrans_pagemap_get(si->map, v->g) != loc) {
            fctrans_pagemap_set(si->map, v->g, loc);
        }
        /* Flags go: a write flagged since the check finds it dropped */
        qatomic_set(&pg->state[v->g], SPLIT_PAGE_ABSENT);
        qatomic_dec(&pg->resident);
        if (loc == FCTRANS_LOC_UNUSED) {
            qatomic_inc(&pg->unused);
        } else {
            qatomic_inc(&si->sub[v->k].remaining);
        }
        if (discarded) {
            /* nothing to count: the guest gave it up */
        } else if (v->zero) {
            qatomic_inc(&po->zero_drops);
        } else if (v->clean) {
            qatomic_inc(&po->clean_drops);
        } else {
            qatomic_inc(&po->page_outs);
            qatomic_inc(&si->sub[v->k].page_outs);
        }
        fctrans_hist_record(&po->lat, ns);
        trace_split_pageout_drop(v->g, v->k, v->clean, v->zero, discarded);
    }
    /* Threads that faulted on them meanwhile fault again and page in */
    split_uffd_wake(pg->uffd, host, (uint64_t)n * ps);
    return true;
}

/* Whether @b follows @a in the same block */
static bool split_victim_next(const SplitVictim *a, const SplitVictim *b)
{
    return a->b == b->b && a->g + 1 == b->g;
}

static int split_victim_cmp(const void *a, const void *b)
{
    const SplitVictim *va = a, *vb = b;

    return va->g < vb->g ? -1 : va->g > vb->g;
}

/* One batch of at most @want pages; how many were dropped. */
static unsigned split_pageout_batch(SplitPageout *po, unsigned want)
{
    SplitPager *pg = po->pg;
    uint32_t ps = pg->page_size;
    int64_t t0 = get_clock();
    unsigned n, i, j, dropped = 0, writes = 0;

    split_pageout_exclude(po);
    g_rw_lock_reader_lock(&pg->place_lock);
    n = split_pageout_select(po, MIN(want, SPLIT_PAGEOUT_BATCH));
    g_rw_lock_reader_unlock(&pg->place_lock);
    /* In page order, so that runs share one ioctl */
    qsort(po->v, n, sizeof(po->v[0]), split_victim_cmp);

    /* Protect the dirty ones, by runs; the clean ones are protected */
    for (i = 0; i < n; i = j) {
        SplitVictim *v = &po->v[i];
        int ret;

        j = i + 1;
        if (v->clean) {
            v->k = FCTRANS_LOC_SUBHOST_INDEX(fctrans_pagemap_get(pg->si->map,
                                                                 v->g));
            v->written = true;
            continue;
        }
        while (j < n && !po->v[j].clean &&
               split_victim_next(&po->v[j - 1], &po->v[j])) {
            j++;
        }
        ret = split_uffd_protect(pg, split_page_host(v->b, v->g, ps),
                                 (uint64_t)(j - i) * ps, true);
        if (ret) {
            error_report_once("split: page-out cannot write-protect guest "
                              "pages %" PRIu64 "+%u: %s", v->g, j - i,
                              strerror(-ret));
            continue;
        }
        for (; v < &po->v[j]; v++) {
            uint8_t *copy = po->buf + (size_t)(v - po->v) * ps;

            v->protected = true;
            /*
             * After the protection: a device write mapped before it may
             * have its page pinned and land after the copy; one mapped
             * since faults on the protection.
             */
            if (split_dma_busy(pg, v->b, v->g)) {
                v->protected = false;
                qatomic_inc(&po->dma_busy);
                continue;
            }
            /* A discarded page faults here: the fault thread places zeros */
            memcpy(copy, split_page_host(v->b, v->g, ps), ps);
            v->zero = buffer_is_zero(copy, ps);
            v->written = v->zero;
        }
    }

    /* Where each dirty copy goes, and send it */
    g_rw_lock_reader_lock(&pg->place_lock);
    for (i = 0; i < n; i++) {
        SplitVictim *v = &po->v[i];
        FctransPageLoc loc;

        if (v->clean || !v->protected || v->zero) {
            continue;
        }
        loc = fctrans_placer_evict(po->placer, v->g, false);
        if (loc != FCTRANS_LOC_NONE && FCTRANS_LOC_IS_SUBHOST(loc)) {
            v->k = FCTRANS_LOC_SUBHOST_INDEX(loc);
        }
    }
    g_rw_lock_reader_unlock(&pg->place_lock);
    for (i = 0; i < n; i = j) {
        SplitVictim *v = &po->v[i];

        j = i + 1;
        if (v->k < 0 || v->clean || v->zero || !v->protected) {
            continue;
        }
        /* One write for a run of pages that go to the same sub-host */
        while (j < n && po->v[j].k == v->k && !po->v[j].clean &&
               !po->v[j].zero && po->v[j].protected &&
               split_victim_next(&po->v[j - 1], &po->v[j])) {
            j++;
        }
        v->run = j - i;
        if (split_pageout_send(po, v, po->buf + (size_t)i * ps)) {
            writes++;
        }
    }
    /* Bounded by the channel's request timeout */
    WITH_QEMU_LOCK_GUARD(&po->lock) {
        while (po->writes) {
            qemu_cond_wait(&po->cond, &po->lock);
        }
    }

    /* Drop what the sub-hosts hold now, by runs; keep the rest */
    g_rw_lock_reader_lock(&pg->place_lock);
    /* Every write callback has returned: v->written is final */
    for (i = 0; i < n; i++) {
        SplitVictim *v = &po->v[i];
        uint8_t s = qatomic_read(&pg->state[v->g]);

        v->commit = v->written;
        if (s & SPLIT_PAGE_DISCARDED) {
            v->commit = true;       /* unused now, whatever was written */
        } else if (s & SPLIT_PAGE_WRITTEN) {
            v->commit = false;
        }
    }
    for (i = 0; i < n; i = j) {
        SplitVictim *v = &po->v[i];

        for (j = i + 1; j < n && po->v[j].commit == v->commit &&
             split_victim_next(&po->v[j - 1], &po->v[j]); j++) {
            /* the run i .. j - 1 */
        }
        if (v->commit && split_pageout_commit(po, v, j - i, t0)) {
            dropped += j - i;
            continue;
        }
        for (; v < &po->v[j]; v++) {
            split_pageout_abort(po, v, split_page_host(v->b, v->g, ps),
                                qatomic_read(&pg->state[v->g]));
        }
    }
    g_rw_lock_reader_unlock(&pg->place_lock);
    trace_split_pageout_batch(n, writes, dropped,
                              (get_clock() - t0) / SCALE_US);
    return dropped;
}

/* Pages to page out now: down to the low watermark once past the high */
static uint64_t split_pageout_need(SplitPageout *po, bool running)
{
    SplitPager *pg = po->pg;
    uint64_t resident = qatomic_read(&pg->resident);
    uint64_t mark = running ? qatomic_read(&po->low) :
                    qatomic_read(&po->high);

    if (qatomic_read(&po->holds) ||
        qatomic_read(&pg->load_state) != SPLIT_LOAD_MAY_RUN) {
        return 0;
    }
    if (resident > mark) {
        return resident - mark;
    }
    return qatomic_read(&po->room_wanted) ? SPLIT_PAGEOUT_BATCH : 0;
}

static void split_pageout_room_made(SplitPageout *po)
{
    if (qatomic_xchg(&po->room_wanted, false)) {
        event_notifier_set(&po->pg->room_notify);
    }
}

static void *split_pageout_thread(void *opaque)
{
    SplitPageout *po = opaque;

    for (;;) {
        uint64_t need;

        WITH_QEMU_LOCK_GUARD(&po->lock) {
            while (!po->kicked && !split_pageout_need(po, false)) {
                qemu_cond_timedwait(&po->cond, &po->lock,
                                    qatomic_read(&po->stalled) ?
                                    SPLIT_PAGEOUT_STALL_MS : 1000);
                if (qatomic_read(&po->stalled)) {
                    break;      /* try again */
                }
            }
            po->kicked = false;
        }
        while ((need = split_pageout_need(po, true))) {
            if (!split_pageout_batch(po, MIN(need, SPLIT_PAGEOUT_BATCH))) {
                if (!qatomic_read(&po->stalled)) {
                    qatomic_set(&po->stalled_since, get_clock());
                    qatomic_set(&po->stalled, true);
                    trace_split_pageout_stalled(
                        qatomic_read(&po->pg->resident));
                }
                /* Waiting faults go past the budget rather than hang */
                split_pageout_room_made(po);
                g_usleep(SPLIT_PAGEOUT_STALL_MS * 1000);
                break;
            }
            qatomic_set(&po->stalled, false);
            split_pageout_room_made(po);
        }
        if (!split_pageout_need(po, true)) {
            qatomic_set(&po->stalled, false);
        }
    }
    return NULL;
}

SplitPageout *split_pageout_start(SplitPager *pg, uint64_t budget_pages)
{
    SplitPageout *po = g_new0(SplitPageout, 1);
    uint64_t cap[SPLIT_MAX_SUBHOSTS] = { 0 };
    unsigned k;

    po->pg = pg;
    qemu_mutex_init(&split_dma_lock);
    split_dma_ranges = g_array_new(false, false, sizeof(SplitDmaRange));
    qemu_mutex_init(&po->lock);
    qemu_cond_init(&po->cond);
    for (k = 0; k < pg->si->nsubhosts; k++) {
        cap[k] = pg->si->sub[k].capacity_pages;
    }
    po->placer = fctrans_placer_new(FCTRANS_PLACEMENT_WORKING_SET,
                                    pg->si->map, 0, cap);
    po->buf = qemu_memalign(pg->page_size,
                            (size_t)SPLIT_PAGEOUT_BATCH * pg->page_size);
    split_pageout_set_watermarks(po, budget_pages);
    /* It lives as long as the pager, which lives as long as the VM */
    qemu_thread_create(&po->thread, "split-pageout", split_pageout_thread,
                       po, QEMU_THREAD_DETACHED);
    return po;
}

void split_pageout_hold(SplitPageout *po, bool hold)
{
    if (hold) {
        qatomic_inc(&po->holds);
        /* Faults waiting for room go on: nothing is paged out meanwhile */
        qatomic_set(&po->room_wanted, true);
        split_pageout_room_made(po);
    } else {
        qatomic_dec(&po->holds);
        split_pageout_kick(po);
    }
}

void split_pageout_fill_info(SplitPageout *po, SplitMemoryInfo *info)
{
    info->has_page_outs = true;
    info->page_outs = qatomic_read(&po->page_outs);
    info->has_page_out_bytes = true;
    info->page_out_bytes = info->page_outs * po->pg->page_size;
    info->has_clean_drops = true;
    info->clean_drops = qatomic_read(&po->clean_drops);
    info->has_zero_drops = true;
    info->zero_drops = qatomic_read(&po->zero_drops);
    info->has_page_outs_aborted = true;
    info->page_outs_aborted = qatomic_read(&po->aborted);
    info->has_page_out_errors = true;
    info->page_out_errors = qatomic_read(&po->write_errors);
    info->has_page_outs_dma_busy = true;
    info->page_outs_dma_busy = qatomic_read(&po->dma_busy);
    info->has_write_probes = true;
    info->write_probes = qatomic_read(&po->probes);
    info->has_over_budget = true;
    info->over_budget = qatomic_read(&po->over_budget);
    info->has_page_out_latency_p50 = true;
    info->page_out_latency_p50 = fctrans_hist_percentile(&po->lat, 500) /
                                 1000;
    info->has_page_out_latency_p99 = true;
    info->page_out_latency_p99 = fctrans_hist_percentile(&po->lat, 990) /
                                 1000;
    info->has_high_watermark = true;
    info->high_watermark = qatomic_read(&po->high);
    info->has_low_watermark = true;
    info->low_watermark = qatomic_read(&po->low);
}

void coroutine_fn qmp_split_set_budget(uint64_t budget, Error **errp)
{
    SplitPager *pg = split_pager_get();
    SplitPageout *po;
    uint64_t pages, npages;
    int64_t t0 = get_clock();

    if (!pg) {
        error_setg(errp, "this VM's memory is not split");
        return;
    }
    po = pg->po;
    if (!po) {
        error_setg(errp, "no page-out on this main host: %s", pg->no_wp_why);
        return;
    }
    if (qatomic_read(&pg->load_state) != SPLIT_LOAD_MAY_RUN) {
        error_setg(errp, "the incoming migration has not completed yet");
        return;
    }
    if (qatomic_read(&po->holds)) {
        error_setg(errp, "a split migration out of this VM keeps its "
                   "sub-hosts: the budget cannot change meanwhile");
        return;
    }
    npages = pg->si->layout.npages;
    pages = budget / pg->page_size;
    if (pages < FCTRANS_BUDGET_MIN_PAGES) {
        error_setg(errp, "a budget of %" PRIu64 " bytes is too small: at "
                   "least %" PRIu64 " bytes", budget,
                   (uint64_t)FCTRANS_BUDGET_MIN_PAGES * pg->page_size);
        return;
    }
    /*
     * More than the guest has: all of it may be resident, and the high
     * watermark stays above the guest's pages (page-out never starts).
     */
    pages = MIN(pages, npages + 2 * FCTRANS_BUDGET_GAP_MAX_PAGES +
                       FCTRANS_BUDGET_MIN_PAGES);
    split_pageout_set_watermarks(po, pages);
    /* A grown budget lets the faults waiting for room in */
    qatomic_set(&po->room_wanted, true);
    split_pageout_room_made(po);
    split_pageout_kick(po);

    /* Shrinking: return once it holds, or with what it reached */
    while (qatomic_read(&pg->resident) > pages) {
        if (qatomic_read(&po->stalled) &&
            get_clock() - qatomic_read(&po->stalled_since) >
            SPLIT_BUDGET_STALL_MS * SCALE_MS) {
            uint64_t reached = qatomic_read(&pg->resident);

            split_pageout_set_watermarks(po, reached);
            error_setg(errp, "the budget of %" PRIu64 " bytes is not "
                       "reached: %" PRIu64 " bytes stay resident, and no "
                       "sub-host can take more pages now", budget,
                       reached * pg->page_size);
            error_append_hint(errp, "The budget is %" PRIu64 " bytes now; "
                              "see query-split-memory for the sub-hosts.\n",
                              qatomic_read(&po->budget) * pg->page_size);
            return;
        }
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 10 * SCALE_MS);
    }
    trace_split_pageout_budget_reached(pages, (get_clock() - t0) / SCALE_MS);
}

void coroutine_fn hmp_split_set_budget(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_split_set_budget(qdict_get_int(qdict, "budget"), &err);
    hmp_handle_error(mon, err);
}
