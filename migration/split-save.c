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
 * A page has at most one write or trim on the sub-hosts at a time (NBD
 * does not order requests in flight): a page that is batched or in flight
 * has its bit set in the pending bitmap, and a new request for it waits.
 */
#include "qemu/osdep.h"
#include "qemu/bitops.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/thread.h"
#include "qapi/error.h"
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

typedef struct SplitSave SplitSave;

typedef struct SplitSaveSubhost {
    FctransSubhost *sh;
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
    SplitBlock *last_block;
    uint64_t setup_gen;

    QemuMutex lock;
    QemuCond cond;
    uint64_t inflight_bytes;    /* lock */
    unsigned inflight_reqs;     /* lock */
    Error *error;               /* lock: first failure of a request */
    bool failed;                /* atomic: error is set */
};

static SplitSave *split_save;
static SplitSaveStats split_stats;

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

        split_error_from_gerror(&err, gerr,
                                "split: sub-host '%s': %s of %" PRIu64
                                " pages at page %" PRIu64 " failed",
                                fctrans_subhost_id(ss->sub[req->k].sh),
                                fctrans_subhost_op_name(req->op),
                                req->npages, req->first);
        split_save_set_error(ss, err);
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
            qemu_cond_wait(&ss->cond, &ss->lock);
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

    if (!s->tb_npages) {
        return 0;
    }
    req = split_save_req_new(ss, k, FCTRANS_SUBHOST_OP_TRIM, s->tb_first,
                             s->tb_npages);
    s->tb_npages = 0;

    trace_split_save_submit(k, "trim", req->first, req->npages);
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
    qatomic_add(&split_stats.trimmed, req->npages);
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
            qemu_cond_wait(&ss->cond, &ss->lock);
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
    qatomic_add(&split_stats.pages[1 + k], req->npages);
    /* Counts in the bandwidth estimate, as the main stream's bytes do */
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
            qemu_cond_wait(&ss->cond, &ss->lock);
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
        g_free(ss->sub[k].wb_buf);
    }
    fctrans_placer_free(ss->placer);
    fctrans_pagemap_free(ss->map);
    g_free(ss->pending);
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

/* The budget and capacities must hold the whole split RAM. */
static bool split_save_check_room(uint64_t ram, Error **errp)
{
    const SplitSubhostList *l;
    uint64_t budget = migrate_split_resident_budget();
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

    /* query-migrate shows this migration's statistics from now on */
    split_save_stats_reset();

    if (!migrate_split_subhosts()) {
        error_setg(errp, "Capability 'split-memory' needs the parameter "
                   "'split-subhosts'");
        return -EINVAL;
    }
    split_layout_build(&layout);
    ok = split_save_check_room((uint64_t)layout.npages * layout.page_size,
                               errp);
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

static int split_save_setup(QEMUFile *f, void *opaque, Error **errp)
{
    SplitSave *ss = g_new0(SplitSave, 1);
    const SplitSubhostList *l;
    const char *creds = migrate_split_tls_creds();
    uint64_t cap_pages[SPLIT_MAX_SUBHOSTS];
    unsigned i, k;

    /* A snapshot (savevm) must hold every page itself */
    if (!migration_thread_is_self()) {
        error_setg(errp, "Capability 'split-memory' only applies to "
                   "migrations, not to snapshots");
        g_free(ss);
        return -ENOTSUP;
    }
    qemu_mutex_init(&ss->lock);
    qemu_cond_init(&ss->cond);
    split_layout_build(&ss->layout);
    ss->page_size = ss->layout.page_size;

    if (!split_save_check_room((uint64_t)ss->layout.npages * ss->page_size,
                               errp)) {
        goto fail;
    }

    for (l = migrate_split_subhosts(); l; l = l->next) {
        SplitSubhost *p = l->value;
        FctransSubhostConfig *cfg;

        k = ss->nsubhosts;
        cfg = split_subhost_config(p->id, p->uri, p->capacity,
                                   (uint64_t)ss->layout.npages * ss->page_size,
                                   creds, errp);
        if (!cfg) {
            goto fail;
        }
        ss->sub[k].sh = split_subhost_open(cfg, errp);
        split_subhost_config_free(cfg);
        if (!ss->sub[k].sh) {
            goto fail;
        }
        cap_pages[k] = p->capacity / ss->page_size;
        split_stats.ids[k] = g_strdup(p->id);
        ss->nsubhosts++;
        split_stats.nsubhosts = ss->nsubhosts;
    }

    ss->map = fctrans_pagemap_new(ss->layout.npages, ss->nsubhosts);
    ss->placer = fctrans_placer_new(migrate_split_policy() ==
                                    SPLIT_POLICY_SEQUENTIAL ?
                                    FCTRANS_PLACEMENT_SEQUENTIAL :
                                    FCTRANS_PLACEMENT_WORKING_SET,
                                    ss->map,
                                    migrate_split_resident_budget() /
                                    ss->page_size, cap_pages);
    ss->pending = bitmap_new(ss->layout.npages);
    ss->setup_gen = stat64_get(&mig_stats.dirty_sync_count);
    split_stats.valid = true;

    qemu_put_byte(f, SPLIT_CMD_HEADER);
    qemu_put_be32(f, SPLIT_STREAM_VERSION);
    qemu_put_be32(f, ss->page_size);
    qemu_put_be64(f, ss->layout.npages);
    qemu_put_be64(f, migrate_split_resident_budget());
    qemu_put_be32(f, ss->layout.nblocks);
    for (i = 0; i < ss->layout.nblocks; i++) {
        SplitBlock *b = &ss->layout.blocks[i];

        qemu_put_counted_string(f, b->rb->idstr);
        qemu_put_be64(f, b->npages);
    }
    qemu_put_be32(f, ss->nsubhosts);
    i = 0;
    for (l = migrate_split_subhosts(); l; l = l->next) {
        size_t len = strlen(l->value->uri);

        qemu_put_counted_string(f, l->value->id);
        qemu_put_be16(f, len);
        qemu_put_buffer(f, (const uint8_t *)l->value->uri, len);
    }
    qemu_put_byte(f, SPLIT_CMD_EOS);

    trace_split_save_setup(ss->layout.nblocks, ss->layout.npages,
                           ss->nsubhosts, migrate_split_resident_budget());
    split_save = ss;
    return 0;

fail:
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

    split_save_send_map(ss, f, 1);
    nlocs = FCTRANS_LOC_SUBHOST0 + ss->nsubhosts;
    qemu_put_byte(f, SPLIT_CMD_COMMIT);
    qemu_put_be32(f, nlocs);
    for (l = 0; l < nlocs; l++) {
        qemu_put_be64(f, fctrans_pagemap_count(ss->map, l));
    }
    qemu_put_byte(f, SPLIT_CMD_EOS);
    split_save_stats_snapshot(ss);
    trace_split_save_complete(fctrans_pagemap_count(ss->map, FCTRANS_LOC_MAIN),
                              fctrans_pagemap_count(ss->map,
                                                    FCTRANS_LOC_UNUSED),
                              qatomic_read(&split_stats.map_bytes));
    return 0;
}

/* After a failed or cancelled migration: drop what the sub-hosts hold. */
static void split_save_trim_all(SplitSave *ss)
{
    uint64_t total = (uint64_t)ss->layout.npages * ss->page_size;
    unsigned k;

    for (k = 0; k < ss->nsubhosts; k++) {
        uint64_t off;

        if (!fctrans_subhost_is_connected(ss->sub[k].sh)) {
            warn_report("split: sub-host '%s' is not connected: what it "
                        "received for this migration stays there",
                        fctrans_subhost_id(ss->sub[k].sh));
            continue;
        }
        qatomic_add(&split_stats.trimmed,
                    fctrans_pagemap_count(ss->map, FCTRANS_LOC_SUBHOST(k)));
        for (off = 0; off < total; off += SPLIT_TRIM_MAX) {
            g_autoptr(GError) gerr = NULL;
            /* npages 0: no pending bits to clear when it completes */
            SplitSaveReq *req = split_save_req_new(ss, k,
                                                   FCTRANS_SUBHOST_OP_TRIM,
                                                   off / ss->page_size, 0);
            uint64_t len = MIN(SPLIT_TRIM_MAX, total - off);

            split_save_req_submitted(ss);
            if (!fctrans_subhost_trim(ss->sub[k].sh, off, len,
                                      FCTRANS_SUBHOST_REQ_BULK,
                                      split_save_done, req, &gerr)) {
                warn_report("split: sub-host '%s': cannot trim: %s",
                            fctrans_subhost_id(ss->sub[k].sh), gerr->message);
                split_save_req_refused(ss, req);
                break;
            }
        }
    }
    split_save_wait_idle(ss);
}

static void split_save_cleanup(void *opaque)
{
    SplitSave *ss = split_save;
    MigrationState *s = migrate_get_current();
    unsigned k;

    if (!ss) {
        return;
    }
    split_save = NULL;

    /* Settle what is in flight before anything else */
    for (k = 0; k < ss->nsubhosts; k++) {
        g_free(ss->sub[k].wb_buf);
        ss->sub[k].wb_buf = NULL;
        ss->sub[k].wb_npages = 0;
        ss->sub[k].tb_npages = 0;
    }
    split_save_wait_idle(ss);
    split_save_stats_snapshot(ss);

    if (s->state != MIGRATION_STATUS_COMPLETED) {
        trace_split_save_cleanup("trim");
        split_save_trim_all(ss);
    } else {
        trace_split_save_cleanup("keep");
    }
    split_save_free(ss);
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
        QAPI_LIST_APPEND(tail, d);
    }
    si->unused_pages = qatomic_read(&split_stats.unused);
    si->trimmed_pages = qatomic_read(&split_stats.trimmed);
    si->map_bytes = qatomic_read(&split_stats.map_bytes);
    info->split = si;
}

void split_save_handlers(SaveVMHandlers *ops)
{
    ops->is_active = split_save_is_active;
    ops->is_active_iterate = split_save_is_active_iterate;
    ops->save_prepare = split_save_prepare;
    ops->save_setup = split_save_setup;
    ops->save_live_iterate = split_save_iterate;
    ops->save_live_complete_precopy = split_save_complete;
    ops->save_cleanup = split_save_cleanup;
}
