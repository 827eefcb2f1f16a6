/*
 * fctrans: the sub-host channel's internal interfaces
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The channel (subhost.h) is three files, each with one job:
 * - subhost-config.c turns an FctransSubhostConfig into SubhostParams:
 *   every check that needs no server (URI, TLS credentials, sizes,
 *   lanes), and the defaults. Unit-tested without a server.
 * - subhost-conn.c makes libnbd connections from SubhostParams: TLS,
 *   the connect timeout, the export's checks (size, trim, flush,
 *   multi-conn), and error codes for what went wrong.
 * - subhost.c runs them: request lanes and their threads, submission,
 *   completion, capacity accounting, reconnection, statistics.
 * This header is what they share; nothing outside fctrans/ (and its
 * tests) includes it.
 */
#ifndef FCTRANS_SUBHOST_INTERNAL_H
#define FCTRANS_SUBHOST_INTERNAL_H

#include "subhost.h"

#include <time.h>

struct nbd_handle;

/* Lanes (connections) of a sub-host, in the order they connect. */
enum {
    SUBHOST_LANE_URGENT,
    SUBHOST_LANE_BULK,
    SUBHOST_LANES,
};

/* "urgent", "bulk" */
extern const char *const subhost_lane_name[SUBHOST_LANES];

/*
 * A checked configuration with its defaults filled in, owned by the
 * sub-host (strings copied).
 */
typedef struct SubhostParams {
    char *id;
    char *uri;
    bool unix_socket;           /* nbd+unix:// or nbds+unix:// */
    char *x509_dir;             /* TLS: at most one of x509_dir, psk_file */
    char *psk_file;             /* a file, never the directory */
    char *username;             /* PSK identity (default "qemu") */
    uint64_t capacity;          /* 0: the export's size */
    uint64_t min_size;
    uint32_t page_size;
    unsigned page_shift;
    unsigned lanes;             /* 0: automatic */
    bool single_client;
    unsigned connect_timeout_ms;
    unsigned request_timeout_ms;
    FctransCancel *cancel;      /* not owned; NULL: none */
} SubhostParams;

/* subhost-config.c */

/*
 * Check @cfg as fctrans_subhost_open() does before connecting, and fill
 * @p. On failure (FCTRANS_ERROR_INVALID, or FCTRANS_ERROR_UNSUPPORTED for
 * what this libnbd cannot do), @p is left empty.
 */
bool subhost_params_init(SubhostParams *p, const FctransSubhostConfig *cfg,
                         GError **errp);
void subhost_params_clear(SubhostParams *p);

/* subhost-conn.c */

/* What a connection found: the export's size, and lanes connected. */
typedef struct SubhostExport {
    uint64_t size;
    unsigned lanes;
} SubhostExport;

/*
 * Connect every lane into @nbd[] (NULL past the last lane), each one
 * through TLS when @p has credentials, and check the export on each. A
 * first connection (@expect NULL) decides the number of lanes; a
 * reconnection passes what the first found, which the export must still
 * match. Fills @found on success; on failure no handle is left open.
 */
bool subhost_connect_all(const SubhostParams *p, const SubhostExport *expect,
                         SubhostExport *found,
                         struct nbd_handle *nbd[SUBHOST_LANES],
                         GError **errp);

/* libnbd's message without its "nbd_xxx: " prefix; never NULL */
const char *subhost_nbd_error_text(const char *msg);

static inline int64_t subhost_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif /* FCTRANS_SUBHOST_INTERNAL_H */
