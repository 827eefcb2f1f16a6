/*
 * fctrans: the sub-host channel (guest pages stored on an NBD server)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A sub-host stores part of a split VM's RAM in one NBD export per VM. The
 * page at guest RAM offset X lives at export offset X: a write stores it,
 * a read pages it in, a trim drops it and frees the server's memory.
 *
 * The channel is plain C over glib and libnbd, with no QEMU internals, so
 * that it can run off the BQL: from the migration thread, from a
 * userfaultfd fault-service thread, from tests and from the benchmark.
 *
 * Threading model
 * ---------------
 * - Every function may be called from any thread, concurrently, except
 *   fctrans_subhost_close(), which must be the last call on a sub-host.
 * - Submitting a request sends it at once from the calling thread when the
 *   connection is idle (no thread hop on the page-in path). The reply is
 *   received by the channel's own thread (one per connection), which runs
 *   the completion callback. Callbacks are never run from the submitting
 *   thread, and never with a libnbd lock held: a callback may submit new
 *   requests, but must not block for long (it holds up every later reply
 *   on its connection) and must not call the synchronous functions below
 *   (they would wait for the thread the callback runs on).
 * - A sub-host has two connections ("lanes") unless configured for one:
 *   reads go to the urgent lane so that a page-in never queues behind a
 *   batch of page writes, writes and trims go to the bulk lane.
 *   FCTRANS_SUBHOST_REQ_URGENT / _BULK override this.
 * - The export must advertise multi-conn (NBD_FLAG_CAN_MULTI_CONN),
 *   whatever the number of lanes: the source writes through its own
 *   connections and the main host, another machine, reads through its
 *   own, and only multi-conn makes a flush on one connection cover what
 *   was written on the others. An export without it is refused with
 *   FCTRANS_ERROR_UNSUPPORTED, unless the configuration says
 *   single_client (tools and tests where one connection does all
 *   access to the export).
 *
 * Ordering and durability
 * -----------------------
 * - A page counts as stored only once its write completed with success:
 *   the server acknowledged it.
 * - Requests in flight at the same time have no defined order (NBD gives
 *   none, and lanes are separate connections). A request submitted after
 *   another one's callback reported success sees its effect. The caller
 *   must not overlap a write or trim with another request on the same
 *   page while either is in flight.
 * - An acknowledged write is not yet known to be durable, nor visible
 *   through other connections to the export (another sub-host handle,
 *   the main host's). A flush (fctrans_subhost_flush()) makes every write
 *   and trim whose callback reported success before the flush was
 *   submitted durable on the server and visible to every connection to
 *   the same export. The channel sends NBD_CMD_FLUSH on every lane and
 *   completes the flush once every lane's flush completed. (The export
 *   advertises multi-conn, so the server would make one connection's
 *   flush cover the writes acknowledged on all of them; a flush on each
 *   lane also proves that each lane still answers, which a caller about
 *   to commit wants to know.) Writes still in flight when the flush is
 *   submitted are not covered. Exports that cannot flush are refused
 *   when they are opened (FCTRANS_ERROR_UNSUPPORTED).
 *
 * Capacity
 * --------
 * The client accounts for every page it placed, at page_size granularity
 * (a bitmap over the export): a write of pages not yet held charges them
 * before anything is sent and fails with FCTRANS_ERROR_NOSPACE when the
 * capacity would be exceeded; a successful trim releases them. A write
 * that is refused, or completes with an error, gives back the pages it
 * charged before its callback runs: capacity and
 * fctrans_subhost_page_stored() count only acknowledged writes. (A page
 * an earlier write stored stays stored and charged after a failed
 * rewrite: the server holds some version of it.) Known gap: two writes
 * of one page in flight at once, the first failing and the second
 * succeeding, or a trim acknowledged while a write of the page is in
 * flight, leave the page stored but no longer charged, so capacity can
 * be exceeded by such pages (no data is lost). A server may still hold
 * data of a failed write (one that timed out, say): trim the range to
 * make sure its memory is freed. The server enforces its own cap (cgroup
 * memory limit, export size) independently.
 *
 * Failure
 * -------
 * Every accepted request completes exactly once. When a connection is lost
 * (server killed, network error, request timeout, TLS failure), every
 * request in flight on the sub-host completes with FCTRANS_ERROR_IO, the
 * sub-host is marked failed, and later submissions fail at once until
 * fctrans_subhost_reconnect() succeeds. Pages held by a server that was
 * restarted are gone; the channel cannot tell, the caller must.
 */
#ifndef FCTRANS_SUBHOST_H
#define FCTRANS_SUBHOST_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cancel.h"
#include "fctrans.h"

typedef struct FctransSubhost FctransSubhost;

typedef struct FctransSubhostConfig {
    /* Name used in errors and statistics, e.g. "subhost0". Required. */
    const char *id;
    /*
     * NBD URI: nbd://HOST[:PORT]/EXPORT, nbds://..., or
     * nbd+unix:///EXPORT?socket=PATH, nbds+unix:///... ("nbds" requires TLS
     * credentials). User info and tls-* query parameters are refused:
     * credentials come from this structure only.
     */
    const char *uri;
    /* Bytes the client may place on this sub-host; 0: the export's size. */
    uint64_t capacity;
    /*
     * The export must be at least this large (the guest RAM span whose
     * offsets may be stored there); 0: no check.
     */
    uint64_t min_size;
    /* Accounting and alignment granularity, a power of two; 0: 4096. */
    uint32_t page_size;
    /*
     * TLS: at most one of these. A directory laid out as QEMU's
     * tls-creds-x509 object reads it (ca-cert.pem, client-cert.pem,
     * client-key.pem), or a PSK file as QEMU's tls-creds-psk reads it
     * ("identity:hexkey" lines; a directory means DIR/keys.psk) with the
     * identity in tls_username. With credentials, TLS is required and the
     * server's certificate is verified; without, the URI must be nbd:// or
     * nbd+unix:// and the connection is plain text.
     */
    const char *tls_x509_dir;
    const char *tls_psk_file;
    const char *tls_username;
    /* Number of connections: 0 = automatic (2), 1 or 2. */
    unsigned lanes;
    /*
     * Only for tools and tests where this handle's one connection does
     * all access to the export, nobody else reading or writing it: accept
     * an export that does not advertise multi-conn. Forces one lane
     * (@lanes must be 0 or 1). Never for a split-memory VM, whose main
     * host reads through other connections than the source writes
     * through.
     */
    bool single_client;
    /* Give up connecting after this long; 0: 10 s. */
    unsigned connect_timeout_ms;
    /*
     * A request unanswered for this long fails the sub-host (a server that
     * hangs or a silent network partition must not hang the VM forever);
     * 0: 60 s.
     */
    unsigned request_timeout_ms;
    /*
     * Optional, not owned, must outlive the open: once cancelled,
     * fctrans_subhost_open() and fctrans_subhost_reconnect() stop
     * connecting with FCTRANS_ERROR_CANCELLED. A client that must also
     * interrupt requests in flight calls fctrans_subhost_shutdown().
     */
    FctransCancel *cancel;
} FctransSubhostConfig;

typedef enum FctransSubhostOp {
    FCTRANS_SUBHOST_OP_READ,
    FCTRANS_SUBHOST_OP_WRITE,
    FCTRANS_SUBHOST_OP_TRIM,
    FCTRANS_SUBHOST_OP_FLUSH,
    FCTRANS_SUBHOST_OP__MAX,
} FctransSubhostOp;

/* Request flags */
#define FCTRANS_SUBHOST_REQ_URGENT  (1u << 0) /* use the urgent lane */
#define FCTRANS_SUBHOST_REQ_BULK    (1u << 1) /* use the bulk lane */

/* Largest read or write accepted (bytes); split larger transfers. */
#define FCTRANS_SUBHOST_MAX_REQUEST (32u * 1024 * 1024)
/* Largest trim accepted (bytes): no payload, but a 32-bit wire length. */
#define FCTRANS_SUBHOST_MAX_TRIM    (1u << 31)

/*
 * Completion callback: @err is NULL on success; otherwise it describes the
 * failure and belongs to the channel (copy it to keep it). Runs on a
 * channel thread, see the threading model above.
 */
typedef void FctransSubhostDone(void *opaque, const GError *err);

/*
 * Check @cfg as fctrans_subhost_open() does before it connects: id and
 * URI given, the URI's scheme (nbds only with credentials), no user
 * information or tls-* parameters in it, at most one kind of TLS
 * credentials and present on disk, page size, lanes. Needs no server:
 * for callers that validate a configuration long before they connect
 * (QEMU at migrate-set-parameters time). Errors: FCTRANS_ERROR_INVALID,
 * or FCTRANS_ERROR_UNSUPPORTED for what this libnbd cannot do.
 */
bool fctrans_subhost_config_check(const FctransSubhostConfig *cfg,
                                  GError **errp);

/*
 * Connect to the sub-host described by @cfg (all lanes, TLS handshake,
 * export checks). Errors: FCTRANS_ERROR_INVALID (bad configuration),
 * FCTRANS_ERROR_IO (unreachable, timeout, connection lost),
 * FCTRANS_ERROR_DENIED (TLS refused, export missing, too small or
 * read-only) and FCTRANS_ERROR_UNSUPPORTED (the export cannot trim or
 * flush, or does not advertise multi-conn). The strings in @cfg are copied.
 */
FctransSubhost *fctrans_subhost_open(const FctransSubhostConfig *cfg,
                                     GError **errp);

/*
 * Disconnect and free. Requests still in flight complete with an error
 * ("closed") before this returns; call fctrans_subhost_drain() first for a
 * clean stop. Must not be called from a completion callback. NULL is fine.
 */
void fctrans_subhost_close(FctransSubhost *sh);

const char *fctrans_subhost_id(const FctransSubhost *sh);
uint64_t fctrans_subhost_export_size(const FctransSubhost *sh);
uint32_t fctrans_subhost_page_size(const FctransSubhost *sh);
unsigned fctrans_subhost_lanes(const FctransSubhost *sh);

/*
 * Asynchronous requests. @offset and @len must be multiples of the page
 * size, @len at most FCTRANS_SUBHOST_MAX_REQUEST (FCTRANS_SUBHOST_MAX_TRIM
 * for a trim), the range inside the export. @buf must stay valid (and, for
 * writes, unchanged) until @done runs. Returns true when the request was
 * accepted: @done will be called exactly once. Returns false with @errp
 * set when it was refused at once (invalid request, FCTRANS_ERROR_NOSPACE,
 * sub-host failed or closing): @done will not be called.
 */
bool fctrans_subhost_write(FctransSubhost *sh, uint64_t offset, size_t len,
                           const void *buf, unsigned flags,
                           FctransSubhostDone *done, void *opaque,
                           GError **errp);
bool fctrans_subhost_read(FctransSubhost *sh, uint64_t offset, size_t len,
                          void *buf, unsigned flags,
                          FctransSubhostDone *done, void *opaque,
                          GError **errp);
bool fctrans_subhost_trim(FctransSubhost *sh, uint64_t offset, size_t len,
                          unsigned flags, FctransSubhostDone *done,
                          void *opaque, GError **errp);

/*
 * Flush: see "Ordering and durability" above. No flags are defined yet:
 * @flags must be 0. Returns false with @errp set when refused at once
 * (invalid flags, sub-host failed or closing); once accepted, @done runs
 * exactly once, with an error if any lane's flush failed or could not be
 * sent. Its statistics count one request per call, whatever the lanes.
 */
bool fctrans_subhost_flush(FctransSubhost *sh, unsigned flags,
                           FctransSubhostDone *done, void *opaque,
                           GError **errp);

/*
 * Wait until no request is in flight (every callback has returned), then
 * report the first error any request completed with since the previous
 * drain, and forget it. Must not be called from a completion callback.
 */
bool fctrans_subhost_drain(FctransSubhost *sh, GError **errp);

/* Synchronous convenience wrappers (tests, tools, slow paths). */
bool fctrans_subhost_write_sync(FctransSubhost *sh, uint64_t offset,
                                size_t len, const void *buf, GError **errp);
bool fctrans_subhost_read_sync(FctransSubhost *sh, uint64_t offset,
                               size_t len, void *buf, GError **errp);
bool fctrans_subhost_trim_sync(FctransSubhost *sh, uint64_t offset,
                               size_t len, GError **errp);
bool fctrans_subhost_flush_sync(FctransSubhost *sh, GError **errp);

/*
 * True while every lane is connected. After a failure, requests fail at
 * once until fctrans_subhost_reconnect() re-establishes the connections
 * (waiting first for the failed requests' callbacks to finish).
 */
bool fctrans_subhost_is_connected(FctransSubhost *sh);
bool fctrans_subhost_reconnect(FctransSubhost *sh, GError **errp);

/*
 * Fail the sub-host for good, from any thread, without blocking: every
 * request in flight completes with an error that names @why, and every
 * later submission and reconnect fails at once. A cancelled migration
 * uses it so that no wait on a silent server outlasts the cancel. The
 * handle must still be closed.
 */
void fctrans_subhost_shutdown(FctransSubhost *sh, const char *why);

/*
 * Whether the page at @offset is stored there: a write of it was
 * acknowledged, and no trim of it since. False while the first write of a
 * page is in flight, and after it failed or was refused.
 */
bool fctrans_subhost_page_stored(FctransSubhost *sh, uint64_t offset);

typedef struct FctransSubhostOpStats {
    uint64_t requests;      /* completed requests */
    uint64_t bytes;         /* bytes of completed successful requests */
    uint64_t errors;        /* requests completed with an error */
    /* Submission to completion callback, successful requests, ns. */
    uint64_t lat_p50_ns;
    uint64_t lat_p99_ns;
    uint64_t lat_max_ns;
    uint64_t lat_mean_ns;
} FctransSubhostOpStats;

typedef struct FctransSubhostStats {
    FctransSubhostOpStats op[FCTRANS_SUBHOST_OP__MAX];
    uint64_t in_flight;         /* accepted, callback not yet returned */
    uint64_t refused;           /* submissions refused at once */
    uint64_t nospace;           /* of which for lack of capacity */
    uint64_t capacity_used;     /* bytes charged: stored, being written */
    uint64_t capacity_total;    /* bytes */
    uint64_t reconnects;        /* successful fctrans_subhost_reconnect() */
    bool connected;
} FctransSubhostStats;

void fctrans_subhost_get_stats(FctransSubhost *sh, FctransSubhostStats *st);
/* Clear the request counters and latency histograms (not capacity). */
void fctrans_subhost_reset_stats(FctransSubhost *sh);

const char *fctrans_subhost_op_name(FctransSubhostOp op);

#endif /* FCTRANS_SUBHOST_H */
