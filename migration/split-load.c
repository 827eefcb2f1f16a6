/*
 * Split migration, main host side: receive the layout and the
 * page-location map, connect to the sub-hosts, start the pager
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Everything here runs in the incoming migration coroutine, in the main
 * loop with the BQL held. The order matters: transparent huge pages are
 * turned off before the first RAM page arrives, and the pager starts when
 * the page map is committed, after the last RAM page and before the first
 * device section, because devices read guest RAM while they load.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/madvise.h"
#include "qapi/error.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "migration/qemu-file-types.h"
#include "migration.h"
#include "options.h"
#include "qemu-file.h"
#include "split.h"
#include "split-internal.h"
#include "trace.h"

/* The incoming split state; the pager keeps it for the VM's lifetime. */
static SplitIncoming *split_incoming;

static void split_incoming_free(SplitIncoming *si)
{
    unsigned k;

    for (k = 0; k < si->nsubhosts; k++) {
        fctrans_subhost_close(si->sub[k].sh);
        g_free(si->sub[k].id);
        g_free(si->sub[k].uri);
    }
    fctrans_pagemap_free(si->map);
    split_layout_clear(&si->layout);
    g_free(si);
}

static bool split_is_id(const char *id)
{
    const char *p;

    if (!*id) {
        return false;
    }
    for (p = id; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-_.", *p)) {
            return false;
        }
    }
    return true;
}

/*
 * The URI the main host uses for sub-host @id named by the source: always
 * one of its own split-subhosts, never one that the stream names (that
 * would let a source, or whoever controls the stream, point this host at
 * any server or Unix socket).
 */
static const SplitSubhost *split_load_local_subhost(const char *id,
                                                   Error **errp)
{
    const SplitSubhostList *l;
    MigrationState *s = migrate_get_current();

    if (!s->parameters.has_split_subhosts || !migrate_split_subhosts()) {
        error_setg(errp, "split-memory: this host has no split-subhosts: "
                   "the main host connects only to the sub-hosts it is "
                   "given, never to those the source names");
        error_append_hint(errp, "Set split-subhosts with "
                          "migrate-set-parameters before migrate-incoming, "
                          "with the ids the source uses.\n");
        return NULL;
    }
    for (l = migrate_split_subhosts(); l; l = l->next) {
        if (g_str_equal(l->value->id, id)) {
            return l->value;
        }
    }
    error_setg(errp, "split: the source placed pages on sub-host '%s', "
               "which is not in this host's split-subhosts", id);
    return NULL;
}

static int split_load_header(QEMUFile *f, SplitIncoming *si, Error **errp)
{
    uint32_t version, nblocks, nsub, i;
    uint64_t npages, total = 0;
    const char *creds = migrate_split_tls_creds();
    char idstr[256];
    uint8_t vm_uuid[FCTRANS_EXPORT_ID_UUID_LEN];
    uint8_t migration_id[FCTRANS_EXPORT_ID_UUID_LEN];
    GArray *blocks;

    if (si->header_seen) {
        error_setg(errp, "split: second header in the stream");
        return -EINVAL;
    }
    /*
     * The capability may have been set after migrate-incoming, which ran
     * the checks: whatever this host's RAM is, it must suit the pager.
     */
    if (!split_migration_check(NULL, errp)) {
        return -EINVAL;
    }
    version = qemu_get_be32(f);
    si->page_size = qemu_get_be32(f);
    npages = qemu_get_be64(f);
    si->budget = qemu_get_be64(f);
    qemu_get_buffer(f, vm_uuid, sizeof(vm_uuid));
    qemu_get_buffer(f, migration_id, sizeof(migration_id));
    nblocks = qemu_get_be32(f);
    if (version != SPLIT_STREAM_VERSION) {
        error_setg(errp, "split: unsupported stream version %u", version);
        return -EINVAL;
    }
    if (si->page_size != qemu_target_page_size()) {
        error_setg(errp, "split: page size %u differs from this host's %zu",
                   si->page_size, qemu_target_page_size());
        return -EINVAL;
    }
    if (nblocks > 1024) {
        error_setg(errp, "split: too many RAM blocks (%u)", nblocks);
        return -EINVAL;
    }

    blocks = g_array_new(false, true, sizeof(SplitBlock));
    for (i = 0; i < nblocks; i++) {
        SplitBlock b = { 0 };

        if (!qemu_get_counted_string(f, idstr)) {
            error_setg(errp, "split: truncated RAM block name");
            goto fail;
        }
        b.npages = qemu_get_be64(f);
        b.rb = qemu_ram_block_by_name(idstr);
        if (!b.rb) {
            error_setg(errp, "split: unknown RAM block '%s'", idstr);
            goto fail;
        }
        if (!split_block_eligible(b.rb)) {
            error_setg(errp, "split: RAM block '%s' cannot be split on this "
                       "host (ROM, resizeable, huge pages or not migratable)",
                       idstr);
            goto fail;
        }
        if (b.npages != b.rb->used_length / si->page_size ||
            b.npages > npages - total) {
            error_setg(errp, "split: RAM block '%s' has %" PRIu64 " pages "
                       "on the source, %" PRIu64 " here", idstr, b.npages,
                       (uint64_t)(b.rb->used_length / si->page_size));
            goto fail;
        }
        if (!split_pager_probe_block(b.rb, errp)) {
            goto fail;
        }
        b.first_page = total;
        total += b.npages;
        g_array_append_val(blocks, b);
    }
    if (total != npages) {
        error_setg(errp, "split: the blocks hold %" PRIu64 " pages, the "
                   "header says %" PRIu64, total, npages);
        goto fail;
    }
    si->layout.nblocks = blocks->len;
    si->layout.blocks = (SplitBlock *)g_array_free(blocks, false);
    blocks = NULL;
    si->layout.npages = npages;
    si->layout.page_size = si->page_size;

    nsub = qemu_get_be32(f);
    if (nsub == 0 || nsub > SPLIT_MAX_SUBHOSTS) {
        error_setg(errp, "split: invalid number of sub-hosts %u", nsub);
        return -EINVAL;
    }
    for (i = 0; i < nsub; i++) {
        SplitPagerSubhost *sp = &si->sub[i];
        FctransExportId *want = &sp->export_id;
        g_autofree char *src_uri = NULL;
        const SplitSubhost *local;
        const char *uri;
        FctransSubhostConfig *cfg;
        uint16_t len;

        if (!qemu_get_counted_string(f, idstr) || !split_is_id(idstr)) {
            error_setg(errp, "split: invalid sub-host name");
            return -EINVAL;
        }
        len = qemu_get_be16(f);
        if (len > SPLIT_URI_MAX) {
            error_setg(errp, "split: sub-host URI too long");
            return -EINVAL;
        }
        src_uri = g_malloc0(len + 1);
        if (qemu_get_buffer(f, (uint8_t *)src_uri, len) != len ||
            strlen(src_uri) != len) {
            error_setg(errp, "split: truncated sub-host URI");
            return -EINVAL;
        }
        want->state = FCTRANS_EXPORT_ID_MIGRATING;
        want->page_size = si->page_size;
        want->npages = npages;
        want->subhost_index = i;
        want->nsubhosts = nsub;
        pstrcpy(want->subhost_id, sizeof(want->subhost_id), idstr);
        memcpy(want->vm_uuid, vm_uuid, sizeof(vm_uuid));
        memcpy(want->migration_id, migration_id, sizeof(migration_id));
        if (qemu_get_buffer(f, want->nonce, sizeof(want->nonce)) !=
            sizeof(want->nonce)) {
            error_setg(errp, "split: truncated sub-host nonce");
            return -EINVAL;
        }
        local = split_load_local_subhost(idstr, errp);
        if (!local) {
            return -EINVAL;
        }
        uri = local->uri;
        sp->capacity_pages = local->capacity / si->page_size;
        /* The pages, then the identity record */
        cfg = split_subhost_config(idstr, uri, 0,
                                   npages * si->page_size +
                                   FCTRANS_EXPORT_ID_SIZE, creds, errp);
        if (!cfg) {
            return -EINVAL;
        }
        sp->id = g_strdup(idstr);
        sp->uri = g_strdup(uri);
        sp->sh = split_subhost_open(cfg, errp);
        split_subhost_config_free(cfg);
        si->nsubhosts = i + 1;
        if (!sp->sh) {
            return -EIO;
        }
        /* The source wrote the record before it sent this header */
        if (!split_export_id_verify(sp->sh, sp->uri, want, errp)) {
            return -EINVAL;
        }
    }
    si->map = fctrans_pagemap_new(npages, si->nsubhosts);
    si->header_seen = true;
    trace_split_load_header(si->layout.nblocks, npages, si->nsubhosts);
    return 0;

fail:
    g_array_free(blocks, true);
    return -EINVAL;
}

static int split_load_map(QEMUFile *f, SplitIncoming *si, Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree uint8_t *buf = NULL;
    uint32_t len = qemu_get_be32(f);

    if (!si->header_seen || si->committed) {
        error_setg(errp, "split: page map out of sequence");
        return -EINVAL;
    }
    if (len > SPLIT_MAP_CHUNK_MAX) {
        error_setg(errp, "split: page map chunk of %u bytes is too large",
                   len);
        return -EINVAL;
    }
    buf = g_malloc(len);
    if (qemu_get_buffer(f, buf, len) != len) {
        error_setg(errp, "split: truncated page map chunk");
        return -EIO;
    }
    if (!fctrans_pagemap_decode(si->map, buf, len, &gerr)) {
        split_error_from_gerror(errp, gerr, "split: invalid page map");
        return -EINVAL;
    }
    trace_split_load_map(len);
    return 0;
}

static int split_load_commit(QEMUFile *f, SplitIncoming *si, Error **errp)
{
    uint32_t nlocs = qemu_get_be32(f);
    uint32_t l;

    if (!si->header_seen || si->committed ||
        nlocs != FCTRANS_LOC_SUBHOST0 + si->nsubhosts) {
        error_setg(errp, "split: unexpected end of the page map");
        return -EINVAL;
    }
    for (l = 0; l < nlocs; l++) {
        uint64_t n = qemu_get_be64(f);

        if (n != fctrans_pagemap_count(si->map, l)) {
            error_setg(errp, "split: the page map has %" PRIu64 " pages at "
                       "location %u, the source placed %" PRIu64,
                       fctrans_pagemap_count(si->map, l), l, n);
            return -EINVAL;
        }
        si->commit_counts[l] = n;
    }
    /*
     * Every sub-host still answers, and still holds this migration's pages
     * (its server was not restarted since the header): the pages the map
     * puts there are readable before anything relies on them.
     */
    for (l = 0; l < si->nsubhosts; l++) {
        if (!split_export_id_verify(si->sub[l].sh, si->sub[l].uri,
                                    &si->sub[l].export_id, errp)) {
            return -EIO;
        }
    }
    si->committed = true;
    /* Devices load next and read guest RAM: serve its faults from now on */
    return split_pager_start(si, errp) ? 0 : -EINVAL;
}

/*
 * Before the first page arrives: no transparent huge pages in the RAM that
 * may be split (each 4 KiB page received would take 2 MiB, and a huge
 * page would later expose neighbours that were never fetched), and RAM
 * discards must stay possible for as long as the pager may run.
 */
static int split_load_setup(QEMUFile *f, void *opaque, Error **errp)
{
    SplitLayout layout;
    unsigned i;

    if (split_incoming) {
        error_setg(errp, "split: this VM already runs split");
        return -EBUSY;
    }
    if (ram_block_discard_require(true)) {
        error_setg(errp, "split-memory: RAM discards are disabled on this "
                   "host (by VFIO or a confidential guest), but the main "
                   "host must drop the pages placed elsewhere");
        return -EBUSY;
    }
    split_layout_build(&layout);
    for (i = 0; i < layout.nblocks; i++) {
        RAMBlock *rb = layout.blocks[i].rb;

        /* EINVAL: a kernel without transparent huge pages */
        if (qemu_madvise(rb->host, rb->used_length, QEMU_MADV_NOHUGEPAGE) &&
            errno != EINVAL) {
            int err = errno;

            error_setg_errno(errp, err, "split: cannot turn off huge pages "
                             "in RAM block '%s'", rb->idstr);
            split_layout_clear(&layout);
            ram_block_discard_require(false);
            return -err;
        }
    }
    trace_split_load_setup(layout.nblocks);
    split_layout_clear(&layout);
    split_incoming = g_new0(SplitIncoming, 1);
    return 0;
}

static int split_load_state(QEMUFile *f, void *opaque, int version_id)
{
    SplitIncoming *si = split_incoming;
    Error *err = NULL;
    int ret = 0;

    if (!si || si->pager) {
        error_report("split: section received without split-memory");
        return -EINVAL;
    }
    while (!ret) {
        uint8_t cmd = qemu_get_byte(f);

        ret = qemu_file_get_error(f);
        if (ret) {
            break;
        }
        switch (cmd) {
        case SPLIT_CMD_EOS:
            return 0;
        case SPLIT_CMD_HEADER:
            ret = split_load_header(f, si, &err);
            break;
        case SPLIT_CMD_MAP:
            ret = split_load_map(f, si, &err);
            break;
        case SPLIT_CMD_COMMIT:
            ret = split_load_commit(f, si, &err);
            break;
        default:
            error_setg(&err, "split: unknown command %u in the stream", cmd);
            ret = -EINVAL;
        }
        if (!ret) {
            ret = qemu_file_get_error(f);
        }
    }
    if (err) {
        migrate_set_error(migrate_get_current(), err);
        error_report_err(err);
    }
    return ret;
}

static int split_load_cleanup(void *opaque)
{
    SplitIncoming *si = split_incoming;

    /* Once the pager runs it owns everything, for the VM's lifetime */
    if (si && !si->pager) {
        split_incoming = NULL;
        split_incoming_free(si);
        ram_block_discard_require(false);
    }
    return 0;
}

static bool split_load_is_active(void *opaque)
{
    return migrate_split_memory();
}

bool split_incoming_start(Error **errp)
{
    SplitIncoming *si = split_incoming;
    unsigned k, claimed = 0;

    if (!si || !si->header_seen) {
        error_setg(errp, "split-memory: the source sent no split section; "
                   "is split-memory set on the source?");
        return false;
    }
    if (!si->committed || !si->pager) {
        error_setg(errp, "split-memory: the page map is incomplete");
        return false;
    }
    /*
     * Take the exports over before the source learns that the VM runs
     * here: each record says RUNNING from now on, which tells a later
     * source that the export is in use. Every export is checked before
     * the first is claimed, and a failed claim gives the others back, so
     * that a main host that will not run the VM leaves no export looking
     * in use.
     * All of it before the pager may run: until then no reconnect begins
     * (a failed read breaks the load instead), so no reconnect thread
     * reads sub[k].export_id while it changes here, or reconnects the
     * channel under these requests. The requests still hold the BQL:
     * process_incoming_migration_co() holds it, before the VM starts; each
     * one is bounded by the channel's request timeout.
     */
    for (k = 0; k < si->nsubhosts; k++) {
        if (!split_export_id_verify(si->sub[k].sh, si->sub[k].uri,
                                    &si->sub[k].export_id, errp)) {
            return false;
        }
    }
    for (claimed = 0; claimed < si->nsubhosts; claimed++) {
        FctransExportId id = si->sub[claimed].export_id;

        id.state = FCTRANS_EXPORT_ID_RUNNING;
        id.written_s = time(NULL);
        if (!split_export_id_write(si->sub[claimed].sh, &id, errp)) {
            goto give_back;
        }
    }
    for (k = 0; k < si->nsubhosts; k++) {
        si->sub[k].export_id.state = FCTRANS_EXPORT_ID_RUNNING;
    }
    if (split_pager_may_run(si->pager, errp)) {
        return true;
    }
    /* Not run here after all: the records as the source wrote them */
    for (k = 0; k < si->nsubhosts; k++) {
        si->sub[k].export_id.state = FCTRANS_EXPORT_ID_MIGRATING;
    }

give_back:
    while (claimed--) {
        Error *err = NULL;

        if (!split_export_id_write(si->sub[claimed].sh,
                                   &si->sub[claimed].export_id, &err)) {
            /* Not fatal here, but a later source will see it in use */
            warn_reportf_err(err, "split-memory: sub-host '%s' stays "
                             "claimed by this host: ", si->sub[claimed].id);
        }
    }
    return false;
}

void split_load_handlers(SaveVMHandlers *ops)
{
    ops->is_active = split_load_is_active;
    ops->load_setup = split_load_setup;
    ops->load_state = split_load_state;
    ops->load_cleanup = split_load_cleanup;
}
