/*
 * Split migration, main host side: the pager's state, shared by the fault
 * thread (split-pager.c) and page-out (split-pageout.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef QEMU_MIGRATION_SPLIT_PAGER_H
#define QEMU_MIGRATION_SPLIT_PAGER_H

#include "qemu/event_notifier.h"
#include "qemu/thread.h"
#include "fctrans/histogram.h"
#include "split-internal.h"

/*
 * Per-page state, the low nibble of SplitPager.state[]:
 *   ABSENT    not mapped here: on a sub-host (the map says which) or
 *             unused; a touch is a page-in
 *   INFLIGHT  claimed by a page-in
 *   PRESENT   resident, and no other copy is current (dirty)
 *   CLEAN     resident and write-protected; its sub-host copy is current
 *             (paged in, not written since): page-out only drops it
 *   EVICTING  being paged out: write-protected, copied, written, then
 *             dropped once the sub-host acknowledged it
 *   DIRTYING  a first write to a clean page is being let through (the
 *             fault thread's own, under place_lock)
 * Resident means PRESENT, CLEAN, EVICTING or DIRTYING. Transitions out of
 * a resident state are compare-and-swap: the fault thread (claims, write
 * faults) and page-out race for the same pages, both holding place_lock
 * for reading; guest discards hold it for writing.
 */
#define SPLIT_PAGE_ABSENT       0
#define SPLIT_PAGE_INFLIGHT     1
#define SPLIT_PAGE_PRESENT      2
#define SPLIT_PAGE_CLEAN        3
#define SPLIT_PAGE_EVICTING     4
#define SPLIT_PAGE_DIRTYING     5
#define SPLIT_PAGE_STATE(s)     ((s) & 0x0f)
/*
 * Flags (PROBED below): DISCARDED on an in-flight or evicting page: the guest discarded
 * it meanwhile, so it gets a zero page, not what the sub-host returns,
 * and an eviction ends with the page unused. REF: accessed since the
 * page-out clock last passed (page-in, write fault). WRITTEN: the guest
 * wrote to an evicting page: the eviction is given up, the page stays.
 */
#define SPLIT_PAGE_DISCARDED    0x10
#define SPLIT_PAGE_REF          0x20
#define SPLIT_PAGE_WRITTEN      0x40
/*
 * PROBED: a dirty page that page-out write-protected when its clock hand
 * passed it without REF; a write before the hand comes back sets REF
 * again (and lifts the protection), so pages the guest keeps writing
 * stay resident.
 */
#define SPLIT_PAGE_PROBED       0x80

static inline bool split_page_resident(uint8_t s)
{
    switch (SPLIT_PAGE_STATE(s)) {
    case SPLIT_PAGE_PRESENT:
    case SPLIT_PAGE_CLEAN:
    case SPLIT_PAGE_EVICTING:
    case SPLIT_PAGE_DIRTYING:
        return true;
    default:
        return false;
    }
}

/* Until the VM may run here, a page that cannot be paged in breaks the load */
#define SPLIT_LOAD_LOADING      0
#define SPLIT_LOAD_MAY_RUN      1
#define SPLIT_LOAD_BROKEN       2

typedef struct SplitPageout SplitPageout;

/* A placement of pages first .. first + npages - 1 of one block. */
typedef struct SplitPlace {
    SplitBlock *b;
    uint64_t first;             /* global page */
    uint32_t npages;
    uint8_t *buf;               /* their contents; NULL: zero pages */
    int subhost;                /* where they were read from, or -1 */
} SplitPlace;

typedef struct SplitPageIn {
    SplitPager *pg;
    unsigned k;
    SplitPlace pl;              /* pl.first: the faulting page */
    int64_t t_fault;            /* ns */
    bool reissued;              /* sent again by a reconnect; under its lock */
} SplitPageIn;

/* A sub-host's reconnection (see "Reconnecting" above). */
typedef struct SplitRecon {
    SplitPager *pg;
    unsigned k;
    QemuMutex lock;
    QemuCond cond;              /* a re-issued read was served or parked */
    /* Under lock: */
    GSList *parked;             /* SplitPageIn: reads waiting to be re-sent */
    unsigned reissued;          /* re-sent reads not completed yet */
    bool active;                /* the reconnect thread runs */
    /*
     * The thread is connecting or reading the identity record: the
     * watchdog bounds that by the deadline, connected or not.
     */
    bool attempting;
    /*
     * The thread may have reconnected, and the export behind the new
     * connection is not checked yet: new reads are parked, not sent.
     */
    bool unverified;
    uint32_t timeout_ms;        /* split-reconnect-timeout of this episode */
    int64_t since;              /* ns: the episode began */
    int64_t deadline;           /* ns: lost when not connected by then */
    char *why;                  /* what began the episode */
    /*
     * An outgoing split migration uses this export (re-migration): @next
     * is its record, which a reconnect accepts too; @keep: its map may
     * keep pages there, so discards are not trimmed there and nothing is
     * paged out there. Discard trims and page-out writes in flight,
     * counted in @trims, complete before the handover goes on. @stale
     * is an earlier outgoing migration's record that could not be undone:
     * it stays on the export until @next's write lands, so it stays
     * accepted as long as @next is.
     */
    FctransExportId next;
    bool has_next;
    FctransExportId stale;
    bool has_stale;
    bool keep;
    unsigned trims;
} SplitRecon;

/* A placement that failed and is retried by the fault thread. */
typedef struct SplitRetry {
    SplitPlace pl;
    uint8_t *alloc;             /* behind pl.buf */
    int err;                    /* last error, -errno */
    int64_t since;              /* ns: first failure */
    int64_t due;                /* ns: next attempt */
    int64_t backoff;            /* ns */
    bool gave_up;               /* the VM was stopped for it */
} SplitRetry;

struct SplitPager {
    SplitIncoming *si;
    uint32_t page_size;
    int uffd;
    QemuThread thread;
    uint8_t *state;             /* SPLIT_PAGE_* | flags, per global page */
    /* Readers: the fault path and placements; writer: guest discards */
    GRWLock place_lock;

    /* Failed placements: handed over by any thread, run by the pager's */
    QemuMutex retry_lock;
    GSList *retry_new;          /* under retry_lock */
    EventNotifier retry_notify;
    GSList *retries;            /* the fault thread's own */

    /* Test hook: fail this many placements with this error (-errno) */
    int inject_err;
    int inject_skip;            /* atomic */
    int inject_left;            /* atomic */

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
    uint64_t retried;
    uint64_t discarded;
    uint64_t dropped_at_start;
    /* Faults on pages handed over to a new main host: they wait for good */
    uint64_t handed_over_faults;
    bool failed;                /* atomic: a page can never be placed */
    int load_state;             /* atomic: SPLIT_LOAD_* */
    /* The fault thread's own: the memory cgroup guard */
    uint64_t memcg_placed;      /* pages claimed since the last check */
    bool memcg_full;
    GArray *memcg_waiting;      /* fault addresses waiting for memory */
    uint64_t stuck;             /* atomic: retries that stopped the VM */
    bool stopping;              /* atomic: the stop thread runs */
    Notifier shutdown;
    SplitRecon recon[SPLIT_MAX_SUBHOSTS];

    /* Fault to page placed, ns; lock-free (relaxed atomics) */
    FctransHist lat;

    /*
     * Page-out (split-pageout.c). @wp: the RAM is registered for
     * write-protection too, remote page-ins are installed write-protected
     * (clean); without it nothing is paged out.
     */
    bool wp;
    const char *no_wp_why;      /* why not, for errors */
    SplitPageout *po;
    uint64_t write_faults;      /* atomic: first writes to clean pages */
    /* The fault thread's own: faults waiting for room in the budget */
    GArray *room_waiting;
    uint64_t room_waits;        /* atomic: faults that waited for room */
    EventNotifier room_notify;  /* page-out made room */
};

static inline uint8_t *split_page_host(SplitBlock *b, uint64_t g,
                                       uint32_t page_size)
{
    return b->rb->host + (g - b->first_page) * page_size;
}

/* The pager of this VM, or NULL. */
SplitPager *split_pager_get(void);
/* The split block holding global page @g. */
SplitBlock *split_pager_block_of(SplitPager *pg, uint64_t g);
/* userfaultfd: wake the threads waiting on a range; write-protect or not */
void split_uffd_wake(int fd, void *dst, uint64_t len);
int split_uffd_protect(SplitPager *pg, void *dst, uint64_t len, bool wp);

/* split-pageout.c */

/*
 * Start page-out for @pg, whose RAM is registered for write-protection,
 * with a budget of @budget_pages (at least FCTRANS_BUDGET_MIN_PAGES).
 */
SplitPageout *split_pageout_start(SplitPager *pg, uint64_t budget_pages);
/*
 * The fault thread: whether a page-in of up to @want pages fits in the
 * budget now, and how many (0: the fault waits for room, and page-out
 * sets pg->room_notify once it made some).
 */
uint32_t split_pageout_room(SplitPageout *po, uint32_t want);
/* A page was placed: page out if that passed the high watermark. */
void split_pageout_placed(SplitPageout *po);
/* The budget in pages. */
uint64_t split_pageout_budget(SplitPageout *po);
/*
 * An outgoing migration keeps (@hold) or no longer keeps sub-host
 * exports: nothing is paged out while any does, and faults do not wait
 * for room.
 */
void split_pageout_hold(SplitPageout *po, bool hold);
/* Page-out's members of query-split-memory. */
void split_pageout_fill_info(SplitPageout *po, SplitMemoryInfo *info);

#endif /* QEMU_MIGRATION_SPLIT_PAGER_H */
