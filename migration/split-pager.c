/*
 * Split migration, main host side: the userfaultfd pager of a split-memory
 * VM
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Once the whole stream was loaded, every page of the split RAM that is not
 * resident here is dropped, transparent huge pages are turned off (a huge
 * page would expose neighbours that were never fetched) and the RAM is
 * registered with userfaultfd in MISSING mode. The first touch of a missing
 * page then wakes the fault thread ("split-pager"), which:
 *   - for a page stored on sub-host k, claims it and up to
 *     SPLIT_PREFETCH_PAGES following pages of the same sub-host, and sends
 *     one read; the sub-host channel's thread places the pages with
 *     UFFDIO_COPY, which wakes every thread waiting on them (remote
 *     page-in). Several reads are in flight at once.
 *   - for any other page (unused, zero, or dropped since by the guest's
 *     balloon) places a zero page with UFFDIO_ZEROPAGE (local page-in).
 * A fault on a page being fetched waits for that fetch. EEXIST means the
 * page is there but its waiters may not have been woken: UFFDIO_WAKE.
 * EAGAIN: the page stays missing and its waiters are woken, so that they
 * fault again and retry.
 *
 * Nothing here takes the BQL: a thread holding it (device emulation,
 * qtest, the monitor) may fault on guest RAM and wait for the pager.
 *
 * A sub-host that fails (request error, connection lost, detected by a
 * watchdog too) is never replaced by zeros: faults on its pages wait, a
 * SPLIT_SUBHOST_LOST event is emitted and the VM is stopped (io-error).
 * The stop runs in a thread of its own: a vCPU that already waits for one
 * of those pages may never acknowledge it (under TCG, or while KVM
 * emulates an instruction), and the main loop must not wait for it. Such
 * a vCPU also keeps QEMU from pausing at exit: when a sub-host was lost,
 * QEMU exits with a failure status at shutdown instead of hanging.
 *
 * The userfaultfd is never closed: closing it would silently fill every
 * missing page with zeros.
 */
#include "qemu/osdep.h"
#include <poll.h>
#include <sys/ioctl.h>
#include "qemu/bitops.h"
#include "qemu/error-report.h"
#include "qemu/madvise.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-split.h"
#include "qapi/qapi-events-split.h"
#include "qobject/qdict.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "system/kvm.h"
#include "system/runstate.h"
#include "migration.h"
#include "options.h"
#include "split.h"
#include "split-internal.h"
#include "trace.h"

/* Following pages of the same sub-host fetched with a faulting page. */
#define SPLIT_PREFETCH_PAGES    15
/* Fault messages read at once. */
#define SPLIT_FAULT_BATCH       16
/* How often the fault thread checks that the sub-hosts are connected. */
#define SPLIT_WATCHDOG_MS       500

/* Latency histogram: 1 us resolution below 64 us, 8 buckets per octave. */
#define SPLIT_LAT_LINEAR        64
#define SPLIT_LAT_BUCKETS       (SPLIT_LAT_LINEAR + 8 * 40)

typedef struct SplitPageIn {
    SplitPager *pg;
    unsigned k;
    SplitBlock *b;
    uint64_t first;             /* global page: the faulting one */
    uint32_t npages;
    uint8_t *buf;
    int64_t t_fault;            /* ns */
} SplitPageIn;

struct SplitPager {
    SplitIncoming *si;
    uint32_t page_size;
    int uffd;
    QemuThread thread;
    uint8_t *state;             /* SPLIT_PAGE_*, per global page */

    /* Statistics, updated atomically */
    uint64_t resident;
    uint64_t resident_at_start;
    uint64_t unused;
    uint64_t page_ins_remote;
    uint64_t page_ins_local;
    uint64_t prefetched;
    uint64_t inflight;
    uint64_t blocked;
    uint64_t eexist;
    uint64_t eagain;
    bool stopping;              /* atomic: the stop thread runs */
    Notifier shutdown;

    QemuMutex lat_lock;
    uint64_t lat_hist[SPLIT_LAT_BUCKETS];
    uint64_t lat_count;
    uint64_t lat_max_ns;
};

static SplitPager *split_pager;

static unsigned split_lat_bucket(uint64_t us)
{
    unsigned log;

    if (us < SPLIT_LAT_LINEAR) {
        return us;
    }
    log = 63 - clz64(us);           /* >= 6 */
    return MIN(SPLIT_LAT_LINEAR + 8 * (log - 6) + ((us >> (log - 3)) & 7),
               SPLIT_LAT_BUCKETS - 1);
}

/* Upper bound, in us, of the values in @bucket. */
static uint64_t split_lat_bucket_max(unsigned bucket)
{
    unsigned log, sub;

    if (bucket < SPLIT_LAT_LINEAR) {
        return bucket;
    }
    log = 6 + (bucket - SPLIT_LAT_LINEAR) / 8;
    sub = (bucket - SPLIT_LAT_LINEAR) % 8;
    return ((UINT64_C(8) + sub + 1) << (log - 3)) - 1;
}

static void split_lat_record(SplitPager *pg, int64_t ns)
{
    WITH_QEMU_LOCK_GUARD(&pg->lat_lock) {
        pg->lat_hist[split_lat_bucket(ns / 1000)]++;
        pg->lat_count++;
        pg->lat_max_ns = MAX(pg->lat_max_ns, (uint64_t)ns);
    }
}

/* Percentile @pct (0-100) in us; call with lat_lock held. */
static uint64_t split_lat_percentile(SplitPager *pg, unsigned pct)
{
    uint64_t want = (pg->lat_count * pct + 99) / 100, seen = 0;
    unsigned b;

    if (!pg->lat_count) {
        return 0;
    }
    for (b = 0; b < SPLIT_LAT_BUCKETS; b++) {
        seen += pg->lat_hist[b];
        if (seen >= want) {
            return MIN(split_lat_bucket_max(b), pg->lat_max_ns / 1000);
        }
    }
    return pg->lat_max_ns / 1000;
}

/* userfaultfd operations; they return 0 or -errno, quietly. */

static int split_uffd_copy(int fd, void *dst, const void *src, uint64_t len,
                           uint64_t *copied)
{
    struct uffdio_copy c = {
        .dst = (uintptr_t)dst,
        .src = (uintptr_t)src,
        .len = len,
    };

    if (ioctl(fd, UFFDIO_COPY, &c)) {
        int err = -errno;

        *copied = c.copy > 0 ? c.copy : 0;
        return err;
    }
    *copied = len;
    return 0;
}

static int split_uffd_zero(int fd, void *dst, uint64_t len)
{
    struct uffdio_zeropage z = {
        .range = { .start = (uintptr_t)dst, .len = len },
    };

    return ioctl(fd, UFFDIO_ZEROPAGE, &z) ? -errno : 0;
}

static void split_uffd_wake(int fd, void *dst, uint64_t len)
{
    struct uffdio_range r = { .start = (uintptr_t)dst, .len = len };

    if (ioctl(fd, UFFDIO_WAKE, &r)) {
        error_report_once("split: UFFDIO_WAKE failed: %s", strerror(errno));
    }
}

static inline uint8_t *split_page_host(SplitBlock *b, uint64_t g,
                                       uint32_t page_size)
{
    return b->rb->host + (g - b->first_page) * page_size;
}

static void split_page_present(SplitPager *pg, uint64_t g)
{
    qatomic_set(&pg->state[g], SPLIT_PAGE_PRESENT);
    qatomic_inc(&pg->resident);
}

/*
 * Stop the VM with the BQL, as the migration thread does. Waiting for the
 * vCPUs to pause releases the BQL, so the monitor stays usable even if a
 * vCPU that waits for a lost page never pauses.
 */
static void *split_pager_stop_thread(void *opaque)
{
    SplitPager *pg = opaque;

    bql_lock();
    if (runstate_is_running()) {
        vm_stop(RUN_STATE_IO_ERROR);
    }
    bql_unlock();
    qatomic_set(&pg->stopping, false);
    return NULL;
}

/* Stop the VM (again, if it was continued since). */
static void split_pager_request_stop(SplitPager *pg)
{
    QemuThread thread;

    if (!qatomic_xchg(&pg->stopping, true)) {
        qemu_thread_create(&thread, "split-stop", split_pager_stop_thread,
                           pg, QEMU_THREAD_DETACHED);
    }
}

static bool split_pager_lost_any(SplitPager *pg)
{
    unsigned k;

    for (k = 0; k < pg->si->nsubhosts; k++) {
        if (qatomic_read(&pg->si->sub[k].lost)) {
            return true;
        }
    }
    return false;
}

/*
 * QEMU pauses every vCPU before it exits; one that waits for a page of a
 * lost sub-host never would. The guest's memory is incomplete anyway.
 */
static void split_pager_shutdown(Notifier *n, void *opaque)
{
    SplitPager *pg = container_of(n, SplitPager, shutdown);

    if (split_pager_lost_any(pg)) {
        error_report("split: guest memory on a lost sub-host: exiting "
                     "without pausing the vCPUs");
        exit(EXIT_FAILURE);
    }
}

static void split_pager_subhost_lost(SplitPager *pg, unsigned k,
                                     const char *why)
{
    SplitPagerSubhost *sub = &pg->si->sub[k];

    if (qatomic_xchg(&sub->lost, true)) {
        return;
    }
    error_report("split: sub-host '%s' is lost (%s); %" PRIu64 " guest pages "
                 "stored there cannot be paged in: stopping the VM", sub->id,
                 why, qatomic_read(&sub->remaining));
    trace_split_pager_lost(sub->id, why);
    qapi_event_send_split_subhost_lost(sub->id, why);
    split_pager_request_stop(pg);
}

/* The pages of @pi from @from on stay missing; their waiters fault again. */
static void split_pagein_abandon(SplitPager *pg, SplitPageIn *pi,
                                 uint32_t from, bool wake)
{
    uint32_t i;

    for (i = from; i < pi->npages; i++) {
        qatomic_set(&pg->state[pi->first + i], SPLIT_PAGE_ABSENT);
    }
    qatomic_sub(&pg->inflight, pi->npages - from);
    if (wake) {
        split_uffd_wake(pg->uffd,
                        split_page_host(pi->b, pi->first + from,
                                        pg->page_size),
                        (uint64_t)(pi->npages - from) * pg->page_size);
    }
}

/* Place the pages read for @pi; runs on a sub-host channel thread. */
static void split_pagein_place(SplitPager *pg, SplitPageIn *pi)
{
    SplitPagerSubhost *sub = &pg->si->sub[pi->k];
    uint32_t ps = pg->page_size, placed = 0;

    while (placed < pi->npages) {
        uint8_t *dst = split_page_host(pi->b, pi->first + placed, ps);
        uint64_t copied, n, i;
        int ret;

        ret = split_uffd_copy(pg->uffd, dst, pi->buf + (uint64_t)placed * ps,
                              (uint64_t)(pi->npages - placed) * ps, &copied);
        n = copied / ps;
        for (i = 0; i < n; i++) {
            split_page_present(pg, pi->first + placed + i);
        }
        placed += n;
        qatomic_sub(&pg->inflight, n);
        qatomic_sub(&sub->remaining, n);
        if (!ret) {
            break;
        }
        if (ret == -EEXIST) {
            /* Present already (not from us): its waiters need a wake-up */
            dst = split_page_host(pi->b, pi->first + placed, ps);
            split_uffd_wake(pg->uffd, dst, ps);
            qatomic_inc(&pg->eexist);
            split_page_present(pg, pi->first + placed);
            qatomic_dec(&pg->inflight);
            qatomic_dec(&sub->remaining);
            placed++;
            continue;
        }
        if (ret == -EAGAIN) {
            qatomic_inc(&pg->eagain);
            split_pagein_abandon(pg, pi, placed, true);
        } else {
            error_report_once("split: UFFDIO_COPY at %p failed: %s", dst,
                              strerror(-ret));
            split_pagein_abandon(pg, pi, placed, false);
        }
        return;
    }
}

static void split_pagein_done(void *opaque, const GError *gerr)
{
    SplitPageIn *pi = opaque;
    SplitPager *pg = pi->pg;

    if (gerr) {
        /* Never zeros instead of the guest's data: the faults wait */
        split_pagein_abandon(pg, pi, 0, false);
        qatomic_inc(&pg->blocked);
        split_pager_subhost_lost(pg, pi->k, gerr->message);
    } else {
        int64_t ns = get_clock() - pi->t_fault;

        split_pagein_place(pg, pi);
        split_lat_record(pg, ns);
        qatomic_inc(&pg->page_ins_remote);
        qatomic_add(&pg->prefetched, pi->npages - 1);
        qatomic_add(&pg->si->sub[pi->k].page_ins, pi->npages);
        trace_split_pager_pagein(pi->k, pi->first, pi->npages, ns / 1000);
    }
    g_free(pi->buf);
    g_free(pi);
}

static SplitBlock *split_pager_find_block(SplitPager *pg, uint64_t addr)
{
    SplitLayout *layout = &pg->si->layout;
    unsigned i;

    for (i = 0; i < layout->nblocks; i++) {
        SplitBlock *b = &layout->blocks[i];
        uintptr_t host = (uintptr_t)b->rb->host;

        if (addr >= host && addr - host < b->npages * pg->page_size) {
            return b;
        }
    }
    return NULL;
}

/* Local page-in: a zero page. */
static void split_pager_zero(SplitPager *pg, uint64_t g, uint8_t *host,
                             bool was_present)
{
    int ret = split_uffd_zero(pg->uffd, host, pg->page_size);

    if (!ret) {
        qatomic_inc(&pg->page_ins_local);
        if (!was_present) {
            qatomic_dec(&pg->unused);
            split_page_present(pg, g);
        }
    } else if (ret == -EEXIST) {
        qatomic_inc(&pg->eexist);
        split_uffd_wake(pg->uffd, host, pg->page_size);
        if (!was_present) {
            qatomic_dec(&pg->unused);
            split_page_present(pg, g);
        }
    } else if (ret == -EAGAIN) {
        qatomic_inc(&pg->eagain);
        split_uffd_wake(pg->uffd, host, pg->page_size);
    } else {
        error_report_once("split: UFFDIO_ZEROPAGE at %p failed: %s", host,
                          strerror(-ret));
    }
}

static void split_pager_fault(SplitPager *pg, uint64_t addr)
{
    SplitIncoming *si = pg->si;
    SplitBlock *b = split_pager_find_block(pg, addr);
    g_autoptr(GError) gerr = NULL;
    SplitPagerSubhost *sub;
    SplitPageIn *pi;
    uint64_t g, end;
    uint8_t *host;
    FctransPageLoc loc;
    uint32_t n;

    if (!b) {
        error_report_once("split: fault at 0x%" PRIx64 " outside split RAM",
                          addr);
        split_uffd_wake(pg->uffd, (void *)(uintptr_t)(addr &
                        ~(uint64_t)(pg->page_size - 1)), pg->page_size);
        return;
    }
    g = b->first_page + (addr - (uintptr_t)b->rb->host) / pg->page_size;
    host = split_page_host(b, g, pg->page_size);
    trace_split_pager_fault(g, qatomic_read(&pg->state[g]));

    switch (qatomic_read(&pg->state[g])) {
    case SPLIT_PAGE_INFLIGHT:
        return;     /* the fetch in flight wakes this thread too */
    case SPLIT_PAGE_PRESENT:
        /* Dropped since (balloon), or a late message: zero page or wake */
        split_pager_zero(pg, g, host, true);
        return;
    }

    loc = fctrans_pagemap_get(si->map, g);
    if (!FCTRANS_LOC_IS_SUBHOST(loc)) {
        split_pager_zero(pg, g, host, false);
        return;
    }

    sub = &si->sub[FCTRANS_LOC_SUBHOST_INDEX(loc)];
    if (qatomic_read(&sub->lost)) {
        qatomic_inc(&pg->blocked);
        split_pager_request_stop(pg);
        return;
    }

    /* Claim the page and the following ones of the same sub-host */
    qatomic_set(&pg->state[g], SPLIT_PAGE_INFLIGHT);
    end = MIN(b->first_page + b->npages, g + 1 + SPLIT_PREFETCH_PAGES);
    for (n = 1; g + n < end; n++) {
        if (fctrans_pagemap_get(si->map, g + n) != loc ||
            qatomic_read(&pg->state[g + n]) != SPLIT_PAGE_ABSENT) {
            break;
        }
        qatomic_set(&pg->state[g + n], SPLIT_PAGE_INFLIGHT);
    }
    qatomic_add(&pg->inflight, n);

    pi = g_new0(SplitPageIn, 1);
    pi->pg = pg;
    pi->k = FCTRANS_LOC_SUBHOST_INDEX(loc);
    pi->b = b;
    pi->first = g;
    pi->npages = n;
    pi->buf = g_malloc((uint64_t)n * pg->page_size);
    pi->t_fault = get_clock();
    if (!fctrans_subhost_read(sub->sh, g * pg->page_size,
                              (uint64_t)n * pg->page_size, pi->buf,
                              FCTRANS_SUBHOST_REQ_URGENT, split_pagein_done,
                              pi, &gerr)) {
        split_pagein_abandon(pg, pi, 0, false);
        qatomic_inc(&pg->blocked);
        split_pager_subhost_lost(pg, pi->k, gerr->message);
        g_free(pi->buf);
        g_free(pi);
    }
}

static void split_pager_watchdog(SplitPager *pg)
{
    unsigned k;

    for (k = 0; k < pg->si->nsubhosts; k++) {
        SplitPagerSubhost *sub = &pg->si->sub[k];

        if (!qatomic_read(&sub->lost) && qatomic_read(&sub->remaining) &&
            !fctrans_subhost_is_connected(sub->sh)) {
            split_pager_subhost_lost(pg, k, "connection lost");
        }
    }
}

static void *split_pager_thread(void *opaque)
{
    SplitPager *pg = opaque;
    struct uffd_msg msg[SPLIT_FAULT_BATCH];
    int64_t watchdog = get_clock() + SPLIT_WATCHDOG_MS * SCALE_MS;

    for (;;) {
        struct pollfd pfd = { .fd = pg->uffd, .events = POLLIN };
        int i, n;

        n = poll(&pfd, 1, SPLIT_WATCHDOG_MS);
        if (n > 0) {
            n = uffd_read_events(pg->uffd, msg, SPLIT_FAULT_BATCH);
            for (i = 0; i < n; i++) {
                if (msg[i].event == UFFD_EVENT_PAGEFAULT) {
                    split_pager_fault(pg, msg[i].arg.pagefault.address);
                }
            }
        } else if (n < 0 && errno != EINTR) {
            error_report_once("split: poll on the userfaultfd failed: %s",
                              strerror(errno));
            g_usleep(1000);
        }
        if (get_clock() >= watchdog) {
            split_pager_watchdog(pg);
            watchdog = get_clock() + SPLIT_WATCHDOG_MS * SCALE_MS;
        }
    }
    return NULL;
}

bool split_pager_supported(Error **errp)
{
    uint64_t features, ioctls = 0;
    size_t ps = qemu_real_host_page_size();
    void *area;
    int fd;
    bool ok = false;

    if (uffd_query_features(&features)) {
        error_setg(errp, "userfaultfd is not available on this host (%s)",
                   strerror(errno));
        return false;
    }
    fd = uffd_create_fd(0, true);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create a userfaultfd");
        return false;
    }
    area = mmap(NULL, ps, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map a test page");
        close(fd);
        return false;
    }
    if (uffd_register_memory(fd, area, ps, UFFDIO_REGISTER_MODE_MISSING,
                             &ioctls)) {
        error_setg(errp, "userfaultfd cannot register anonymous memory");
    } else if ((ioctls & (BIT_ULL(_UFFDIO_COPY) | BIT_ULL(_UFFDIO_ZEROPAGE) |
                          BIT_ULL(_UFFDIO_WAKE))) !=
               (BIT_ULL(_UFFDIO_COPY) | BIT_ULL(_UFFDIO_ZEROPAGE) |
                BIT_ULL(_UFFDIO_WAKE))) {
        error_setg(errp, "userfaultfd lacks COPY, ZEROPAGE or WAKE");
    } else {
        ok = true;
    }
    munmap(area, ps);
    close(fd);
    return ok;
}

static bool split_pager_register(int fd, RAMBlock *rb, Error **errp)
{
    const uint64_t need = BIT_ULL(_UFFDIO_COPY) | BIT_ULL(_UFFDIO_ZEROPAGE) |
                          BIT_ULL(_UFFDIO_WAKE);
    uint64_t ioctls = 0;

    if (uffd_register_memory(fd, rb->host, rb->used_length,
                             UFFDIO_REGISTER_MODE_MISSING, &ioctls)) {
        error_setg(errp, "split: userfaultfd cannot serve RAM block '%s'",
                   rb->idstr);
        return false;
    }
    if ((ioctls & need) != need) {
        error_setg(errp, "split: userfaultfd cannot place pages in RAM block "
                   "'%s'", rb->idstr);
        return false;
    }
    return true;
}

bool split_pager_probe_block(RAMBlock *rb, Error **errp)
{
    int fd = uffd_create_fd(0, true);
    bool ok;

    if (fd < 0) {
        error_setg_errno(errp, errno, "split: cannot create a userfaultfd");
        return false;
    }
    ok = split_pager_register(fd, rb, errp);
    close(fd);      /* nothing is missing yet: closing changes nothing */
    return ok;
}

bool split_pager_start(SplitIncoming *si, Error **errp)
{
    SplitPager *pg = g_new0(SplitPager, 1);
    uint32_t ps = si->page_size;
    uint64_t features = 0;
    unsigned i;

    pg->si = si;
    pg->page_size = ps;
    pg->uffd = -1;
    pg->state = g_malloc0(si->layout.npages);
    qemu_mutex_init(&pg->lat_lock);

    /*
     * Check the map against what was received, count, and drop what is
     * not resident: RAM initialised here (ROM copies, tables) or sent
     * before the page moved must not survive.
     */
    for (i = 0; i < si->layout.nblocks; i++) {
        SplitBlock *b = &si->layout.blocks[i];
        RAMBlock *rb = b->rb;
        uint64_t p = 0;

        if (qemu_madvise(rb->host, rb->used_length, QEMU_MADV_NOHUGEPAGE)) {
            error_setg_errno(errp, errno, "split: cannot turn off huge pages "
                             "in RAM block '%s'", rb->idstr);
            goto fail;
        }
        while (p < b->npages) {
            FctransPageLoc loc;
            uint64_t run = fctrans_pagemap_run(si->map, b->first_page + p,
                                               &loc);

            run = MIN(run, b->npages - p);
            if (loc == FCTRANS_LOC_MAIN) {
                if (rb->receivedmap &&
                    find_next_zero_bit(rb->receivedmap, p + run, p) <
                    p + run) {
                    error_setg(errp, "split: page %" PRIu64 " of RAM block "
                               "'%s' should be resident but never arrived",
                               find_next_zero_bit(rb->receivedmap, p + run, p),
                               rb->idstr);
                    goto fail;
                }
                memset(pg->state + b->first_page + p, SPLIT_PAGE_PRESENT, run);
                pg->resident += run;
            } else {
                if (ram_block_discard_range(rb, p * ps, run * ps)) {
                    error_setg(errp, "split: cannot drop pages of RAM block "
                               "'%s'", rb->idstr);
                    goto fail;
                }
                if (FCTRANS_LOC_IS_SUBHOST(loc)) {
                    si->sub[FCTRANS_LOC_SUBHOST_INDEX(loc)].remaining += run;
                } else {
                    pg->unused += run;
                }
            }
            p += run;
        }
    }
    pg->resident_at_start = pg->resident;

    if (!uffd_query_features(&features)) {
        features &= UFFD_FEATURE_THREAD_ID;
    }
    pg->uffd = uffd_create_fd(features, true);
    if (pg->uffd < 0) {
        error_setg_errno(errp, errno, "split: cannot create a userfaultfd");
        goto fail;
    }
    for (i = 0; i < si->layout.nblocks; i++) {
        if (!split_pager_register(pg->uffd, si->layout.blocks[i].rb, errp)) {
            goto fail;
        }
    }

    si->pager = pg;
    split_pager = pg;
    pg->shutdown.notify = split_pager_shutdown;
    qemu_register_shutdown_notifier(&pg->shutdown);
    qemu_thread_create(&pg->thread, "split-pager", split_pager_thread, pg,
                       QEMU_THREAD_DETACHED);
    trace_split_pager_start(pg->resident, pg->unused,
                            si->layout.npages - pg->resident - pg->unused);
    return true;

fail:
    if (pg->uffd >= 0) {
        close(pg->uffd);
    }
    qemu_mutex_destroy(&pg->lat_lock);
    g_free(pg->state);
    g_free(pg);
    return false;
}

SplitMemoryInfo *qmp_query_split_memory(Error **errp)
{
    SplitMemoryInfo *info = g_new0(SplitMemoryInfo, 1);
    SplitPager *pg = split_pager;
    SplitMemorySubhostList **tail;
    unsigned k;

    if (!pg) {
        return info;
    }
    info->active = true;
    info->has_page_size = true;
    info->page_size = pg->page_size;
    info->has_resident_budget = true;
    info->resident_budget = pg->si->budget;
    info->has_resident_pages = true;
    info->resident_pages = qatomic_read(&pg->resident);
    info->has_resident_pages_at_start = true;
    info->resident_pages_at_start = pg->resident_at_start;
    info->has_unused_pages = true;
    info->unused_pages = qatomic_read(&pg->unused);
    info->has_subhosts = true;
    tail = &info->subhosts;
    for (k = 0; k < pg->si->nsubhosts; k++) {
        SplitPagerSubhost *sub = &pg->si->sub[k];
        SplitMemorySubhost *s = g_new0(SplitMemorySubhost, 1);

        s->id = g_strdup(sub->id);
        s->pages = qatomic_read(&sub->remaining);
        s->page_ins = qatomic_read(&sub->page_ins);
        s->connected = !qatomic_read(&sub->lost) &&
                       fctrans_subhost_is_connected(sub->sh);
        QAPI_LIST_APPEND(tail, s);
    }
    info->has_page_ins_remote = true;
    info->page_ins_remote = qatomic_read(&pg->page_ins_remote);
    info->has_page_ins_local = true;
    info->page_ins_local = qatomic_read(&pg->page_ins_local);
    info->has_prefetched_pages = true;
    info->prefetched_pages = qatomic_read(&pg->prefetched);
    info->has_in_flight = true;
    info->in_flight = qatomic_read(&pg->inflight);
    info->has_blocked_faults = true;
    info->blocked_faults = qatomic_read(&pg->blocked);
    WITH_QEMU_LOCK_GUARD(&pg->lat_lock) {
        info->has_latency_p50 = true;
        info->latency_p50 = split_lat_percentile(pg, 50);
        info->has_latency_p99 = true;
        info->latency_p99 = split_lat_percentile(pg, 99);
        info->has_latency_max = true;
        info->latency_max = pg->lat_max_ns / 1000;
    }
    return info;
}

void hmp_info_split_memory(Monitor *mon, const QDict *qdict)
{
    g_autoptr(SplitMemoryInfo) info = qmp_query_split_memory(NULL);
    SplitMemorySubhostList *l;

    if (!info->active) {
        monitor_printf(mon, "split memory: off\n");
        return;
    }
    monitor_printf(mon, "split memory: on, page size %u bytes\n",
                   info->page_size);
    monitor_printf(mon, "resident: %" PRIu64 " pages (%" PRIu64
                   " at start), budget %" PRIu64 " pages\n",
                   info->resident_pages, info->resident_pages_at_start,
                   info->resident_budget / info->page_size);
    monitor_printf(mon, "unused: %" PRIu64 " pages\n", info->unused_pages);
    for (l = info->subhosts; l; l = l->next) {
        monitor_printf(mon, "sub-host %s: %" PRIu64 " pages, %" PRIu64
                       " paged in, %s\n", l->value->id, l->value->pages,
                       l->value->page_ins,
                       l->value->connected ? "connected" : "LOST");
    }
    monitor_printf(mon, "page-ins: remote %" PRIu64 " (+%" PRIu64
                   " prefetched), local %" PRIu64 ", in flight %" PRIu64
                   ", blocked %" PRIu64 "\n", info->page_ins_remote,
                   info->prefetched_pages, info->page_ins_local,
                   info->in_flight, info->blocked_faults);
    monitor_printf(mon, "remote page-in latency: p50 %" PRIu64 " us, p99 %"
                   PRIu64 " us, max %" PRIu64 " us\n", info->latency_p50,
                   info->latency_p99, info->latency_max);
}
