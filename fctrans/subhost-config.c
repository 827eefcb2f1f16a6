/*
 * fctrans: the sub-host channel's configuration checks
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Everything about an FctransSubhostConfig that can be checked without a
 * server: the URI (scheme, no user information, no TLS settings in the
 * query), the TLS credentials (at most one kind, present on disk, a PSK
 * directory resolved to its keys.psk), sizes and lanes. Separate from
 * connecting so that it is tested without a server, and so that a caller
 * (QEMU at migrate-set-parameters time) can refuse a bad configuration
 * long before it would connect. The result, SubhostParams, is what the
 * other two files of the channel work from.
 */
#include "subhost-internal.h"

#include <string.h>

#include <libnbd.h>

#define SUBHOST_DEFAULT_PAGE_SIZE       4096
#define SUBHOST_DEFAULT_CONNECT_MS      10000
#define SUBHOST_DEFAULT_REQUEST_MS      60000
/* QEMU's tls-creds-psk uses this identity when none is given. */
#define SUBHOST_DEFAULT_PSK_USERNAME    "qemu"

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
    if (cfg->lanes > SUBHOST_LANES) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: %u lanes asked, at most %u", id,
                    cfg->lanes, SUBHOST_LANES);
        return false;
    }
    if (cfg->single_client && cfg->lanes > 1) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: %u lanes asked, but a single client has "
                    "one connection", id, cfg->lanes);
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
static char *subhost_psk_path(const char *id, const char *path,
                              GError **errp)
{
    char *file;

    if (!g_file_test(path, G_FILE_TEST_IS_DIR)) {
        file = g_strdup(path);
    } else {
        file = g_build_filename(path, "keys.psk", NULL);
    }
    if (!g_file_test(file, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "sub-host %s: PSK file %s not found", id, file);
        g_free(file);
        return NULL;
    }
    return file;
}

bool subhost_params_init(SubhostParams *p, const FctransSubhostConfig *cfg,
                         GError **errp)
{
    g_autofree char *psk_file = NULL;

    memset(p, 0, sizeof(*p));
    if (!subhost_check_config(cfg, errp)) {
        return false;
    }
    if (cfg->tls_psk_file) {
        psk_file = subhost_psk_path(cfg->id, cfg->tls_psk_file, errp);
        if (!psk_file) {
            return false;
        }
    }

    p->id = g_strdup(cfg->id);
    p->uri = g_strdup(cfg->uri);
    p->unix_socket = g_str_has_prefix(cfg->uri, "nbd+unix:") ||
                     g_str_has_prefix(cfg->uri, "nbds+unix:");
    p->x509_dir = g_strdup(cfg->tls_x509_dir);
    p->psk_file = g_steal_pointer(&psk_file);
    p->username = g_strdup(cfg->tls_username ? cfg->tls_username
                                             : SUBHOST_DEFAULT_PSK_USERNAME);
    p->capacity = cfg->capacity;
    p->min_size = cfg->min_size;
    p->page_size = cfg->page_size ? cfg->page_size
                                  : SUBHOST_DEFAULT_PAGE_SIZE;
    p->page_shift = __builtin_ctz(p->page_size);
    p->lanes = cfg->lanes;
    p->single_client = cfg->single_client;
    p->connect_timeout_ms = cfg->connect_timeout_ms ?
                            cfg->connect_timeout_ms :
                            SUBHOST_DEFAULT_CONNECT_MS;
    p->request_timeout_ms = cfg->request_timeout_ms ?
                            cfg->request_timeout_ms :
                            SUBHOST_DEFAULT_REQUEST_MS;
    p->cancel = cfg->cancel;
    return true;
}

void subhost_params_clear(SubhostParams *p)
{
    g_free(p->id);
    g_free(p->uri);
    g_free(p->x509_dir);
    g_free(p->psk_file);
    g_free(p->username);
    memset(p, 0, sizeof(*p));
}

bool fctrans_subhost_config_check(const FctransSubhostConfig *cfg,
                                  GError **errp)
{
    SubhostParams p;

    if (!subhost_params_init(&p, cfg, errp)) {
        return false;
    }
    subhost_params_clear(&p);
    return true;
}
