/*
 * fctrans: the sub-host channel (guest pages stored on an NBD server)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The request side of the channel: lanes and their threads, submission,
 * completion, capacity accounting, reconnection and statistics. The
 * configuration checks are in subhost-config.c, making and checking the
 * connections in subhost-conn.c (see subhost-internal.h).
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
#include "subhost-internal.h"
#include "bitmap.h"
#include "histogram.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libnbd.h>

/* How long close() lets an idle connection say goodbye (NBD_CMD_DISC). */
#define SUBHOST_DISCONNECT_MS           1000

typedef struct SubhostOpCounters {
    uint64_t requests;
    uint64_t bytes;
    uint64_t errors;
    FctransHist lat;            /* ns, successful requests */
} SubhostOpCounters;

typedef struct SubhostLane SubhostLane;
typedef struct SubhostReq SubhostReq;

/*
 * A flush: one NBD_CMD_FLUSH per lane (each a SubhostReq pointing here),
 * completed once the last lane's completed. It counts as one request in
 * flight, and in the statistics.
 */
typedef struct SubhostFlush {
    unsigned pending;           /* atomic: lanes not yet completed */
    GError *err;                /* atomic: the first lane's error */
    FctransSubhostDone *done;
    void *opaque;
    int64_t start_ns;
    bool sync;
} SubhostFlush;

struct SubhostReq {
    SubhostLane *lane;
    FctransSubhostOp op;
    uint64_t offset;
    size_t len;
    FctransSubhostDone *done;
    void *opaque;
    int64_t start_ns;
    int error;                  /* errno from libnbd; 0 = success */
    char *why;                  /* with error: it could not be sent */
    SubhostFlush *flush;        /* a lane's part of this flush, or NULL */
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
    SubhostParams p;

    uint64_t export_size;
    unsigned nlanes;
    SubhostLane lane[SUBHOST_LANES];

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
    int shut_down;              /* atomic: fctrans_subhost_shutdown() */
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
    [FCTRANS_SUBHOST_OP_FLUSH] = "flush",
};

const char *fctrans_subhost_op_name(FctransSubhostOp op)
{
    return op < FCTRANS_SUBHOST_OP__MAX ? op_names[op] : "?";
}

static void stat_add(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static uint64_t stat_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Capacity accounting */

/* Reserve the pages a write is about to place; before it is sent. */
static bool subhost_charge(FctransSubhost *sh, uint64_t offset, size_t len,
                           GError **errp)
{
    uint64_t first = offset >> sh->p.page_shift;
    uint64_t n = len >> sh->p.page_shift;
    uint64_t fresh;

    pthread_mutex_lock(&sh->acct_lock);
    fresh = (n - fctrans_bitmap_count(sh->held, first, n)) << sh->p.page_shift;
    if (sh->used + fresh > sh->capacity) {
        uint64_t used = sh->used;

        pthread_mutex_unlock(&sh->acct_lock);
        stat_add(&sh->nospace, 1);
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE,
                    "sub-host %s: out of capacity: %" PRIu64 " of %" PRIu64
                    " bytes used, write of %" PRIu64 " new bytes at 0x%"
                    PRIx64 " refused", sh->p.id, used, sh->capacity, fresh,
                    offset);
        return false;
    }
    fctrans_bitmap_set_range(sh->held, first, n);
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
    uint64_t first = offset >> sh->p.page_shift;
    uint64_t n = len >> sh->p.page_shift;

    pthread_mutex_lock(&sh->acct_lock);
    if (ok) {
        fctrans_bitmap_set_range(sh->stored, first, n);
    } else {
        sh->used -= fctrans_bitmap_clear_range_except(sh->held, sh->stored,
                                                      first, n)
                    << sh->p.page_shift;
    }
    pthread_mutex_unlock(&sh->acct_lock);
}

/* A trim was acknowledged: the pages are gone from the server. */
static void subhost_uncharge(FctransSubhost *sh, uint64_t offset, size_t len)
{
    uint64_t first = offset >> sh->p.page_shift;
    uint64_t n = len >> sh->p.page_shift;

    pthread_mutex_lock(&sh->acct_lock);
    fctrans_bitmap_clear_range(sh->stored, first, n);
    sh->used -= fctrans_bitmap_clear_range(sh->held, first, n)
                << sh->p.page_shift;
    pthread_mutex_unlock(&sh->acct_lock);
}

bool fctrans_subhost_page_stored(FctransSubhost *sh, uint64_t offset)
{
    uint64_t page = offset >> sh->p.page_shift;
    bool ret;

    if (page >= sh->npages) {
        return false;
    }
    pthread_mutex_lock(&sh->acct_lock);
    ret = fctrans_bitmap_test(sh->stored, page);
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

/*
 * End a lane's connection whose requests in flight are given up. A
 * shutdown() alone still sends what the socket has queued, and TCP keeps
 * retransmitting it to a server it cannot reach (a blackhole, for
 * minutes), so that a write given up here could land on the export once
 * the server is reachable again: after the trims or writes of a newer
 * connection to the same pages. An abortive disconnect (connect() to
 * AF_UNSPEC: a reset, the send queue dropped) leaves the server only what
 * it received already. shutdown() then wakes libnbd, and is all that a
 * Unix socket needs (it queues nothing on the sender's side).
 */
static void lane_sock_abort(int sock)
{
    struct sockaddr sa = { .sa_family = AF_UNSPEC };

    /* Fails, harmlessly, where nothing is queued: not TCP, not connected */
    connect(sock, &sa, sizeof(sa));
    shutdown(sock, SHUT_RDWR);
}

/* Stop every lane: no new requests, connections ended. */
static void subhost_shutdown_lanes(FctransSubhost *sh)
{
    unsigned i;

    for (i = 0; i < sh->nlanes; i++) {
        SubhostLane *lane = &sh->lane[i];

        pthread_mutex_lock(&lane->lock);
        lane->failed = true;
        pthread_mutex_unlock(&lane->lock);
        if (lane->sock >= 0) {
            lane_sock_abort(lane->sock);
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
    if (req->why) {
        /* It never reached libnbd: the reason is ours. */
        g_free(why);
        why = g_strdup(req->why);
        code = FCTRANS_ERROR_IO;
    }
    if (req->flush) {
        return g_error_new(FCTRANS_ERROR, code,
                           "sub-host %s: flush on the %s lane failed: %s",
                           sh->p.id, req->lane->name, why);
    }
    return g_error_new(FCTRANS_ERROR, code,
                       "sub-host %s: %s of %zu bytes at 0x%" PRIx64
                       " failed: %s", sh->p.id, op_names[req->op], req->len,
                       req->offset, why);
}

/*
 * A request completed (@err: NULL on success; ours to free): count it,
 * run its callback, and let it stop counting as in flight.
 */
static void subhost_finish(FctransSubhost *sh, FctransSubhostOp op,
                           size_t len, int64_t start_ns, GError *err,
                           FctransSubhostDone *done, void *opaque, bool sync)
{
    SubhostOpCounters *c = &sh->ops[op];
    uint64_t lat = subhost_now_ns() - start_ns;

    stat_add(&c->requests, 1);
    if (err) {
        stat_add(&c->errors, 1);
    } else {
        stat_add(&c->bytes, len);
        fctrans_hist_record(&c->lat, lat);
    }

    if (!sync) {
        done(opaque, err);
    }
    if (err) {
        pthread_mutex_lock(&sh->drain_lock);
        if (!sh->first_error) {
            sh->first_error = g_error_copy(err);
        }
        pthread_mutex_unlock(&sh->drain_lock);
    }
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

/* A lane's flush completed; the last one completes the whole flush. */
static void subhost_flush_lane_done(FctransSubhost *sh, SubhostReq *req)
{
    SubhostFlush *f = req->flush;

    if (req->error) {
        GError *err = subhost_request_error(sh, req);
        GError *none = NULL;

        if (!__atomic_compare_exchange_n(&f->err, &none, err, false,
                                         __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            g_error_free(err);
        }
    }
    g_free(req->why);
    g_free(req);
    if (__atomic_sub_fetch(&f->pending, 1, __ATOMIC_ACQ_REL)) {
        return;
    }
    subhost_finish(sh, FCTRANS_SUBHOST_OP_FLUSH, 0, f->start_ns,
                   __atomic_load_n(&f->err, __ATOMIC_ACQUIRE), f->done,
                   f->opaque, f->sync);
    g_free(f);
}

static void subhost_complete(FctransSubhost *sh, SubhostReq *req)
{
    GError *err = NULL;

    if (req->flush) {
        subhost_flush_lane_done(sh, req);
        return;
    }
    if (req->error) {
        err = subhost_request_error(sh, req);
    } else if (req->op == FCTRANS_SUBHOST_OP_TRIM) {
        subhost_uncharge(sh, req->offset, req->len);
    }
    /* Settled before the callback runs: it may look, or write again. */
    if (req->op == FCTRANS_SUBHOST_OP_WRITE) {
        subhost_write_settled(sh, req->offset, req->len, !req->error);
    }
    subhost_finish(sh, req->op, req->len, req->start_ns, err, req->done,
                   req->opaque, req->sync);
    g_free(req);
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

        subhost_fail(lane->sh, subhost_nbd_error_text(msg));
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
    int64_t timeout_ns = (int64_t)sh->p.request_timeout_ms * 1000000;
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
    int64_t timeout_ns = (int64_t)sh->p.request_timeout_ms * 1000000;
    bool expired = false, disconnect_expired = false;
    g_autofree char *why = NULL;

    pthread_mutex_lock(&lane->lock);
    if (lane->in_flight.head &&
        now - lane->in_flight.head->start_ns >= timeout_ns) {
        SubhostReq *r = lane->in_flight.head;

        expired = true;
        if (r->flush) {
            why = g_strdup_printf("no reply from the server on the %s lane "
                                  "for %u ms (flush)", lane->name,
                                  sh->p.request_timeout_ms);
        } else {
            why = g_strdup_printf("no reply from the server on the %s lane "
                                  "for %u ms (%s at 0x%" PRIx64 ")",
                                  lane->name, sh->p.request_timeout_ms,
                                  op_names[r->op], r->offset);
        }
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

        r = poll(pfd, 2, lane_poll_timeout(lane, subhost_now_ns()));
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
                subhost_fail(sh, subhost_nbd_error_text(msg));
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
        lane_check_timeouts(lane, subhost_now_ns());
        if (lane_nbd_finished(lane) && lane_idle_and_failed(lane)) {
            break;
        }
    }
    current_lane = NULL;
    return NULL;
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
                    "sub-host %s: cannot duplicate the socket: %s", sh->p.id,
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
                                struct nbd_handle *nbd[SUBHOST_LANES],
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

static void subhost_free(FctransSubhost *sh)
{
    unsigned i;

    for (i = 0; i < SUBHOST_LANES; i++) {
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
    subhost_params_clear(&sh->p);
    g_free(sh);
}

FctransSubhost *fctrans_subhost_open(const FctransSubhostConfig *cfg,
                                     GError **errp)
{
    struct nbd_handle *nbd[SUBHOST_LANES];
    pthread_rwlockattr_t rwattr;
    SubhostExport found;
    SubhostParams p;
    FctransSubhost *sh;
    unsigned i;

    if (!subhost_params_init(&p, cfg, errp)) {
        return NULL;
    }

    sh = g_new0(FctransSubhost, 1);
    sh->p = p;
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
    for (i = 0; i < SUBHOST_LANES; i++) {
        SubhostLane *lane = &sh->lane[i];

        lane->sh = sh;
        lane->name = subhost_lane_name[i];
        lane->sock = -1;
        lane->wake_fd = -1;
        pthread_mutex_init(&lane->lock, NULL);
    }
    for (i = 0; i < SUBHOST_LANES; i++) {
        SubhostLane *lane = &sh->lane[i];

        lane->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (lane->wake_fd < 0) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                        "sub-host %s: eventfd: %s", sh->p.id,
                        g_strerror(errno));
            goto fail;
        }
    }
    if (!subhost_connect_all(&sh->p, NULL, &found, nbd, errp)) {
        goto fail;
    }
    sh->export_size = found.size;
    sh->nlanes = found.lanes;

    sh->npages = (sh->export_size + sh->p.page_size - 1) >> sh->p.page_shift;
    sh->held = fctrans_bitmap_try_new(sh->npages);
    sh->stored = fctrans_bitmap_try_new(sh->npages);
    if (!sh->held || !sh->stored) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                    "sub-host %s: no memory for the page map of a %" PRIu64
                    "-byte export", sh->p.id, sh->export_size);
        for (i = 0; i < sh->nlanes; i++) {
            nbd_close(nbd[i]);
        }
        goto fail;
    }
    sh->capacity = sh->p.capacity ? MIN(sh->p.capacity, sh->export_size)
                                  : sh->export_size;
    sh->capacity &= ~(uint64_t)(sh->p.page_size - 1);

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
                    "callback", sh->p.id, what);
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
            lane->disconnect_deadline_ns = subhost_now_ns() +
                                           SUBHOST_DISCONNECT_MS * 1000000ll;
        }
        pthread_mutex_unlock(&lane->lock);
        if (!idle || nbd_aio_disconnect(lane->nbd, 0) == -1) {
            lane_sock_abort(lane->sock);
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
    return sh->p.id;
}

uint64_t fctrans_subhost_export_size(const FctransSubhost *sh)
{
    return sh->export_size;
}

uint32_t fctrans_subhost_page_size(const FctransSubhost *sh)
{
    return sh->p.page_size;
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
                    "sub-host %s: the channel is closing", sh->p.id);
    } else {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: not connected: %s", sh->p.id, why);
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

    g_assert(op != FCTRANS_SUBHOST_OP_FLUSH);
    if (!done || (!buf && op != FCTRANS_SUBHOST_OP_TRIM) || !len ||
        len > max ||
        ((offset | len) & (sh->p.page_size - 1)) ||
        offset > sh->export_size || len > sh->export_size - offset ||
        (flags & ~(FCTRANS_SUBHOST_REQ_URGENT | FCTRANS_SUBHOST_REQ_BULK)) ||
        (flags & FCTRANS_SUBHOST_REQ_URGENT &&
         flags & FCTRANS_SUBHOST_REQ_BULK)) {
        stat_add(&sh->refused, 1);
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: invalid %s of %zu bytes at 0x%" PRIx64
                    " (page size %u, at most %zu bytes, export %" PRIu64
                    " bytes, flags 0x%x)", sh->p.id, op_names[op], len,
                    offset, sh->p.page_size, max, sh->export_size, flags);
        return false;
    }
    if (subhost_is_failed(sh)) {
        return subhost_refuse_failed(sh, errp);
    }

    if (sh->nlanes == 1) {
        li = 0;
    } else if (flags & FCTRANS_SUBHOST_REQ_URGENT) {
        li = SUBHOST_LANE_URGENT;
    } else if (flags & FCTRANS_SUBHOST_REQ_BULK) {
        li = SUBHOST_LANE_BULK;
    } else {
        li = op == FCTRANS_SUBHOST_OP_READ ? SUBHOST_LANE_URGENT
                                           : SUBHOST_LANE_BULK;
    }

    if (op == FCTRANS_SUBHOST_OP_WRITE &&
        !subhost_charge(sh, offset, len, errp)) {
        return false;
    }

    req = g_new0(SubhostReq, 1);
    req->op = op;
    req->offset = offset;
    req->len = len;
    req->done = done;
    req->opaque = opaque;
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
        req->start_ns = subhost_now_ns();
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
                    ": %s", sh->p.id, op_names[op], len, offset,
                    subhost_nbd_error_text(msg));
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

/*
 * A flush goes to every lane. Each lane's part is put on the lane's
 * in-flight list before any is sent, so that a failed lane refuses the
 * whole flush before anything reached the server. Once accepted, a part
 * that libnbd does not take completes with an error through its lane's
 * done list: the callback still runs once, on a channel thread (the
 * lane's thread cannot exit while the part is on one of its lists).
 */
static bool subhost_submit_flush(FctransSubhost *sh, unsigned flags,
                                 FctransSubhostDone *done, void *opaque,
                                 bool sync, GError **errp)
{
    SubhostReq *req[SUBHOST_LANES] = { NULL };
    SubhostFlush *f;
    unsigned i, j, n;

    if (!done || flags) {
        stat_add(&sh->refused, 1);
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: invalid flush (flags 0x%x)", sh->p.id,
                    flags);
        return false;
    }
    if (subhost_is_failed(sh)) {
        return subhost_refuse_failed(sh, errp);
    }

    f = g_new0(SubhostFlush, 1);
    f->done = done;
    f->opaque = opaque;
    f->sync = sync;

    pthread_rwlock_rdlock(&sh->handles_lock);
    n = sh->nlanes;
    f->pending = n;
    f->start_ns = subhost_now_ns();
    __atomic_add_fetch(&sh->in_flight, 1, __ATOMIC_ACQ_REL);
    for (i = 0; i < n; i++) {
        SubhostLane *lane = &sh->lane[i];
        bool refused;

        req[i] = g_new0(SubhostReq, 1);
        req[i]->lane = lane;
        req[i]->op = FCTRANS_SUBHOST_OP_FLUSH;
        req[i]->flush = f;
        req[i]->start_ns = f->start_ns;
        pthread_mutex_lock(&lane->lock);
        refused = lane->failed;
        if (!refused) {
            list_append(&lane->in_flight, req[i]);
        }
        pthread_mutex_unlock(&lane->lock);
        if (refused) {
            for (j = 0; j < i; j++) {
                pthread_mutex_lock(&sh->lane[j].lock);
                list_remove(&sh->lane[j].in_flight, req[j]);
                pthread_mutex_unlock(&sh->lane[j].lock);
                lane_wake(&sh->lane[j]);
            }
            for (j = 0; j <= i; j++) {
                g_free(req[j]);
            }
            g_free(f);
            subhost_request_finished(sh);
            pthread_rwlock_unlock(&sh->handles_lock);
            return subhost_refuse_failed(sh, errp);
        }
    }

    /* Accepted. req[i] may be gone as soon as it was sent. */
    for (i = 0; i < n; i++) {
        SubhostLane *lane = &sh->lane[i];
        nbd_completion_callback cb = {
            .callback = subhost_nbd_done,
            .user_data = req[i],
        };

        if (nbd_aio_flush(lane->nbd, cb, 0) == -1) {
            const char *msg = subhost_nbd_error_text(nbd_get_error());

            req[i]->error = EIO;
            req[i]->why = g_strdup_printf("cannot send it: %s", msg);
            pthread_mutex_lock(&lane->lock);
            list_remove(&lane->in_flight, req[i]);
            list_append(&lane->done, req[i]);
            pthread_mutex_unlock(&lane->lock);
            lane_wake(lane);
        } else if (nbd_aio_get_direction(lane->nbd) &
                   LIBNBD_AIO_DIRECTION_WRITE && current_lane != lane) {
            lane_wake(lane);
        }
    }
    pthread_rwlock_unlock(&sh->handles_lock);
    return true;
}

bool fctrans_subhost_flush(FctransSubhost *sh, unsigned flags,
                           FctransSubhostDone *done, void *opaque,
                           GError **errp)
{
    return subhost_submit_flush(sh, flags, done, opaque, false, errp);
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
    if (op == FCTRANS_SUBHOST_OP_FLUSH) {
        ok = subhost_submit_flush(sh, 0, sync_done, &w, true, errp);
    } else {
        ok = subhost_submit(sh, op, offset, len, buf, 0, sync_done, &w, true,
                            errp);
    }
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

bool fctrans_subhost_flush_sync(FctransSubhost *sh, GError **errp)
{
    return subhost_sync(sh, FCTRANS_SUBHOST_OP_FLUSH, 0, 0, NULL, errp);
}

/* Reconnection */

bool fctrans_subhost_is_connected(FctransSubhost *sh)
{
    return !subhost_is_failed(sh);
}

bool fctrans_subhost_reconnect(FctransSubhost *sh, GError **errp)
{
    struct nbd_handle *nbd[SUBHOST_LANES];
    SubhostExport expect, found;
    bool ok = false;
    unsigned i;

    if (on_channel_thread(sh, "reconnect", errp)) {
        return false;
    }
    pthread_mutex_lock(&sh->reconnect_lock);
    if (__atomic_load_n(&sh->closing, __ATOMIC_ACQUIRE)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: the channel is closing", sh->p.id);
        goto out;
    }
    if (__atomic_load_n(&sh->shut_down, __ATOMIC_ACQUIRE)) {
        g_autofree char *why = subhost_failure(sh);

        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_CANCELLED,
                    "sub-host %s: shut down: %s", sh->p.id, why);
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

    expect = (SubhostExport) {
        .size = sh->export_size,
        .lanes = sh->nlanes,
    };
    if (!subhost_connect_all(&sh->p, &expect, &found, nbd, errp)) {
        goto out;
    }
    g_assert(found.lanes == sh->nlanes);
    /* A shutdown while we connected wins: start no lane. */
    if (__atomic_load_n(&sh->shut_down, __ATOMIC_ACQUIRE)) {
        for (i = 0; i < found.lanes; i++) {
            nbd_close(nbd[i]);
        }
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_CANCELLED,
                    "sub-host %s: shut down while reconnecting", sh->p.id);
        goto out;
    }

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

void fctrans_subhost_shutdown(FctransSubhost *sh, const char *why)
{
    __atomic_store_n(&sh->shut_down, 1, __ATOMIC_RELEASE);
    subhost_fail(sh, why);
}

/* Statistics */

void fctrans_subhost_get_stats(FctransSubhost *sh, FctransSubhostStats *st)
{
    unsigned op;

    memset(st, 0, sizeof(*st));
    for (op = 0; op < FCTRANS_SUBHOST_OP__MAX; op++) {
        SubhostOpCounters *c = &sh->ops[op];
        FctransSubhostOpStats *o = &st->op[op];

        o->requests = stat_get(&c->requests);
        o->bytes = stat_get(&c->bytes);
        o->errors = stat_get(&c->errors);
        o->lat_p50_ns = fctrans_hist_percentile(&c->lat, 500);
        o->lat_p99_ns = fctrans_hist_percentile(&c->lat, 990);
        o->lat_max_ns = fctrans_hist_max(&c->lat);
        o->lat_mean_ns = fctrans_hist_mean(&c->lat);
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
    unsigned op;

    for (op = 0; op < FCTRANS_SUBHOST_OP__MAX; op++) {
        SubhostOpCounters *c = &sh->ops[op];

        __atomic_store_n(&c->requests, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->bytes, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->errors, 0, __ATOMIC_RELAXED);
        fctrans_hist_reset(&c->lat);
    }
    __atomic_store_n(&sh->refused, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&sh->nospace, 0, __ATOMIC_RELAXED);
}
