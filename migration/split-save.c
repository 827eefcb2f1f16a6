/*
 * Split migration, source side: place each page, write sub-host pages,
 * send the page-location map
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Threads: split_save_target_page() and the section handlers run in the
 * migration thread (setup and completion with the BQL held); completions of
 * sub-host requests run on the sub-host channel's threads and only touch
 * the pending bitmap (atomically) and what SplitSave.lock protects; query
 * functions read statistics with atomic loads.
 *
 * The source is never held by a sub-host: every wait on one (connect,
 * claim, writes in flight, drain, flush) drops the BQL, migrate_cancel and
 * yank shut every channel down so that the wait ends at once, switchover
 * waits at most SPLIT_SWITCHOVER_MIN_MS or twice downtime-limit, and a
 * failed migration drops its pages on a thread of its own.
 *
 * A page has at most one write or trim on the sub-hosts at a time (NBD
 * does not order requests in flight): a page that is batched or in flight
 * has its bit set in the pending bitmap, and a new request for it waits.
 */
#include "qemu/osdep.h"
#include "qemu/bitops.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/thread.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qemu/yank.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-split.h"
#include "system/reset.h"
#include "system/runstate.h"
#include "system/system.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "migration/misc.h"
#include "migration/qemu-file-types.h"
#include "migration.h"
#include "migration-stats.h"
#include "options.h"
#include "qemu-file.h"
#include "split.h"
#include "split-internal.h"
#include "fctrans/placement.h"
#include "trace.h"

/* Pages gathered into one sub-host write. */
#define SPLIT_WRITE_BATCH_PAGES 64
/* Largest trim, in bytes. */
#define SPLIT_TRIM_MAX          (32 * 1024 * 1024)
/* Bytes of sub-host writes in flight before the migration thread waits. */
#define SPLIT_INFLIGHT_MAX      (32 * 1024 * 1024)
/* Trims in flight at once when a failed migration cleans up. */
#define SPLIT_CLEANUP_TRIMS_MAX 64
/* Map bytes per changed page, for the pending estimate (short varints). */
#define SPLIT_MAP_BYTES_PER_PAGE 3
/*
 * From the switchover on, the sub-hosts have this long, or twice
 * downtime-limit if that is more, to store what is left; then the
 * migration fails and the source runs the VM again.
 */
#define SPLIT_SWITCHOVER_MIN_MS 5000
/*
 * How long a failed or cancelled migration's cleanup waits for the
 * requests in flight before it shuts the channels down (a silent
 * sub-host) and trims over new connections.
 */
#define SPLIT_CLEANUP_DRAIN_MS 2000

typedef struct SplitSave SplitSave;

typedef struct SplitSaveSubhost {
    FctransSubhost *sh;
    FctransSubhostConfig *cfg;  /* to reconnect for the cleanup's trims */
    FctransExportId export_id;  /* the record this migration wrote there */
    bool id_written;
    /*
     * Re-migration of the split-memory VM this process runs: the index of
     * this export among its pager's sub-hosts, whose record (@pager_id)
     * goes back if the migration fails; -1 for any other export.
     */
    int pager_k;
    FctransExportId pager_id;
    uint64_t kept;              /* pages that stay there, unread, unsent */
    unsigned trim_errors;       /* atomic: trims that completed with an error */
    /* Write batch: wb_npages pages from global page wb_first */
    uint64_t wb_first;
    uint32_t wb_npages;
    uint8_t *wb_buf;
    /* Trim batch */
    uint64_t tb_first;
    uint32_t tb_npages;
} SplitSaveSubhost;

typedef struct SplitSaveReq {
    SplitSave *ss;
    unsigned k;
    FctransSubhostOp op;
    uint64_t first;
    uint64_t npages;
    uint8_t *buf;
} SplitSaveReq;

/*
 * Statistics of the current or last split migration; they outlive it for
 * query-migrate. Index 0 is the main host, 1 + k sub-host k.
 */
typedef struct SplitSaveStats {
    bool valid;
    unsigned nsubhosts;
    char *ids[SPLIT_MAX_SUBHOSTS];
    uint64_t pages[1 + SPLIT_MAX_SUBHOSTS];
    uint64_t placed[1 + SPLIT_MAX_SUBHOSTS];
    uint64_t kept[1 + SPLIT_MAX_SUBHOSTS];
    uint64_t unused;
    uint64_t trimmed;
    uint64_t map_bytes;
} SplitSaveStats;

struct SplitSave {
    SplitLayout layout;
    uint32_t page_size;
    FctransPageMap *map;
    FctransPlacer *placer;
    unsigned nsubhosts;
    SplitSaveSubhost sub[SPLIT_MAX_SUBHOSTS];
    unsigned long *pending;
    /* Pages kept where the pager stores them (pager_k), unread; or NULL */
    unsigned long *kept;
    SplitBlock *last_block;
    uint64_t setup_gen;

    QemuMutex lock;
    QemuCond cond;
    uint64_t inflight_bytes;    /* lock */
    unsigned inflight_reqs;     /* lock */
    Error *error;               /* lock: first failure of a request */
    bool failed;                /* atomic: error is set */
    bool completed;             /* the commit was sent */
    int resumable;              /* split_save_resumable(), -1: not known yet */
    int64_t deadline_ns;        /* lock: wait deadline (realtime); 0: none */
    bool in_cleanup;            /* lock: the deadline is the cleanup's drain */
    FctransCancel *cancel;      /* stops connects; lives as long as @sub */
    bool reset_in_switchover;   /* atomic: see split_save_reset() */
    bool released_completed;    /* the cleanup thread keeps the pages */
    NotifierWithReturn precopy_notifier;
};

/*
 * What migrate_cancel and yank reach from the main loop while the
 * migration thread may be waiting on a sub-host: the token that stops
 * connects, and the channels open so far. The lock is only held for
 * non-blocking calls.
 */
typedef struct SplitSaveCancel {
    QemuMutex lock;
    FctransCancel *token;       /* NULL: no split migration on this source */
    FctransSubhost *sh[SPLIT_MAX_SUBHOSTS];
    unsigned nsh;
    bool yank_registered;       /* migration thread and cleanup only */
} SplitSaveCancel;

static SplitSave *split_save;
static SplitSaveStats split_stats;
static SplitSaveCancel split_cancel;
/* atomic: a split migration's cleanup thread still runs */
static bool split_cleanup_busy;

/*
 * The migration ids of identity records that this process's failed or
 * cancelled migrations had to leave on a sub-host (a trim or a write
 * failed), with the pages they name trimmed already or about to be: its
 * next migration may take those exports over, as it may with a record of
 * its own -uuid. Written by a cleanup or a failed setup, read by the next
 * setup, which split_cleanup_busy keeps from overlapping. The oldest go
 * first once it is full: their exports then need a server restart.
 */
#define SPLIT_LEFT_MAX 64
static uint8_t split_left[SPLIT_LEFT_MAX][FCTRANS_EXPORT_ID_UUID_LEN];
static unsigned split_left_n;

static void split_save_left_behind(SplitSave *ss)
{
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        /* A kept export is never free to take: the pager still uses it */
        if (ss->sub[k].id_written && ss->sub[k].pager_k < 0) {
            memcpy(split_left[split_left_n++ % SPLIT_LEFT_MAX],
                   ss->sub[k].export_id.migration_id,
                   FCTRANS_EXPORT_ID_UUID_LEN);
            return;     /* one id for the whole migration */
        }
    }
}

static bool split_save_is_left_behind(const uint8_t *migration_id)
{
    unsigned i;

    for (i = 0; i < MIN(split_left_n, SPLIT_LEFT_MAX); i++) {
        if (!memcmp(split_left[i], migration_id,
                    FCTRANS_EXPORT_ID_UUID_LEN)) {
            return true;
        }
    }
    return false;
}

/* Shut every open channel down and stop connects, without blocking. */
static void split_save_shutdown_all(const char *why)
{
    unsigned k;

    WITH_QEMU_LOCK_GUARD(&split_cancel.lock) {
        if (!split_cancel.token) {
            return;
        }
        trace_split_save_shutdown(why, split_cancel.nsh);
        fctrans_cancel_trigger(split_cancel.token);
        for (k = 0; k < split_cancel.nsh; k++) {
            fctrans_subhost_shutdown(split_cancel.sh[k], why);
        }
    }
}

void split_save_cancel(void)
{
    split_save_shutdown_all("the migration was cancelled");
}

static void split_save_yank(void *opaque)
{
    split_save_shutdown_all("the migration was yanked");
}

static bool split_save_cancel_begin(SplitSave *ss, QEMUFile *f,
                                    Error **errp)
{
    g_autoptr(GError) gerr = NULL;

    ss->cancel = fctrans_cancel_new(&gerr);
    if (!ss->cancel) {
        error_setg(errp, "split-memory: %s", gerr->message);
        return false;
    }
    WITH_QEMU_LOCK_GUARD(&split_cancel.lock) {
        split_cancel.token = ss->cancel;
        split_cancel.nsh = 0;
        /*
         * A cancel or yank that came before the token found nothing to
         * stop. migration_cancel() sets the state before it takes this
         * lock, so either it is seen here or the token is seen there.
         */
        if (migrate_get_current()->state == MIGRATION_STATUS_CANCELLING ||
            qemu_file_get_error(f)) {
            fctrans_cancel_trigger(ss->cancel);
        }
    }
    /* qmp_migrate registered the instance; migration_cleanup drops it */
    yank_register_function(MIGRATION_YANK_INSTANCE, split_save_yank, NULL);
    split_cancel.yank_registered = true;
    return true;
}

static void split_save_cancel_add(FctransSubhost *sh)
{
    WITH_QEMU_LOCK_GUARD(&split_cancel.lock) {
        split_cancel.sh[split_cancel.nsh++] = sh;
        /* Cancelled just as it connected */
        if (fctrans_cancel_is_set(split_cancel.token)) {
            fctrans_subhost_shutdown(sh, "the migration was cancelled");
        }
    }
}

/*
 * Before the channels are closed or handed to the cleanup thread, whose
 * trims are bounded by the request timeout, not by a cancel.
 */
static void split_save_cancel_end(void)
{
    if (split_cancel.yank_registered) {
        yank_unregister_function(MIGRATION_YANK_INSTANCE, split_save_yank,
                                 NULL);
        split_cancel.yank_registered = false;
    }
    WITH_QEMU_LOCK_GUARD(&split_cancel.lock) {
        split_cancel.token = NULL;
        split_cancel.nsh = 0;
    }
}

/*
 * Waits on the sub-hosts never hold the BQL, so that QMP, migrate_cancel
 * and yank are answered while a sub-host is slow or silent: setup drops it
 * around its connects, split_save_cond_wait() while it actually waits.
 * That includes completion, with the VM stopped in finish-migrate: 'cont'
 * is refused there, device_add and device_del while a migration runs, and
 * what other commands change in devices is saved after this section. The
 * exception is a system reset, which may rewrite ROMs in guest RAM after
 * RAM's last pass: split_save_reset() fails such a migration.
 */
static bool split_save_bql_drop(void)
{
    if (!bql_locked()) {
        return false;
    }
    bql_unlock();
    return true;
}

static void split_save_bql_retake(bool dropped)
{
    if (dropped) {
        bql_lock();
    }
}

/*
 * One wait on ss->cond, with ss->lock held. Past the switchover deadline
 * the migration fails, and every channel is shut down so that this wait
 * and every other one end at once.
 */
static void split_save_cond_wait(SplitSave *ss)
{
    bool bql = split_save_bql_drop();
    bool woken = true;
    int64_t left;
    unsigned k;

    if (!ss->deadline_ns) {
        qemu_cond_wait(&ss->cond, &ss->lock);
    } else {
        left = ss->deadline_ns - qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
        woken = left > 0 &&
                qemu_cond_timedwait(&ss->cond, &ss->lock,
                                    DIV_ROUND_UP(left, SCALE_MS));
    }
    if (bql) {
        /* The BQL comes before ss->lock: callers re-check what they wait for */
        qemu_mutex_unlock(&ss->lock);
        split_save_bql_retake(bql);
        qemu_mutex_lock(&ss->lock);
    }
    if (woken || !ss->deadline_ns ||
        qemu_clock_get_ns(QEMU_CLOCK_REALTIME) < ss->deadline_ns) {
        return;
    }
    ss->deadline_ns = 0;
    if (!ss->error && !ss->in_cleanup) {
        error_setg(&ss->error, "split-memory: the sub-hosts did not store "
                   "the last pages within %u ms of the switchover; the "
                   "source runs the VM again",
                   (unsigned)MAX(SPLIT_SWITCHOVER_MIN_MS,
                                 2 * migrate_downtime_limit()));
    }
    qatomic_set(&ss->failed, true);
    trace_split_save_deadline(ss->in_cleanup ? "cleanup" : "switchover");
    /*
     * The thread that owns @ss: its channels directly, not through
     * split_cancel, whose lock comes before ss->lock.
     */
    for (k = 0; k < ss->nsubhosts; k++) {
        fctrans_subhost_shutdown(ss->sub[k].sh, ss->in_cleanup ?
                                 "the cleanup's drain timed out" :
                                 "the switchover deadline passed");
    }
}

/*
 * A system reset while the switchover waits without the BQL (QMP
 * system_reset, say) may rewrite guest RAM after RAM's last pass, ROM
 * images for one, while the device state saved after it is the reset
 * one: such a migration fails and the source runs on, reset.
 */
static void split_save_reset(void *opaque)
{
    SplitSave *ss = opaque;

    if (runstate_check(RUN_STATE_FINISH_MIGRATE)) {
        qatomic_set(&ss->reset_in_switchover, true);
    }
}

static int split_save_precopy_notify(NotifierWithReturn *n, void *data,
                                     Error **errp)
{
    SplitSave *ss = container_of(n, SplitSave, precopy_notifier);
    PrecopyNotifyData *pnd = data;

    if (pnd->reason == PRECOPY_NOTIFY_COMPLETE) {
        WITH_QEMU_LOCK_GUARD(&ss->lock) {
            ss->deadline_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                              MAX(SPLIT_SWITCHOVER_MIN_MS,
                                  2 * migrate_downtime_limit()) * SCALE_MS;
        }
    }
    return 0;
}

static void split_save_stats_snapshot(SplitSave *ss)
{
    unsigned k;

    qatomic_set(&split_stats.placed[0],
                fctrans_pagemap_count(ss->map, FCTRANS_LOC_MAIN));
    for (k = 0; k < ss->nsubhosts; k++) {
        qatomic_set(&split_stats.placed[1 + k],
                    fctrans_pagemap_count(ss->map, FCTRANS_LOC_SUBHOST(k)));
    }
    qatomic_set(&split_stats.unused,
                fctrans_pagemap_count(ss->map, FCTRANS_LOC_UNUSED));
}

static void split_save_set_error(SplitSave *ss, Error *err)
{
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        if (!ss->error) {
            ss->error = err;
            err = NULL;
            qatomic_set(&ss->failed, true);
        }
    }
    error_free(err);
}

/* Report a recorded failure to the migration; returns -EIO. */
static int split_save_fail(SplitSave *ss)
{
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        if (ss->error) {
            migrate_set_error(migrate_get_current(), ss->error);
        }
    }
    return -EIO;
}

static void split_save_done(void *opaque, const GError *gerr)
{
    SplitSaveReq *req = opaque;
    SplitSave *ss = req->ss;
    uint64_t p;

    trace_split_save_done(req->k, fctrans_subhost_op_name(req->op),
                          req->first, req->npages, gerr ? gerr->message : "");
    if (gerr) {
        Error *err = NULL;

        if (req->op == FCTRANS_SUBHOST_OP_FLUSH) {
            split_error_from_gerror(&err, gerr, "split-memory: sub-host '%s':"
                                    " flush before the commit failed",
                                    fctrans_subhost_id(ss->sub[req->k].sh));
        } else {
            split_error_from_gerror(&err, gerr,
                                    "split: sub-host '%s': %s of %" PRIu64
                                    " pages at page %" PRIu64 " failed",
                                    fctrans_subhost_id(ss->sub[req->k].sh),
                                    fctrans_subhost_op_name(req->op),
                                    req->npages, req->first);
        }
        split_save_set_error(ss, err);
        if (req->op == FCTRANS_SUBHOST_OP_TRIM) {
            qatomic_inc(&ss->sub[req->k].trim_errors);
        }
    }
    for (p = req->first; p < req->first + req->npages; p++) {
        clear_bit_atomic(p, ss->pending);
    }
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        if (req->op == FCTRANS_SUBHOST_OP_WRITE) {
            ss->inflight_bytes -= req->npages * ss->page_size;
        }
        ss->inflight_reqs--;
        qemu_cond_broadcast(&ss->cond);
    }
    g_free(req->buf);
    g_free(req);
}

/* Wait until no request is in flight. */
static void split_save_wait_idle(SplitSave *ss)
{
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        while (ss->inflight_reqs) {
            split_save_cond_wait(ss);
        }
    }
}

static SplitSaveReq *split_save_req_new(SplitSave *ss, unsigned k,
                                        FctransSubhostOp op, uint64_t first,
                                        uint64_t npages)
{
    SplitSaveReq *req = g_new0(SplitSaveReq, 1);

    req->ss = ss;
    req->k = k;
    req->op = op;
    req->first = first;
    req->npages = npages;
    return req;
}

/*
 * A request is counted in flight from just before its submission until
 * split_save_done() or split_save_req_refused() retires it.
 */
static void split_save_req_submitted(SplitSave *ss)
{
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        ss->inflight_reqs++;
    }
}

static void split_save_req_unsubmit(SplitSave *ss)
{
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        ss->inflight_reqs--;
        qemu_cond_broadcast(&ss->cond);
    }
}

/* Retire a request that the channel refused (its callback never runs). */
static void split_save_req_refused(SplitSave *ss, SplitSaveReq *req)
{
    uint64_t p;

    for (p = req->first; p < req->first + req->npages; p++) {
        clear_bit_atomic(p, ss->pending);
    }
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        ss->inflight_reqs--;
        if (req->op == FCTRANS_SUBHOST_OP_WRITE) {
            ss->inflight_bytes -= req->npages * ss->page_size;
        }
        qemu_cond_broadcast(&ss->cond);
    }
    g_free(req->buf);
    g_free(req);
}

static int split_save_flush_trim(SplitSave *ss, unsigned k)
{
    SplitSaveSubhost *s = &ss->sub[k];
    g_autoptr(GError) gerr = NULL;
    SplitSaveReq *req;
    uint64_t npages;

    if (!s->tb_npages) {
        return 0;
    }
    req = split_save_req_new(ss, k, FCTRANS_SUBHOST_OP_TRIM, s->tb_first,
                             s->tb_npages);
    s->tb_npages = 0;

    npages = req->npages;
    trace_split_save_submit(k, "trim", req->first, npages);
    split_save_req_submitted(ss);
    if (!fctrans_subhost_trim(s->sh, req->first * ss->page_size,
                              req->npages * ss->page_size,
                              FCTRANS_SUBHOST_REQ_BULK, split_save_done, req,
                              &gerr)) {
        Error *err = NULL;

        split_error_from_gerror(&err, gerr, "split: sub-host '%s': trim",
                                fctrans_subhost_id(s->sh));
        split_save_req_refused(ss, req);
        split_save_set_error(ss, err);
        return split_save_fail(ss);
    }
    /* Not req->npages: its completion may already have freed @req */
    qatomic_add(&split_stats.trimmed, npages);
    return 0;
}

static int split_save_flush_write(SplitSave *ss, unsigned k)
{
    SplitSaveSubhost *s = &ss->sub[k];
    SplitSaveReq *req;
    size_t len;
    bool retried = false;

    if (!s->wb_npages) {
        return 0;
    }
    req = split_save_req_new(ss, k, FCTRANS_SUBHOST_OP_WRITE, s->wb_first,
                             s->wb_npages);
    req->buf = g_steal_pointer(&s->wb_buf);
    s->wb_npages = 0;
    len = req->npages * ss->page_size;

    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        while (ss->inflight_bytes && ss->inflight_bytes + len >
               SPLIT_INFLIGHT_MAX) {
            split_save_cond_wait(ss);
        }
        ss->inflight_bytes += len;
    }

    trace_split_save_submit(k, "write", req->first, req->npages);
    for (;;) {
        g_autoptr(GError) gerr = NULL;
        Error *err = NULL;
        int ret;

        split_save_req_submitted(ss);
        if (fctrans_subhost_write(s->sh, req->first * ss->page_size, len,
                                  req->buf, FCTRANS_SUBHOST_REQ_BULK,
                                  split_save_done, req, &gerr)) {
            break;
        }
        /*
         * The channel still charges pages whose trim is in flight; once
         * they are done, what the map holds there fits its capacity.
         */
        if (!retried &&
            g_error_matches(gerr, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE)) {
            split_save_req_unsubmit(ss);
            ret = split_save_flush_trim(ss, k);
            if (ret < 0) {
                split_save_req_submitted(ss);
                split_save_req_refused(ss, req);
                return ret;
            }
            split_save_wait_idle(ss);
            retried = true;
            continue;
        }
        split_error_from_gerror(&err, gerr, "split: sub-host '%s': write",
                                fctrans_subhost_id(s->sh));
        split_save_req_refused(ss, req);
        split_save_set_error(ss, err);
        return split_save_fail(ss);
    }
    /* Not req->npages: its completion may already have freed @req */
    qatomic_add(&split_stats.pages[1 + k], len / ss->page_size);
    /*
     * Counts in the bandwidth estimate, as the main stream's bytes do, and
     * against split-max-bandwidth (migration_rate_exceeded())
     */
    stat64_add(&mig_stats.split_bytes, len);
    return 0;
}

static int split_save_flush_all(SplitSave *ss)
{
    unsigned k;
    int ret;

    for (k = 0; k < ss->nsubhosts; k++) {
        ret = split_save_flush_write(ss, k);
        if (ret < 0) {
            return ret;
        }
        ret = split_save_flush_trim(ss, k);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Make sure no request on global page @g is batched or in flight. */
static int split_save_settle_page(SplitSave *ss, uint64_t g)
{
    unsigned k;
    int ret;

    if (!test_bit(g, ss->pending)) {
        return 0;
    }
    for (k = 0; k < ss->nsubhosts; k++) {
        SplitSaveSubhost *s = &ss->sub[k];

        if (s->wb_npages && g >= s->wb_first &&
            g < s->wb_first + s->wb_npages) {
            ret = split_save_flush_write(ss, k);
            if (ret < 0) {
                return ret;
            }
        }
        if (s->tb_npages && g >= s->tb_first &&
            g < s->tb_first + s->tb_npages) {
            ret = split_save_flush_trim(ss, k);
            if (ret < 0) {
                return ret;
            }
        }
    }
    trace_split_save_settle(g);
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        while (test_bit(g, ss->pending)) {
            split_save_cond_wait(ss);
        }
    }
    return 0;
}

static int split_save_write_page(SplitSave *ss, unsigned k, uint64_t g,
                                 const uint8_t *host)
{
    SplitSaveSubhost *s = &ss->sub[k];
    int ret;

    if (test_bit(g, ss->pending)) {
        if (s->wb_npages && g >= s->wb_first &&
            g < s->wb_first + s->wb_npages) {
            /* Still batched: the newer content replaces the older one */
            memcpy(s->wb_buf + (g - s->wb_first) * ss->page_size, host,
                   ss->page_size);
            return 0;
        }
        ret = split_save_settle_page(ss, g);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->wb_npages && (g != s->wb_first + s->wb_npages ||
                         s->wb_npages == SPLIT_WRITE_BATCH_PAGES)) {
        ret = split_save_flush_write(ss, k);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->wb_npages) {
        s->wb_buf = g_malloc(SPLIT_WRITE_BATCH_PAGES * ss->page_size);
        s->wb_first = g;
    }
    memcpy(s->wb_buf + s->wb_npages * ss->page_size, host, ss->page_size);
    s->wb_npages++;
    set_bit_atomic(g, ss->pending);
    return 0;
}

static int split_save_trim_page(SplitSave *ss, unsigned k, uint64_t g)
{
    SplitSaveSubhost *s = &ss->sub[k];
    int ret;

    ret = split_save_settle_page(ss, g);
    if (ret < 0) {
        return ret;
    }
    if (s->tb_npages && (g != s->tb_first + s->tb_npages ||
                         (uint64_t)s->tb_npages * ss->page_size >=
                         SPLIT_TRIM_MAX)) {
        ret = split_save_flush_trim(ss, k);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->tb_npages) {
        s->tb_first = g;
    }
    s->tb_npages++;
    set_bit_atomic(g, ss->pending);
    return 0;
}

/*
 * Whether kept page @g still has its only copy on its sub-host. Once
 * paged in here it is read and placed like any other page: the guest
 * may have written it.
 */
static bool split_save_still_kept(SplitSave *ss, uint64_t g)
{
    unsigned k = FCTRANS_LOC_SUBHOST_INDEX(fctrans_pagemap_get(ss->map, g));

    if (split_pager_is_remote(g, ss->sub[k].pager_k)) {
        return true;
    }
    clear_bit(g, ss->kept);
    ss->sub[k].kept--;
    qatomic_dec(&split_stats.kept[1 + k]);
    return false;
}

int split_save_target_page(RAMBlock *rb, ram_addr_t offset)
{
    SplitSave *ss = split_save;
    SplitBlock *b;
    uint64_t g;
    uint8_t *host;
    bool zero, hot;
    FctransPageLoc cur, loc;
    int ret;

    if (!ss) {
        return 0;
    }
    if (qatomic_read(&ss->failed)) {
        return split_save_fail(ss);
    }
    b = ss->last_block;
    if (!b || b->rb != rb) {
        b = split_layout_find(&ss->layout, rb);
        if (!b) {
            return 0;       /* not split: always resident */
        }
        ss->last_block = b;
    }

    g = b->first_page + (offset >> qemu_target_page_bits());
    if (ss->kept && test_bit(g, ss->kept) && split_save_still_kept(ss, g)) {
        return 1;   /* stays where it is: not even read */
    }
    host = rb->host + offset;
    zero = buffer_is_zero(host, ss->page_size);
    hot = stat64_get(&mig_stats.dirty_sync_count) > ss->setup_gen;
    cur = fctrans_pagemap_get(ss->map, g);

    loc = fctrans_placer_decide(ss->placer, g, zero, hot);
    if (loc == FCTRANS_LOC_NONE) {
        Error *err = NULL;

        error_setg(&err, "split: no room left for page %" PRIu64
                   " of the split RAM", g);
        split_save_set_error(ss, err);
        return split_save_fail(ss);
    }
    if (FCTRANS_LOC_IS_SUBHOST(loc)) {
        ret = split_save_write_page(ss, FCTRANS_LOC_SUBHOST_INDEX(loc), g,
                                    host);
        if (ret < 0) {
            return ret;
        }
    }

    /* Drop the stale copy of a page that moved off a sub-host */
    if (FCTRANS_LOC_IS_SUBHOST(cur) && cur != loc) {
        ret = split_save_trim_page(ss, FCTRANS_LOC_SUBHOST_INDEX(cur), g);
        if (ret < 0) {
            return ret;
        }
    }
    fctrans_pagemap_set(ss->map, g, loc);
    trace_split_save_page(g, cur, loc, zero, hot);

    if (loc == FCTRANS_LOC_MAIN) {
        qatomic_add(&split_stats.pages[0], 1);
        return 0;   /* the RAM stream sends it */
    }
    return 1;
}

/* Send the changed part of the map: all of it, or while over @min pages. */
static void split_save_send_map(SplitSave *ss, QEMUFile *f, uint64_t min)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();

    while (fctrans_pagemap_changed(ss->map) &&
           fctrans_pagemap_changed(ss->map) >= min) {
        g_byte_array_set_size(buf, 0);
        fctrans_pagemap_encode_changes(ss->map, buf, SPLIT_MAP_CHUNK_MAX);
        qemu_put_byte(f, SPLIT_CMD_MAP);
        qemu_put_be32(f, buf->len);
        qemu_put_buffer(f, buf->data, buf->len);
        qatomic_add(&split_stats.map_bytes, buf->len + 5);
        trace_split_save_map(buf->len, fctrans_pagemap_changed(ss->map));
    }
}

static void split_save_free(SplitSave *ss)
{
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        fctrans_subhost_close(ss->sub[k].sh);
        split_subhost_config_free(ss->sub[k].cfg);
        g_free(ss->sub[k].wb_buf);
    }
    fctrans_cancel_free(ss->cancel);
    fctrans_placer_free(ss->placer);
    fctrans_pagemap_free(ss->map);
    g_free(ss->pending);
    g_free(ss->kept);
    split_layout_clear(&ss->layout);
    error_free(ss->error);
    qemu_cond_destroy(&ss->cond);
    qemu_mutex_destroy(&ss->lock);
    g_free(ss);
}

static bool split_save_is_active(void *opaque)
{
    return migrate_split_memory();
}

static bool split_save_is_active_iterate(void *opaque)
{
    SplitSave *ss = split_save;

    return ss && fctrans_pagemap_changed(ss->map);
}

/* @budget and the capacities must hold the whole split RAM. */
static bool split_save_check_room(uint64_t ram, uint64_t budget, Error **errp)
{
    const SplitSubhostList *l;
    uint64_t cap = 0;

    for (l = migrate_split_subhosts(); l; l = l->next) {
        cap = cap + l->value->capacity < cap ? UINT64_MAX :
              cap + l->value->capacity;
    }
    if (budget + cap < budget || budget + cap >= ram) {
        return true;
    }
    error_setg(errp, "split-memory: the resident budget (%" PRIu64
               " bytes) and the sub-host capacities (%" PRIu64
               " bytes) cannot hold the guest RAM (%" PRIu64 " bytes)",
               budget, cap, ram);
    error_append_hint(errp, "Raise split-resident-budget or add sub-hosts "
                      "to split-subhosts.\n");
    return false;
}

static void split_save_stats_reset(void)
{
    unsigned i;

    for (i = 0; i < split_stats.nsubhosts; i++) {
        g_free(split_stats.ids[i]);
    }
    memset(&split_stats, 0, sizeof(split_stats));
}

static int split_save_prepare(void *opaque, Error **errp)
{
    SplitLayout layout;
    const SplitSubhostList *l;
    const char *creds = migrate_split_tls_creds();
    bool ok;

    /* Acquire: the cleanup's last statistics are visible once it is done */
    if (qatomic_load_acquire(&split_cleanup_busy)) {
        error_setg(errp, "split-memory: the previous split migration still "
                   "drops its pages from the sub-hosts");
        error_append_hint(errp, "Try again in a moment.\n");
        return -EBUSY;
    }
    /* query-migrate shows this migration's statistics from now on */
    split_save_stats_reset();

    if (!migrate_split_subhosts()) {
        error_setg(errp, "Capability 'split-memory' needs the parameter "
                   "'split-subhosts'");
        return -EINVAL;
    }
    split_layout_build(&layout);
    ok = split_save_check_room((uint64_t)layout.npages * layout.page_size,
                               migrate_split_resident_budget(), errp);
    split_layout_clear(&layout);
    if (!ok) {
        return -ENOSPC;
    }
    for (l = migrate_split_subhosts(); l; l = l->next) {
        FctransSubhostConfig *cfg;

        if (!creds && g_str_has_prefix(l->value->uri, "nbds")) {
            error_setg(errp, "split-memory: sub-host '%s' needs TLS "
                       "(%s) but neither split-tls-creds nor tls-creds is "
                       "set", l->value->id, l->value->uri);
            return -EINVAL;
        }
        cfg = split_subhost_config(l->value->id, l->value->uri,
                                   l->value->capacity, 0, creds, errp);
        if (!cfg) {
            return -EINVAL;
        }
        split_subhost_config_free(cfg);
    }
    return 0;
}

/*
 * Drop the identity record this migration wrote on sub-host @k, if any;
 * an export that this VM's pager uses gets the pager's record back
 * instead (split_save_give_back()).
 */
static void split_save_drop_record(SplitSave *ss, unsigned k)
{
    FctransSubhost *sh = ss->sub[k].sh;
    g_autoptr(GError) gerr = NULL;

    if (!ss->sub[k].id_written || ss->sub[k].pager_k >= 0) {
        return;
    }
    if (!fctrans_subhost_trim_sync(sh, fctrans_export_id_offset(
                                       fctrans_subhost_export_size(sh)),
                                   FCTRANS_EXPORT_ID_SIZE, &gerr)) {
        warn_report("split: sub-host '%s': cannot drop the identity record: "
                    "%s", fctrans_subhost_id(sh), gerr->message);
        return;
    }
    ss->sub[k].id_written = false;
}

/*
 * The migration failed or was cancelled, and the VM runs on here: give
 * every export that its pager uses back to it, with the pager's record.
 * Where that record cannot be written, the pager keeps accepting this
 * migration's, which names the same pages.
 */
static void split_save_give_back(SplitSave *ss)
{
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        SplitSaveSubhost *s = &ss->sub[k];
        Error *err = NULL;
        bool restored = true;

        if (s->pager_k < 0) {
            continue;
        }
        if (s->id_written) {
            restored = split_export_id_write(s->sh, &s->pager_id, &err);
            if (restored) {
                s->id_written = false;
            } else {
                warn_report_err(err);
            }
        }
        split_pager_handover_end(s->pager_k, false, !restored);
        s->pager_k = -1;
    }
}

/* Trim pages [0, @npages) of sub-host @k, synchronously (setup only). */
static bool split_save_trim_span(SplitSave *ss, unsigned k, uint64_t npages,
                                 uint32_t page_size, Error **errp)
{
    FctransSubhost *sh = ss->sub[k].sh;
    uint64_t end = fctrans_export_id_offset(fctrans_subhost_export_size(sh));
    uint64_t off, len;

    if (page_size != ss->page_size || npages > end / page_size) {
        end = end & ~(uint64_t)(ss->page_size - 1);
    } else {
        end = npages * page_size;
    }
    for (off = 0; off < end; off += len) {
        g_autoptr(GError) gerr = NULL;

        len = MIN(end - off, SPLIT_TRIM_MAX);
        if (!fctrans_subhost_trim_sync(sh, off, len, &gerr)) {
            split_error_from_gerror(errp, gerr, "split-memory: sub-host '%s': "
                                    "cannot drop this VM's pages of an "
                                    "earlier attempt", fctrans_subhost_id(sh));
            return false;
        }
    }
    return true;
}

/*
 * Before any page goes to sub-host @k: make sure its export is not in use
 * by another VM, then write this migration's identity record there, so
 * that the main host can prove it reads the pages this source wrote for
 * this sub-host.
 */
static bool split_save_claim_export(SplitSave *ss, unsigned k,
                                    unsigned nsubhosts,
                                    const SplitSubhost *p,
                                    const uint8_t *migration_id,
                                    Error **errp)
{
    SplitSaveSubhost *s = &ss->sub[k];
    FctransExportId *id = &s->export_id;
    FctransExportId old;
    g_autoptr(GError) gerr = NULL;
    Error *err = NULL;
    int ret, owner = -1;

    ret = split_export_id_read(s->sh, &old, &err);
    if (ret > 0) {
        if (!memcmp(old.migration_id, migration_id, sizeof(old.migration_id))) {
            error_setg(errp, "split-memory: sub-host '%s' (%s) is the export "
                       "of sub-host '%s' again: each sub-host needs an "
                       "export of its own", p->id, p->uri, old.subhost_id);
            return false;
        }
        /*
         * An export that this split-memory VM's own pager uses: the pages
         * stored only there stay, and so does everything else there
         */
        if (split_pager_same_layout(&ss->layout)) {
            owner = split_pager_export_owner(&old, &s->pager_id);
        }
    }
    if (owner >= 0) {
        trace_split_save_keep(p->id, owner);
    } else if (ret > 0) {
        char vm[37];

        fctrans_export_id_uuid_str(old.vm_uuid, vm);
        /*
         * What this VM's own earlier attempt left behind (its cleanup could
         * not reach the sub-host) may go; anything else belongs to another
         * VM or to a split-memory VM that runs on it.
         */
        if (old.state == FCTRANS_EXPORT_ID_RUNNING ||
            (!split_save_is_left_behind(old.migration_id) &&
             (!qemu_uuid_set ||
              memcmp(old.vm_uuid, qemu_uuid.data, sizeof(old.vm_uuid))))) {
            error_setg(errp, "split-memory: sub-host '%s' (%s) is in use: "
                       "its export holds the pages of %s VM %s%s", p->id,
                       p->uri, old.state == FCTRANS_EXPORT_ID_RUNNING ?
                       "the running split-memory" : "an incoming migration "
                       "of", vm, old.state == FCTRANS_EXPORT_ID_RUNNING ?
                       "" : " (or of one that failed without cleaning up)");
            error_append_hint(errp, "Give each VM an export of its own; an "
                              "export that no VM uses any more is emptied "
                              "by restarting its server.\n");
            return false;
        }
        /* This VM's stale pages from that attempt go first */
        if (!split_save_trim_span(ss, k, old.npages, old.page_size, errp)) {
            return false;
        }
    } else if (ret < 0) {
        error_propagate_prepend(errp, err, "split-memory: sub-host '%s' "
                                "(%s): ", p->id, p->uri);
        return false;
    }
    error_free(err);

    memset(id, 0, sizeof(*id));
    id->state = FCTRANS_EXPORT_ID_MIGRATING;
    id->page_size = ss->page_size;
    id->npages = ss->layout.npages;
    id->subhost_index = k;
    id->nsubhosts = nsubhosts;
    pstrcpy(id->subhost_id, sizeof(id->subhost_id), p->id);
    memcpy(id->vm_uuid, qemu_uuid.data, sizeof(id->vm_uuid));
    memcpy(id->migration_id, migration_id, sizeof(id->migration_id));
    id->written_s = time(NULL);
    if (!fctrans_export_id_random(id->nonce, &gerr)) {
        error_setg(errp, "split-memory: %s", gerr->message);
        return false;
    }
    if (owner >= 0) {
        /* Before the record changes: a reconnect of the pager accepts it */
        split_pager_handover_begin(owner, id);
        s->pager_k = owner;
    }
    /* Written or not, it may have landed: the record counts as written */
    s->id_written = true;
    if (!split_export_id_write(s->sh, id, errp)) {
        if (owner < 0) {
            s->id_written = false;
        }
        return false;
    }
    return true;
}

static void split_save_keep_run(void *opaque, unsigned j, uint64_t first,
                                uint64_t n)
{
    SplitSave *ss = opaque;
    uint64_t g;
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        if (ss->sub[k].pager_k == j) {
            break;
        }
    }
    if (k == ss->nsubhosts) {
        return;     /* not a sub-host of this migration: read, then placed */
    }
    for (g = first; g < first + n; g++) {
        fctrans_pagemap_set(ss->map, g, FCTRANS_LOC_SUBHOST(k));
    }
    bitmap_set(ss->kept, first, n);
    ss->sub[k].kept += n;
}

/*
 * Re-migration onto the same sub-hosts: a page whose only copy is on an
 * export that this migration uses too is placed there from the start,
 * so that it counts against that sub-host's capacity, and is never read
 * (which would page it in) nor sent.
 */
static bool split_save_keep_remote(SplitSave *ss, const uint64_t *cap_pages,
                                   Error **errp)
{
    unsigned k;

    for (k = 0; k < ss->nsubhosts && ss->sub[k].pager_k < 0; k++) {
        /* nothing */
    }
    if (k == ss->nsubhosts) {
        return true;
    }
    ss->kept = bitmap_new(ss->layout.npages);
    split_pager_for_each_remote(split_save_keep_run, ss);
    for (k = 0; k < ss->nsubhosts; k++) {
        SplitSaveSubhost *s = &ss->sub[k];

        if (s->kept > cap_pages[k]) {
            error_setg(errp, "split-memory: sub-host '%s' holds %" PRIu64
                       " pages of this VM already, more than its capacity "
                       "of %" PRIu64 " pages", fctrans_subhost_id(s->sh),
                       s->kept, cap_pages[k]);
            error_append_hint(errp, "Give it at least the capacity it has "
                              "for this VM now: its pages stay there.\n");
            return false;
        }
        split_stats.kept[1 + k] = s->kept;
    }
    return true;
}

static int split_save_setup(QEMUFile *f, void *opaque, Error **errp)
{
    SplitSave *ss = g_new0(SplitSave, 1);
    const SplitSubhostList *l;
    const char *creds = migrate_split_tls_creds();
    uint64_t cap_pages[SPLIT_MAX_SUBHOSTS];
    uint8_t migration_id[FCTRANS_EXPORT_ID_UUID_LEN];
    FctransSubhostConfig *cfg[SPLIT_MAX_SUBHOSTS] = { NULL };
    g_autoptr(SplitSubhostList) subhosts = NULL;
    g_autoptr(GError) gerr = NULL;
    unsigned i, k, nsubhosts = 0;
    uint64_t budget;
    bool bql;

    /* A snapshot (savevm) must hold every page itself */
    if (!migration_thread_is_self()) {
        error_setg(errp, "Capability 'split-memory' only applies to "
                   "migrations, not to snapshots");
        g_free(ss);
        return -ENOTSUP;
    }
    qemu_mutex_init(&ss->lock);
    qemu_cond_init(&ss->cond);
    ss->resumable = -1;
    for (k = 0; k < SPLIT_MAX_SUBHOSTS; k++) {
        ss->sub[k].pager_k = -1;
    }
    split_layout_build(&ss->layout);
    ss->page_size = ss->layout.page_size;
    /* Read once: the placer, the header and the trace say the same */
    budget = migrate_split_resident_budget();

    if (!split_save_check_room((uint64_t)ss->layout.npages * ss->page_size,
                               budget, errp)) {
        goto fail;
    }
    if (!fctrans_export_id_random(migration_id, &gerr)) {
        error_setg(errp, "split-memory: %s", gerr->message);
        goto fail;
    }
    if (!split_save_cancel_begin(ss, f, errp)) {
        goto fail;
    }
    /*
     * The parameters and the TLS objects are read under the BQL; a
     * migrate-set-parameters meanwhile must not free what we connect to.
     */
    subhosts = QAPI_CLONE(SplitSubhostList, migrate_split_subhosts());
    for (l = subhosts; l; l = l->next) {
        SplitSubhost *p = l->value;

        /*
         * The pages, then the identity record, which the channel charges
         * to its capacity too: the sub-host's capacity counts pages only
         */
        cfg[nsubhosts] = split_subhost_config(p->id, p->uri,
                                              p->capacity > UINT64_MAX -
                                              FCTRANS_EXPORT_ID_SIZE ?
                                              UINT64_MAX : p->capacity +
                                              FCTRANS_EXPORT_ID_SIZE,
                                              (uint64_t)ss->layout.npages *
                                              ss->page_size +
                                              FCTRANS_EXPORT_ID_SIZE, creds,
                                              errp);
        if (!cfg[nsubhosts]) {
            goto fail;
        }
        cfg[nsubhosts]->cancel = ss->cancel;
        nsubhosts++;
    }

    bql = split_save_bql_drop();
    for (l = subhosts; l; l = l->next) {
        SplitSubhost *p = l->value;

        k = ss->nsubhosts;
        ss->sub[k].sh = split_subhost_open(cfg[k], errp);
        if (!ss->sub[k].sh) {
            break;
        }
        ss->sub[k].cfg = g_steal_pointer(&cfg[k]);
        ss->nsubhosts++;
        split_save_cancel_add(ss->sub[k].sh);
        if (!split_save_claim_export(ss, k, nsubhosts, p, migration_id,
                                     errp)) {
            break;
        }
        cap_pages[k] = p->capacity / ss->page_size;
        split_stats.ids[k] = g_strdup(p->id);
        split_stats.nsubhosts = ss->nsubhosts;
    }
    split_save_bql_retake(bql);
    if (l) {
        goto fail;
    }

    ss->map = fctrans_pagemap_new(ss->layout.npages, ss->nsubhosts);
    ss->placer = fctrans_placer_new(migrate_split_policy() ==
                                    SPLIT_POLICY_SEQUENTIAL ?
                                    FCTRANS_PLACEMENT_SEQUENTIAL :
                                    FCTRANS_PLACEMENT_WORKING_SET,
                                    ss->map, budget / ss->page_size,
                                    cap_pages);
    ss->pending = bitmap_new(ss->layout.npages);
    if (!split_save_keep_remote(ss, cap_pages, errp)) {
        goto fail;
    }
    ss->setup_gen = stat64_get(&mig_stats.dirty_sync_count);
    split_stats.valid = true;

    qemu_put_byte(f, SPLIT_CMD_HEADER);
    qemu_put_be32(f, SPLIT_STREAM_VERSION);
    qemu_put_be32(f, ss->page_size);
    qemu_put_be64(f, ss->layout.npages);
    qemu_put_be64(f, budget);
    qemu_put_buffer(f, qemu_uuid.data, sizeof(qemu_uuid.data));
    qemu_put_buffer(f, migration_id, sizeof(migration_id));
    qemu_put_be32(f, ss->layout.nblocks);
    for (i = 0; i < ss->layout.nblocks; i++) {
        SplitBlock *b = &ss->layout.blocks[i];

        qemu_put_counted_string(f, b->rb->idstr);
        qemu_put_be64(f, b->npages);
    }
    qemu_put_be32(f, ss->nsubhosts);
    i = 0;
    for (l = subhosts; l; l = l->next) {
        size_t len = strlen(l->value->uri);

        qemu_put_counted_string(f, l->value->id);
        qemu_put_be16(f, len);
        qemu_put_buffer(f, (const uint8_t *)l->value->uri, len);
        qemu_put_buffer(f, ss->sub[i].export_id.nonce,
                        FCTRANS_EXPORT_ID_UUID_LEN);
        i++;
    }
    qemu_put_byte(f, SPLIT_CMD_EOS);

    migration_split_rate_set(migrate_split_max_bandwidth());
    ss->precopy_notifier.notify = split_save_precopy_notify;
    precopy_add_notifier(&ss->precopy_notifier);
    qemu_register_reset(split_save_reset, ss);
    trace_split_save_setup(ss->layout.nblocks, ss->layout.npages,
                           ss->nsubhosts, budget);
    for (k = 0; k < nsubhosts; k++) {
        split_subhost_config_free(cfg[k]);
    }
    split_save = ss;
    return 0;

fail:
    /*
     * Leave no record behind: it would make the export look in use. After
     * a cancel the channels are shut down and the records stay; this VM's
     * next migration overwrites its own (split_save_left_behind()).
     */
    bql = split_save_bql_drop();
    for (k = 0; k < ss->nsubhosts; k++) {
        split_save_drop_record(ss, k);
    }
    split_save_left_behind(ss);
    split_save_give_back(ss);
    split_save_bql_retake(bql);
    split_save_cancel_end();
    for (k = 0; k < nsubhosts; k++) {
        split_subhost_config_free(cfg[k]);
    }
    split_save_free(ss);
    return -1;
}

static int split_save_iterate(QEMUFile *f, void *opaque)
{
    SplitSave *ss = split_save;
    int ret;

    if (!ss) {
        return -EINVAL;
    }
    /* split-max-bandwidth may change while the migration runs */
    migration_split_rate_set(migrate_split_max_bandwidth());
    ret = split_save_flush_all(ss);
    if (ret < 0) {
        return ret;
    }
    split_save_send_map(ss, f, 1);
    qemu_put_byte(f, SPLIT_CMD_EOS);
    split_save_stats_snapshot(ss);
    return 1;
}

static int split_save_complete(QEMUFile *f, void *opaque)
{
    SplitSave *ss = split_save;
    unsigned l, nlocs;
    int ret;

    if (!ss) {
        return -EINVAL;
    }
    /* Every sub-host page must be stored before the map says so */
    ret = split_save_flush_all(ss);
    if (ret < 0) {
        return ret;
    }
    split_save_wait_idle(ss);
    if (qatomic_read(&ss->failed)) {
        return split_save_fail(ss);
    }
    /*
     * Durable, and visible to the main host's connections, before the map
     * says the pages are there; this also proves every sub-host still
     * answers while the source can still take the VM back.
     */
    for (l = 0; l < ss->nsubhosts; l++) {
        SplitSaveReq *req = split_save_req_new(ss, l, FCTRANS_SUBHOST_OP_FLUSH,
                                               0, 0);
        g_autoptr(GError) gerr = NULL;

        split_save_req_submitted(ss);
        if (!fctrans_subhost_flush(ss->sub[l].sh, 0, split_save_done, req,
                                   &gerr)) {
            Error *err = NULL;

            split_error_from_gerror(&err, gerr, "split-memory: sub-host '%s':"
                                    " flush before the commit failed",
                                    fctrans_subhost_id(ss->sub[l].sh));
            split_save_req_refused(ss, req);
            split_save_set_error(ss, err);
            break;
        }
    }
    split_save_wait_idle(ss);
    if (qatomic_read(&ss->failed)) {
        return split_save_fail(ss);
    }
    /* After the last wait: nothing drops the BQL from here to the end */
    if (qatomic_read(&ss->reset_in_switchover)) {
        Error *err = NULL;

        error_setg(&err, "split-memory: the VM was reset during the "
                   "switchover, after RAM's last pass; the source runs it "
                   "again");
        split_save_set_error(ss, err);
        return split_save_fail(ss);
    }

    split_save_send_map(ss, f, 1);
    nlocs = FCTRANS_LOC_SUBHOST0 + ss->nsubhosts;
    qemu_put_byte(f, SPLIT_CMD_COMMIT);
    qemu_put_be32(f, nlocs);
    for (l = 0; l < nlocs; l++) {
        qemu_put_be64(f, fctrans_pagemap_count(ss->map, l));
    }
    qemu_put_byte(f, SPLIT_CMD_EOS);
    ss->completed = true;
    split_save_stats_snapshot(ss);
    trace_split_save_complete(fctrans_pagemap_count(ss->map, FCTRANS_LOC_MAIN),
                              fctrans_pagemap_count(ss->map,
                                                    FCTRANS_LOC_UNUSED),
                              qatomic_read(&split_stats.map_bytes));
    return 0;
}

/* Submit a trim of @npages pages from global page @first on sub-host @k. */
static bool split_save_trim_range(SplitSave *ss, unsigned k, uint64_t first,
                                  uint64_t npages)
{
    g_autoptr(GError) gerr = NULL;
    /* npages 0: no pending bits to clear when it completes */
    SplitSaveReq *req;

    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        while (ss->inflight_reqs >= SPLIT_CLEANUP_TRIMS_MAX) {
            split_save_cond_wait(ss);
        }
    }
    req = split_save_req_new(ss, k, FCTRANS_SUBHOST_OP_TRIM, first, 0);
    split_save_req_submitted(ss);
    if (!fctrans_subhost_trim(ss->sub[k].sh, first * ss->page_size,
                              npages * ss->page_size,
                              FCTRANS_SUBHOST_REQ_BULK, split_save_done, req,
                              &gerr)) {
        warn_report("split: sub-host '%s': cannot trim: %s",
                    fctrans_subhost_id(ss->sub[k].sh), gerr->message);
        split_save_req_refused(ss, req);
        return false;
    }
    return true;
}

/* How long a failed migration waits for the main host's verdict */
#define SPLIT_VERDICT_WAIT_MS 2000

/* Whether no verdict can come any more: the return path failed or is gone */
static bool split_save_rp_broken(MigrationState *s)
{
    WITH_QEMU_LOCK_GUARD(&s->qemu_file_lock) {
        return !s->rp_state.from_dst_file ||
               qemu_file_get_error(s->rp_state.from_dst_file);
    }
    return true;
}

void split_save_await_verdict(void)
{
    SplitSave *ss = split_save;
    MigrationState *s = migrate_get_current();
    int64_t deadline;

    /*
     * The main host sends its verdict just before it closes the stream,
     * so the write error that failed this migration can reach the
     * migration thread before the return-path thread has read that
     * verdict: give it SPLIT_VERDICT_WAIT_MS, without the BQL. Only a
     * migration that failed after its commit waits. The migration thread
     * alone frees @ss, and it is the caller.
     */
    if (!ss || !ss->completed ||
        s->state == MIGRATION_STATUS_COMPLETED) {
        return;
    }
    deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + SPLIT_VERDICT_WAIT_MS;
    while (!qatomic_load_acquire(&s->rp_state.shut_received) &&
           !split_save_rp_broken(s) &&
           qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < deadline) {
        g_usleep(1000);
    }
}

/*
 * Whether the source may run the VM again after its migration failed or
 * was cancelled. Before the page map's commit was sent, the main host can
 * never run it. After it, only the main host's verdict on the return path
 * tells: an error means its load failed and it will not run the VM; a
 * success, or no verdict at all (a cancel or a broken return path while
 * the source waited for it), means it may run it, on the same sub-hosts:
 * the source then stays paused and keeps every page where it is.
 */
static bool split_save_resumable(SplitSave *ss)
{
    MigrationState *s = migrate_get_current();

    if (ss->resumable < 0) {
        /* Acquire: shut_error was stored before shut_received */
        ss->resumable = !ss->completed ||
                        (qatomic_load_acquire(&s->rp_state.shut_received) &&
                         s->rp_state.shut_error);
    }
    return ss->resumable;
}

bool split_save_may_resume(void)
{
    SplitSave *ss = split_save;
    MigrationState *s = migrate_get_current();

    if (!ss || split_save_resumable(ss)) {
        return true;
    }
    error_report("split-memory: the migration failed after the page map "
                 "was committed, and the main host %s: the source stays "
                 "paused and the sub-hosts keep the VM's pages; run 'cont' "
                 "here only once sure that the main host does not run the "
                 "VM", s->rp_state.shut_received ? "reported that it runs "
                 "the VM" : "did not say whether it runs the VM");
    return false;
}

/*
 * The main host runs the VM: the exports that this VM's pager used are
 * its own now, and no page of them is read here again.
 */
static void split_save_hand_over(SplitSave *ss)
{
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        if (ss->sub[k].pager_k >= 0) {
            split_pager_handover_end(ss->sub[k].pager_k, true, false);
            ss->sub[k].pager_k = -1;
        }
    }
}

/*
 * After a failed or cancelled migration that the source survives: drop
 * what this migration placed on the sub-hosts, page by page from the map
 * (never the whole export: it may hold other data), then its identity
 * record, unless a trim failed: an export that still holds pages must
 * not read as empty.
 */
static void split_save_trim_placed(SplitSave *ss)
{
    MigrationState *s = migrate_get_current();
    unsigned k;

    if (!split_save_resumable(ss)) {
        /*
         * Once the main host said that it runs the VM, as after a
         * completion. With no verdict the exports stay handed over as
         * during the migration (the pager accepts both records, trims
         * nothing there), so that a 'cont' that is right to run the VM
         * here still finds every page.
         */
        if (qatomic_load_acquire(&s->rp_state.shut_received) &&
            !s->rp_state.shut_error) {
            split_save_hand_over(ss);
        }
        return;     /* the main host may run the VM on these pages */
    }
    for (k = 0; k < ss->nsubhosts; k++) {
        FctransPageLoc loc = FCTRANS_LOC_SUBHOST(k);
        uint64_t g, first = 0, n = 0;
        bool ok = true;

        if (!fctrans_subhost_is_connected(ss->sub[k].sh)) {
            warn_report("split: sub-host '%s' is not connected: what it "
                        "received for this migration stays there",
                        fctrans_subhost_id(ss->sub[k].sh));
            continue;
        }
        /* Not the kept pages: the VM here still needs them */
        qatomic_add(&split_stats.trimmed,
                    fctrans_pagemap_count(ss->map, loc) - ss->sub[k].kept);
        for (g = 0; ok && g <= ss->layout.npages; g++) {
            bool here = g < ss->layout.npages &&
                        fctrans_pagemap_get(ss->map, g) == loc &&
                        !(ss->kept && test_bit(g, ss->kept));

            if (here && n && g == first + n &&
                (n + 1) * ss->page_size <= SPLIT_TRIM_MAX) {
                n++;
                continue;
            }
            if (n) {
                ok = split_save_trim_range(ss, k, first, n);
                n = 0;
            }
            if (here) {
                first = g;
                n = 1;
            }
        }
        split_save_wait_idle(ss);
        if (!ok || qatomic_read(&ss->sub[k].trim_errors)) {
            warn_report("split: sub-host '%s': not every page of this "
                        "migration could be dropped; its identity record "
                        "stays", fctrans_subhost_id(ss->sub[k].sh));
            continue;
        }
        /* Last, so that a partial cleanup still reads as this VM's */
        split_save_drop_record(ss, k);
    }
    split_save_wait_idle(ss);
    split_save_left_behind(ss);
    split_save_give_back(ss);
}

/*
 * A cancel or yank shut the channels down to end the migration's waits;
 * its cleanup still owes the sub-hosts the trims of what it placed there,
 * so it connects again (without the cancel: its own waits are bounded by
 * the connect and request timeouts, and the VM runs meanwhile).
 */
static void split_save_reopen(SplitSave *ss)
{
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        SplitSaveSubhost *s = &ss->sub[k];
        Error *err = NULL;
        FctransSubhost *sh;

        if (fctrans_subhost_is_connected(s->sh)) {
            continue;
        }
        s->cfg->cancel = NULL;
        sh = split_subhost_open(s->cfg, &err);
        if (!sh) {
            warn_report_err(err);
            continue;
        }
        trace_split_save_reopen(fctrans_subhost_id(sh));
        fctrans_subhost_close(s->sh);
        s->sh = sh;
    }
}

/*
 * Settle what is in flight, then keep this migration's pages on the
 * sub-hosts (@completed: the main host runs the VM on them) or drop them,
 * and free @ss.
 */
static void split_save_release(SplitSave *ss, bool completed)
{
    unsigned k;

    split_save_wait_idle(ss);
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        /*
         * The drain's bound only: the reconnects and trims that follow are
         * bounded by the channel's own timeouts.
         */
        ss->deadline_ns = 0;
    }
    if (!completed) {
        split_save_reopen(ss);
    }
    /*
     * Batched writes are dropped (the pages stay in the map, so they are
     * trimmed below); batched trims of pages that moved off a sub-host
     * still go.
     */
    for (k = 0; k < ss->nsubhosts; k++) {
        g_free(ss->sub[k].wb_buf);
        ss->sub[k].wb_buf = NULL;
        ss->sub[k].wb_npages = 0;
        if (!completed && ss->sub[k].tb_npages) {
            /* Quietly: a cancelled migration must not report trim errors */
            split_save_trim_range(ss, k, ss->sub[k].tb_first,
                                  ss->sub[k].tb_npages);
        }
        ss->sub[k].tb_npages = 0;
    }
    split_save_wait_idle(ss);
    split_save_stats_snapshot(ss);

    if (!completed) {
        trace_split_save_cleanup("trim");
        split_save_trim_placed(ss);
    } else {
        /* Handed over already, in split_save_cleanup() */
        trace_split_save_cleanup("keep");
    }
    split_save_free(ss);
}

static void *split_save_cleanup_thread(void *opaque)
{
    SplitSave *ss = opaque;

    split_save_release(ss, ss->released_completed);
    trace_split_save_cleanup("done");
    qatomic_store_release(&split_cleanup_busy, false);
    return NULL;
}

static void split_save_cleanup(void *opaque)
{
    SplitSave *ss = split_save;
    MigrationState *s = migrate_get_current();
    QemuThread thread;

    if (!ss) {
        return;
    }
    split_save = NULL;
    migration_split_rate_set(0);
    precopy_remove_notifier(&ss->precopy_notifier);
    qemu_unregister_reset(split_save_reset, ss);
    /* Before migration_cleanup drops the yank instance */
    split_save_cancel_end();
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        /* No cancel or yank reaches @ss any more */
        ss->in_cleanup = true;
        ss->deadline_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                          SPLIT_CLEANUP_DRAIN_MS * SCALE_MS;
    }

    ss->released_completed = s->state == MIGRATION_STATUS_COMPLETED;
    if (ss->released_completed) {
        /* Before 'cont' may be tried on the old main host */
        split_save_hand_over(ss);
    } else {
        /* While the return path's state is still this migration's */
        split_save_resumable(ss);
    }
    /*
     * The source runs the VM again at once after a failure or cancel,
     * while a thread of its own drops what this migration placed, or,
     * after a completion, closes its channels: a silent sub-host holds
     * that thread, never the BQL, for at most the request and disconnect
     * timeouts.
     */
    qatomic_set(&split_cleanup_busy, true);
    qemu_thread_create(&thread, "split-cleanup", split_save_cleanup_thread,
                       ss, QEMU_THREAD_DETACHED);
}

void split_populate_migration_info(MigrationInfo *info)
{
    SplitMigrationInfo *si;
    SplitMigrationDestinationList **tail;
    unsigned k;

    if (!migrate_split_memory() || !split_stats.valid) {
        return;
    }
    si = g_new0(SplitMigrationInfo, 1);
    tail = &si->destinations;
    for (k = 0; k <= split_stats.nsubhosts; k++) {
        SplitMigrationDestination *d = g_new0(SplitMigrationDestination, 1);
        uint64_t pages = qatomic_read(&split_stats.pages[k]);

        d->destination = g_strdup(k ? split_stats.ids[k - 1] : "main");
        d->pages = pages;
        d->bytes = pages * qemu_target_page_size();
        d->placed = qatomic_read(&split_stats.placed[k]);
        d->kept = qatomic_read(&split_stats.kept[k]);
        QAPI_LIST_APPEND(tail, d);
    }
    si->unused_pages = qatomic_read(&split_stats.unused);
    si->trimmed_pages = qatomic_read(&split_stats.trimmed);
    si->map_bytes = qatomic_read(&split_stats.map_bytes);
    info->split = si;
}

/*
 * Share of downtime-limit kept for what follows the data of the last pass
 * and that QEMU's estimate leaves out: the device state and its load on
 * the main host, and the main host's verdict, which a split migration
 * waits for (return-path) and so counts in its downtime.
 */
#define SPLIT_TAIL_RESERVE_PCT 10

/*
 * The switchover's cost beyond its data, in bytes at the rate the
 * switchover threshold assumes: the flush of every sub-host (in
 * parallel), the main host's identity check and record write on each
 * sub-host (one after the other), each a round trip as long as the
 * slowest sub-host's median so far, and SPLIT_TAIL_RESERVE_PCT of
 * downtime-limit.
 */
static uint64_t split_save_tail_bytes(SplitSave *ss)
{
    MigrationState *s = migrate_get_current();
    uint64_t limit_us = migrate_downtime_limit() * 1000;
    uint64_t rtt_ns = 0, tail_us;
    FctransSubhostStats st;
    unsigned k;

    if (!limit_us || limit_us > UINT32_MAX || !s->threshold_size) {
        return 0;   /* no bandwidth measured yet */
    }
    for (k = 0; k < ss->nsubhosts; k++) {
        fctrans_subhost_get_stats(ss->sub[k].sh, &st);
        rtt_ns = MAX(rtt_ns, st.op[FCTRANS_SUBHOST_OP_READ].lat_p50_ns);
        rtt_ns = MAX(rtt_ns, st.op[FCTRANS_SUBHOST_OP_FLUSH].lat_p50_ns);
    }
    tail_us = rtt_ns / 1000 * (1 + 2 * ss->nsubhosts) +
              limit_us * SPLIT_TAIL_RESERVE_PCT / 100;
    /* threshold_size is what the link moves in downtime-limit */
    return muldiv64(s->threshold_size, MIN(tail_us, limit_us), limit_us);
}

/*
 * What the switchover still has to move besides the dirty RAM that ram
 * counts: the map's changes and the sub-host writes batched or in flight,
 * which completion drains before it commits the map, and the
 * switchover's own cost. With this in the pending total, QEMU switches
 * over only when it fits downtime-limit.
 */
static void split_save_pending(void *opaque, uint64_t *must_precopy,
                               uint64_t *can_postcopy)
{
    SplitSave *ss = split_save;
    uint64_t bytes, tail;
    unsigned k;

    if (!ss) {
        return;
    }
    bytes = fctrans_pagemap_changed(ss->map) * SPLIT_MAP_BYTES_PER_PAGE;
    WITH_QEMU_LOCK_GUARD(&ss->lock) {
        bytes += ss->inflight_bytes;
    }
    for (k = 0; k < ss->nsubhosts; k++) {
        bytes += (uint64_t)qatomic_read(&ss->sub[k].wb_npages) *
                 ss->page_size;
    }
    tail = split_save_tail_bytes(ss);
    trace_split_save_pending(bytes, tail);
    bytes += tail;
    *must_precopy += bytes;
}

void split_save_handlers(SaveVMHandlers *ops)
{
    qemu_mutex_init(&split_cancel.lock);
    ops->is_active = split_save_is_active;
    ops->is_active_iterate = split_save_is_active_iterate;
    ops->save_prepare = split_save_prepare;
    ops->save_setup = split_save_setup;
    ops->save_live_iterate = split_save_iterate;
    ops->save_live_complete_precopy = split_save_complete;
    ops->save_cleanup = split_save_cleanup;
    ops->state_pending_estimate = split_save_pending;
    ops->state_pending_exact = split_save_pending;
}
