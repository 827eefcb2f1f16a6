/*
 * fctrans: the sub-host channel's connections
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Making the libnbd handles of a sub-host's lanes: credentials from the
 * configuration only (never from the URI), TLS required and the server's
 * certificate verified when there are credentials, a connect timeout, and
 * the export's checks on every connection (size, writable, trim, flush,
 * multi-conn). A failure to connect becomes an error code the caller can
 * act on: FCTRANS_ERROR_IO when the server could not be reached (retry
 * later), FCTRANS_ERROR_DENIED when it refused us (fix the
 * configuration), FCTRANS_ERROR_UNSUPPORTED when the export lacks what
 * the channel needs. Handles leave this file connected and idle; the
 * lanes that drive them are subhost.c's.
 */
#include "subhost-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>

#include <libnbd.h>

const char *const subhost_lane_name[SUBHOST_LANES] = {
    [SUBHOST_LANE_URGENT] = "urgent",
    [SUBHOST_LANE_BULK] = "bulk",
};

/* libnbd prefixes messages with the API call: "nbd_aio_notify_read: " */
const char *subhost_nbd_error_text(const char *msg)
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

static void subhost_connect_error(const SubhostParams *p, const char *lane,
                                  GError **errp)
{
    const char *msg = nbd_get_error();
    int e = nbd_get_errno();
    int code = subhost_connect_error_code(msg, e);
    bool tls = msg && strstr(msg, "gnutls_");

    g_set_error(errp, FCTRANS_ERROR, code,
                "sub-host %s: cannot connect to %s (%s lane): %s%s", p->id,
                p->uri, lane,
                msg ? subhost_nbd_error_text(msg) : g_strerror(e ? e : EIO),
                code == FCTRANS_ERROR_DENIED && tls ?
                " (TLS handshake refused: are these credentials the ones "
                "the export was given for this VM?)" : "");
}

static struct nbd_handle *subhost_nbd_new(const SubhostParams *p,
                                          const char *lane, GError **errp)
{
    struct nbd_handle *nbd = nbd_create();
    g_autofree char *name = g_strdup_printf("%s-%s", p->id, lane);
    bool tls = p->x509_dir || p->psk_file;
    int ok = 0;

    if (!nbd) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_FAILED,
                    "sub-host %s: nbd_create: %s", p->id, nbd_get_error());
        return NULL;
    }
    ok |= nbd_set_handle_name(nbd, name);
    /* Credentials come from the configuration only, never from the URI. */
    ok |= nbd_set_uri_allow_local_file(nbd, false);
    ok |= nbd_set_uri_allow_tls(nbd, tls ? LIBNBD_TLS_ALLOW
                                         : LIBNBD_TLS_DISABLE);
    ok |= nbd_set_tls(nbd, tls ? LIBNBD_TLS_REQUIRE : LIBNBD_TLS_DISABLE);
    if (p->x509_dir) {
        ok |= nbd_set_tls_certificates(nbd, p->x509_dir);
        ok |= nbd_set_tls_verify_peer(nbd, true);
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
        if (p->unix_socket) {
            /* Unix sockets have no host name to check the certificate by */
            ok |= nbd_set_tls_hostname(nbd, "localhost");
        }
#endif
    }
    if (p->psk_file) {
        ok |= nbd_set_tls_psk_file(nbd, p->psk_file);
        ok |= nbd_set_tls_username(nbd, p->username);
    }
    if (ok) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: %s", p->id, nbd_get_error());
        nbd_close(nbd);
        return NULL;
    }
    return nbd;
}

/* Connect @nbd to the URI, waiting at most the connect timeout. */
static bool subhost_nbd_connect(const SubhostParams *p,
                                struct nbd_handle *nbd, const char *lane,
                                GError **errp)
{
    int64_t deadline = subhost_now_ns() +
                       (int64_t)p->connect_timeout_ms * 1000000;

    if (nbd_aio_connect_uri(nbd, p->uri) == -1) {
        subhost_connect_error(p, lane, errp);
        return false;
    }
    while (!nbd_aio_is_ready(nbd)) {
        unsigned dir;
        struct pollfd pfd[2];
        int64_t left = deadline - subhost_now_ns();
        int r, ret = 0;

        if (nbd_aio_is_dead(nbd) || nbd_aio_is_closed(nbd)) {
            subhost_connect_error(p, lane, errp);
            return false;
        }
        if (left <= 0) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                        "sub-host %s: cannot connect to %s (%s lane): timed "
                        "out after %u ms", p->id, p->uri, lane,
                        p->connect_timeout_ms);
            return false;
        }
        dir = nbd_aio_get_direction(nbd);
        pfd[0].fd = nbd_aio_get_fd(nbd);
        pfd[0].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                        ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
        pfd[0].revents = 0;
        /* A silent server must not outlast a cancel: wait on both. */
        pfd[1].fd = p->cancel ? fctrans_cancel_fd(p->cancel) : -1;
        pfd[1].events = POLLIN;
        pfd[1].revents = 0;
        r = poll(pfd, 2, MAX(1, left / 1000000));
        if (r < 0 && errno != EINTR) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                        "sub-host %s: poll: %s", p->id, g_strerror(errno));
            return false;
        }
        if (p->cancel && fctrans_cancel_is_set(p->cancel)) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_CANCELLED,
                        "sub-host %s: connecting to %s (%s lane) was "
                        "cancelled", p->id, p->uri, lane);
            return false;
        }
        if (r <= 0) {
            continue;
        }
        if ((pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
            (dir & LIBNBD_AIO_DIRECTION_READ)) {
            ret = nbd_aio_notify_read(nbd);
        } else if ((pfd[0].revents & (POLLOUT | POLLHUP | POLLERR)) &&
                   (dir & LIBNBD_AIO_DIRECTION_WRITE)) {
            ret = nbd_aio_notify_write(nbd);
        }
        if (ret == -1) {
            subhost_connect_error(p, lane, errp);
            return false;
        }
    }
    if ((p->x509_dir || p->psk_file) && nbd_get_tls_negotiated(nbd) != 1) {
        /* libnbd enforces LIBNBD_TLS_REQUIRE; check it anyway. */
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: TLS was not negotiated with %s", p->id,
                    p->uri);
        return false;
    }
    return true;
}

/*
 * Check the export a connection reached. With @want_size (a later lane,
 * or a reconnection), it must be that size; else at least min_size. On
 * every connection: writable, trim (dropped pages must free the server's
 * memory) and flush (see subhost.h, "Ordering and durability").
 */
static bool subhost_check_export(const SubhostParams *p,
                                 struct nbd_handle *nbd,
                                 const uint64_t *want_size, uint64_t *sizep,
                                 GError **errp)
{
    int64_t size = nbd_get_size(nbd);

    if (size < 0) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO,
                    "sub-host %s: cannot get the export size: %s", p->id,
                    nbd_get_error());
        return false;
    }
    if (want_size && (uint64_t)size != *want_size) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: export %s changed size from %" PRIu64
                    " to %" PRId64 " bytes", p->id, p->uri, *want_size,
                    size);
        return false;
    }
    if (!want_size && (uint64_t)size < p->min_size) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: export %s is %" PRId64 " bytes, smaller "
                    "than the %" PRIu64 " bytes needed", p->id, p->uri,
                    size, p->min_size);
        return false;
    }
    if (nbd_is_read_only(nbd) == 1) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_DENIED,
                    "sub-host %s: export %s is read-only", p->id, p->uri);
        return false;
    }
    if (nbd_can_trim(nbd) != 1) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "sub-host %s: export %s does not support trim", p->id,
                    p->uri);
        return false;
    }
    if (nbd_can_flush(nbd) != 1) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "sub-host %s: export %s does not support flush: the "
                    "main host reads through other connections than the "
                    "source writes through, and only a flush makes the "
                    "source's writes durable and visible to them", p->id,
                    p->uri);
        return false;
    }
    *sizep = size;
    return true;
}

static bool subhost_connect_one(const SubhostParams *p, unsigned lane,
                                const uint64_t *want_size, uint64_t *sizep,
                                struct nbd_handle **nbdp, GError **errp)
{
    const char *name = subhost_lane_name[lane];

    *nbdp = subhost_nbd_new(p, name, errp);
    return *nbdp && subhost_nbd_connect(p, *nbdp, name, errp) &&
           subhost_check_export(p, *nbdp, want_size, sizep, errp);
}

bool subhost_connect_all(const SubhostParams *p, const SubhostExport *expect,
                         SubhostExport *found,
                         struct nbd_handle *nbd[SUBHOST_LANES],
                         GError **errp)
{
    uint64_t size;
    unsigned want, i;

    for (i = 0; i < SUBHOST_LANES; i++) {
        nbd[i] = NULL;
    }
    if (!subhost_connect_one(p, SUBHOST_LANE_URGENT,
                             expect ? &expect->size : NULL, &size, &nbd[0],
                             errp)) {
        goto fail;
    }
    if (nbd_can_multi_conn(nbd[0]) != 1 && !p->single_client) {
        /*
         * Even with one lane here: the main host has connections of its
         * own to this export.
         */
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "sub-host %s: export %s does not advertise multi-conn: "
                    "a read on the main host need not see what the source "
                    "wrote through another connection", p->id, p->uri);
        goto fail;
    }

    if (expect) {
        want = expect->lanes;
    } else if (p->single_client) {
        want = 1;
    } else if (p->lanes) {
        want = p->lanes;
    } else {
        want = SUBHOST_LANES;
    }
    for (i = 1; i < want; i++) {
        GError *err = NULL;
        uint64_t lane_size;

        /* A local error: @errp may be NULL, and we add to the message. */
        if (!subhost_connect_one(p, i, &size, &lane_size, &nbd[i], &err)) {
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
    found->size = size;
    found->lanes = want;
    return true;

fail:
    for (i = 0; i < SUBHOST_LANES; i++) {
        if (nbd[i]) {
            nbd_close(nbd[i]);
            nbd[i] = NULL;
        }
    }
    return false;
}
