/*
 * Split migration: parameters, the "split" section, common helpers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "qapi/qmp/qerror.h"
#include "qom/object.h"
#include "qom/object_interfaces.h"
#include "crypto/tlscredspsk.h"
#include "crypto/tlscredsx509.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "system/runstate.h"
#include "migration/register.h"
#include "migration.h"
#include "options.h"
#include "ram.h"
#include "split.h"
#include "split-internal.h"
#include "trace.h"

/* Capabilities that a split migration cannot be combined with. */
static const MigrationCapability split_incompatible_caps[] = {
    MIGRATION_CAPABILITY_MULTIFD,
    MIGRATION_CAPABILITY_POSTCOPY_RAM,
    MIGRATION_CAPABILITY_XBZRLE,
    MIGRATION_CAPABILITY_MAPPED_RAM,
    MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT,
    MIGRATION_CAPABILITY_X_IGNORE_SHARED,
    MIGRATION_CAPABILITY_X_COLO,
};

bool split_caps_check(bool *old_caps, bool *new_caps, Error **errp)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(split_incompatible_caps); i++) {
        MigrationCapability cap = split_incompatible_caps[i];

        if (new_caps[cap]) {
            error_setg(errp, "Capability 'split-memory' is not compatible "
                       "with '%s'", MigrationCapability_str(cap));
            return false;
        }
    }

    /*
     * The main host serves the guest's faults with userfaultfd: check
     * that it can, when the capability is set for an incoming migration.
     */
    if (!old_caps[MIGRATION_CAPABILITY_SPLIT_MEMORY] &&
        runstate_check(RUN_STATE_INMIGRATE) && !split_pager_supported(errp)) {
        error_prepend(errp, "Capability 'split-memory' is not supported: ");
        return false;
    }
    return true;
}

static bool split_id_valid(const char *id)
{
    const char *p;

    if (!*id || strlen(id) > SPLIT_ID_MAX) {
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
 * A light check of an NBD URI; the sub-host channel checks it again, in
 * full, when it connects.
 */
static bool split_uri_check(const char *uri, Error **errp)
{
    g_autoptr(GUri) u = NULL;
    g_autoptr(GHashTable) params = NULL;
    g_autoptr(GError) gerr = NULL;
    const char *scheme, *query;
    bool unix_socket;

    if (strlen(uri) > SPLIT_URI_MAX) {
        error_setg(errp, "URI longer than %d bytes", SPLIT_URI_MAX);
        return false;
    }
    u = g_uri_parse(uri, G_URI_FLAGS_ENCODED_QUERY, &gerr);
    if (!u) {
        error_setg(errp, "'%s' is not a valid URI: %s", uri, gerr->message);
        return false;
    }
    scheme = g_uri_get_scheme(u);
    if (!g_str_equal(scheme, "nbd") && !g_str_equal(scheme, "nbds") &&
        !g_str_equal(scheme, "nbd+unix") && !g_str_equal(scheme, "nbds+unix")) {
        error_setg(errp, "'%s': the scheme must be nbd, nbds, nbd+unix or "
                   "nbds+unix", uri);
        return false;
    }
    if (g_uri_get_userinfo(u)) {
        error_setg(errp, "'%s': credentials in the URI are not allowed; "
                   "use split-tls-creds", uri);
        return false;
    }
    unix_socket = g_str_has_suffix(scheme, "+unix");
    query = g_uri_get_query(u);
    if (query) {
        GHashTableIter iter;
        gpointer key;

        params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, &gerr);
        if (!params) {
            error_setg(errp, "'%s': bad query: %s", uri, gerr->message);
            return false;
        }
        g_hash_table_iter_init(&iter, params);
        while (g_hash_table_iter_next(&iter, &key, NULL)) {
            if (g_str_has_prefix(key, "tls")) {
                error_setg(errp, "'%s': TLS settings in the URI are not "
                           "allowed; use split-tls-creds", uri);
                return false;
            }
            if (!unix_socket || !g_str_equal(key, "socket")) {
                error_setg(errp, "'%s': unsupported query parameter '%s'",
                           uri, (char *)key);
                return false;
            }
        }
    }
    if (unix_socket) {
        const char *sock = params ? g_hash_table_lookup(params, "socket") :
                                    NULL;

        if (!sock || !*sock) {
            error_setg(errp, "'%s': a Unix socket URI needs ?socket=PATH",
                       uri);
            return false;
        }
        if (g_uri_get_host(u) && *g_uri_get_host(u)) {
            error_setg(errp, "'%s': a Unix socket URI has no host", uri);
            return false;
        }
    } else if (!g_uri_get_host(u) || !*g_uri_get_host(u)) {
        error_setg(errp, "'%s': no host", uri);
        return false;
    }
    return true;
}

bool split_params_check(MigrationParameters *params, Error **errp)
{
    g_autoptr(GHashTable) ids = NULL;
    SplitSubhostList *l;
    unsigned n = 0;

    if (!params->has_split_subhosts) {
        return true;
    }
    ids = g_hash_table_new(g_str_hash, g_str_equal);
    for (l = params->split_subhosts; l; l = l->next) {
        SplitSubhost *sh = l->value;

        if (++n > SPLIT_MAX_SUBHOSTS) {
            error_setg(errp, "Parameter 'split-subhosts' expects at most %d "
                       "sub-hosts", SPLIT_MAX_SUBHOSTS);
            return false;
        }
        if (!split_id_valid(sh->id)) {
            error_setg(errp, "Parameter 'split-subhosts': invalid id '%s' "
                       "(1 to %d letters, digits, '-', '_' or '.')",
                       sh->id, SPLIT_ID_MAX);
            return false;
        }
        if (!g_hash_table_add(ids, sh->id)) {
            error_setg(errp, "Parameter 'split-subhosts': duplicate id '%s'",
                       sh->id);
            return false;
        }
        if (!split_uri_check(sh->uri, errp)) {
            error_prepend(errp, "Parameter 'split-subhosts', sub-host '%s': ",
                          sh->id);
            return false;
        }
        if (sh->capacity < qemu_target_page_size()) {
            error_setg(errp, "Parameter 'split-subhosts', sub-host '%s': "
                       "capacity must be at least %zu bytes", sh->id,
                       qemu_target_page_size());
            return false;
        }
    }
    return true;
}

bool split_block_eligible(RAMBlock *rb)
{
    MemoryRegion *mr = rb->mr;

    return qemu_ram_is_migratable(rb) && !migrate_ram_is_ignored(rb) &&
           !(rb->flags & (RAM_RESIZEABLE | RAM_PMEM | RAM_PROTECTED)) &&
           !memory_region_is_rom(mr) && !mr->rom_device &&
           !memory_region_is_ram_device(mr) &&
           qemu_ram_pagesize(rb) == qemu_real_host_page_size() &&
           qemu_real_host_page_size() == qemu_target_page_size() &&
           rb->used_length >= qemu_target_page_size();
}

void split_layout_build(SplitLayout *layout)
{
    RAMBlock *rb;
    GArray *blocks = g_array_new(false, true, sizeof(SplitBlock));

    layout->page_size = qemu_target_page_size();
    layout->npages = 0;
    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            SplitBlock b = { .rb = rb };

            if (!split_block_eligible(rb)) {
                continue;
            }
            b.first_page = layout->npages;
            b.npages = rb->used_length / layout->page_size;
            layout->npages += b.npages;
            g_array_append_val(blocks, b);
        }
    }
    layout->nblocks = blocks->len;
    layout->blocks = (SplitBlock *)g_array_free(blocks, false);
}

void split_layout_clear(SplitLayout *layout)
{
    g_free(layout->blocks);
    memset(layout, 0, sizeof(*layout));
}

SplitBlock *split_layout_find(SplitLayout *layout, RAMBlock *rb)
{
    unsigned i;

    for (i = 0; i < layout->nblocks; i++) {
        if (layout->blocks[i].rb == rb) {
            return &layout->blocks[i];
        }
    }
    return NULL;
}

void split_error_from_gerror(Error **errp, const GError *gerr,
                             const char *fmt, ...)
{
    va_list ap;
    g_autofree char *prefix = NULL;

    va_start(ap, fmt);
    prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(errp, "%s: %s", prefix, gerr ? gerr->message : "failed");
}

FctransSubhostConfig *split_subhost_config(const char *id, const char *uri,
                                           uint64_t capacity,
                                           uint64_t min_size,
                                           const char *tls_creds,
                                           Error **errp)
{
    g_autofree FctransSubhostConfig *cfg = g_new0(FctransSubhostConfig, 1);
    Object *creds;

    cfg->id = g_strdup(id);
    cfg->uri = g_strdup(uri);
    cfg->capacity = capacity;
    cfg->min_size = min_size;
    cfg->page_size = qemu_target_page_size();

    if (!tls_creds) {
        return g_steal_pointer(&cfg);
    }
    creds = object_resolve_path_component(object_get_objects_root(),
                                          tls_creds);
    if (!creds) {
        error_setg(errp, "No TLS credentials with id '%s'", tls_creds);
        goto fail;
    }
    if (object_dynamic_cast(creds, TYPE_QCRYPTO_TLS_CREDS_PSK)) {
        char *user = object_property_get_str(creds, "username", NULL);

        cfg->tls_psk_file = object_property_get_str(creds, "dir", NULL);
        cfg->tls_username = user && *user ? user : g_strdup("qemu");
        if (cfg->tls_username != user) {
            g_free(user);
        }
    } else if (object_dynamic_cast(creds, TYPE_QCRYPTO_TLS_CREDS_X509)) {
        cfg->tls_x509_dir = object_property_get_str(creds, "dir", NULL);
    } else {
        error_setg(errp, "TLS credentials '%s' cannot be used for sub-hosts: "
                   "they must be tls-creds-x509 or tls-creds-psk", tls_creds);
        goto fail;
    }
    if ((cfg->tls_psk_file && !*cfg->tls_psk_file) ||
        (cfg->tls_x509_dir && !*cfg->tls_x509_dir) ||
        (!cfg->tls_psk_file && !cfg->tls_x509_dir)) {
        error_setg(errp, "TLS credentials '%s' have no directory", tls_creds);
        goto fail;
    }
    return g_steal_pointer(&cfg);

fail:
    split_subhost_config_free(g_steal_pointer(&cfg));
    return NULL;
}

void split_subhost_config_free(FctransSubhostConfig *cfg)
{
    if (!cfg) {
        return;
    }
    g_free((char *)cfg->id);
    g_free((char *)cfg->uri);
    g_free((char *)cfg->tls_x509_dir);
    g_free((char *)cfg->tls_psk_file);
    g_free((char *)cfg->tls_username);
    g_free(cfg);
}

FctransSubhost *split_subhost_open(const FctransSubhostConfig *cfg,
                                   Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    FctransSubhost *sh;

    trace_split_subhost_open(cfg->id, cfg->uri,
                             cfg->tls_psk_file ? "psk" :
                             cfg->tls_x509_dir ? "x509" : "none");
    sh = fctrans_subhost_open(cfg, &gerr);
    if (!sh) {
        split_error_from_gerror(errp, gerr, "split: cannot use sub-host '%s'",
                                cfg->id);
    }
    return sh;
}

static SaveVMHandlers savevm_split_handlers;

void split_mig_init(void)
{
    split_save_handlers(&savevm_split_handlers);
    split_load_handlers(&savevm_split_handlers);
    register_savevm_live(SPLIT_SECTION_NAME, 0, SPLIT_SECTION_VERSION,
                         &savevm_split_handlers, NULL);
}
