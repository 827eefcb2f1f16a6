/*
 * fctrans: the sub-host channel (guest pages stored on an NBD server)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Design notes (see subhost.h for the contract):
 *
 * - Each lane is one libnbd handle driven by one thread of ours that polls
 *   its socket and an eventfd. Submitters call nbd_aio_*() directly: when
 *   the connection is idle, libnbd writes the request from the submitting
 *   thread, so a page-in costs the same two wake-ups as a plain TCP round
 *   trip (server, then our reply thread) and no thread hop.
 * - libnbd may run a completion callback in whichever thread drives its
 *   state machine, holding the handle lock, so its callback here only moves
 *   the request to the lane's done list. The lane thread then runs the
 *   caller's callback with no lock held (callbacks may submit more work).
 * - libnbd closes its socket when the connection dies, and the descriptor
 *   number may be reused at once, so the lane polls and shuts down a dup()
 *   of it that only we close.
 * - Locks are pthread ones rather than GMutex, so that ThreadSanitizer
 *   can check this file (glib's futex-based mutexes are invisible to it).
 * - The first lane to fail fails the whole sub-host: the other lanes are
 *   shut down too, every request in flight completes with an error, and
 *   the caller sees one consistent failure.
 */
#include "subhost.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define SUBHOST_DEFAULT_PAGE_SIZE       4096
#define SUBHOST_DEFAULT_CONNECT_MS      10000
#define SUBHOST_DEFAULT_REQUEST_MS      60000
/* How long close() lets an idle connection say goodbye (NBD_CMD_DISC). */
#define SUBHOST_DISCONNECT_MS           1000
/* QEMU's tls-creds-psk uses this identity when none is given. */
#define SUBHOST_DEFAULT_PSK_USERNAME    "qemu"

enum {
    LANE_URGENT,
    LANE_BULK,
    LANE__MAX,
};

/*
 * Latency histogram: 16 linear sub-buckets per power of two, so that a
 * percentile is within 1/16 (6.25%) of the true value, over the whole
 * uint64_t range, in under 8 KiB per operation.
 */
#define HIST_SUB_BITS   4
#define HIST_SUB        (1u << HIST_SUB_BITS)
#define HIST_BUCKETS    ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct SubhostOpCounters {
    uint64_t requests;
    uint64_t bytes;
    uint64_t errors;
    uint64_t lat_sum_ns;
    uint64_t lat_max_ns;
    uint64_t hist[HIST_BUCKETS];
} SubhostOpCounters;

typedef struct SubhostLane SubhostLane;
typedef struct SubhostReq SubhostReq;

struct SubhostReq {
    SubhostLane *lane;
    FctransSubhostOp op;
    uint64_t offset;
    size_t len;
    FctransSubhostDone *done;
    void *opaque;
    int64_t start_ns;
    int error;                  /* errno from libnbd; 0 = success */
    bool sync;                  /* done() runs once no longer in flight */
    SubhostReq *prev, *next;    /* in the lane's in-flight or done list */
};

typedef struct SubhostList {
    SubhostReq *head, *tail;
} SubhostList;

struct SubhostLane {
    FctransSubhost *sh;
    const char *name;
    struct nbd_handle *nbd;
    int sock;                   /* our dup() of libnbd's socket */
    int wake_fd;                /* eventfd: new work, failure, close */
    GThread *thread;

    pthread_mutex_t lock;                /* protects everything below */
    SubhostList in_flight;      /* oldest first */
    SubhostList done;           /* completed, callback not yet run */
    bool failed;                /* no new requests; thread exits when idle */
    bool disconnecting;         /* close() sent NBD_CMD_DISC */
    int64_t disconnect_deadline_ns;
};

struct FctransSubhost {
    char *id;
    char *uri;
    char *x509_dir;
    char *psk_file;
    char *username;
    bool unix_socket;
    uint64_t min_size;
    uint32_t page_size;
    unsigned page_shift;
    unsigned lanes_wanted;
    unsigned connect_timeout_ms;
    unsigned request_timeout_ms;

    uint64_t export_size;
    unsigned nlanes;
    SubhostLane lane[LANE__MAX];

    /*
     * Submitters hold it for reading while they touch a lane's handle;
     * reconnect and close take it for writing to replace handles.
     */
    pthread_rwlock_t handles_lock;
    /* Serializes fctrans_subhost_reconnect() and close. */
    pthread_mutex_t reconnect_lock;

    /* Set (with failure) on the first lane failure; atomic for readers. */
    int failed;
    int closing;
    pthread_mutex_t fail_lock;
    char *failure;

    /*
     * Capacity accounting, one bit per page in each map. A page is held
     * (charged) while a write of it is in flight and once the server
     * acknowledged one; it is stored only in the second case. Held pages
     * that are not stored belong to writes in flight: a write that fails
     * or is refused gives them back, so that both maps only ever reflect
     * acknowledged writes once nothing is in flight.
     */
    pthread_mutex_t acct_lock;
    unsigned long *held;
    unsigned long *stored;
    uint64_t npages;
    uint64_t capacity;
    uint64_t used;              /* bytes held */

    /* Requests accepted and whose callback has not returned (atomic). */
    uint64_t in_flight;
    pthread_mutex_t drain_lock;
    pthread_cond_t drain_cond;
    GError *first_error;

    /* Statistics, updated with relaxed atomics. */
    SubhostOpCounters ops[FCTRANS_SUBHOST_OP__MAX];
    uint64_t refused;
    uint64_t nospace;
    uint64_t reconnects;
};

/* The lane whose thread we are running on, if any. */
static __thread SubhostLane *current_lane;

static const char *const op_names[FCTRANS_SUBHOST_OP__MAX] = {
    [FCTRANS_SUBHOST_OP_READ] = "read",
    [FCTRANS_SUBHOST_OP_WRITE] = "write",
    [FCTRANS_SUBHOST_OP_TRIM] = "trim",
};

const char *fctrans_subhost_op_name(FctransSubhostOp op)
{
    return op < FCTRANS_SUBHOST_OP__MAX ? op_names[op] : "?";
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void stat_add(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static uint64_t stat_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void stat_max(uint64_t *p, uint64_t v)
{
    uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);

    while (v > cur &&
           !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
        /* cur was reloaded */
    }
}

/* libnbd prefixes messages with the API call: "nbd_aio_notify_read: " */
static const char *nbd_error_text(const char *msg)
{
    const char *p;

    if (!msg) {
        return "unknown error";
    }
    p = strstr(msg, ": ");
    if (g_str_has_prefix(msg, "nbd_") && p) {
        return p + 2;
    }
    return msg;
}

/* Latency histogram */

static unsigned hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < HIST_SUB) {
        return v;
    }
    msb = 63 - __builtin_clzll(v);
    shift = msb - HIST_SUB_BITS;
    return (shift + 1) * HIST_SUB + ((v >> shift) & (HIST_SUB - 1));
}

/* Middle of the range of values that land in bucket @i. */
static uint64_t hist_value(unsigned i)
{
    unsigned shift;
    uint64_t low;

    if (i < HIST_SUB) {
        return i;
    }
    shift = i / HIST_SUB - 1;
    low = (uint64_t)(HIST_SUB + i % HIST_SUB) << shift;
    return low + ((1ull << shift) >> 1);
}

static uint64_t hist_percentile(const uint64_t *hist, uint64_t total,
                                unsigned permille)
{
    uint64_t rank, seen = 0;
    unsigned i;

    if (!total) {
        return 0;
    }
    /* The smallest value with at least permille/1000 of samples <= it. */
    rank = (total * permille + 999) / 1000;
    if (!rank) {
        rank = 1;
    }
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += stat_get(&hist[i]);
        if (seen >= rank) {
            return hist_value(i);
        }
    }
    return hist_value(HIST_BUCKETS - 1);
}

/* Capacity accounting */

#define BITS_PER_WORD   (8 * sizeof(unsigned long))

/* Mask of the bits of pages [first, first + span) in their word. */
static unsigned long bitmap_mask(uint64_t first, unsigned span)
{
    unsigned bit = first % BITS_PER_WORD;

    return span == BITS_PER_WORD ? ~0ul : ((1ul << span) - 1) << bit;
}

/*
 * Pages [first, first + n): with @set, set them in @map; without, clear
 * those that are not set in @keep (NULL: clear them all). Returns how
 * many bits changed; with @dry_run, only count them.
 */
static uint64_t bitmap_update(unsigned long *map, const unsigned long *keep,
                              uint64_t first, uint64_t n, bool set,
                              bool dry_run)
{
    uint64_t changed = 0;

    while (n) {
        uint64_t word = first / BITS_PER_WORD;
        unsigned span = MIN(n, BITS_PER_WORD - first % BITS_PER_WORD);
        unsigned long mask = bitmap_mask(first, span);
        unsigned long flip;

        if (set) {
            flip = ~map[word] & mask;
        } else {
            flip = map[word] & mask & (keep ? ~keep[word] : ~0ul);
        }
        changed += __builtin_popcountl(flip);
        if (!dry_run) {
            map[word] ^= flip;
        }
        first += span;
        n -= span;
    }
    return changed;
}

/* Reserve the pages a write is about to place; before it is sent. */
static bool subhost_charge(FctransSubhost *sh, uint64_t offset, size_t len,
                           GError **errp)
{
    uint64_t first = offset >> sh->page_shift;
    uint64_t n = len >> sh->page_shift;
    uint64_t fresh;

    pthread_mutex_lock(&sh->acct_lock);
    fresh = bitmap_update(sh->held, NULL, first, n, true, true)
            << sh->page_shift;
    if (sh->used + fresh > sh->capacity) {
        uint64_t used = sh->used;

        pthread_mutex_unlock(&sh->acct_lock);
        stat_add(&sh->nospace, 1);
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE,
                    "sub-host %s: out of capacity: %" PRIu64 " of %" PRIu64
                    " bytes used, write of %" PRIu64 " new bytes at 0x%"
                    PRIx64 " refused", sh->id, used, sh->capacity, fresh,
                    offset);
        return false;
    }
    bitmap_update(sh->held, NULL, first, n, true, false);
    sh->used += fresh;
    pthread_mutex_unlock(&sh->acct_lock);
    return true;
}

/*
 * A write was acknowledged (@ok) or failed, or was refused after
 * subhost_charge(). Acknowledged pages are stored; the others give back
 * their reservation, except pages an earlier write stored: the server
 * still holds a version of those (which one is undefined after a failed
 * write), so they stay stored and charged until a trim.
 */
static void subhost_write_settled(FctransSubhost *sh, uint64_t offset,
                                  size_t len, bool ok)
{
    uint64_t first = offset >> sh->page_shift;
    uint64_t n = len >> sh->page_shift;

    pthread_mutex_lock(&sh->acct_lock);
    if (ok) {
        bitmap_update(sh->stored, NULL, first, n, true, false);
    } else {
        sh->used -= bitmap_update(sh->held, sh->stored, first, n, false,
                                  false) << sh->page_shift;
    }
    pthread_mutex_unlock(&sh->acct_lock);
}

/* A trim was acknowledged: the pages are gone from the server. */
static void subhost_uncharge(FctransSubhost *sh, uint64_t offset, size_t len)
{
    uint64_t first = offset >> sh->page_shift;
    uint64_t n = len >> sh->page_shift;

    pthread_mutex_lock(&sh->acct_lock);
    bitmap_update(sh->stored, NULL, first, n, false, false);
    sh->used -= bitmap_update(sh->held, NULL, first, n, false, false)
                << sh->page_shift;
    pthread_mutex_unlock(&sh->acct_lock);
}

bool fctrans_subhost_page_stored(FctransSubhost *sh, uint64_t offset)
{
    uint64_t page = offset >> sh->page_shift;
    bool ret;

    if (page >= sh->npages) {
        return false;
    }
    pthread_mutex_lock(&sh->acct_lock);
    ret = sh->stored[page / BITS_PER_WORD] & (1ul << (page % BITS_PER_WORD));
    pthread_mutex_unlock(&sh->acct_lock);
    return ret;
}

/* Request lists (under the lane lock) */

static void list_append(SubhostList *l, SubhostReq *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail) {
        l->tail->next = r;
    } else {
        l->head = r;
    }
    l->tail = r;
}

static void list_remove(SubhostList *l, SubhostReq *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        l->head = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    } else {
        l->tail = r->prev;
    }
    r->prev = r->next = NULL;
}

/* Failure */

static void lane_wake(SubhostLane *lane)
{
    uint64_t one = 1;
    ssize_t r;

    do {
        r = write(lane->wake_fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, so the thread wakes anyway. */
}

static bool subhost_is_failed(FctransSubhost *sh)
{
    return __atomic_load_n(&sh->failed, __ATOMIC_ACQUIRE);
}

/* Stop every lane: no new requests, connections shut down. */
static void subhost_shutdown_lanes(FctransSubhost *sh)
{
    unsigned i;

    for (i = 0; i < sh->nlanes; i++) {
        SubhostLane *lane = &sh->lane[i];

        pthread_mutex_lock(&lane->lock);
        lane->failed = true;
        pthread_mutex_unlock(&lane->lock);
        if (lane->sock >= 0) {
            shutdown(lane->sock, SHUT_RDWR);
        }
        lane_wake(lane);
    }
}

/*
 * Fail the sub-host: no new requests, every lane's connection shut down so
 * that libnbd fails all their requests in flight. The first reason wins.
 */
static void subhost_fail(FctransSubhost *sh, const char *why)
{
    bool first;

    pthread_mutex_lock(&sh->fail_lock);
    if (!sh->failure) {
        sh->failure = g_strdup(why);
    }
    first = !__atomic_load_n(&sh->failed, __ATOMIC_RELAXED);
    __atomic_store_n(&sh->failed, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&sh->fail_lock);
    /*
     * Every request aborted by a dead connection lands here: shut the
     * lanes down once. (close() and reconnect() shut down lanes they
     * start or stop themselves.)
     */
    if (first) {
        subhost_shutdown_lanes(sh);
    }
}

/* Returns a copy of the failure reason. */
static char *subhost_failure(FctransSubhost *sh)
{
    char *s;

    pthread_mutex_lock(&sh->fail_lock);
    s = g_strdup(sh->failure ? sh->failure : "connection lost");
    pthread_mutex_unlock(&sh->fail_lock);
    return s;
}

/* Completion */

static void subhost_request_finished(FctransSubhost *sh)
{
    if (__atomic_sub_fetch(&sh->in_flight, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_mutex_lock(&sh->drain_lock);
        pthread_cond_broadcast(&sh->drain_cond);
        pthread_mutex_unlock(&sh->drain_lock);
    }
}

static GError *subhost_request_error(FctransSubhost *sh, SubhostReq *req)
{
    int code;
    g_autofree char *why = NULL;

    switch (req->error) {
    case ENOTCONN:
        /* libnbd's code for requests aborted by a dead connection */
        why = subhost_failure(sh);
        code = FCTRANS_ERROR_IO;
        break;
    case ENOSPC:
        why = g_strdup("server is out of space");
        code = FCTRANS_ERROR_NOSPACE;
        break;
    case EPERM:
    case EACCES:
    case EROFS:
        why = g_strdup_printf("refused by the server: %s",
                              g_strerror(req->error));
        code = FCTRANS_ERROR_DENIED;
        break;
    default:
        why = g_strdup_printf("server error: %s", g_strerror(req->error));
        code = FCTRANS_ERROR_IO;
        break;
    }
    return g_error_new(FCTRANS_ERROR, code,
                       "sub-host %s: %s of %zu bytes at 0x%" PRIx64
                       " failed: %s", sh->id, op_names[req->op], req->len,
                       req->offset, why);
}

static void subhost_complete(FctransSubhost *sh, SubhostReq *req)
{
    SubhostOpCounters *c = &sh->ops[req->op];
    uint64_t lat = now_ns() - req->start_ns;
    FctransSubhostDone *done;
    GError *err = NULL;
    void *opaque;
    bool sync;

    stat_add(&c->requests, 1);
    if (req->error) {
        err = subhost_request_error(sh, req);
        stat_add(&c->errors, 1);
    } else {
        stat_add(&c->bytes, req->len);
        stat_add(&c->lat_sum_ns, lat);
        stat_max(&c->lat_max_ns, lat);
        stat_add(&c->hist[hist_index(lat)], 1);
        if (req->op == FCTRANS_SUBHOST_OP_TRIM) {
            subhost_uncharge(sh, req->offset, req->len);
        }
    }
    /* Settled before the callback runs: it may look, or write again. */
    if (req->op == FCTRANS_SUBHOST_OP_WRITE) {
        subhost_write_settled(sh, req->offset, req->len, !req->error);
    }

    if (!req->sync) {
        req->done(req->opaque, err);
    }
    if (err) {
        pthread_mutex_lock(&sh->drain_lock);
        if (!sh->first_error) {
            sh->first_error = g_error_copy(err);
        }
        pthread_mutex_unlock(&sh->drain_lock);
    }
    done = req->done;
    opaque = req->opaque;
    sync = req->sync;
    g_free(req);
    subhost_request_finished(sh);
    if (sync) {
        /*
         * A synchronous call returns once its request no longer counts
         * as in flight; its waiter needs nothing of the channel.
         */
        done(opaque, err);
    }
    g_clear_error(&err);
}

/* Run the callbacks of completed requests; lane thread only. */
static void lane_deliver(SubhostLane *lane)
{
    for (;;) {
        SubhostReq *req;

        pthread_mutex_lock(&lane->lock);
        req = lane->done.head;
        lane->done.head = lane->done.tail = NULL;
        pthread_mutex_unlock(&lane->lock);
        if (!req) {
            return;
        }
        while (req) {
            SubhostReq *next = req->next;

            subhost_complete(lane->sh, req);
            req = next;
        }
    }
}

/*
 * libnbd completion callback: runs with the handle lock held, in the lane
 * thread or (when the connection dies during a submission) in the
 * submitting thread. Only queue the request for the lane thread.
 */
static int subhost_nbd_done(void *user_data, int *error)
{
    SubhostReq *req = user_data;
    SubhostLane *lane = req->lane;

    req->error = *error;
    if (*error == ENOTCONN) {
        /*
         * Aborted because the connection died: libnbd set this thread's
         * error message just before; it is the best reason we will get.
         */
        const char *msg = nbd_get_error();

        subhost_fail(lane->sh, nbd_error_text(msg));
    }
    pthread_mutex_lock(&lane->lock);
    list_remove(&lane->in_flight, req);
    list_append(&lane->done, req);
    pthread_mutex_unlock(&lane->lock);
    if (current_lane != lane) {
        lane_wake(lane);
    }
    return 1; /* retire the command: we never use its cookie */
}

/* Lane thread */

static bool lane_nbd_finished(SubhostLane *lane)
{
    return nbd_aio_is_dead(lane->nbd) || nbd_aio_is_closed(lane->nbd);
}

/* Poll timeout in ms: the next request deadline, or close's deadline. */
static int lane_poll_timeout(SubhostLane *lane, int64_t now)
{
    FctransSubhost *sh = lane->sh;
    int64_t timeout_ns = (int64_t)sh->request_timeout_ms * 1000000;
    int64_t wait_ns = timeout_ns;

    pthread_mutex_lock(&lane->lock);
    if (lane->in_flight.head) {
        wait_ns = lane->in_flight.head->start_ns + timeout_ns - now;
    }
    if (lane->disconnecting) {
        wait_ns = MIN(wait_ns, lane->disconnect_deadline_ns - now);
    }
    pthread_mutex_unlock(&lane->lock);

    /*
     * An idle lane wakes once per request timeout: a request submitted
     * meanwhile has a later deadline, so none can be missed.
     */
    if (wait_ns <= 0) {
        return 0;
    }
    return MIN((wait_ns + 999999) / 1000000, INT_MAX);
}

/* Fail the sub-host if the oldest request waited too long. */
static void lane_check_timeouts(SubhostLane *lane, int64_t now)
{
    FctransSubhost *sh = lane->sh;
    int64_t timeout_ns = (int64_t)sh->request_timeout_ms * 1000000;
    bool expired = false, disconnect_expired = false;
    g_autofree char *why = NULL;

    pthread_mutex_lock(&lane->lock);
    if (lane->in_flight.head &&
        now - lane->in_flight.head->start_ns >= timeout_ns) {
        SubhostReq *r = lane->in_flight.head;

        expired = true;
        why = g_strdup_printf("no reply from the server on the %s lane for "
                              "%u ms (%s at 0x%" PRIx64 ")", lane->name,
                              sh->request_timeout_ms, op_names[r->op],
                              r->offset);
    }
    if (lane->disconnecting && now >= lane->disconnect_deadline_ns) {
        disconnect_expired = true;
    }
    pthread_mutex_unlock(&lane->lock);

    if (expired) {
        subhost_fail(sh, why);
    } else if (disconnect_expired) {
        shutdown(lane->sock, SHUT_RDWR);
    }
}

static bool lane_idle_and_failed(SubhostLane *lane)
{
    bool ret;

    pthread_mutex_lock(&lane->lock);
    ret = lane->failed && !lane->in_flight.head && !lane->done.head;
    pthread_mutex_unlock(&lane->lock);
    return ret;
}

static gpointer lane_thread(gpointer opaque)
{
    SubhostLane *lane = opaque;
    FctransSubhost *sh = lane->sh;

    current_lane = lane;
    for (;;) {
        struct pollfd pfd[2];
        bool finished = lane_nbd_finished(lane);
        unsigned dir = finished ? 0 : nbd_aio_get_direction(lane->nbd);
        int r;

        pfd[0].fd = finished ? -1 : lane->sock;
        pfd[0].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                        ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
        pfd[0].revents = 0;
        pfd[1].fd = lane->wake_fd;
        pfd[1].events = POLLIN;
        pfd[1].revents = 0;

        r = poll(pfd, 2, lane_poll_timeout(lane, now_ns()));
        if (r < 0 && errno != EINTR) {
            g_autofree char *why = g_strdup_printf("poll: %s",
                                                   g_strerror(errno));
            subhost_fail(sh, why);
            pfd[0].revents = pfd[1].revents = 0;
        }
        if (pfd[1].revents & POLLIN) {
            uint64_t cnt;

            if (read(lane->wake_fd, &cnt, sizeof(cnt)) < 0) {
                /* EAGAIN: another wake-up was consumed already */
            }
        }
        if (pfd[0].revents) {
            short ev = pfd[0].revents;
            int ret = 0;

            /*
             * Notify only for directions the state machine wants now: an
             * unexpected event is an error in libnbd. A read may change
             * the state, so look again before writing.
             */
            if ((ev & (POLLIN | POLLHUP | POLLERR)) &&
                (nbd_aio_get_direction(lane->nbd) &
                 LIBNBD_AIO_DIRECTION_READ)) {
                ret = nbd_aio_notify_read(lane->nbd);
            }
            if (ret != -1 && (ev & (POLLOUT | POLLHUP | POLLERR)) &&
                !lane_nbd_finished(lane) &&
                (nbd_aio_get_direction(lane->nbd) &
                 LIBNBD_AIO_DIRECTION_WRITE)) {
                ret = nbd_aio_notify_write(lane->nbd);
            }
            if (ret == -1) {
                const char *msg = nbd_get_error();

                /* Never leave a handle in a state we could spin on. */
                subhost_fail(sh, nbd_error_text(msg));
            }
        }
        if (lane_nbd_finished(lane)) {
            pthread_mutex_lock(&lane->lock);
            if (!lane->failed && !lane->disconnecting) {
                pthread_mutex_unlock(&lane->lock);
                subhost_fail(sh, "server closed the connection");
            } else {
                lane->failed = true;
                pthread_mutex_unlock(&lane->lock);
            }
        }
        lane_deliver(lane);
        lane_check_timeouts(lane, now_ns());
        if (lane_nbd_finished(lane) && lane_idle_and_failed(lane)) {
            break;
        }
    }
    current_lane = NULL;
    return NULL;
}

/* Connecting */

/*
 * Turn a libnbd failure to connect into an error: IO when the server
 * could not be reached or the connection broke, DENIED when the server
 * refused us (TLS handshake, TLS policy, no such export).
 */
static int subhost_connect_error_code(const char *msg, int e)
{
    /* libnbd names the failing step: resolving or connecting the socket */
    if (msg && (strstr(msg, "connect: ") || strstr(msg, "getaddrinfo"))) {
        return FCTRANS_ERROR_IO;
    }
    /*
     * Past the TCP connection, a TLS failure is the server refusing our
     * credentials (with TLS 1.3 a refused client certificate shows up
     * only on the first record, often as a reset connection).
     */
    if (msg && strstr(msg, "gnutls_")) {
        return FCTRANS_ERROR_DENIED;
    }
    switch (e) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ETIMEDOUT:
    case EADDRNOTAVAIL:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
        return FCTRANS_ERROR_IO;
    }
    if (msg && strstr(msg, "disconnected")) {
        return FCTRANS_ERROR_IO;
    }
    /* The server refused the handshake: TLS policy, no such export */
    return FCTRANS_ERROR_DENIED;
}

static void subhost_connect_error(FctransSubhost *sh, const char *lane,
                                  GError **errp)
{
    const char *msg = nbd_get_error();
    int e = nbd_get_errno();
    int code = subhost_connect_error_code(msg, e);
    bool tls = msg && strstr(msg, "gnutls_");

    g_set_error(errp, FCTRANS_ERROR, code,
                "sub-host %s: cannot connect to %s (%s lane): %s%s", sh->id,
                sh->uri, lane,
                msg ? nbd_error_text(msg) : g_strerror(e ? e : EIO),
                code == FCTRANS_ERROR_DENIED && tls ?
                " (TLS handshake refused: are these credentials the ones "
                "the export was given for this VM?)" : "");
}

static struct nbd_handle *subhost_nbd_new(FctransSubhost *sh,
                                          const char *lane, GError **errp)
{
    struct nbd_handle *nbd = nbd_create();
    g_autofree char *name = g_strdup_printf("%s-%s", sh->id, lane);
    bool tls = sh->x509_dir || sh->psk_file;
    int ok = 0;

    if (!nbd) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                    "sub-host %s: nbd_create: %s", sh->id, nbd_get_error());
        return NULL;
    }
    ok |= nbd_set_handle_name(nbd, name);
    /* Credentials come from the configuration only, never from the URI. */
    ok |= nbd_set_uri_allow_local_file(nbd, false);
    ok |= nbd_set_uri_allow_tls(nbd, tls ? LIBNBD_TLS_ALLOW
                                         : LIBNBD_TLS_DISABLE);
    ok |= nbd_set_tls(nbd, tls ? LIBNBD_TLS_REQUIRE : LIBNBD_TLS_DISABLE);
    if (sh->x509_dir) {
        ok |= nbd_set_tls_certificates(nbd, sh->x509_dir);
        ok |= nbd_set_tls_verify_peer(nbd, true);
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
        if (sh->unix_socket) {
            /* Unix sockets have no host name to check the certificate by */
            ok |= nbd_set_tls_hostname(nbd, "localhost");
        }
#endif
    }
    if (sh->psk_file) {
        ok |= nbd_set_tls_psk_file(nbd, sh->psk_file);
        ok |= nbd_set_tls_username(nbd, sh->username);
    }
    if (ok) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: %s", sh->id, nbd_get_error());
        nbd_close(nbd);
        return NULL;
    }
    return nbd;
}

/* Connect @nbd to the URI, waiting at most the connect timeout. */
static bool subhost_nbd_connect(FctransSubhost *sh, struct nbd_handle *nbd,
                                const char *lane, GError **errp)
{
    int64_t deadline = now_ns() + (int64_t)sh->connect_timeout_ms * 1000000;

    if (nbd_aio_connect_uri(nbd, sh->uri) == -1) {
        subhost_connect_error(sh, lane, errp);
        return false;
    }
    while (!nbd_aio_is_ready(nbd)) {
        unsigned dir;
        struct pollfd pfd;
        int64_t left = deadline - now_ns();
        int r, ret = 0;

        if (nbd_aio_is_dead(nbd) || nbd_aio_is_closed(nbd)) {
            subhost_connect_error(sh, lane, errp);
            return false;
        }
        if (left <= 0) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                        "sub-host %s: cannot connect to %s (%s lane): timed "
                        "out after %u ms", sh->id, sh->uri, lane,
                        sh->connect_timeout_ms);
            return false;
        }
        dir = nbd_aio_get_direction(nbd);
        pfd.fd = nbd_aio_get_fd(nbd);
        pfd.events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                     ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
        pfd.revents = 0;
        r = poll(&pfd, 1, MAX(1, left / 1000000));
        if (r < 0 && errno != EINTR) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                        "sub-host %s: poll: %s", sh->id, g_strerror(errno));
            return false;
        }
        if (r <= 0) {
            continue;
        }
        if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) &&
            (dir & LIBNBD_AIO_DIRECTION_READ)) {
            ret = nbd_aio_notify_read(nbd);
        } else if ((pfd.revents & (POLLOUT | POLLHUP | POLLERR)) &&
                   (dir & LIBNBD_AIO_DIRECTION_WRITE)) {
            ret = nbd_aio_notify_write(nbd);
        }
        if (ret == -1) {
            subhost_connect_error(sh, lane, errp);
            return false;
        }
    }
    if ((sh->x509_dir || sh->psk_file) && nbd_get_tls_negotiated(nbd) != 1) {
        /* libnbd enforces LIBNBD_TLS_REQUIRE; check it anyway. */
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: TLS was not negotiated with %s", sh->id,
                    sh->uri);
        return false;
    }
    return true;
}

/* Check an export (first lane) or that a further lane sees the same one. */
static bool subhost_check_export(FctransSubhost *sh, struct nbd_handle *nbd,
                                 bool first, GError **errp)
{
    int64_t size = nbd_get_size(nbd);

    if (size < 0) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: cannot get the export size: %s", sh->id,
                    nbd_get_error());
        return false;
    }
    if (!first) {
        if ((uint64_t)size != sh->export_size) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                        "sub-host %s: export %s changed size from %" PRIu64
                        " to %" PRId64 " bytes", sh->id, sh->uri,
                        sh->export_size, size);
            return false;
        }
        return true;
    }
    if ((uint64_t)size < sh->min_size) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: export %s is %" PRId64 " bytes, smaller "
                    "than the %" PRIu64 " bytes needed", sh->id, sh->uri,
                    size, sh->min_size);
        return false;
    }
    if (nbd_is_read_only(nbd) == 1) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: export %s is read-only", sh->id, sh->uri);
        return false;
    }
    if (nbd_can_trim(nbd) != 1) {
        /* Without trim, dropped pages would keep the server's memory. */
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "sub-host %s: export %s does not support trim", sh->id,
                    sh->uri);
        return false;
    }
    sh->export_size = size;
    return true;
}

/* Connect every lane into @nbd[]; on success sh->nlanes is set. */
static bool subhost_connect_all(FctransSubhost *sh,
                                struct nbd_handle *nbd[LANE__MAX],
                                bool reconnect, GError **errp)
{
    unsigned want, i;

    for (i = 0; i < LANE__MAX; i++) {
        nbd[i] = NULL;
    }
    nbd[0] = subhost_nbd_new(sh, "urgent", errp);
    if (!nbd[0] || !subhost_nbd_connect(sh, nbd[0], "urgent", errp) ||
        !subhost_check_export(sh, nbd[0], !reconnect, errp)) {
        goto fail;
    }

    if (reconnect) {
        want = sh->nlanes;
    } else if (sh->lanes_wanted) {
        want = sh->lanes_wanted;
    } else {
        want = nbd_can_multi_conn(nbd[0]) == 1 ? 2 : 1;
    }
    if (want > 1 && nbd_can_multi_conn(nbd[0]) != 1) {
        /*
         * Without multi-conn, a read on one connection need not see a
         * write acknowledged on another.
         */
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "sub-host %s: export %s does not allow several "
                    "connections (no multi-conn); use one lane", sh->id,
                    sh->uri);
        goto fail;
    }
    for (i = 1; i < want; i++) {
        GError *err = NULL;

        nbd[i] = subhost_nbd_new(sh, "bulk", errp);
        if (!nbd[i]) {
            goto fail;
        }
        /* A local error: @errp may be NULL, and we add to the message. */
        if (!subhost_nbd_connect(sh, nbd[i], "bulk", &err) ||
            !subhost_check_export(sh, nbd[i], false, &err)) {
            char *msg = g_strdup_printf("%s (the urgent lane was accepted: "
                                        "does the server limit clients? "
                                        "this client needs %u connections)",
                                        err->message, want);

            g_free(err->message);
            err->message = msg;
            g_propagate_error(errp, err);
            goto fail;
        }
    }
    sh->nlanes = want;
    return true;

fail:
    for (i = 0; i < LANE__MAX; i++) {
        if (nbd[i]) {
            nbd_close(nbd[i]);
            nbd[i] = NULL;
        }
    }
    return false;
}

/*
 * Give a stopped lane its connection; its thread is started separately,
 * once every lane has one (see subhost_start_lanes()).
 */
static bool lane_attach(FctransSubhost *sh, SubhostLane *lane,
                        struct nbd_handle *nbd, GError **errp)
{
    int fd = nbd_aio_get_fd(nbd);
    int sock = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;

    if (sock < 0) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: cannot duplicate the socket: %s", sh->id,
                    g_strerror(errno));
        return false;
    }
    pthread_mutex_lock(&lane->lock);
    lane->sock = sock;
    lane->nbd = nbd;
    lane->failed = false;
    lane->disconnecting = false;
    pthread_mutex_unlock(&lane->lock);
    return true;
}

/* Wait for the lane thread, then free the handle. */
static void lane_stop(SubhostLane *lane)
{
    if (lane->thread) {
        g_thread_join(lane->thread);
        lane->thread = NULL;
    }
    /* A submitter that got past the sub-host check must find it failed. */
    pthread_mutex_lock(&lane->lock);
    lane->failed = true;
    pthread_mutex_unlock(&lane->lock);
    if (lane->nbd) {
        nbd_close(lane->nbd);
        lane->nbd = NULL;
    }
    if (lane->sock >= 0) {
        close(lane->sock);
        lane->sock = -1;
    }
}

/*
 * Install @nbd[] in the (stopped) lanes, mark the sub-host healthy, then
 * start the lane threads; with handles_lock held for writing, or before
 * the sub-host is shared. A lane can only fail once its thread runs,
 * hence after the sub-host was marked healthy: subhost_fail() then sees
 * the failure as the first one and shuts every lane down, so that no
 * failure is swallowed by a sub-host marked healthy after it. On error,
 * the sub-host stays failed, every handle is closed and no thread runs.
 */
static bool subhost_start_lanes(FctransSubhost *sh,
                                struct nbd_handle *nbd[LANE__MAX],
                                GError **errp)
{
    unsigned i, j;

    for (i = 0; i < sh->nlanes; i++) {
        lane_stop(&sh->lane[i]);
        if (!lane_attach(sh, &sh->lane[i], nbd[i], errp)) {
            for (j = 0; j < i; j++) {
                lane_stop(&sh->lane[j]);
            }
            for (j = i; j < sh->nlanes; j++) {
                nbd_close(nbd[j]);
            }
            return false;
        }
    }

    pthread_mutex_lock(&sh->fail_lock);
    g_clear_pointer(&sh->failure, g_free);
    __atomic_store_n(&sh->failed, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&sh->fail_lock);

    for (i = 0; i < sh->nlanes; i++) {
        SubhostLane *lane = &sh->lane[i];
        g_autofree char *tname = g_strdup_printf("subhost-%s", lane->name);

        lane->thread = g_thread_new(tname, lane_thread, lane);
    }
    return true;
}

/* Opening and closing */

static bool subhost_check_uri(const FctransSubhostConfig *cfg, bool tls,
                              GError **errp)
{
    g_autoptr(GUri) uri = g_uri_parse(cfg->uri, G_URI_FLAGS_ENCODED_QUERY,
                                      NULL);
    const char *scheme;
    const char *query;

    if (!uri) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: invalid URI '%s'", cfg->id, cfg->uri);
        return false;
    }
    scheme = g_uri_get_scheme(uri);
    if (strcmp(scheme, "nbd") && strcmp(scheme, "nbds") &&
        strcmp(scheme, "nbd+unix") && strcmp(scheme, "nbds+unix")) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: URI '%s' is not nbd://, nbds://, "
                    "nbd+unix:// or nbds+unix://", cfg->id, cfg->uri);
        return false;
    }
    if (!tls && g_str_has_prefix(scheme, "nbds")) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: URI '%s' asks for TLS but no TLS "
                    "credentials were given", cfg->id, cfg->uri);
        return false;
    }
#ifndef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
    if (cfg->tls_x509_dir && g_str_has_suffix(scheme, "+unix")) {
        /*
         * libnbd before 1.22 checks the server's certificate only when it
         * has a host name, which Unix sockets lack: fail closed.
         */
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "sub-host %s: this libnbd cannot verify the server's "
                    "x509 certificate over a Unix socket (needs libnbd >= "
                    "1.22): use PSK, or TCP", cfg->id);
        return false;
    }
#endif
    if (g_uri_get_userinfo(uri)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: URI '%s' must not hold user information: "
                    "give the PSK identity as tls_username", cfg->id,
                    cfg->uri);
        return false;
    }
    query = g_uri_get_query(uri);
    if (query) {
        g_autoptr(GHashTable) params = g_uri_parse_params(query, -1, "&",
                                                          G_URI_PARAMS_NONE,
                                                          NULL);
        GHashTableIter it;
        gpointer key;

        if (!params) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "sub-host %s: invalid query in URI '%s'", cfg->id,
                        cfg->uri);
            return false;
        }
        g_hash_table_iter_init(&it, params);
        while (g_hash_table_iter_next(&it, &key, NULL)) {
            if (strcmp(key, "socket")) {
                g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                            "sub-host %s: URI parameter '%s' is not "
                            "accepted (TLS settings come from the "
                            "configuration)", cfg->id, (char *)key);
                return false;
            }
        }
    }
    return true;
}

static bool subhost_check_config(const FctransSubhostConfig *cfg,
                                 GError **errp)
{
    const char *id = cfg->id ? cfg->id : "?";

    if (!cfg->id || !*cfg->id || !cfg->uri || !*cfg->uri) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: an id and a URI are required", id);
        return false;
    }
    if (cfg->page_size &&
        (cfg->page_size < 512 || (cfg->page_size & (cfg->page_size - 1)) ||
         cfg->page_size > FCTRANS_SUBHOST_MAX_REQUEST)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: page size %u is not a power of two "
                    "between 512 and %u", id, cfg->page_size,
                    FCTRANS_SUBHOST_MAX_REQUEST);
        return false;
    }
    if (cfg->lanes > LANE__MAX) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: %u lanes asked, at most %u", id,
                    cfg->lanes, LANE__MAX);
        return false;
    }
    if (cfg->tls_x509_dir && cfg->tls_psk_file) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: give x509 or PSK credentials, not both",
                    id);
        return false;
    }
    if (cfg->tls_username && !cfg->tls_psk_file) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: a TLS username is only used with PSK", id);
        return false;
    }
    if (cfg->tls_x509_dir &&
        !g_file_test(cfg->tls_x509_dir, G_FILE_TEST_IS_DIR)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: x509 credentials directory %s not found",
                    id, cfg->tls_x509_dir);
        return false;
    }
    return subhost_check_uri(cfg, cfg->tls_x509_dir || cfg->tls_psk_file,
                             errp);
}

/* A PSK directory (QEMU's tls-creds-psk dir=) means DIR/keys.psk. */
static char *subhost_psk_path(const char *path, GError **errp)
{
    char *file;

    if (!g_file_test(path, G_FILE_TEST_IS_DIR)) {
        file = g_strdup(path);
    } else {
        file = g_build_filename(path, "keys.psk", NULL);
    }
    if (!g_file_test(file, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "PSK file %s not found", file);
        g_free(file);
        return NULL;
    }
    return file;
}

static void subhost_free(FctransSubhost *sh)
{
    unsigned i;

    for (i = 0; i < LANE__MAX; i++) {
        SubhostLane *lane = &sh->lane[i];

        lane_stop(lane);
        if (lane->wake_fd >= 0) {
            close(lane->wake_fd);
        }
        pthread_mutex_destroy(&lane->lock);
    }
    pthread_rwlock_destroy(&sh->handles_lock);
    pthread_mutex_destroy(&sh->reconnect_lock);
    pthread_mutex_destroy(&sh->fail_lock);
    pthread_mutex_destroy(&sh->acct_lock);
    pthread_mutex_destroy(&sh->drain_lock);
    pthread_cond_destroy(&sh->drain_cond);
    g_clear_error(&sh->first_error);
    g_free(sh->held);
    g_free(sh->stored);
    g_free(sh->failure);
    g_free(sh->id);
    g_free(sh->uri);
    g_free(sh->x509_dir);
    g_free(sh->psk_file);
    g_free(sh->username);
    g_free(sh);
}

FctransSubhost *fctrans_subhost_open(const FctransSubhostConfig *cfg,
                                     GError **errp)
{
    static const char *const lane_names[LANE__MAX] = { "urgent", "bulk" };
    struct nbd_handle *nbd[LANE__MAX];
    pthread_rwlockattr_t rwattr;
    FctransSubhost *sh;
    size_t map_bytes;
    unsigned i;

    if (!subhost_check_config(cfg, errp)) {
        return NULL;
    }

    sh = g_new0(FctransSubhost, 1);
    sh->id = g_strdup(cfg->id);
    sh->uri = g_strdup(cfg->uri);
    sh->x509_dir = g_strdup(cfg->tls_x509_dir);
    sh->unix_socket = g_str_has_prefix(cfg->uri, "nbd+unix:") ||
                      g_str_has_prefix(cfg->uri, "nbds+unix:");
    sh->username = g_strdup(cfg->tls_username ? cfg->tls_username
                                              : SUBHOST_DEFAULT_PSK_USERNAME);
    sh->min_size = cfg->min_size;
    sh->page_size = cfg->page_size ? cfg->page_size
                                   : SUBHOST_DEFAULT_PAGE_SIZE;
    sh->page_shift = __builtin_ctz(sh->page_size);
    sh->lanes_wanted = cfg->lanes;
    sh->connect_timeout_ms = cfg->connect_timeout_ms ?
                             cfg->connect_timeout_ms :
                             SUBHOST_DEFAULT_CONNECT_MS;
    sh->request_timeout_ms = cfg->request_timeout_ms ?
                             cfg->request_timeout_ms :
                             SUBHOST_DEFAULT_REQUEST_MS;
    /* Prefer the writer: reconnect must not starve behind submitters. */
    pthread_rwlockattr_init(&rwattr);
    pthread_rwlockattr_setkind_np(&rwattr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&sh->handles_lock, &rwattr);
    pthread_rwlockattr_destroy(&rwattr);
    pthread_mutex_init(&sh->reconnect_lock, NULL);
    pthread_mutex_init(&sh->fail_lock, NULL);
    pthread_mutex_init(&sh->acct_lock, NULL);
    pthread_mutex_init(&sh->drain_lock, NULL);
    pthread_cond_init(&sh->drain_cond, NULL);
    for (i = 0; i < LANE__MAX; i++) {
        SubhostLane *lane = &sh->lane[i];

        lane->sh = sh;
        lane->name = lane_names[i];
        lane->sock = -1;
        lane->wake_fd = -1;
        pthread_mutex_init(&lane->lock, NULL);
    }
    for (i = 0; i < LANE__MAX; i++) {
        SubhostLane *lane = &sh->lane[i];

        lane->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (lane->wake_fd < 0) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                        "sub-host %s: eventfd: %s", sh->id,
                        g_strerror(errno));
            goto fail;
        }
    }
    if (cfg->tls_psk_file) {
        g_autoptr(GError) err = NULL;

        sh->psk_file = subhost_psk_path(cfg->tls_psk_file, &err);
        if (!sh->psk_file) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "sub-host %s: %s", sh->id, err->message);
            goto fail;
        }
    }

    if (!subhost_connect_all(sh, nbd, false, errp)) {
        goto fail;
    }

    sh->npages = (sh->export_size + sh->page_size - 1) >> sh->page_shift;
    map_bytes = MAX(1, (sh->npages + BITS_PER_WORD - 1) / BITS_PER_WORD) *
                sizeof(unsigned long);
    sh->held = g_try_malloc0(map_bytes);
    sh->stored = g_try_malloc0(map_bytes);
    if (!sh->held || !sh->stored) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                    "sub-host %s: no memory for the page map of a %" PRIu64
                    "-byte export", sh->id, sh->export_size);
        for (i = 0; i < sh->nlanes; i++) {
            nbd_close(nbd[i]);
        }
        goto fail;
    }
    sh->capacity = cfg->capacity ? MIN(cfg->capacity, sh->export_size)
                                 : sh->export_size;
    sh->capacity &= ~(uint64_t)(sh->page_size - 1);

    if (!subhost_start_lanes(sh, nbd, errp)) {
        goto fail;
    }
    return sh;

fail:
    subhost_free(sh);
    return NULL;
}

static bool on_channel_thread(FctransSubhost *sh, const char *what,
                              GError **errp)
{
    if (current_lane) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: %s must not be called from a completion "
                    "callback", sh->id, what);
        return true;
    }
    return false;
}

void fctrans_subhost_close(FctransSubhost *sh)
{
    unsigned i;

    if (!sh) {
        return;
    }
    g_assert(!current_lane);
    __atomic_store_n(&sh->closing, 1, __ATOMIC_RELEASE);

    pthread_mutex_lock(&sh->reconnect_lock);
    pthread_mutex_lock(&sh->fail_lock);
    if (!sh->failure) {
        sh->failure = g_strdup("the sub-host channel was closed");
    }
    __atomic_store_n(&sh->failed, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&sh->fail_lock);

    /*
     * Say goodbye on idle connections (NBD_CMD_DISC), so that the server
     * sees an orderly disconnect; abort busy ones: their requests fail.
     */
    pthread_rwlock_rdlock(&sh->handles_lock);
    for (i = 0; i < sh->nlanes; i++) {
        SubhostLane *lane = &sh->lane[i];
        bool idle;

        if (!lane->nbd) {
            continue;
        }
        pthread_mutex_lock(&lane->lock);
        idle = !lane->failed && !lane->in_flight.head;
        lane->failed = true;
        if (idle) {
            lane->disconnecting = true;
            lane->disconnect_deadline_ns = now_ns() +
                                           SUBHOST_DISCONNECT_MS * 1000000ll;
        }
        pthread_mutex_unlock(&lane->lock);
        if (!idle || nbd_aio_disconnect(lane->nbd, 0) == -1) {
            shutdown(lane->sock, SHUT_RDWR);
        }
        lane_wake(lane);
    }
    pthread_rwlock_unlock(&sh->handles_lock);

    for (i = 0; i < sh->nlanes; i++) {
        if (sh->lane[i].thread) {
            g_thread_join(sh->lane[i].thread);
            sh->lane[i].thread = NULL;
        }
    }
    /* No submitter may still be inside libnbd with our handles. */
    pthread_rwlock_wrlock(&sh->handles_lock);
    pthread_rwlock_unlock(&sh->handles_lock);
    pthread_mutex_unlock(&sh->reconnect_lock);

    g_assert(__atomic_load_n(&sh->in_flight, __ATOMIC_ACQUIRE) == 0);
    subhost_free(sh);
}

const char *fctrans_subhost_id(const FctransSubhost *sh)
{
    return sh->id;
}

uint64_t fctrans_subhost_export_size(const FctransSubhost *sh)
{
    return sh->export_size;
}

uint32_t fctrans_subhost_page_size(const FctransSubhost *sh)
{
    return sh->page_size;
}

unsigned fctrans_subhost_lanes(const FctransSubhost *sh)
{
    return sh->nlanes;
}

/* Submission */

static bool subhost_refuse_failed(FctransSubhost *sh, GError **errp)
{
    g_autofree char *why = subhost_failure(sh);

    stat_add(&sh->refused, 1);
    if (__atomic_load_n(&sh->closing, __ATOMIC_ACQUIRE)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: the channel is closing", sh->id);
    } else {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: not connected: %s", sh->id, why);
    }
    return false;
}

static bool subhost_submit(FctransSubhost *sh, FctransSubhostOp op,
                           uint64_t offset, size_t len, void *buf,
                           unsigned flags, FctransSubhostDone *done,
                           void *opaque, bool sync, GError **errp)
{
    nbd_completion_callback cb;
    SubhostLane *lane;
    SubhostReq *req;
    unsigned li;
    int64_t cookie;
    bool refused;

    size_t max = op == FCTRANS_SUBHOST_OP_TRIM ? FCTRANS_SUBHOST_MAX_TRIM
                                               : FCTRANS_SUBHOST_MAX_REQUEST;

    if (!done || (!buf && op != FCTRANS_SUBHOST_OP_TRIM) || !len ||
        len > max ||
        ((offset | len) & (sh->page_size - 1)) ||
        offset > sh->export_size || len > sh->export_size - offset ||
        (flags & ~(FCTRANS_SUBHOST_REQ_URGENT | FCTRANS_SUBHOST_REQ_BULK)) ||
        (flags & FCTRANS_SUBHOST_REQ_URGENT &&
         flags & FCTRANS_SUBHOST_REQ_BULK)) {
        stat_add(&sh->refused, 1);
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: invalid %s of %zu bytes at 0x%" PRIx64
                    " (page size %u, at most %zu bytes, export %" PRIu64
                    " bytes, flags 0x%x)", sh->id, op_names[op], len,
                    offset, sh->page_size, max, sh->export_size, flags);
        return false;
    }
    if (subhost_is_failed(sh)) {
        return subhost_refuse_failed(sh, errp);
    }

    if (sh->nlanes == 1) {
        li = 0;
    } else if (flags & FCTRANS_SUBHOST_REQ_URGENT) {
        li = LANE_URGENT;
    } else if (flags & FCTRANS_SUBHOST_REQ_BULK) {
        li = LANE_BULK;
    } else {
        li = op == FCTRANS_SUBHOST_OP_READ ? LANE_URGENT : LANE_BULK;
    }

    if (op == FCTRANS_SUBHOST_OP_WRITE &&
        !subhost_charge(sh, offset, len, errp)) {
        return false;
    }

    req = g_new(SubhostReq, 1);
    req->op = op;
    req->offset = offset;
    req->len = len;
    req->done = done;
    req->opaque = opaque;
    req->error = 0;
    req->sync = sync;
    cb = (nbd_completion_callback) {
        .callback = subhost_nbd_done,
        .user_data = req,
    };

    pthread_rwlock_rdlock(&sh->handles_lock);
    lane = &sh->lane[li];
    req->lane = lane;
    __atomic_add_fetch(&sh->in_flight, 1, __ATOMIC_ACQ_REL);
    /*
     * The request must be on the in-flight list before libnbd sees it: its
     * reply can complete on the lane thread before nbd_aio_*() returns.
     */
    pthread_mutex_lock(&lane->lock);
    refused = lane->failed;
    if (!refused) {
        req->start_ns = now_ns();
        list_append(&lane->in_flight, req);
    }
    pthread_mutex_unlock(&lane->lock);
    if (refused) {
        g_free(req);
        if (op == FCTRANS_SUBHOST_OP_WRITE) {
            subhost_write_settled(sh, offset, len, false);
        }
        subhost_request_finished(sh);
        pthread_rwlock_unlock(&sh->handles_lock);
        return subhost_refuse_failed(sh, errp);
    }

    switch (op) {
    case FCTRANS_SUBHOST_OP_READ:
        cookie = nbd_aio_pread(lane->nbd, buf, len, offset, cb, 0);
        break;
    case FCTRANS_SUBHOST_OP_WRITE:
        cookie = nbd_aio_pwrite(lane->nbd, buf, len, offset, cb, 0);
        break;
    case FCTRANS_SUBHOST_OP_TRIM:
        cookie = nbd_aio_trim(lane->nbd, len, offset, cb, 0);
        break;
    default:
        g_assert_not_reached();
    }

    if (cookie == -1) {
        /* libnbd did not queue it, and will not call the callback. */
        const char *msg = nbd_get_error();

        pthread_mutex_lock(&lane->lock);
        list_remove(&lane->in_flight, req);
        pthread_mutex_unlock(&lane->lock);
        lane_wake(lane); /* it may be waiting for the list to empty */
        g_free(req);
        if (op == FCTRANS_SUBHOST_OP_WRITE) {
            subhost_write_settled(sh, offset, len, false);
        }
        subhost_request_finished(sh);
        pthread_rwlock_unlock(&sh->handles_lock);
        stat_add(&sh->refused, 1);
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: cannot send %s of %zu bytes at 0x%" PRIx64
                    ": %s", sh->id, op_names[op], len, offset,
                    nbd_error_text(msg));
        return false;
    }
    /*
     * req may be gone already. If the request could not be sent whole
     * without blocking, the lane thread must start polling for POLLOUT.
     */
    if (nbd_aio_get_direction(lane->nbd) & LIBNBD_AIO_DIRECTION_WRITE &&
        current_lane != lane) {
        lane_wake(lane);
    }
    pthread_rwlock_unlock(&sh->handles_lock);
    return true;
}

bool fctrans_subhost_write(FctransSubhost *sh, uint64_t offset, size_t len,
                           const void *buf, unsigned flags,
                           FctransSubhostDone *done, void *opaque,
                           GError **errp)
{
    return subhost_submit(sh, FCTRANS_SUBHOST_OP_WRITE, offset, len,
                          (void *)buf, flags, done, opaque, false, errp);
}

bool fctrans_subhost_read(FctransSubhost *sh, uint64_t offset, size_t len,
                          void *buf, unsigned flags,
                          FctransSubhostDone *done, void *opaque,
                          GError **errp)
{
    return subhost_submit(sh, FCTRANS_SUBHOST_OP_READ, offset, len, buf,
                          flags, done, opaque, false, errp);
}

bool fctrans_subhost_trim(FctransSubhost *sh, uint64_t offset, size_t len,
                          unsigned flags, FctransSubhostDone *done,
                          void *opaque, GError **errp)
{
    return subhost_submit(sh, FCTRANS_SUBHOST_OP_TRIM, offset, len, NULL,
                          flags, done, opaque, false, errp);
}

/* Waiting */

static void subhost_wait_idle(FctransSubhost *sh)
{
    pthread_mutex_lock(&sh->drain_lock);
    while (__atomic_load_n(&sh->in_flight, __ATOMIC_ACQUIRE)) {
        pthread_cond_wait(&sh->drain_cond, &sh->drain_lock);
    }
    pthread_mutex_unlock(&sh->drain_lock);
}

bool fctrans_subhost_drain(FctransSubhost *sh, GError **errp)
{
    GError *err;

    if (on_channel_thread(sh, "drain", errp)) {
        return false;
    }
    subhost_wait_idle(sh);
    pthread_mutex_lock(&sh->drain_lock);
    err = sh->first_error;
    sh->first_error = NULL;
    pthread_mutex_unlock(&sh->drain_lock);
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    return true;
}

typedef struct SyncWait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    GError *err;
} SyncWait;

static void sync_done(void *opaque, const GError *err)
{
    SyncWait *w = opaque;

    pthread_mutex_lock(&w->lock);
    w->err = err ? g_error_copy(err) : NULL;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static bool subhost_sync(FctransSubhost *sh, FctransSubhostOp op,
                         uint64_t offset, size_t len, void *buf,
                         GError **errp)
{
    SyncWait w = { .done = false };
    bool ok;

    if (on_channel_thread(sh, op_names[op], errp)) {
        return false;
    }
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    ok = subhost_submit(sh, op, offset, len, buf, 0, sync_done, &w, true,
                        errp);
    if (ok) {
        pthread_mutex_lock(&w.lock);
        while (!w.done) {
            pthread_cond_wait(&w.cond, &w.lock);
        }
        pthread_mutex_unlock(&w.lock);
        if (w.err) {
            g_propagate_error(errp, w.err);
            ok = false;
        }
    }
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return ok;
}

bool fctrans_subhost_write_sync(FctransSubhost *sh, uint64_t offset,
                                size_t len, const void *buf, GError **errp)
{
    return subhost_sync(sh, FCTRANS_SUBHOST_OP_WRITE, offset, len,
                        (void *)buf, errp);
}

bool fctrans_subhost_read_sync(FctransSubhost *sh, uint64_t offset,
                               size_t len, void *buf, GError **errp)
{
    return subhost_sync(sh, FCTRANS_SUBHOST_OP_READ, offset, len, buf, errp);
}

bool fctrans_subhost_trim_sync(FctransSubhost *sh, uint64_t offset,
                               size_t len, GError **errp)
{
    return subhost_sync(sh, FCTRANS_SUBHOST_OP_TRIM, offset, len, NULL, errp);
}

/* Reconnection */

bool fctrans_subhost_is_connected(FctransSubhost *sh)
{
    return !subhost_is_failed(sh);
}

bool fctrans_subhost_reconnect(FctransSubhost *sh, GError **errp)
{
    struct nbd_handle *nbd[LANE__MAX];
    unsigned i, nlanes;
    bool ok = false;

    if (on_channel_thread(sh, "reconnect", errp)) {
        return false;
    }
    pthread_mutex_lock(&sh->reconnect_lock);
    if (__atomic_load_n(&sh->closing, __ATOMIC_ACQUIRE)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: the channel is closing", sh->id);
        goto out;
    }
    if (!subhost_is_failed(sh)) {
        ok = true;
        goto out;
    }

    /* Let every failed request report its error first. */
    for (i = 0; i < sh->nlanes; i++) {
        if (sh->lane[i].thread) {
            g_thread_join(sh->lane[i].thread);
            sh->lane[i].thread = NULL;
        }
    }
    subhost_wait_idle(sh);

    nlanes = sh->nlanes;
    if (!subhost_connect_all(sh, nbd, true, errp)) {
        goto out;
    }
    g_assert(sh->nlanes == nlanes);

    pthread_rwlock_wrlock(&sh->handles_lock);
    ok = subhost_start_lanes(sh, nbd, errp);
    pthread_rwlock_unlock(&sh->handles_lock);
    if (ok) {
        stat_add(&sh->reconnects, 1);
    }

out:
    pthread_mutex_unlock(&sh->reconnect_lock);
    return ok;
}

/* Statistics */

void fctrans_subhost_get_stats(FctransSubhost *sh, FctransSubhostStats *st)
{
    unsigned op;

    memset(st, 0, sizeof(*st));
    for (op = 0; op < FCTRANS_SUBHOST_OP__MAX; op++) {
        SubhostOpCounters *c = &sh->ops[op];
        FctransSubhostOpStats *o = &st->op[op];
        uint64_t ok;

        o->requests = stat_get(&c->requests);
        o->bytes = stat_get(&c->bytes);
        o->errors = stat_get(&c->errors);
        ok = o->requests - MIN(o->errors, o->requests);
        o->lat_p50_ns = hist_percentile(c->hist, ok, 500);
        o->lat_p99_ns = hist_percentile(c->hist, ok, 990);
        o->lat_max_ns = stat_get(&c->lat_max_ns);
        o->lat_mean_ns = ok ? stat_get(&c->lat_sum_ns) / ok : 0;
    }
    st->in_flight = __atomic_load_n(&sh->in_flight, __ATOMIC_RELAXED);
    st->refused = stat_get(&sh->refused);
    st->nospace = stat_get(&sh->nospace);
    st->reconnects = stat_get(&sh->reconnects);
    st->connected = !subhost_is_failed(sh);
    pthread_mutex_lock(&sh->acct_lock);
    st->capacity_used = sh->used;
    st->capacity_total = sh->capacity;
    pthread_mutex_unlock(&sh->acct_lock);
}

void fctrans_subhost_reset_stats(FctransSubhost *sh)
{
    unsigned op, i;

    for (op = 0; op < FCTRANS_SUBHOST_OP__MAX; op++) {
        SubhostOpCounters *c = &sh->ops[op];

        __atomic_store_n(&c->requests, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->bytes, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->errors, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->lat_sum_ns, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->lat_max_ns, 0, __ATOMIC_RELAXED);
        for (i = 0; i < HIST_BUCKETS; i++) {
            __atomic_store_n(&c->hist[i], 0, __ATOMIC_RELAXED);
        }
    }
    __atomic_store_n(&sh->refused, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&sh->nospace, 0, __ATOMIC_RELAXED);
}
