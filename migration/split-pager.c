/*
 * Split migration, main host side: the userfaultfd pager of a split-memory
 * VM
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Transparent huge pages are off in the split RAM from the moment the
 * incoming migration is set up (a huge page would take 2 MiB for each
 * 4 KiB page received, and would later expose neighbours that were never
 * fetched). The pager starts as soon as the source commits the page map,
 * which comes after the last RAM page and before the first device section:
 * devices read guest RAM while they load (virtio ring indices), so the
 * pages they read must already be served. At start, every populated page
 * of the split RAM that is not resident here is dropped, and the RAM is
 * registered with userfaultfd in MISSING mode. The first touch of a
 * missing page then wakes the fault thread ("split-pager"), which:
 *   - for a page stored on sub-host k, claims it and up to
 *     SPLIT_PREFETCH_PAGES following pages of the same sub-host, and sends
 *     one read; the sub-host channel's thread places the pages with
 *     UFFDIO_COPY, which wakes every thread waiting on them (remote
 *     page-in). Several reads are in flight at once.
 *   - for any other page (unused, zero, or given up by the guest) places a
 *     zero page with UFFDIO_ZEROPAGE (local page-in).
 * A fault on a page being fetched waits for that fetch. EEXIST means the
 * page is there but its waiters may not have been woken: UFFDIO_WAKE.
 * Every other failure to place a page either is retried with backoff by
 * the fault thread (EAGAIN, ENOMEM: the page stays claimed and its
 * waiters keep waiting), or stops the VM with SPLIT_PAGE_IN_FAILED; a
 * placement still failing after SPLIT_RETRY_GIVE_UP_NS stops the VM too,
 * and is still retried. Nothing wakes a waiter without its page.
 *
 * Pages the guest gives back (balloon, free page reporting) are reported
 * by split_ram_discard() before they are discarded: a page still on a
 * sub-host becomes unused and is trimmed there, and a page being fetched
 * gets a zero page instead of its stale contents. The fault path and
 * every placement take place_lock for reading, the discard for writing,
 * so a discard never falls between a page's check and its placement.
 *
 * Nothing here takes the BQL: a thread holding it (device emulation,
 * qtest, the monitor) may fault on guest RAM and wait for the pager.
 *
 * A sub-host whose connection fails (connection lost, request timeout,
 * detected by a watchdog too) once the VM may run is given
 * split-reconnect-timeout to come back (see "Reconnecting" below): its
 * reads are parked, the faults on their pages wait. A sub-host that does
 * not come back, comes back with another export's identity, or answers a
 * read with an error on a live connection, is lost: it is never
 * replaced by zeros, faults on its pages wait, a SPLIT_SUBHOST_LOST
 * event is emitted and the VM is stopped (io-error). While the device
 * state loads, a failed read is zeros and a broken load instead (the
 * source then keeps the VM).
 * The stop runs in a thread of its own: a vCPU that already waits for one
 * of those pages may never acknowledge it (under TCG, or while KVM
 * emulates an instruction), and the main loop must not wait for it. Such
 * a vCPU also keeps QEMU from pausing at exit: when a sub-host was lost,
 * or a page could not be placed, QEMU exits with a failure status at
 * shutdown instead of hanging.
 *
 * The pager holds a reference on every split RAM block's memory region
 * (an unplugged DIMM's RAM stays mapped while the pager may place pages
 * there), and the userfaultfd is never closed: closing it would silently
 * fill every missing page with zeros.
 *
 * Reconnecting
 * ------------
 * A read that fails with its connection after the VM may run (load_state
 * MAY_RUN), or that the channel refuses because the sub-host failed, is
 * parked with its buffer in its sub-host's SplitRecon; its pages stay
 * INFLIGHT. (One that the server fails, the connection still up, is not:
 * no reconnect would come for it. That page-in fails: lost.) The first
 * parked read, or the watchdog finding the sub-host disconnected, starts
 * that sub-host's reconnect thread ("split-reconnect"), which alone calls
 * fctrans_subhost_reconnect(): never the fault thread (it serves every
 * other fault meanwhile), never a channel callback (reconnect waits for
 * the failed requests' callbacks), never with the BQL. After each
 * successful reconnect it checks the export's identity record: a server
 * restarted empty, or another export, fails that check and the sub-host
 * is lost at once; a record that cannot be read is one more connection
 * failure, retried. Otherwise it sends every parked read again and waits
 * until they are served; the episode ends when none is parked or in
 * flight any more. Connection attempts back off from 50 ms to 1 s; once
 * split-reconnect-timeout has passed since the failure (since the last
 * reconnect, for the first few flaps of a connection that fails again at
 * once), the sub-host is lost as above and its parked reads are dropped:
 * their faults wait for good (zeros only for pages the guest discarded).
 * Races, and why they are harmless:
 *   - A fault on a page whose read is parked finds it INFLIGHT and waits
 *     for the placement, never claims it again; the prefetch claims only
 *     ABSENT pages.
 *   - A discard of a parked page flags it SPLIT_PAGE_DISCARDED: the read,
 *     re-issued, places zeros for it (split_place_locked()); given up, it
 *     places zeros for the flagged pages only.
 *   - Both lanes failing, or a failed read racing with the watchdog: one
 *     thread per sub-host, started under SplitRecon.lock only when none
 *     runs, and it stops only under that lock once nothing is parked or
 *     in flight, so a read parked later starts a new episode.
 *   - A read of an episode that fails again is parked in the same episode
 *     (SplitPageIn.reissued), not in a new one with a fresh timeout.
 *   - A new fault while a reconnect may have replaced the connection and
 *     its export is not checked yet (SplitRecon.unverified) is parked,
 *     not sent: the fault thread checks the flag and sends under
 *     SplitRecon.lock, which the thread takes to set it before it
 *     reconnects, so no read reaches an export before its check.
 *   - Giving up (the thread, or the watchdog when a connection attempt
 *     or the identity read hangs past the deadline, SplitRecon.attempting)
 *     sets the sub-host lost before it takes the parked reads; parking
 *     checks lost under the same lock, so no read is parked after that
 *     and none stays parked without an owner. A thread whose attempt
 *     returns after that finds the sub-host lost and ends.
 *   - Shutdown: the pager and the channels live as long as the process,
 *     so a reconnect thread may run until exit. A vCPU waiting for a
 *     parked read cannot pause, so QEMU exits with a failure status at
 *     shutdown while a reconnect runs, as it does for a lost sub-host.
 *   - The identity record is compared with the thread's copy of
 *     sub->export_id, which split_incoming_start() rewrites (state
 *     RUNNING) before the pager may run, hence before any episode.
 * Trims of discarded pages that fail meanwhile are dropped with a trace
 * (split_discard_trim()): the map no longer uses those pages.
 */
#include "qemu/osdep.h"
#include <poll.h>
#include <sys/ioctl.h>
#include "qemu/bitops.h"
#include "qemu/cutils.h"
#include "qemu/event_notifier.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-split.h"
#include "qapi/qapi-events-split.h"
#include "qobject/qdict.h"
#include "exec/address-spaces.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "fctrans/budget.h"
#include "fctrans/histogram.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "system/kvm.h"
#include "system/runstate.h"
#include "migration/split-memory.h"
#include "migration.h"
#include "options.h"
#include "split.h"
#include "split-internal.h"
#include "split-pager.h"
#include "trace.h"

/* Following pages of the same sub-host fetched with a faulting page. */
#define SPLIT_PREFETCH_PAGES    15
/* Fault messages read at once. */
#define SPLIT_FAULT_BATCH       16
/* How often the fault thread checks that the sub-hosts are connected. */
#define SPLIT_WATCHDOG_MS       500
/* Placement retries: the first after 1 ms, then doubling up to 128 ms. */
#define SPLIT_RETRY_FIRST_NS    (1 * SCALE_MS)
#define SPLIT_RETRY_MAX_NS      (128 * SCALE_MS)
/* A placement still failing after this long stops the VM. */
#define SPLIT_RETRY_GIVE_UP_NS  (10 * NANOSECONDS_PER_SECOND)
/* Reconnection attempts: the first after 50 ms, then doubling up to 1 s. */
#define SPLIT_RECONNECT_FIRST_MS    50
#define SPLIT_RECONNECT_MAX_MS      1000
/*
 * Reconnects in one episode that give the sub-host a fresh timeout: a
 * server that accepts us and then drops every read must not keep the
 * guest waiting for ever.
 */
#define SPLIT_RECONNECT_FLAPS       4
/* How often a reconnect thread waiting for its re-issued reads looks up. */
#define SPLIT_RECONNECT_POLL_MS     100
/* Pagemap entries read at once, at start. */
#define SPLIT_PAGEMAP_CHUNK     (16 * 1024)
/* Most addresses x-query-split-page-locations takes. */
#define SPLIT_LOCATIONS_MAX     4096

static SplitPager *split_pager;

static void split_lat_record(SplitPager *pg, int64_t ns)
{
    fctrans_hist_record(&pg->lat, MAX(ns, 0));
}

/* Percentile @pct (0-100) in us */
static uint64_t split_lat_percentile(SplitPager *pg, unsigned pct)
{
    return fctrans_hist_percentile(&pg->lat, pct * 10) / 1000;
}

/* userfaultfd operations; they return 0 or -errno, quietly. */

/*
 * SPLIT_PAGER_INJECT=ERRNO:COUNT[:AFTER] (ERRNO: EAGAIN, ENOMEM or EFAULT)
 * makes COUNT placements, after the first AFTER, fail with that error
 * without asking the kernel, so that the tests can drive the retry and
 * the stop paths on any kernel.
 */
static void split_inject_setup(SplitPager *pg)
{
    static const struct { const char *name; int err; } errs[] = {
        { "EAGAIN", EAGAIN }, { "ENOMEM", ENOMEM }, { "EFAULT", EFAULT },
    };
    const char *spec = g_getenv("SPLIT_PAGER_INJECT");
    g_auto(GStrv) f = spec ? g_strsplit(spec, ":", 3) : NULL;
    size_t i;

    if (!f || !f[0] || !f[1]) {
        return;
    }
    for (i = 0; i < ARRAY_SIZE(errs); i++) {
        if (g_str_equal(f[0], errs[i].name)) {
            pg->inject_err = -errs[i].err;
            pg->inject_left = atoi(f[1]);
            pg->inject_skip = f[2] ? atoi(f[2]) : 0;
            warn_report("split: SPLIT_PAGER_INJECT: %d placements after "
                        "the first %d fail with %s", pg->inject_left,
                        pg->inject_skip, errs[i].name);
            return;
        }
    }
    warn_report("split: SPLIT_PAGER_INJECT='%s' ignored", spec);
}

static int split_inject(SplitPager *pg)
{
    if (!pg->inject_err) {
        return 0;
    }
    if (qatomic_read(&pg->inject_skip) > 0 &&
        qatomic_fetch_dec(&pg->inject_skip) > 0) {
        return 0;
    }
    if (qatomic_read(&pg->inject_left) > 0 &&
        qatomic_fetch_dec(&pg->inject_left) > 0) {
        return pg->inject_err;
    }
    return 0;
}

/* @wp: install the pages write-protected */
static int split_uffd_copy(SplitPager *pg, void *dst, const void *src,
                           uint64_t len, bool wp, uint64_t *copied)
{
    struct uffdio_copy c = {
        .dst = (uintptr_t)dst,
        .src = (uintptr_t)src,
        .len = len,
        .mode = wp ? UFFDIO_COPY_MODE_WP : 0,
    };
    int err = split_inject(pg);

    *copied = 0;
    if (err) {
        return err;
    }
    if (ioctl(pg->uffd, UFFDIO_COPY, &c)) {
        err = -errno;
        /* c.copy is the bytes copied, or a negative errno */
        *copied = c.copy > 0 ? c.copy : 0;
        return err;
    }
    *copied = len;
    return 0;
}

static int split_uffd_zero(SplitPager *pg, void *dst, uint64_t len)
{
    struct uffdio_zeropage z = {
        .range = { .start = (uintptr_t)dst, .len = len },
    };
    int err = split_inject(pg);

    if (err) {
        return err;
    }
    return ioctl(pg->uffd, UFFDIO_ZEROPAGE, &z) ? -errno : 0;
}

void split_uffd_wake(int fd, void *dst, uint64_t len)
{
    struct uffdio_range r = { .start = (uintptr_t)dst, .len = len };

    if (ioctl(fd, UFFDIO_WAKE, &r)) {
        error_report_once("split: UFFDIO_WAKE failed: %s", strerror(errno));
    }
}

/*
 * Write-protect @len bytes at @dst, or lift the protection, which wakes
 * the threads waiting to write there. Not through split_inject(): the
 * injected failures are for placements.
 */
int split_uffd_protect(SplitPager *pg, void *dst, uint64_t len, bool wp)
{
    struct uffdio_writeprotect w = {
        .range = { .start = (uintptr_t)dst, .len = len },
        .mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };

    return ioctl(pg->uffd, UFFDIO_WRITEPROTECT, &w) ? -errno : 0;
}

/*
 * Stop the VM with the BQL, as the migration thread does. Waiting for the
 * vCPUs to pause releases the BQL, so the monitor stays usable even if a
 * vCPU that waits for a missing page never pauses.
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

    if (qatomic_read(&pg->failed) || qatomic_read(&pg->stuck) ||
        qatomic_read(&pg->handed_over_faults)) {
        return true;
    }
    for (k = 0; k < pg->si->nsubhosts; k++) {
        if (qatomic_read(&pg->si->sub[k].lost)) {
            return true;
        }
    }
    return false;
}

/*
 * QEMU pauses every vCPU before it exits; one that waits for a page that
 * cannot be placed never would. The guest's memory is incomplete anyway.
 */
static void split_pager_shutdown(Notifier *n, void *opaque)
{
    SplitPager *pg = container_of(n, SplitPager, shutdown);
    unsigned k;

    if (split_pager_lost_any(pg)) {
        error_report("split: guest memory that cannot be paged in: exiting "
                     "without pausing the vCPUs");
        exit(EXIT_FAILURE);
    }
    /*
     * A vCPU may wait for a parked read; waiting here for the reconnect
     * would hold the BQL for up to split-reconnect-timeout.
     */
    for (k = 0; k < pg->si->nsubhosts; k++) {
        bool active;

        WITH_QEMU_LOCK_GUARD(&pg->recon[k].lock) {
            active = pg->recon[k].active;
        }
        if (active) {
            error_report("split: sub-host '%s' is reconnecting: exiting "
                         "without pausing the vCPUs", pg->si->sub[k].id);
            exit(EXIT_FAILURE);
        }
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

/*
 * Before the VM ran here for the first time, a page that cannot be paged
 * in fails the incoming migration instead: the device state load, which
 * holds the BQL, must not wait for it. Returns true (and records it) when
 * that is so.
 */
static bool split_pager_load_broken(SplitPager *pg)
{
    return qatomic_cmpxchg(&pg->load_state, SPLIT_LOAD_LOADING,
                           SPLIT_LOAD_BROKEN) != SPLIT_LOAD_MAY_RUN;
}

/* A page of @pl cannot be placed: stop the VM and say why. */
static void split_pager_place_failed(SplitPager *pg, SplitPlace *pl,
                                     uint64_t g, int err, const char *why)
{
    uint64_t offset = (g - pl->b->first_page) * pg->page_size;
    g_autofree char *msg = g_strdup_printf("%s: %s", why, strerror(-err));

    error_report("split: page at offset 0x%" PRIx64 " of RAM block '%s' "
                 "cannot be placed (%s): stopping the VM", offset,
                 pl->b->rb->idstr, msg);
    trace_split_pager_place_failed(pl->b->rb->idstr, offset, err);
    qapi_event_send_split_page_in_failed(pl->b->rb->idstr, offset, msg);
    split_pager_request_stop(pg);
}

/*
 * Hand a failed placement over to the fault thread, which retries it;
 * pl->buf, if any, must be an allocation of its own.
 */
static void split_retry_queue(SplitPager *pg, SplitPlace *pl, int err)
{
    SplitRetry *r = g_new0(SplitRetry, 1);

    r->pl = *pl;
    r->alloc = pl->buf;
    r->err = err;
    r->since = get_clock();
    r->backoff = SPLIT_RETRY_FIRST_NS;
    r->due = r->since + r->backoff;
    trace_split_pager_retry(pl->first, pl->npages, err);
    WITH_QEMU_LOCK_GUARD(&pg->retry_lock) {
        pg->retry_new = g_slist_prepend(pg->retry_new, r);
    }
    event_notifier_set(&pg->retry_notify);
}

/*
 * Page @g of @pl is in place now; @wp: installed write-protected by us.
 * A page read from a sub-host and installed so is clean: its copy there
 * is current until the guest writes to it.
 */
static void split_place_done(SplitPager *pg, SplitPlace *pl, uint64_t g,
                             bool wp)
{
    uint8_t s = qatomic_read(&pg->state[g]);
    bool fetched = pl->subhost >= 0 && !(s & SPLIT_PAGE_DISCARDED);

    if (fetched) {
        qatomic_dec(&pg->si->sub[pl->subhost].remaining);
    } else {
        /* a local page-in, or a fetch the guest discarded meanwhile */
        qatomic_dec(&pg->unused);
    }
    qatomic_set(&pg->state[g], (fetched && wp ? SPLIT_PAGE_CLEAN :
                                SPLIT_PAGE_PRESENT) | SPLIT_PAGE_REF);
    qatomic_inc(&pg->resident);
    qatomic_dec(&pg->inflight);
}

/*
 * Place the claimed pages of @pl, with place_lock held for reading.
 * Returns 0 once every page is in place, or -errno with @pl advanced past
 * the pages that are.
 */
static int split_place_locked(SplitPager *pg, SplitPlace *pl)
{
    uint32_t ps = pg->page_size;

    while (pl->npages) {
        uint8_t *dst = split_page_host(pl->b, pl->first, ps);
        uint64_t copied, n, i;
        int ret;

        if (!pl->buf) {
            ret = split_uffd_zero(pg, dst, ps);
            copied = ret ? 0 : ps;
        } else {
            for (i = 0; i < pl->npages; i++) {
                if (qatomic_read(&pg->state[pl->first + i]) &
                    SPLIT_PAGE_DISCARDED) {
                    memset(pl->buf + i * ps, 0, ps);
                }
            }
            ret = split_uffd_copy(pg, dst, pl->buf,
                                  (uint64_t)pl->npages * ps, pg->wp, &copied);
        }
        n = MIN(copied / ps, pl->npages);
        for (i = 0; i < n; i++) {
            split_place_done(pg, pl, pl->first + i, pl->buf && pg->wp);
        }
        pl->first += n;
        pl->npages -= n;
        if (pl->buf) {
            pl->buf += n * ps;
        }
        if (ret == -EAGAIN && n) {
            /* A partial copy: the next page tells the real error */
            continue;
        }
        if (ret == -EEXIST) {
            /* Present already (not from us): its waiters need a wake-up */
            split_uffd_wake(pg->uffd, split_page_host(pl->b, pl->first, ps),
                            ps);
            qatomic_inc(&pg->eexist);
            split_place_done(pg, pl, pl->first, false);
            pl->first++;
            pl->npages--;
            if (pl->buf) {
                pl->buf += ps;
            }
        } else if (ret) {
            return ret;
        }
    }
    return 0;
}

/*
 * Place @pl; on failure retry it (EAGAIN, ENOMEM) or stop the VM. Takes
 * ownership of @buf, the allocation behind pl->buf.
 */
static void split_place(SplitPager *pg, SplitPlace *pl, uint8_t *buf)
{
    int ret;

    g_rw_lock_reader_lock(&pg->place_lock);
    ret = split_place_locked(pg, pl);
    g_rw_lock_reader_unlock(&pg->place_lock);
    if (pg->po) {
        split_pageout_placed(pg->po);
    }
    if (!ret) {
        g_free(buf);
        return;
    }
    if (ret == -EAGAIN) {
        qatomic_inc(&pg->eagain);
    }
    if (ret == -EAGAIN || ret == -ENOMEM) {
        /* keep the data: the retry must not read the sub-host again */
        if (pl->buf && pl->buf != buf) {
            uint8_t *rest = g_memdup2(pl->buf,
                                      (size_t)pl->npages * pg->page_size);

            g_free(buf);
            pl->buf = rest;
        }
        split_retry_queue(pg, pl, ret);
        return;
    }
    qatomic_set(&pg->failed, true);
    split_pager_place_failed(pg, pl, pl->first, ret, pl->buf ?
                             "UFFDIO_COPY" : "UFFDIO_ZEROPAGE");
    g_free(buf);
}

/* The fault thread: take new retries, run the due ones; next due time. */
static int64_t split_retry_run(SplitPager *pg)
{
    int64_t now = get_clock(), next = INT64_MAX;
    GSList *l, *keep = NULL;

    if (event_notifier_test_and_clear(&pg->retry_notify)) {
        WITH_QEMU_LOCK_GUARD(&pg->retry_lock) {
            pg->retries = g_slist_concat(pg->retry_new, pg->retries);
            pg->retry_new = NULL;
        }
    }
    for (l = pg->retries; l; l = l->next) {
        SplitRetry *r = l->data;
        int ret;

        if (r->due > now) {
            keep = g_slist_prepend(keep, r);
            next = MIN(next, r->due);
            continue;
        }
        qatomic_inc(&pg->retried);
        g_rw_lock_reader_lock(&pg->place_lock);
        ret = split_place_locked(pg, &r->pl);
        g_rw_lock_reader_unlock(&pg->place_lock);
        if (!ret) {
            trace_split_pager_retry_done(r->pl.first, (now - r->since) /
                                         SCALE_US);
            if (r->gave_up) {
                qatomic_dec(&pg->stuck);
            }
            g_free(r->alloc);
            g_free(r);
            continue;
        }
        if (ret != -EAGAIN && ret != -ENOMEM) {
            qatomic_set(&pg->failed, true);
            if (r->gave_up) {
                qatomic_dec(&pg->stuck);
            }
            split_pager_place_failed(pg, &r->pl, r->pl.first, ret,
                                     "retried placement");
            g_free(r->alloc);
            g_free(r);
            continue;
        }
        if (ret == -EAGAIN) {
            qatomic_inc(&pg->eagain);
        }
        if (!r->gave_up && now - r->since >= SPLIT_RETRY_GIVE_UP_NS) {
            /* Stop the VM, but keep trying: memory may come back */
            r->gave_up = true;
            qatomic_inc(&pg->stuck);
            split_pager_place_failed(pg, &r->pl, r->pl.first, ret,
                                     "still failing after 10 s of retries");
        }
        r->err = ret;
        r->backoff = MIN(r->backoff * 2, SPLIT_RETRY_MAX_NS);
        r->due = now + r->backoff;
        next = MIN(next, r->due);
        keep = g_slist_prepend(keep, r);
    }
    g_slist_free(pg->retries);
    pg->retries = keep;
    return next;
}

/*
 * The read of @pi will never be served: its sub-host is lost. Its faults
 * wait for good; pages the guest discarded meanwhile are zeros, and need
 * no sub-host.
 */
static void split_pagein_lost(SplitPageIn *pi)
{
    SplitPager *pg = pi->pg;
    uint32_t i;

    qatomic_inc(&pg->blocked);
    for (i = 0; i < pi->pl.npages; i++) {
        SplitPlace zero = {
            .b = pi->pl.b, .first = pi->pl.first + i, .npages = 1,
            .subhost = -1,
        };

        if (qatomic_read(&pg->state[zero.first]) & SPLIT_PAGE_DISCARDED) {
            split_place(pg, &zero, NULL);
        }
    }
    g_free(pi->pl.buf);
    g_free(pi);
}

static void *split_recon_thread(void *opaque);

/*
 * With r->lock held: begin an episode for @why unless one runs. The
 * thread is detached: the pager, and the channel, live as long as QEMU.
 */
static void split_recon_begin_locked(SplitRecon *r, uint32_t timeout_ms,
                                     const char *why)
{
    QemuThread thread;

    if (r->active) {
        return;
    }
    r->active = true;
    r->timeout_ms = timeout_ms;
    r->since = get_clock();
    r->deadline = r->since + (int64_t)timeout_ms * SCALE_MS;
    g_free(r->why);
    r->why = g_strdup(why);
    qemu_thread_create(&thread, "split-reconnect", split_recon_thread, r,
                       QEMU_THREAD_DETACHED);
}

/*
 * The read of @pi failed (@why), or the channel refused it, after the VM
 * may run. Park it until its sub-host is back. Returns false when it is
 * lost, or reconnecting is off (split-reconnect-timeout 0): the caller
 * treats the read as lost.
 */
static bool split_recon_park(SplitPageIn *pi, const char *why)
{
    SplitPager *pg = pi->pg;
    SplitRecon *r = &pg->recon[pi->k];
    uint32_t timeout_ms = migrate_split_reconnect_timeout();
    bool parked = false;

    qemu_mutex_lock(&r->lock);
    if (pi->reissued) {
        /* Failed again: it stays in the episode that sent it */
        pi->reissued = false;
        r->reissued--;
        qemu_cond_broadcast(&r->cond);
    }
    if (!qatomic_read(&pg->si->sub[pi->k].lost) && (r->active || timeout_ms)) {
        /* Under the lock: once it is unlocked, pi may be re-sent and freed */
        trace_split_pager_read_parked(pi->k, pi->pl.first, pi->pl.npages,
                                      why);
        r->parked = g_slist_prepend(r->parked, pi);
        split_recon_begin_locked(r, timeout_ms, why);
        parked = true;
    }
    qemu_mutex_unlock(&r->lock);
    return parked;
}

/* A read that a reconnect sent again was served. */
static void split_recon_served(SplitPageIn *pi)
{
    SplitRecon *r = &pi->pg->recon[pi->k];

    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (pi->reissued) {
            pi->reissued = false;
            r->reissued--;
            qemu_cond_broadcast(&r->cond);
        }
    }
}

/* The sub-host of @r is lost (@why): so are its parked reads. */
static void split_recon_give_up(SplitRecon *r, const char *why)
{
    GSList *parked, *l;

    /* Lost first: from now on nothing is parked (split_recon_park()) */
    split_pager_subhost_lost(r->pg, r->k, why);
    WITH_QEMU_LOCK_GUARD(&r->lock) {
        parked = r->parked;
        r->parked = NULL;
    }
    for (l = parked; l; l = l->next) {
        split_pagein_lost(l->data);
    }
    g_slist_free(parked);
}

static void split_pagein_done(void *opaque, const GError *gerr);
static void split_pagein_failed(SplitPageIn *pi, const GError *gerr,
                                bool conn_lost);

/*
 * The sub-host of @r is connected and its export checked: send the parked
 * reads again and wait until each is served or parked again. Returns true
 * when all were served and nothing else is parked: the episode is over
 * (r->active is cleared). False when some read failed again.
 */
static bool split_recon_reissue(SplitRecon *r, unsigned *sent)
{
    SplitPager *pg = r->pg;
    FctransSubhost *sh = pg->si->sub[r->k].sh;
    GSList *list, *l;
    bool done;

    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (qatomic_read(&pg->si->sub[r->k].handed_over)) {
            /* The new main host owns those pages: they stay parked */
            *sent = 0;
            return false;
        }
        list = r->parked;
        r->parked = NULL;
        for (l = list; l; l = l->next) {
            ((SplitPageIn *)l->data)->reissued = true;
            r->reissued++;
        }
    }
    *sent = g_slist_length(list);
    /* Oldest first: the list was built by prepending */
    list = g_slist_reverse(list);
    for (l = list; l; l = l->next) {
        g_autoptr(GError) gerr = NULL;
        SplitPageIn *pi = l->data;

        if (!fctrans_subhost_read(sh, pi->pl.first * pg->page_size,
                                  (uint64_t)pi->pl.npages * pg->page_size,
                                  pi->pl.buf, FCTRANS_SUBHOST_REQ_URGENT,
                                  split_pagein_done, pi, &gerr)) {
            /* Refused: the sub-host failed again. Parked again, or lost */
            split_pagein_failed(pi, gerr, true);
        }
    }
    g_slist_free(list);

    qemu_mutex_lock(&r->lock);
    while (r->reissued && !r->parked &&
           !qatomic_read(&pg->si->sub[r->k].lost)) {
        qemu_cond_timedwait(&r->cond, &r->lock, SPLIT_RECONNECT_POLL_MS);
    }
    done = !r->reissued && !r->parked &&
           !qatomic_read(&pg->si->sub[r->k].lost);
    if (done) {
        r->active = false;
    }
    qemu_mutex_unlock(&r->lock);
    return done;
}

/* The records a reconnect of @r accepts besides the pager's own. */
typedef struct SplitReconAccepts {
    FctransExportId rec[2];
    unsigned n;
} SplitReconAccepts;

/* With r->lock held */
static void split_recon_accepts(SplitRecon *r, SplitReconAccepts *a)
{
    a->n = 0;
    if (r->has_next) {
        a->rec[a->n++] = r->next;
        if (r->has_stale) {
            a->rec[a->n++] = r->stale;
        }
    }
}

static bool split_recon_accepted(const SplitReconAccepts *a,
                                 const FctransExportId *found)
{
    unsigned i;

    for (i = 0; i < a->n; i++) {
        if (fctrans_export_id_match(&a->rec[i], found, NULL)) {
            return true;
        }
    }
    return false;
}

/*
 * After a reconnect: whether the export behind @sub still holds @want's
 * identity record. 1: it does; 0: it holds another record, or none, or
 * something else (final: never its pages); -1: the record could not be
 * read, which is a connection loss like any other (retried until the
 * deadline). split_export_id_verify() cannot tell the last two apart: a
 * failed read and a corrupt record are both -1 of split_export_id_read().
 *
 * Besides @want, it accepts an outgoing migration's record: those of
 * @before, taken before the reconnect, or the ones @r accepts now (a
 * handover may begin or end while the record is read).
 */
static int split_recon_verify(SplitRecon *r, SplitPagerSubhost *sub,
                              const FctransExportId *want,
                              const SplitReconAccepts *before, Error **errp)
{
    SplitReconAccepts now;
    g_autofree uint8_t *buf = g_malloc(FCTRANS_EXPORT_ID_SIZE);
    g_autoptr(GError) gerr = NULL;
    FctransExportId found;
    uint64_t off = fctrans_export_id_offset(
        fctrans_subhost_export_size(sub->sh));

    if (!fctrans_subhost_read_sync(sub->sh, off, FCTRANS_EXPORT_ID_SIZE, buf,
                                   &gerr)) {
        error_setg(errp, "split-memory: sub-host '%s' (%s): cannot read the "
                   "export's identity record: %s", sub->id, sub->uri,
                   gerr->message);
        return -1;
    }
    if (!fctrans_export_id_decode(buf, &found, &gerr)) {
        error_setg(errp, "split-memory: sub-host '%s' (%s): %s", sub->id,
                   sub->uri, gerr->message);
        return 0;
    }
    WITH_QEMU_LOCK_GUARD(&r->lock) {
        split_recon_accepts(r, &now);
    }
    /* An outgoing migration's record holds the same pages */
    if (!fctrans_export_id_match(want, &found, &gerr) &&
        !split_recon_accepted(before, &found) &&
        !split_recon_accepted(&now, &found)) {
        error_setg(errp, "split-memory: sub-host '%s' (%s): %s", sub->id,
                   sub->uri, gerr->message);
        return 0;
    }
    trace_split_export_id(sub->id, "verified", found.state);
    return 1;
}

/*
 * A sub-host's reconnect thread: reconnect with backoff, check the
 * export's identity, re-send the parked reads; give up at the deadline.
 * It never takes the BQL, and runs no channel callback.
 */
static void *split_recon_thread(void *opaque)
{
    SplitRecon *r = opaque;
    SplitPager *pg = r->pg;
    SplitPagerSubhost *sub = &pg->si->sub[r->k];
    /*
     * A copy, taken once: split_incoming_start() writes sub->export_id
     * under no lock of ours. It does so before the pager may run, hence
     * before any episode begins, so this copy is final.
     */
    FctransExportId want = sub->export_id;
    int64_t backoff_ms = SPLIT_RECONNECT_FIRST_MS, since, now;
    g_autofree char *last = NULL;
    unsigned attempts = 0, flaps = 0;
    uint32_t timeout_ms;
    bool was_failed = false;

    WITH_QEMU_LOCK_GUARD(&r->lock) {
        last = g_strdup(r->why);
        since = r->since;
        timeout_ms = r->timeout_ms;
    }
    warn_report("split: sub-host '%s': %s; reconnecting for up to %u ms",
                sub->id, last, timeout_ms);
    trace_split_pager_reconnect_start(sub->id, timeout_ms, last);

    while (!qatomic_read(&sub->lost)) {
        g_autoptr(GError) gerr = NULL;
        Error *err = NULL;
        int64_t deadline;
        unsigned sent;
        bool connected;
        int verified = -1;
        SplitReconAccepts before;

        attempts++;
        /* Sticky: a reconnect may succeed and its record read fail */
        was_failed = was_failed || !fctrans_subhost_is_connected(sub->sh);
        /*
         * Either call may hang (a silent server: the channel's own
         * timeouts are longer than ours): the watchdog gives the
         * sub-host up at the deadline meanwhile.
         */
        WITH_QEMU_LOCK_GUARD(&r->lock) {
            r->attempting = true;
            r->unverified = true;
            split_recon_accepts(r, &before);
        }
        connected = fctrans_subhost_reconnect(sub->sh, &gerr);
        if (connected) {
            verified = split_recon_verify(r, sub, &want, &before, &err);
        }
        WITH_QEMU_LOCK_GUARD(&r->lock) {
            r->attempting = false;
            r->unverified = verified != 1;
        }
        if (qatomic_read(&sub->lost)) {
            /* Given up by the watchdog while this attempt hung */
            error_free(err);
            break;
        }
        if (!connected) {
            g_free(last);
            last = g_strdup(gerr->message);
        } else if (!verified) {
            /* Another export, or one restarted empty: never its pages */
            split_recon_give_up(r, error_get_pretty(err));
            error_free(err);
            break;
        } else if (verified < 0) {
            /* The record could not be read: retried as a lost connection */
            g_free(last);
            last = g_strdup(error_get_pretty(err));
            error_free(err);
        } else {
            if (was_failed) {
                FctransSubhostStats st;

                fctrans_subhost_get_stats(sub->sh, &st);
                now = get_clock();
                warn_report("split: sub-host '%s' reconnected after %" PRId64
                            " ms (attempt %u, reconnect %" PRIu64 ")",
                            sub->id, (now - since) / SCALE_MS, attempts,
                            st.reconnects);
                trace_split_pager_reconnected(sub->id, st.reconnects,
                                              (now - since) / SCALE_MS);
                if (flaps++ < SPLIT_RECONNECT_FLAPS) {
                    /* Back and ours: a failure from now on is a new one */
                    WITH_QEMU_LOCK_GUARD(&r->lock) {
                        r->deadline = now + (int64_t)timeout_ms * SCALE_MS;
                    }
                    backoff_ms = SPLIT_RECONNECT_FIRST_MS;
                }
                was_failed = false;
            }
            if (split_recon_reissue(r, &sent)) {
                trace_split_pager_reconnect_done(sub->id, sent,
                                                 (get_clock() - since) /
                                                 SCALE_MS);
                return NULL;        /* r->active was cleared */
            }
            g_free(last);
            last = g_strdup("reads failed again after the reconnect");
        }

        now = get_clock();
        WITH_QEMU_LOCK_GUARD(&r->lock) {
            deadline = r->deadline;
        }
        trace_split_pager_reconnect_failed(sub->id, attempts,
                                           (now - since) / SCALE_MS, last);
        if (now >= deadline) {
            g_autofree char *why = g_strdup_printf(
                "not reconnected within %u ms: %s", timeout_ms, last);

            split_recon_give_up(r, why);
            break;
        }
        g_usleep(MIN(backoff_ms, (deadline - now + SCALE_MS - 1) / SCALE_MS) *
                 1000);
        backoff_ms = MIN(backoff_ms * 2, SPLIT_RECONNECT_MAX_MS);
    }

    /* Lost: drop what was parked since (split_recon_give_up() did before) */
    WITH_QEMU_LOCK_GUARD(&r->lock) {
        r->active = false;
    }
    split_recon_give_up(r, last);
    return NULL;
}

/*
 * The read of @pi failed with @gerr, or the channel refused it.
 * @conn_lost: because the connection to its sub-host failed (a refusal
 * always is: the channel refuses reads only while the sub-host is
 * failed or closing), not because the server answered with an error.
 */
static void split_pagein_failed(SplitPageIn *pi, const GError *gerr,
                                bool conn_lost)
{
    SplitPager *pg = pi->pg;

    if (split_pager_load_broken(pg)) {
        /* The VM will not run: zeros let the device state load end */
        uint32_t i;

        split_pager_subhost_lost(pg, pi->k, gerr->message);
        for (i = 0; i < pi->pl.npages; i++) {
            uint8_t st = qatomic_read(&pg->state[pi->pl.first + i]);

            if (!(st & SPLIT_PAGE_DISCARDED)) {     /* counted already */
                qatomic_set(&pg->state[pi->pl.first + i],
                            st | SPLIT_PAGE_DISCARDED);
                qatomic_dec(&pg->si->sub[pi->k].remaining);
                qatomic_inc(&pg->unused);
            }
        }
        split_place(pg, &pi->pl, pi->pl.buf);
        g_free(pi);
        return;
    }
    /* Never zeros instead of the guest's data: the faults wait */
    if (!conn_lost) {
        /*
         * The server answered this read with an error (EIO, say) on a
         * connection that is still up: no reconnect will come for it, and
         * the server gave its answer. Lost now, with its parked reads if
         * an episode runs; this read no longer counts as re-sent.
         */
        split_recon_served(pi);
        split_recon_give_up(&pg->recon[pi->k], gerr->message);
    } else if (split_recon_park(pi, gerr->message)) {
        return;
    } else {
        split_pager_subhost_lost(pg, pi->k, gerr->message);
    }
    split_pagein_lost(pi);
}

static void split_pagein_done(void *opaque, const GError *gerr)
{
    SplitPageIn *pi = opaque;
    SplitPager *pg = pi->pg;
    uint64_t first = pi->pl.first;
    uint32_t npages = pi->pl.npages;
    int64_t ns;

    if (gerr) {
        /*
         * A connection that dies fails the sub-host before the callbacks
         * of its requests run, and a reconnect waits for those callbacks:
         * a sub-host still connected here answered this read with an
         * error.
         */
        split_pagein_failed(pi, gerr, !fctrans_subhost_is_connected(
                                          pg->si->sub[pi->k].sh));
        return;
    }
    ns = get_clock() - pi->t_fault;
    split_lat_record(pg, ns);
    qatomic_inc(&pg->page_ins_remote);
    qatomic_add(&pg->prefetched, npages - 1);
    qatomic_add(&pg->si->sub[pi->k].page_ins, npages);
    split_place(pg, &pi->pl, pi->pl.buf);
    /* Placed: a reconnect waiting for this read may end its episode */
    split_recon_served(pi);
    trace_split_pager_pagein(pi->k, first, npages, ns / 1000);
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

/*
 * Classify a fault on page @g and claim what it needs, with place_lock
 * held for reading. Returns true with @pl set when pages must be placed
 * (@pl->subhost >= 0: read them from there first).
 */
static bool split_pager_claim(SplitPager *pg, SplitBlock *b, uint64_t g,
                              uint32_t room, SplitPlace *pl)
{
    SplitIncoming *si = pg->si;
    uint8_t s;
    FctransPageLoc loc;
    uint64_t end;
    uint32_t n;

again:
    s = qatomic_read(&pg->state[g]);
    trace_split_pager_fault(g, s);
    switch (SPLIT_PAGE_STATE(s)) {
    case SPLIT_PAGE_INFLIGHT:
        return false;       /* its placement wakes this thread too */
    case SPLIT_PAGE_EVICTING:
        if (s & SPLIT_PAGE_DISCARDED) {
            /*
             * Discarded under page-out, which may be copying it: a zero
             * page, what a discard leaves; page-out ends it as unused.
             */
            uint8_t *host = split_page_host(b, g, pg->page_size);

            if (split_uffd_zero(pg, host, pg->page_size) == -EEXIST) {
                split_uffd_wake(pg->uffd, host, pg->page_size);
            }
        }
        /* Else dropped just now: page-out wakes this thread once ABSENT */
        return false;
    case SPLIT_PAGE_PRESENT:
    case SPLIT_PAGE_CLEAN:
        /*
         * A late message for a page placed since (the zero page placement
         * then meets EEXIST and wakes its waiters), or a page dropped
         * behind the pager's back (a discard that did not tell it): a
         * zero page, what a discard leaves. A wake alone would refault.
         * Page-out may take the page meanwhile: look again then.
         */
        if (qatomic_cmpxchg(&pg->state[g], s, SPLIT_PAGE_INFLIGHT) != s) {
            goto again;
        }
        *pl = (SplitPlace) { .b = b, .first = g, .npages = 1,
                             .subhost = -1 };
        qatomic_dec(&pg->resident);
        qatomic_inc(&pg->unused);
        qatomic_inc(&pg->inflight);
        return true;
    }
    *pl = (SplitPlace) { .b = b, .first = g, .npages = 1, .subhost = -1 };

    loc = fctrans_pagemap_get(si->map, g);
    if (!FCTRANS_LOC_IS_SUBHOST(loc)) {
        qatomic_set(&pg->state[g], SPLIT_PAGE_INFLIGHT);
        qatomic_inc(&pg->inflight);
        qatomic_inc(&pg->page_ins_local);
        return true;
    }
    pl->subhost = FCTRANS_LOC_SUBHOST_INDEX(loc);
    if (qatomic_read(&si->sub[pl->subhost].handed_over)) {
        /* The new main host runs on that page: never read it here again */
        if (!qatomic_fetch_inc(&pg->handed_over_faults)) {
            error_report("split: guest page %" PRIu64 " belongs to the main "
                         "host this VM migrated to (sub-host '%s'): this VM "
                         "must not run here any more", g,
                         si->sub[pl->subhost].id);
        }
        qatomic_inc(&pg->blocked);
        split_pager_request_stop(pg);
        return false;
    }
    if (qatomic_read(&si->sub[pl->subhost].lost) &&
        split_pager_load_broken(pg)) {
        /* The VM will not run: zeros let the device state load end */
        pl->subhost = -1;
        qatomic_set(&pg->state[g], SPLIT_PAGE_INFLIGHT);
        qatomic_inc(&pg->inflight);
        qatomic_dec(&si->sub[FCTRANS_LOC_SUBHOST_INDEX(loc)].remaining);
        qatomic_inc(&pg->unused);
        return true;
    }
    if (qatomic_read(&si->sub[pl->subhost].lost)) {
        qatomic_inc(&pg->blocked);
        split_pager_request_stop(pg);
        return false;
    }

    /* Claim the page and the following ones of the same sub-host */
    qatomic_set(&pg->state[g], SPLIT_PAGE_INFLIGHT);
    end = MIN(b->first_page + b->npages,
              g + MIN(room, 1 + SPLIT_PREFETCH_PAGES));
    for (n = 1; g + n < end; n++) {
        if (fctrans_pagemap_get(si->map, g + n) != loc ||
            qatomic_read(&pg->state[g + n]) != SPLIT_PAGE_ABSENT) {
            break;
        }
        qatomic_set(&pg->state[g + n], SPLIT_PAGE_INFLIGHT);
    }
    pl->npages = n;
    qatomic_add(&pg->inflight, n);
    return true;
}

static void split_pager_fault(SplitPager *pg, uint64_t addr);

/*
 * The main host's memory cgroup. A page-in over its limit does not fail
 * with ENOMEM: the kernel OOM-kills QEMU, or with the OOM killer disabled
 * (cgroup v1) blocks the pager in the charge. So the pager itself keeps
 * SPLIT_MEMCG_HEADROOM below the limit: faults that would go past it wait
 * (the VM is stopped, SPLIT_PAGE_IN_FAILED says why) until the limit is
 * raised or memory is given back. The cgroup is read again on every
 * check, so moving QEMU into another cgroup is seen.
 */
#define SPLIT_MEMCG_HEADROOM    (32 * 1024 * 1024)
/* Bytes placed between two checks: a fraction of the headroom */
#define SPLIT_MEMCG_CHECK_BYTES (SPLIT_MEMCG_HEADROOM / 8)

static bool split_read_u64(const char *path, uint64_t *v)
{
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return false;
    }
    g_strchomp(text);
    if (g_str_equal(text, "max")) {
        *v = UINT64_MAX;
        return true;
    }
    return !qemu_strtou64(text, NULL, 10, v);
}

/* Limit and usage of this process's memory cgroup; false: no limit known. */
static bool split_memcg_read(uint64_t *limit, uint64_t *usage)
{
    g_autofree char *cg = NULL;
    g_auto(GStrv) lines = NULL;
    size_t i;

    if (!g_file_get_contents("/proc/self/cgroup", &cg, NULL, NULL)) {
        return false;
    }
    lines = g_strsplit(cg, "\n", -1);
    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], ":", 3);
        g_autofree char *lim = NULL, *use = NULL;

        if (!f[0] || !f[1] || !f[2]) {
            continue;
        }
        if (g_str_equal(f[1], "memory")) {          /* cgroup v1 */
            lim = g_strdup_printf("/sys/fs/cgroup/memory%s/"
                                  "memory.limit_in_bytes", f[2]);
            use = g_strdup_printf("/sys/fs/cgroup/memory%s/"
                                  "memory.usage_in_bytes", f[2]);
        } else if (!*f[1] && g_str_equal(f[0], "0")) { /* cgroup v2 */
            lim = g_strdup_printf("/sys/fs/cgroup%s/memory.max", f[2]);
            use = g_strdup_printf("/sys/fs/cgroup%s/memory.current", f[2]);
        } else {
            continue;
        }
        if (split_read_u64(lim, limit) && split_read_u64(use, usage) &&
            *limit < UINT64_MAX / 2) {
            return true;
        }
    }
    return false;
}

/*
 * Whether page-ins must wait for memory; checked by the fault thread.
 * Entering that state stops the VM with an event about @b / @g (the
 * fault that found it), leaving it lets the waiting faults go on.
 */
static bool split_memcg_full(SplitPager *pg, SplitBlock *b, uint64_t g,
                             bool force)
{
    uint64_t limit, usage;
    bool full;

    if (!force && !pg->memcg_full &&
        pg->memcg_placed < SPLIT_MEMCG_CHECK_BYTES / pg->page_size) {
        return false;
    }
    pg->memcg_placed = 0;
    full = split_memcg_read(&limit, &usage) &&
           usage + SPLIT_MEMCG_HEADROOM > limit;
    if (full && !pg->memcg_full && b) {
        SplitPlace pl = { .b = b, .first = g, .npages = 1, .subhost = -1 };
        g_autofree char *why = g_strdup_printf("memory cgroup at %" PRIu64
                                               " of its %" PRIu64 " bytes",
                                               usage, limit);

        qatomic_inc(&pg->stuck);
        split_pager_place_failed(pg, &pl, g, -ENOMEM, why);
    } else if (!full && pg->memcg_full) {
        qatomic_dec(&pg->stuck);
    }
    if (full != pg->memcg_full) {
        trace_split_pager_memcg(usage, limit, full);
    }
    pg->memcg_full = full && (pg->memcg_full || b);
    return pg->memcg_full;
}

/* The fault thread: serve the faults that waited for memory, if it is back */
static void split_memcg_resume(SplitPager *pg)
{
    GArray *waiting;
    guint i;

    if (!pg->memcg_waiting->len || split_memcg_full(pg, NULL, 0, true)) {
        return;
    }
    waiting = pg->memcg_waiting;
    pg->memcg_waiting = g_array_new(false, false, sizeof(uint64_t));
    for (i = 0; i < waiting->len; i++) {
        split_pager_fault(pg, g_array_index(waiting, uint64_t, i));
    }
    g_array_free(waiting, true);
}

static void split_pager_fault(SplitPager *pg, uint64_t addr)
{
    SplitBlock *b = split_pager_find_block(pg, addr);
    g_autoptr(GError) gerr = NULL;
    SplitPageIn *pi;
    SplitRecon *r;
    SplitPlace pl;
    uint64_t g;
    uint32_t room = 1 + SPLIT_PREFETCH_PAGES;
    bool claimed, sent = false, parked = false;

    if (!b) {
        void *page = (void *)(uintptr_t)(addr & ~(uint64_t)(pg->page_size -
                                                            1));

        /* Never registered: a zero page ends the fault, a wake would not */
        error_report_once("split: fault at 0x%" PRIx64 " outside split RAM",
                          addr);
        if (split_uffd_zero(pg, page, pg->page_size) == -EEXIST) {
            split_uffd_wake(pg->uffd, page, pg->page_size);
        }
        return;
    }
    g = b->first_page + (addr - (uintptr_t)b->rb->host) / pg->page_size;
    /*
     * While the device state loads, the faulting thread holds the BQL:
     * it must not wait for memory that only the monitor could give back.
     */
    if (qatomic_read(&pg->load_state) == SPLIT_LOAD_MAY_RUN &&
        split_memcg_full(pg, b, g, false)) {
        /* The faulting thread waits: no claim, no wake */
        g_array_append_val(pg->memcg_waiting, addr);
        return;
    }

    /*
     * A page-in must fit in the budget; else it waits until page-out
     * made room. Not while the device state loads: see above.
     */
    if (pg->po && qatomic_read(&pg->load_state) == SPLIT_LOAD_MAY_RUN &&
        SPLIT_PAGE_STATE(qatomic_read(&pg->state[g])) == SPLIT_PAGE_ABSENT) {
        room = split_pageout_room(pg->po, room);
        if (!room) {
            g_array_append_val(pg->room_waiting, addr);
            qatomic_inc(&pg->room_waits);
            return;
        }
    }

    g_rw_lock_reader_lock(&pg->place_lock);
    claimed = split_pager_claim(pg, b, g, room, &pl);
    g_rw_lock_reader_unlock(&pg->place_lock);
    if (claimed) {
        pg->memcg_placed += pl.npages;
    }
    if (!claimed) {
        return;
    }
    if (pl.subhost < 0) {
        split_place(pg, &pl, NULL);     /* local page-in: a zero page */
        return;
    }

    pi = g_new0(SplitPageIn, 1);
    pi->pg = pg;
    pi->k = pl.subhost;
    pi->pl = pl;
    pi->pl.buf = g_malloc((uint64_t)pl.npages * pg->page_size);
    pi->t_fault = get_clock();
    /*
     * Not to an export a reconnect has not checked yet: an empty server
     * or another VM's export would hand the guest wrong pages. Checked
     * and sent under the lock, so that no reconnect falls between.
     */
    r = &pg->recon[pi->k];
    qemu_mutex_lock(&r->lock);
    if (qatomic_read(&pg->si->sub[pi->k].handed_over)) {
        /*
         * Handed over since its claim (handover_end() sets it under this
         * lock): never read. It waits, parked, for a reconnect that never
         * sends it; the VM stops.
         */
        r->parked = g_slist_prepend(r->parked, pi);
        parked = true;
        qatomic_inc(&pg->handed_over_faults);
        split_pager_request_stop(pg);
    } else if (!r->unverified) {
        sent = fctrans_subhost_read(pg->si->sub[pi->k].sh, g * pg->page_size,
                                    (uint64_t)pl.npages * pg->page_size,
                                    pi->pl.buf, FCTRANS_SUBHOST_REQ_URGENT,
                                    split_pagein_done, pi, &gerr);
    } else if (!qatomic_read(&pg->si->sub[pi->k].lost)) {
        /* The reconnect thread sends it once the export is checked */
        r->parked = g_slist_prepend(r->parked, pi);
        parked = true;
    }
    qemu_mutex_unlock(&r->lock);
    if (sent) {
        return;
    } else if (parked) {
        /* Not pi: the reconnect thread may have sent it and freed it */
        trace_split_pager_read_parked(pl.subhost, pl.first, pl.npages,
                                      "export not checked since the "
                                      "reconnect");
    } else if (gerr) {
        /* Refused: zeros while loading, else parked or lost */
        split_pagein_failed(pi, gerr, true);
    } else {
        /* Lost before its export was checked: never read from there */
        split_pagein_lost(pi);
    }
}

/*
 * A write to a write-protected page: the first write to a clean page (its
 * sub-host copy becomes stale: let it through, the page is dirty now), a
 * write to a page being paged out (that eviction is given up: page-out
 * lets the writer through), or a late message for a page dropped or
 * unprotected since (wake the writer: it faults again if it must).
 */
static void split_pager_write_fault(SplitPager *pg, uint64_t addr)
{
    SplitBlock *b = split_pager_find_block(pg, addr);
    uint32_t ps = pg->page_size;
    uint8_t *host = (uint8_t *)(uintptr_t)(addr & ~(uint64_t)(ps - 1));
    uint64_t g;
    uint8_t s;
    int ret;

    if (!b) {
        split_uffd_wake(pg->uffd, host, ps);
        return;
    }
    g = b->first_page + (addr - (uintptr_t)b->rb->host) / ps;
    g_rw_lock_reader_lock(&pg->place_lock);
again:
    s = qatomic_read(&pg->state[g]);
    trace_split_pager_write_fault(g, s);
    switch (SPLIT_PAGE_STATE(s)) {
    case SPLIT_PAGE_PRESENT:
    case SPLIT_PAGE_CLEAN:
        /* Not a page-out candidate while its protection is lifted */
        if (qatomic_cmpxchg(&pg->state[g], s, SPLIT_PAGE_DIRTYING) != s) {
            goto again;
        }
        ret = split_uffd_protect(pg, host, ps, false);
        if (ret) {
            /* The writer would wait for good: the VM cannot go on */
            error_report("split: cannot let a write to guest page %" PRIu64
                         " through: %s", g, strerror(-ret));
            qatomic_set(&pg->failed, true);
            split_pager_request_stop(pg);
        }
        qatomic_set(&pg->state[g], SPLIT_PAGE_PRESENT | SPLIT_PAGE_REF);
        if (SPLIT_PAGE_STATE(s) == SPLIT_PAGE_CLEAN) {
            qatomic_inc(&pg->write_faults);
        }
        break;
    case SPLIT_PAGE_EVICTING:
        if (!(s & SPLIT_PAGE_WRITTEN) &&
            qatomic_cmpxchg(&pg->state[g], s, s | SPLIT_PAGE_WRITTEN) != s) {
            goto again;
        }
        break;
    default:
        split_uffd_wake(pg->uffd, host, ps);
        break;
    }
    g_rw_lock_reader_unlock(&pg->place_lock);
}

/* The fault thread: serve the faults that waited for room in the budget */
static void split_room_resume(SplitPager *pg)
{
    GArray *waiting = pg->room_waiting;
    guint i;

    if (!waiting->len) {
        return;
    }
    pg->room_waiting = g_array_new(false, false, sizeof(uint64_t));
    for (i = 0; i < waiting->len; i++) {
        split_pager_fault(pg, g_array_index(waiting, uint64_t, i));
    }
    g_array_free(waiting, true);
}

/*
 * A sub-host that holds pages and is not connected: reconnect it once the
 * VM may run, else it is lost. A reconnect whose attempt hangs past its
 * deadline (a silent network or server: the channel's connect and request
 * timeouts are longer) is given up here, so that the loss is reported on
 * time. That includes the identity read after a connect that succeeded:
 * the sub-host is connected then, but the faults still wait.
 */
static void split_pager_watchdog(SplitPager *pg)
{
    uint32_t timeout_ms = migrate_split_reconnect_timeout();
    int64_t now = get_clock();
    unsigned k;

    for (k = 0; k < pg->si->nsubhosts; k++) {
        SplitPagerSubhost *sub = &pg->si->sub[k];
        SplitRecon *r = &pg->recon[k];
        bool give_up = false, lost = false, connected;
        uint32_t episode_ms = 0;

        if (qatomic_read(&sub->lost) || qatomic_read(&sub->handed_over)) {
            continue;
        }
        connected = fctrans_subhost_is_connected(sub->sh);
        WITH_QEMU_LOCK_GUARD(&r->lock) {
            if (r->active) {
                /*
                 * Not while connected between attempts: the re-sent reads
                 * are served then, or time out in the channel, which
                 * fails the connection.
                 */
                give_up = (!connected || r->attempting) &&
                          now >= r->deadline + SPLIT_WATCHDOG_MS * SCALE_MS;
                episode_ms = r->timeout_ms;
            } else if (connected || !qatomic_read(&sub->remaining)) {
                /* Fine, or nothing to page in from there */
            } else if (timeout_ms &&
                       /* Acquire: sub->export_id is final (see the thread) */
                       qatomic_load_acquire(&pg->load_state) ==
                       SPLIT_LOAD_MAY_RUN) {
                split_recon_begin_locked(r, timeout_ms, "connection lost");
            } else {
                lost = true;
            }
        }
        if (give_up) {
            g_autofree char *why = g_strdup_printf(
                "not reconnected within %u ms", episode_ms);

            split_recon_give_up(r, why);
        } else if (lost) {
            split_pager_subhost_lost(pg, k, "connection lost");
        }
    }
}

static void *split_pager_thread(void *opaque)
{
    SplitPager *pg = opaque;
    struct uffd_msg msg[SPLIT_FAULT_BATCH];
    int64_t watchdog = get_clock() + SPLIT_WATCHDOG_MS * SCALE_MS;
    int64_t retry_due = INT64_MAX;

    for (;;) {
        struct pollfd pfd[3] = {
            { .fd = pg->uffd, .events = POLLIN },
            { .fd = event_notifier_get_fd(&pg->retry_notify),
              .events = POLLIN },
            { .fd = event_notifier_get_fd(&pg->room_notify),
              .events = POLLIN },
        };
        int64_t now = get_clock();
        int64_t wait = MIN(watchdog, retry_due) - now;
        int i, n, ready;

        /* Never sleep forever while a placement waits for its retry */
        ready = poll(pfd, 3, wait <= 0 ? 0 : (int)((wait + SCALE_MS - 1) /
                                                   SCALE_MS));
        if (ready > 0 && (pfd[2].revents & POLLIN)) {
            event_notifier_test_and_clear(&pg->room_notify);
            split_room_resume(pg);
        }
        if (ready > 0 && (pfd[0].revents & POLLIN)) {
            n = uffd_read_events(pg->uffd, msg, SPLIT_FAULT_BATCH);
            for (i = 0; i < n; i++) {
                if (msg[i].event != UFFD_EVENT_PAGEFAULT) {
                    continue;
                }
                if (msg[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
                    split_pager_write_fault(pg,
                                            msg[i].arg.pagefault.address);
                } else {
                    split_pager_fault(pg, msg[i].arg.pagefault.address);
                }
            }
        } else if (ready < 0 && errno != EINTR) {
            error_report_once("split: poll on the userfaultfd failed: %s",
                              strerror(errno));
            g_usleep(1000);
        }
        now = get_clock();
        if ((ready > 0 && (pfd[1].revents & POLLIN)) || now >= retry_due) {
            retry_due = split_retry_run(pg);
        }
        if (now >= watchdog) {
            split_pager_watchdog(pg);
            split_memcg_resume(pg);
            watchdog = now + SPLIT_WATCHDOG_MS * SCALE_MS;
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

/* @wp: for write-protection too (page-out), else for missing pages only */
static bool split_pager_register(int fd, RAMBlock *rb, bool wp, Error **errp)
{
    const uint64_t need = BIT_ULL(_UFFDIO_COPY) | BIT_ULL(_UFFDIO_ZEROPAGE) |
                          BIT_ULL(_UFFDIO_WAKE) |
                          (wp ? BIT_ULL(_UFFDIO_WRITEPROTECT) : 0);
    uint64_t ioctls = 0;

    if (uffd_register_memory(fd, rb->host, rb->used_length,
                             UFFDIO_REGISTER_MODE_MISSING |
                             (wp ? UFFDIO_REGISTER_MODE_WP : 0), &ioctls)) {
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
    ok = split_pager_register(fd, rb, false, errp);
    close(fd);      /* nothing is missing yet: closing changes nothing */
    return ok;
}

/*
 * Whether page-out can work on this VM's split RAM, probed on a scratch
 * userfaultfd with the features asked for in @features: NULL, or why
 * not. SPLIT_PAGER_NO_WP=1 pretends the kernel lacks write-protection,
 * so that the tests run that path on any kernel.
 */
static const char *split_pager_probe_wp(SplitLayout *layout,
                                        uint64_t features)
{
    const char *why = NULL;
    unsigned i;
    int fd;

    if (g_getenv("SPLIT_PAGER_NO_WP")) {
        return "write-protection disabled by SPLIT_PAGER_NO_WP";
    }
    if (!(features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        return "this kernel's userfaultfd cannot write-protect";
    }
    if (ram_block_discard_is_disabled()) {
        /* VFIO pins all of guest RAM: a dropped page would stay in use */
        return "RAM discards are disabled (a device pins guest RAM)";
    }
    fd = uffd_create_fd(features, true);
    if (fd < 0) {
        return "cannot create a userfaultfd with write-protection";
    }
    for (i = 0; i < layout->nblocks && !why; i++) {
        RAMBlock *rb = layout->blocks[i].rb;

        if (qemu_ram_is_shared(rb)) {
            /*
             * A dropped shmem page would leave a write-protect marker
             * behind, and another process may map it: not paged out yet.
             */
            why = "page-out works on private guest RAM only";
        } else if (!split_pager_register(fd, rb, true, NULL)) {
            why = "this kernel cannot write-protect guest RAM";
        }
    }
    close(fd);      /* nothing is missing or protected yet */
    return why;
}

/* /proc/self/pagemap: an entry per page, present and swapped bits */
#define SPLIT_PM_PRESENT        (1ULL << 63)
#define SPLIT_PM_SWAPPED        (1ULL << 62)

/*
 * Page @p + @i, entry @i of @pm: mapped here, swapped out, or received.
 * A received page of shared (memfd) RAM may sit in the page cache with no
 * mapping in this process, where pagemap does not see it.
 */
static bool split_populated(RAMBlock *rb, const uint64_t *pm, uint64_t p,
                            uint64_t i)
{
    return (pm[i] & (SPLIT_PM_PRESENT | SPLIT_PM_SWAPPED)) ||
           (rb->receivedmap && test_bit(p + i, rb->receivedmap));
}

/*
 * Drop the populated pages among @run pages from @p of @b, as
 * /proc/self/pagemap tells (@pagemap_fd): present or swapped out. Those
 * are the pages this host received (RAM sent here before the page moved,
 * or that the source now holds as zero) and any other page QEMU touched
 * (ROM copies, tables, pages it read, which map the zero page). A swapped
 * page must be dropped too: userfaultfd never sees it as missing. The
 * rest was never populated here, and dropping it would only walk empty
 * page tables: on a TB-size VM most of its RAM.
 */
static bool split_drop_populated(SplitPager *pg, int pagemap_fd,
                                 SplitBlock *b, uint64_t p, uint64_t run,
                                 Error **errp)
{
    RAMBlock *rb = b->rb;
    uint32_t ps = pg->page_size;
    g_autofree uint64_t *pm = NULL;
    uint64_t end = p + run;

    pm = g_new(uint64_t, MIN(run, SPLIT_PAGEMAP_CHUNK));
    while (p < end) {
        uint64_t n = MIN(end - p, SPLIT_PAGEMAP_CHUNK), i = 0;
        off_t at = ((uintptr_t)rb->host / ps + p) * sizeof(uint64_t);

        if (pread(pagemap_fd, pm, n * sizeof(uint64_t), at) !=
            (ssize_t)(n * sizeof(uint64_t))) {
            error_setg_errno(errp, errno, "split: cannot tell which pages "
                             "of RAM block '%s' are populated", rb->idstr);
            return false;
        }
        while (i < n) {
            uint64_t j;

            while (i < n && !split_populated(rb, pm, p, i)) {
                i++;
            }
            for (j = i; j < n && split_populated(rb, pm, p, j); j++) {
                /* the populated run i .. j - 1 */
            }
            if (j > i) {
                if (ram_block_discard_range(rb, (p + i) * ps,
                                            (j - i) * ps)) {
                    error_setg(errp, "split: cannot drop pages of RAM block "
                               "'%s'", rb->idstr);
                    return false;
                }
                pg->dropped_at_start += j - i;
            }
            i = j;
        }
        p += n;
    }
    return true;
}

bool split_pager_start(SplitIncoming *si, Error **errp)
{
    SplitPager *pg = g_new0(SplitPager, 1);
    uint32_t ps = si->page_size;
    uint64_t features = 0;
    unsigned i;
    int pagemap_fd = -1;

    pg->si = si;
    pg->page_size = ps;
    pg->uffd = -1;
    pg->state = g_malloc0(si->layout.npages);
    qemu_mutex_init(&pg->retry_lock);
    g_rw_lock_init(&pg->place_lock);
    for (i = 0; i < SPLIT_MAX_SUBHOSTS; i++) {
        pg->recon[i].pg = pg;
        pg->recon[i].k = i;
        qemu_mutex_init(&pg->recon[i].lock);
        qemu_cond_init(&pg->recon[i].cond);
    }
    if (event_notifier_init(&pg->retry_notify, false)) {
        error_setg(errp, "split: cannot create the pager's event notifier");
        goto fail_notify;
    }
    if (event_notifier_init(&pg->room_notify, false)) {
        error_setg(errp, "split: cannot create the pager's event notifier");
        event_notifier_cleanup(&pg->retry_notify);
        goto fail_notify;
    }
    split_inject_setup(pg);
    pg->memcg_waiting = g_array_new(false, false, sizeof(uint64_t));
    pg->room_waiting = g_array_new(false, false, sizeof(uint64_t));
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
    if (pagemap_fd < 0) {
        error_setg_errno(errp, errno, "split: cannot open /proc/self/pagemap");
        goto fail;
    }

    /*
     * Check the map against what was received, count, and drop what is
     * not resident: RAM initialised here (ROM copies, tables) or sent
     * before the page moved must not survive.
     */
    for (i = 0; i < si->layout.nblocks; i++) {
        SplitBlock *b = &si->layout.blocks[i];
        RAMBlock *rb = b->rb;
        uint64_t p = 0;

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
                if (!split_drop_populated(pg, pagemap_fd, b, p, run, errp)) {
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
    close(pagemap_fd);
    pagemap_fd = -1;

    if (!uffd_query_features(&features)) {
        features &= UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_PAGEFAULT_FLAG_WP;
    }
    pg->no_wp_why = split_pager_probe_wp(&si->layout, features);
    pg->wp = !pg->no_wp_why;
    if (!pg->wp) {
        features &= UFFD_FEATURE_THREAD_ID;
        warn_report("split: no page-out on this main host (%s): the guest's "
                    "resident memory will grow past its budget as it "
                    "touches remote pages", pg->no_wp_why);
    }
    pg->uffd = uffd_create_fd(features, true);
    if (pg->uffd < 0) {
        error_setg_errno(errp, errno, "split: cannot create a userfaultfd");
        goto fail;
    }
    for (i = 0; i < si->layout.nblocks; i++) {
        if (!split_pager_register(pg->uffd, si->layout.blocks[i].rb, pg->wp,
                                  errp)) {
            goto fail;
        }
    }
    /* From here on the pager lives as long as the VM: so do its blocks */
    for (i = 0; i < si->layout.nblocks; i++) {
        memory_region_ref(si->layout.blocks[i].rb->mr);
    }

    if (pg->wp) {
        pg->po = split_pageout_start(pg, MAX(si->budget / ps,
                                             FCTRANS_BUDGET_MIN_PAGES));
    }
    si->pager = pg;
    qatomic_set(&split_pager, pg);
    pg->shutdown.notify = split_pager_shutdown;
    qemu_register_shutdown_notifier(&pg->shutdown);
    qemu_thread_create(&pg->thread, "split-pager", split_pager_thread, pg,
                       QEMU_THREAD_DETACHED);
    trace_split_pager_start(pg->resident, pg->unused,
                            si->layout.npages - pg->resident - pg->unused,
                            pg->dropped_at_start);
    return true;

fail:
    if (pagemap_fd >= 0) {
        close(pagemap_fd);
    }
    if (pg->uffd >= 0) {
        close(pg->uffd);    /* the blocks were not used yet: no data lost */
    }
    event_notifier_cleanup(&pg->retry_notify);
    event_notifier_cleanup(&pg->room_notify);
fail_notify:
    if (pg->memcg_waiting) {
        g_array_free(pg->memcg_waiting, true);
    }
    if (pg->room_waiting) {
        g_array_free(pg->room_waiting, true);
    }
    g_rw_lock_clear(&pg->place_lock);
    for (i = 0; i < SPLIT_MAX_SUBHOSTS; i++) {
        qemu_cond_destroy(&pg->recon[i].cond);
        qemu_mutex_destroy(&pg->recon[i].lock);
    }
    qemu_mutex_destroy(&pg->retry_lock);
    g_free(pg->state);
    g_free(pg);
    return false;
}

SplitPager *split_pager_get(void)
{
    return qatomic_read(&split_pager);
}

bool split_memory_active(void)
{
    return qatomic_read(&split_pager) != NULL;
}

bool split_memory_may_run(Error **errp)
{
    SplitPager *pg = qatomic_read(&split_pager);
    unsigned k;

    for (k = 0; pg && k < pg->si->nsubhosts; k++) {
        if (qatomic_read(&pg->si->sub[k].handed_over)) {
            error_setg(errp, "split-memory: this VM migrated to another main "
                       "host, which now owns its pages on sub-host '%s': it "
                       "cannot run here any more", pg->si->sub[k].id);
            return false;
        }
    }
    return true;
}

bool split_pager_may_run(SplitPager *pg, Error **errp)
{
    if (qatomic_cmpxchg(&pg->load_state, SPLIT_LOAD_LOADING,
                        SPLIT_LOAD_MAY_RUN) == SPLIT_LOAD_BROKEN) {
        error_setg(errp, "split-memory: a sub-host was lost while the device "
                   "state loaded: the guest's memory is incomplete here");
        return false;
    }
    return true;
}

/*
 * Re-migration onto the same sub-hosts
 * ------------------------------------
 * The source of that migration (split-save.c) is this main host. The
 * pager keeps serving the VM while it runs; what changes:
 *   - the export's record is the outgoing migration's from its setup on,
 *     which a reconnect accepts too (SplitRecon.next);
 *   - discarded pages are not trimmed there (SplitRecon.keep): the
 *     outgoing map may keep such a page there, and once the guest reuses
 *     it, write it again over another connection, which a trim still in
 *     flight on ours could overtake;
 *   - once the migration completed, the new main host owns the export
 *     (SplitPagerSubhost.handed_over): no page of it is read here again.
 * No page ever goes from resident back to a sub-host here, so a page
 * that is_remote() once stays remote until it is paged in or discarded:
 * the outgoing migration keeps it unread until then.
 */
bool split_pager_same_layout(const SplitLayout *layout)
{
    SplitPager *pg = qatomic_read(&split_pager);
    const SplitLayout *own;
    unsigned i;

    if (!pg) {
        return false;
    }
    own = &pg->si->layout;
    if (own->npages != layout->npages || own->nblocks != layout->nblocks ||
        own->page_size != layout->page_size) {
        return false;
    }
    for (i = 0; i < own->nblocks; i++) {
        if (own->blocks[i].rb != layout->blocks[i].rb ||
            own->blocks[i].first_page != layout->blocks[i].first_page ||
            own->blocks[i].npages != layout->blocks[i].npages) {
            return false;
        }
    }
    return true;
}

int split_pager_export_owner(const FctransExportId *found,
                             FctransExportId *own)
{
    SplitPager *pg = qatomic_read(&split_pager);
    unsigned j;

    if (!pg) {
        return -1;
    }
    for (j = 0; j < pg->si->nsubhosts; j++) {
        SplitPagerSubhost *sub = &pg->si->sub[j];
        SplitRecon *r = &pg->recon[j];
        bool mine;

        if (qatomic_read(&sub->lost) || qatomic_read(&sub->handed_over)) {
            continue;
        }
        /* Or an earlier outgoing migration's, which could not be undone */
        WITH_QEMU_LOCK_GUARD(&r->lock) {
            SplitReconAccepts a;

            split_recon_accepts(r, &a);
            mine = found->state == FCTRANS_EXPORT_ID_RUNNING ?
                   fctrans_export_id_match(&sub->export_id, found, NULL) :
                   split_recon_accepted(&a, found);
        }
        if (mine) {
            *own = sub->export_id;
            return j;
        }
    }
    return -1;
}

void split_pager_handover_begin(unsigned j, const FctransExportId *next)
{
    SplitPager *pg = qatomic_read(&split_pager);
    SplitRecon *r = &pg->recon[j];
    g_autoptr(GError) gerr = NULL;

    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (r->has_next) {
            /* Left by an earlier attempt: on the export until @next lands */
            r->stale = r->next;
            r->has_stale = true;
        }
        r->next = *next;
        r->has_next = true;
        if (pg->po && !r->keep) {
            /* No new page-out write goes to an export it keeps */
            split_pageout_hold(pg->po, true);
        }
        r->keep = true;
        /* Bounded by the channel's request timeout; never under the BQL */
        while (r->trims) {
            qemu_cond_wait(&r->cond, &r->lock);
        }
    }
    /*
     * The answered trims are visible to the outgoing migration's
     * connections only once flushed. One that cannot be is harmless: a
     * page it was for is unused in the outgoing map (discarded), so that
     * map never reads it.
     */
    if (!fctrans_subhost_flush_sync(pg->si->sub[j].sh, &gerr)) {
        trace_split_pager_trim_failed(gerr->message);
    }
    trace_split_pager_handover(pg->si->sub[j].id, "begin");
}

void split_pager_handover_end(unsigned j, bool done, bool next_stays)
{
    SplitPager *pg = qatomic_read(&split_pager);
    SplitRecon *r = &pg->recon[j];

    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (done) {
            qatomic_set(&pg->si->sub[j].handed_over, true);
        } else if (pg->po && r->keep) {
            split_pageout_hold(pg->po, false);
        }
        r->keep = false;
        r->has_next = next_stays;
        r->has_stale = r->has_stale && next_stays;
    }
    trace_split_pager_handover(pg->si->sub[j].id, done ? "handed over" :
                               next_stays ? "kept, its record not restored" :
                               "kept");
}

uint64_t split_pager_for_each_remote(void (*fn)(void *opaque, unsigned j,
                                                uint64_t first, uint64_t n),
                                     void *opaque)
{
    SplitPager *pg = qatomic_read(&split_pager);
    SplitIncoming *si = pg->si;
    uint64_t g = 0, total = 0;

    /* No discard changes the map meanwhile */
    g_rw_lock_reader_lock(&pg->place_lock);
    while (g < si->layout.npages) {
        FctransPageLoc loc;
        uint64_t run = fctrans_pagemap_run(si->map, g, &loc);
        uint64_t end = g + run, first = g;

        if (!FCTRANS_LOC_IS_SUBHOST(loc)) {
            g = end;
            continue;
        }
        for (; g <= end; g++) {
            if (g < end && !split_page_resident(qatomic_read(&pg->state[g]))) {
                continue;
            }
            if (g > first) {
                fn(opaque, FCTRANS_LOC_SUBHOST_INDEX(loc), first, g - first);
                total += g - first;
            }
            first = g + 1;
        }
        g = end;
    }
    g_rw_lock_reader_unlock(&pg->place_lock);
    return total;
}

bool split_pager_is_remote(uint64_t g, unsigned j)
{
    SplitPager *pg = qatomic_read(&split_pager);
    bool remote;

    g_rw_lock_reader_lock(&pg->place_lock);
    remote = fctrans_pagemap_get(pg->si->map, g) == FCTRANS_LOC_SUBHOST(j) &&
             !split_page_resident(qatomic_read(&pg->state[g]));
    g_rw_lock_reader_unlock(&pg->place_lock);
    return remote;
}

/* Trim @n pages from global page @g on sub-host @k; errors only trace. */
static void split_discard_trim_done(void *opaque, const GError *err)
{
    SplitRecon *r = opaque;

    if (err) {
        trace_split_pager_trim_failed(err->message);
    }
    WITH_QEMU_LOCK_GUARD(&r->lock) {
        if (!--r->trims) {
            qemu_cond_broadcast(&r->cond);
        }
    }
}

static void split_discard_trim(SplitPager *pg, unsigned k, uint64_t g,
                               uint64_t n)
{
    g_autoptr(GError) gerr = NULL;
    SplitRecon *r = &pg->recon[k];

    while (n) {
        uint64_t len = MIN(n, FCTRANS_SUBHOST_MAX_TRIM / pg->page_size);

        /*
         * A stale copy left there is harmless: the map no longer uses it.
         * Not while an outgoing migration may keep pages there: a trim on
         * this connection could land after its write of the page, reused
         * by the guest, on another.
         */
        qemu_mutex_lock(&r->lock);
        if (r->keep || qatomic_read(&pg->si->sub[k].handed_over)) {
            qemu_mutex_unlock(&r->lock);
            trace_split_pager_trim_failed("kept for an outgoing migration");
            return;
        }
        r->trims++;
        if (!fctrans_subhost_trim(pg->si->sub[k].sh, g * pg->page_size,
                                  len * pg->page_size, 0,
                                  split_discard_trim_done, r, &gerr)) {
            r->trims--;
            trace_split_pager_trim_failed(gerr->message);
            g_clear_error(&gerr);
        }
        qemu_mutex_unlock(&r->lock);
        g += len;
        n -= len;
    }
}

/* A run of pages of one sub-host to trim there after a discard */
typedef struct SplitTrimRun {
    unsigned k;
    uint64_t first, n;
} SplitTrimRun;

/* Whether an outgoing migration may keep pages of @trims where they are */
static bool split_discard_kept(SplitPager *pg, GArray *trims)
{
    unsigned i;

    for (i = 0; i < trims->len; i++) {
        SplitRecon *r = &pg->recon[g_array_index(trims, SplitTrimRun, i).k];

        WITH_QEMU_LOCK_GUARD(&r->lock) {
            if (r->keep) {
                return true;
            }
        }
    }
    return false;
}

int split_ram_discard(RAMBlock *rb, ram_addr_t offset, size_t length)
{
    SplitPager *pg = qatomic_read(&split_pager);
    g_autoptr(GArray) trims = NULL;
    SplitIncoming *si;
    SplitBlock *b;
    uint64_t g, first, end;
    SplitTrimRun run = { .n = 0 };
    unsigned i;
    int ret;

    b = pg ? split_layout_find(&pg->si->layout, rb) : NULL;
    if (!b || offset >= b->npages * pg->page_size) {
        return ram_block_discard_range(rb, offset, length);
    }
    si = pg->si;
    /* Only whole pages are discarded */
    first = b->first_page + DIV_ROUND_UP(offset, pg->page_size);
    end = b->first_page + MIN((offset + length) / pg->page_size, b->npages);
    trims = g_array_new(false, false, sizeof(SplitTrimRun));
    trace_split_pager_discard(rb->idstr, offset, length);

    g_rw_lock_writer_lock(&pg->place_lock);
    for (g = first; g < end; g++) {
        uint8_t s = qatomic_read(&pg->state[g]);
        FctransPageLoc loc = fctrans_pagemap_get(si->map, g);
        int k = FCTRANS_LOC_IS_SUBHOST(loc) ? FCTRANS_LOC_SUBHOST_INDEX(loc)
                                            : -1;

        if (SPLIT_PAGE_STATE(s) == SPLIT_PAGE_EVICTING) {
            /* Page-out ends it as unused (and counts it) */
            qatomic_set(&pg->state[g], s | SPLIT_PAGE_DISCARDED);
        } else if (split_page_resident(s)) {
            /* The discard drops it; its next touch is a local page-in */
            qatomic_set(&pg->state[g], SPLIT_PAGE_ABSENT);
            qatomic_dec(&pg->resident);
            qatomic_inc(&pg->unused);
        } else if (k >= 0) {
            if (SPLIT_PAGE_STATE(s) == SPLIT_PAGE_INFLIGHT) {
                /* Its fetch places zeros, never the stale contents */
                qatomic_set(&pg->state[g], s | SPLIT_PAGE_DISCARDED);
            }
            qatomic_dec(&si->sub[k].remaining);
            qatomic_inc(&pg->unused);
            qatomic_inc(&pg->discarded);
        }
        if (loc != FCTRANS_LOC_UNUSED) {
            fctrans_pagemap_set(si->map, g, FCTRANS_LOC_UNUSED);
        }
        /* Collect runs of one sub-host to trim there */
        if (k >= 0 && run.n && run.k == k && run.first + run.n == g) {
            run.n++;
        } else if (k >= 0) {
            if (run.n) {
                g_array_append_val(trims, run);
            }
            run = (SplitTrimRun) { .k = k, .first = g, .n = 1 };
        }
    }
    g_rw_lock_writer_unlock(&pg->place_lock);
    /*
     * Not under the lock: a placement may sleep (in a memory cgroup's
     * charge) and this caller holds the BQL. A page placed between the
     * update and the discard got zeros (it is flagged discarded) or is a
     * late message's; if the discard drops it, its next fault finds it
     * marked present and gets a zero page, which is what a discard means.
     */
    ret = ram_block_discard_range(rb, offset, length);
    if (run.n) {
        g_array_append_val(trims, run);
    }
    if (split_discard_kept(pg, trims)) {
        /*
         * An outgoing migration may keep these pages on their sub-host,
         * unread; it must see them again, now unused, or the new main
         * host would read their old contents there.
         */
        memory_region_set_dirty(rb->mr, offset, length);
    }
    for (i = 0; i < trims->len; i++) {
        SplitTrimRun *t = &g_array_index(trims, SplitTrimRun, i);

        split_discard_trim(pg, t->k, t->first, t->n);
    }
    return ret;
}

SplitPageLocationList *
qmp_x_query_split_page_locations(uint64List *addresses, Error **errp)
{
    SplitPager *pg = qatomic_read(&split_pager);
    SplitPageLocationList *head = NULL, **tail = &head;
    uint64List *l;
    unsigned n = 0;

    if (!pg) {
        error_setg(errp, "this VM's memory is not split");
        return NULL;
    }
    for (l = addresses; l; l = l->next) {
        if (++n > SPLIT_LOCATIONS_MAX) {
            error_setg(errp, "at most %d addresses at once",
                       SPLIT_LOCATIONS_MAX);
            qapi_free_SplitPageLocationList(head);
            return NULL;
        }
    }
    for (l = addresses; l; l = l->next) {
        SplitPageLocation *loc = g_new0(SplitPageLocation, 1);
        MemoryRegionSection sec = memory_region_find(get_system_memory(),
                                                     l->value, 1);
        SplitBlock *b = NULL;

        loc->address = l->value;
        loc->location = SPLIT_PAGE_PLACE_NOT_SPLIT;
        if (sec.mr && sec.mr->ram_block) {
            b = split_layout_find(&pg->si->layout, sec.mr->ram_block);
        }
        if (b && sec.offset_within_region < b->npages * pg->page_size) {
            uint64_t g = b->first_page +
                         sec.offset_within_region / pg->page_size;
            FctransPageLoc pl;

            g_rw_lock_reader_lock(&pg->place_lock);
            pl = fctrans_pagemap_get(pg->si->map, g);
            loc->present = split_page_resident(qatomic_read(&pg->state[g]));
            g_rw_lock_reader_unlock(&pg->place_lock);
            if (pl == FCTRANS_LOC_MAIN) {
                loc->location = SPLIT_PAGE_PLACE_MAIN;
            } else if (FCTRANS_LOC_IS_SUBHOST(pl)) {
                loc->location = SPLIT_PAGE_PLACE_SUBHOST;
                loc->subhost = g_strdup(
                    pg->si->sub[FCTRANS_LOC_SUBHOST_INDEX(pl)].id);
            } else {
                loc->location = SPLIT_PAGE_PLACE_UNUSED;
            }
        }
        if (sec.mr) {
            memory_region_unref(sec.mr);
        }
        QAPI_LIST_APPEND(tail, loc);
    }
    return head;
}

SplitMemoryInfo *qmp_query_split_memory(Error **errp)
{
    SplitMemoryInfo *info = g_new0(SplitMemoryInfo, 1);
    SplitPager *pg = qatomic_read(&split_pager);
    SplitMemorySubhostList **tail;
    unsigned k;

    if (!pg) {
        return info;
    }
    info->active = true;
    info->has_page_size = true;
    info->page_size = pg->page_size;
    info->has_resident_budget = true;
    info->resident_budget = pg->po ? split_pageout_budget(pg->po) *
                                     pg->page_size : pg->si->budget;
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
        FctransSubhostStats st;

        s->id = g_strdup(sub->id);
        s->pages = qatomic_read(&sub->remaining);
        s->page_ins = qatomic_read(&sub->page_ins);
        s->connected = !qatomic_read(&sub->lost) &&
                       fctrans_subhost_is_connected(sub->sh);
        fctrans_subhost_get_stats(sub->sh, &st);
        s->reconnects = st.reconnects;
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
    info->has_eexist = true;
    info->eexist = qatomic_read(&pg->eexist);
    info->has_eagain = true;
    info->eagain = qatomic_read(&pg->eagain);
    info->has_retries = true;
    info->retries = qatomic_read(&pg->retried);
    info->has_discarded_pages = true;
    info->discarded_pages = qatomic_read(&pg->discarded);
    info->has_dropped_at_start = true;
    info->dropped_at_start = pg->dropped_at_start;
    info->has_latency_p50 = true;
    info->latency_p50 = split_lat_percentile(pg, 50);
    info->has_latency_p99 = true;
    info->latency_p99 = split_lat_percentile(pg, 99);
    info->has_latency_max = true;
    info->latency_max = fctrans_hist_max(&pg->lat) / 1000;
    info->has_page_out = true;
    info->page_out = pg->po != NULL;
    info->has_write_faults = true;
    info->write_faults = qatomic_read(&pg->write_faults);
    info->has_room_waits = true;
    info->room_waits = qatomic_read(&pg->room_waits);
    if (pg->po) {
        split_pageout_fill_info(pg->po, info);
    }
    return info;
}

/* Whether sub-host @k of the split-memory VM is being reconnected. */
static bool split_recon_running(unsigned k)
{
    SplitPager *pg = qatomic_read(&split_pager);
    SplitRecon *r = pg && k < pg->si->nsubhosts ? &pg->recon[k] : NULL;

    if (!r || qatomic_read(&pg->si->sub[k].lost)) {
        return false;
    }
    WITH_QEMU_LOCK_GUARD(&r->lock) {
        return r->active;
    }
    return false;
}

void hmp_info_split_memory(Monitor *mon, const QDict *qdict)
{
    g_autoptr(SplitMemoryInfo) info = qmp_query_split_memory(NULL);
    SplitMemorySubhostList *l;
    unsigned k;

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
    for (l = info->subhosts, k = 0; l; l = l->next, k++) {
        monitor_printf(mon, "sub-host %s: %" PRIu64 " pages, %" PRIu64
                       " paged in, %s\n", l->value->id, l->value->pages,
                       l->value->page_ins,
                       l->value->connected ? "connected" :
                       split_recon_running(k) ? "reconnecting" : "LOST");
    }
    monitor_printf(mon, "page-ins: remote %" PRIu64 " (+%" PRIu64
                   " prefetched), local %" PRIu64 ", in flight %" PRIu64
                   ", blocked %" PRIu64 "\n", info->page_ins_remote,
                   info->prefetched_pages, info->page_ins_local,
                   info->in_flight, info->blocked_faults);
    monitor_printf(mon, "remote page-in latency: p50 %" PRIu64 " us, p99 %"
                   PRIu64 " us, max %" PRIu64 " us\n", info->latency_p50,
                   info->latency_p99, info->latency_max);
    monitor_printf(mon, "placements: %" PRIu64 " EEXIST, %" PRIu64
                   " EAGAIN, %" PRIu64 " retried\n", info->eexist,
                   info->eagain, info->retries);
    monitor_printf(mon, "discarded by the guest while remote: %" PRIu64
                   " pages; dropped at start: %" PRIu64 " pages\n",
                   info->discarded_pages, info->dropped_at_start);
    if (!info->page_out) {
        monitor_printf(mon, "page-out: off (%s)\n",
                       split_pager_get()->no_wp_why);
        return;
    }
    monitor_printf(mon, "page-out: watermarks %" PRIu64 "/%" PRIu64
                   " pages; %" PRIu64 " written out, %" PRIu64 " clean and %"
                   PRIu64 " zero dropped, %" PRIu64 " given up (%" PRIu64
                   " DMA), %" PRIu64 " errors\n", info->high_watermark,
                   info->low_watermark, info->page_outs, info->clean_drops,
                   info->zero_drops, info->page_outs_aborted,
                   info->page_outs_dma_busy, info->page_out_errors);
    monitor_printf(mon, "page-out latency: p50 %" PRIu64 " us, p99 %" PRIu64
                   " us; %" PRIu64 " first writes, %" PRIu64
                   " waits for room, %" PRIu64 " over budget\n",
                   info->page_out_latency_p50, info->page_out_latency_p99,
                   info->write_faults, info->room_waits, info->over_budget);
}
