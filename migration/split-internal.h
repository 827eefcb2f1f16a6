/*
 * Split migration: definitions shared by split.c, split-save.c and
 * split-pager.c
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef QEMU_MIGRATION_SPLIT_INTERNAL_H
#define QEMU_MIGRATION_SPLIT_INTERNAL_H

#include "exec/cpu-common.h"
#include "migration/register.h"
#include "qapi/qapi-types-split.h"
#include "fctrans/export-id.h"
#include "fctrans/pagemap.h"
#include "fctrans/subhost.h"

/*
 * The "split" section. Every part of it (setup, iterations, completion) is
 * a sequence of commands ending with SPLIT_CMD_EOS:
 *   SPLIT_CMD_HEADER  be32 version, be32 page size, be64 pages,
 *                     be64 resident budget (bytes), 16 bytes VM UUID,
 *                     16 bytes migration id,
 *                     be32 blocks, then per block: u8 len, idstr, be64 pages;
 *                     be32 sub-hosts, then per sub-host: u8 len, id,
 *                     be16 len, URI, 16 bytes nonce
 *   SPLIT_CMD_MAP     be32 len, then a chunk of the page-location map
 *                     (fctrans_pagemap_encode_changes())
 *   SPLIT_CMD_COMMIT  be32 locations, then be64 pages per location: the
 *                     map is final and must have exactly these counts
 *   SPLIT_CMD_EOS     end of this part
 * Sub-host exports hold the split blocks one after the other, in header
 * order, at page granularity: global page g lives at offset g * page size.
 * The export's last 4 KiB hold its identity record (fctrans/export-id.h),
 * which the source writes before the header.
 */
#define SPLIT_SECTION_NAME      "split"
#define SPLIT_SECTION_VERSION   1
#define SPLIT_STREAM_VERSION    2

#define SPLIT_CMD_EOS           0
#define SPLIT_CMD_HEADER        1
#define SPLIT_CMD_MAP           2
#define SPLIT_CMD_COMMIT        3

/* Largest map chunk, on both sides. */
#define SPLIT_MAP_CHUNK_MAX     (1024 * 1024)

#define SPLIT_MAX_SUBHOSTS      FCTRANS_PAGEMAP_MAX_SUBHOSTS
#define SPLIT_ID_MAX            64
#define SPLIT_URI_MAX           4096
/* Longest split-reconnect-timeout: an hour of faults waiting is plenty */
#define SPLIT_RECONNECT_TIMEOUT_MAX_MS  (3600 * 1000)

/* A RAM block whose pages a split migration places. */
typedef struct SplitBlock {
    RAMBlock *rb;
    uint64_t first_page;        /* global page number of its page 0 */
    uint64_t npages;
} SplitBlock;

typedef struct SplitLayout {
    SplitBlock *blocks;
    unsigned nblocks;
    uint64_t npages;            /* all split blocks */
    uint32_t page_size;
} SplitLayout;

/* split.c */

/* Whether @rb can be split (and later served by userfaultfd). */
bool split_block_eligible(RAMBlock *rb);
/* The split blocks of this VM, in RAM block list order. */
void split_layout_build(SplitLayout *layout);
void split_layout_clear(SplitLayout *layout);
SplitBlock *split_layout_find(SplitLayout *layout, RAMBlock *rb);

/*
 * A sub-host configuration for fctrans_subhost_open() from a QAPI
 * sub-host and the TLS credentials object @tls_creds (NULL: plain text).
 * Free with split_subhost_config_free().
 */
FctransSubhostConfig *split_subhost_config(const char *id, const char *uri,
                                           uint64_t capacity,
                                           uint64_t min_size,
                                           const char *tls_creds,
                                           Error **errp);
void split_subhost_config_free(FctransSubhostConfig *cfg);

/* Connect, with a QEMU error that names the sub-host. */
FctransSubhost *split_subhost_open(const FctransSubhostConfig *cfg,
                                   Error **errp);

/*
 * The identity record of the export behind @sh (fctrans/export-id.h):
 * read and decode it (1; 0 when the export holds none, -1 on another
 * error, both with @errp set); write it, flushed; read it and check that
 * it is @want's (the state aside; errors name the sub-host and @uri).
 */
int split_export_id_read(FctransSubhost *sh, FctransExportId *found,
                         Error **errp);
bool split_export_id_write(FctransSubhost *sh, const FctransExportId *id,
                           Error **errp);
bool split_export_id_verify(FctransSubhost *sh, const char *uri,
                            const FctransExportId *want, Error **errp);

/* Set @errp from a GError of the sub-host channel, prefixed by @fmt. */
void split_error_from_gerror(Error **errp, const GError *gerr,
                             const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* Sub-host state on the main host */
typedef struct SplitPagerSubhost {
    char *id;
    char *uri;                  /* this host's, from its split-subhosts */
    FctransSubhost *sh;
    FctransExportId export_id;  /* what its export must hold */
    uint64_t remaining;         /* atomic: pages stored only there */
    uint64_t page_ins;          /* atomic */
    uint64_t page_outs;         /* atomic: pages written there by page-out */
    /* This host's split-subhosts capacity: page-out keeps within it */
    uint64_t capacity_pages;
    bool lost;                  /* atomic */
    /*
     * atomic: an outgoing split migration completed and the new main host
     * holds this export: its pages are no longer this VM's to page in
     */
    bool handed_over;
} SplitPagerSubhost;

typedef struct SplitPager SplitPager;

/*
 * The main host: what the "split" section received, then, from the map's
 * commit on, the pager. It lives as long as the VM.
 */
typedef struct SplitIncoming {
    SplitLayout layout;
    uint32_t page_size;
    uint64_t budget;            /* bytes, as the source placed pages */
    FctransPageMap *map;
    unsigned nsubhosts;
    SplitPagerSubhost sub[SPLIT_MAX_SUBHOSTS];
    uint64_t commit_counts[FCTRANS_LOC_COUNT];
    bool header_seen;
    bool committed;
    SplitPager *pager;          /* set once the pager runs */
} SplitIncoming;

/* split-save.c */
void split_save_handlers(SaveVMHandlers *ops);

/* split-load.c */
void split_load_handlers(SaveVMHandlers *ops);

/* split-pager.c */
bool split_pager_supported(Error **errp);
/* Whether userfaultfd can serve the RAM of @rb. */
bool split_pager_probe_block(RAMBlock *rb, Error **errp);
/*
 * Drop the populated pages that are not resident, register, start the
 * pager; from the map's commit, before the device sections load.
 */
bool split_pager_start(SplitIncoming *si, Error **errp);
/*
 * The incoming migration ended: from now on a page that cannot be paged
 * in stops the VM. False with @errp set when one was lost before, while
 * the device state loaded: the VM must not run.
 */
bool split_pager_may_run(SplitPager *pg, Error **errp);

/*
 * A split migration out of this main host onto its own sub-hosts
 * (split-save.c): a page stored only on a sub-host that the new
 * migration uses too stays there, unread.
 *
 * Whether this process runs a split-memory VM whose pages are numbered
 * as in @layout, which is what lets the pages stay where they are.
 */
bool split_pager_same_layout(const SplitLayout *layout);
/*
 * The pager's sub-host whose export holds @found as this VM's record
 * (the one its pager checks, state RUNNING), with that record in @own;
 * -1 when none does.
 */
int split_pager_export_owner(const FctransExportId *found,
                             FctransExportId *own);
/*
 * Sub-host @j's export is about to hold @next, the outgoing migration's
 * record: a reconnect accepts it as well as the pager's own, and pages
 * the guest discards are no longer trimmed there (the outgoing map may
 * keep them), until split_pager_handover_end().
 */
void split_pager_handover_begin(unsigned j, const FctransExportId *next);
/*
 * The outgoing migration ended. @done: it completed, the new main host
 * holds the export: a fault on a page stored only there stops this VM
 * for good. Else discards are trimmed again, and @next_stays: the
 * export may still hold the outgoing record (its restore failed), which
 * a reconnect keeps accepting.
 */
void split_pager_handover_end(unsigned j, bool done, bool next_stays);
/*
 * Call @fn for every run of pages whose only copy is on a sub-host (not
 * resident here, or being paged in), with the pager's sub-host index.
 * Returns how many pages that was.
 */
uint64_t split_pager_for_each_remote(void (*fn)(void *opaque, unsigned j,
                                                uint64_t first, uint64_t n),
                                     void *opaque);
/* Whether page @g's only copy is still on pager sub-host @j. */
bool split_pager_is_remote(uint64_t g, unsigned j);

#endif /* QEMU_MIGRATION_SPLIT_INTERNAL_H */
