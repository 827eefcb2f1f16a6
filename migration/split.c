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
#include "system/hostmem.h"
#include "system/system.h"
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

    if (params->has_split_reconnect_timeout &&
        params->split_reconnect_timeout > SPLIT_RECONNECT_TIMEOUT_MAX_MS) {
        error_setg(errp, "Parameter 'split-reconnect-timeout' expects at "
                   "most %u ms", SPLIT_RECONNECT_TIMEOUT_MAX_MS);
        return false;
    }
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

/*
 * Whether @rb is of a kind that a split migration places page by page:
 * migrated RAM that is neither ROM, firmware, device memory nor resizeable.
 * The others go whole to the main host in the RAM section.
 */
static bool split_block_candidate(RAMBlock *rb)
{
    MemoryRegion *mr = rb->mr;

    return qemu_ram_is_migratable(rb) && !migrate_ram_is_ignored(rb) &&
           !(rb->flags & (RAM_RESIZEABLE | RAM_PMEM | RAM_PROTECTED)) &&
           !memory_region_is_rom(mr) && !mr->rom_device &&
           !memory_region_is_ram_device(mr) &&
           rb->used_length >= qemu_target_page_size();
}

bool split_block_eligible(RAMBlock *rb)
{
    return split_block_candidate(rb) &&
           qemu_ram_pagesize(rb) == qemu_real_host_page_size() &&
           qemu_real_host_page_size() == qemu_target_page_size();
}

/* The memory backend that owns @rb, if any. */
static HostMemoryBackend *split_block_backend(RAMBlock *rb)
{
    Object *owner = rb->mr ? rb->mr->owner : NULL;

    return owner ? (HostMemoryBackend *)object_dynamic_cast(owner,
                                                    TYPE_MEMORY_BACKEND) :
                   NULL;
}

/* "RAM block 'X'", with the backend object that owns it, for errors. */
static char *split_block_describe(RAMBlock *rb)
{
    HostMemoryBackend *be = split_block_backend(rb);
    const char *id;

    if (!be) {
        return g_strdup_printf("RAM block '%s'", rb->idstr);
    }
    id = object_get_canonical_path_component(OBJECT(be));
    return g_strdup_printf("RAM block '%s' (%s '%s')", rb->idstr,
                           object_get_typename(OBJECT(be)), id ? id : "?");
}

/*
 * Why a block that a split migration would place cannot be split, if it
 * cannot. Each of these makes some page of the block reachable, or
 * populated, other than through this process's userfaultfd.
 */
static bool split_block_check(RAMBlock *rb, Error **errp)
{
    HostMemoryBackend *be = split_block_backend(rb);
    MemoryRegion *mr = rb->mr;
    g_autofree char *what = NULL;

    if (!split_block_eligible(rb)) {
        /*
         * A block at another page size than the host's (hugetlbfs) cannot
         * be served page by page. ROMs and firmware at such a size may go
         * whole to the main host, but guest RAM must not: most of the VM
         * would land there, past its budget, without a word.
         */
        if (split_block_candidate(rb) &&
            (be || g_str_equal(rb->idstr, "pc.ram"))) {
            g_autofree char *ps = size_to_str(qemu_ram_pagesize(rb));
            g_autofree char *hps = size_to_str(qemu_real_host_page_size());

            what = split_block_describe(rb);
            error_setg(errp, "split-memory: %s uses huge pages (%s, the "
                       "host's page size is %s): huge pages are not "
                       "supported yet, a split migration places host-size "
                       "pages only", what, ps, hps);
            return false;
        }
        return true;
    }

    what = split_block_describe(rb);
    /*
     * Another process (a vhost-user backend, an ivshmem peer) may read or
     * write shared RAM where this process's userfaultfd cannot see: on the
     * main host, a page left on a sub-host would read as zero there, and
     * its writes would be lost when the pager installs the remote copy.
     */
    if (qemu_ram_is_shared(rb)) {
        error_setg(errp, "split-memory: %s is shared with other processes "
                   "(share=on, as vhost-user and ivshmem need): they would "
                   "not see pages left on sub-hosts; use share=off", what);
        return false;
    }
    /*
     * virtio-mem discards and plugs memory in this block on its own, behind
     * the pager's map of where each page is.
     */
    if (memory_region_has_ram_discard_manager(mr)) {
        Object *rdm = OBJECT(memory_region_get_ram_discard_manager(mr));
        g_autofree char *path = object_get_canonical_path(rdm);

        error_setg(errp, "split-memory: %s is managed by %s '%s', which "
                   "plugs and discards its memory behind the pager: "
                   "virtio-mem is not supported (pc-dimm is)", what,
                   object_get_typename(rdm), path ? path : "?");
        return false;
    }
    /*
     * Preallocation (prealloc=on, or -mem-prealloc for every backend)
     * promises that every page is populated before the guest runs; the
     * main host populates only its budget and faults the rest in.
     */
    if (be && object_property_get_bool(OBJECT(be), "prealloc", NULL)) {
        error_setg(errp, "split-memory: %s is preallocated (prealloc=on or "
                   "-mem-prealloc): the main host holds only part of it; "
                   "use prealloc=off", what);
        return false;
    }
    return true;
}

bool split_migration_check(MigrationAddress *addr, Error **errp)
{
    RAMBlock *rb;

    /*
     * RDMA registers (pins) all guest RAM with the NIC and writes the
     * destination's RAM without the pager.
     */
    if (addr && addr->transport == MIGRATION_ADDRESS_TYPE_RDMA) {
        error_setg(errp, "split-memory: the rdma transport is not supported: "
                   "its registration pins all guest RAM; use a socket");
        return false;
    }
    /* Locked memory can be neither dropped nor left to fault in. */
    if (should_mlock(mlock_state)) {
        error_setg(errp, "split-memory: guest RAM is locked "
                   "(-overcommit mem-lock=on or on-fault): its pages cannot "
                   "be dropped and paged remotely");
        return false;
    }
    /*
     * Whatever pins guest RAM disables discards: VFIO devices (vfio-pci,
     * iommufd), vhost-vdpa, the userspace NVMe block driver, libblkio
     * drivers that pin memory, SEV guests, KVM without a synchronous MMU.
     * The pinned copy of a dropped page would no longer be the guest's.
     */
    if (ram_block_discard_is_disabled()) {
        error_setg(errp, "split-memory: RAM discards are disabled by a "
                   "device or guest type that pins guest RAM (VFIO, "
                   "vhost-vdpa, NVMe userspace driver, libblkio, SEV): "
                   "pages cannot be dropped and paged remotely");
        return false;
    }
    /*
     * The source gives the VM up only once the main host confirmed, at the
     * end of its load, that it reached every sub-host and took their
     * exports over: QEMU sends that confirmation on the return path.
     */
    if (!migrate_return_path()) {
        error_setg(errp, "split-memory: needs the capability 'return-path' "
                   "on both hosts, so that the source keeps the VM until "
                   "the main host confirmed that it can run it");
        return false;
    }
    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            if (!split_block_check(rb, errp)) {
                return false;
            }
        }
    }
    return true;
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

int split_export_id_read(FctransSubhost *sh, FctransExportId *found,
                         Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree uint8_t *buf = g_malloc(FCTRANS_EXPORT_ID_SIZE);
    uint64_t off = fctrans_export_id_offset(fctrans_subhost_export_size(sh));

    if (!fctrans_subhost_read_sync(sh, off, FCTRANS_EXPORT_ID_SIZE, buf,
                                   &gerr)) {
        error_setg(errp, "cannot read the export's identity record: %s",
                   gerr->message);
        return -1;
    }
    if (!fctrans_export_id_decode(buf, found, &gerr)) {
        error_setg(errp, "%s", gerr->message);
        return g_error_matches(gerr, FCTRANS_ERROR,
                               FCTRANS_ERROR_MISMATCH) ? 0 : -1;
    }
    return 1;
}

bool split_export_id_write(FctransSubhost *sh, const FctransExportId *id,
                           Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree uint8_t *buf = g_malloc(FCTRANS_EXPORT_ID_SIZE);

    fctrans_export_id_encode(id, buf);
    /* Durable and visible to the other side's connections once it returns */
    if (!fctrans_subhost_write_sync(sh, fctrans_export_id_offset(
                                        fctrans_subhost_export_size(sh)),
                                    FCTRANS_EXPORT_ID_SIZE, buf, &gerr) ||
        !fctrans_subhost_flush_sync(sh, &gerr)) {
        split_error_from_gerror(errp, gerr, "split-memory: sub-host '%s': "
                                "cannot write the export's identity record",
                                fctrans_subhost_id(sh));
        return false;
    }
    trace_split_export_id(fctrans_subhost_id(sh), "written", id->state);
    return true;
}

bool split_export_id_verify(FctransSubhost *sh, const char *uri,
                            const FctransExportId *want, Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    FctransExportId found;
    Error *err = NULL;

    if (split_export_id_read(sh, &found, &err) <= 0) {
        error_propagate_prepend(errp, err, "split-memory: sub-host '%s' "
                                "(%s): ", want->subhost_id, uri);
        return false;
    }
    if (!fctrans_export_id_match(want, &found, &gerr)) {
        error_setg(errp, "split-memory: sub-host '%s' (%s): %s",
                   want->subhost_id, uri, gerr->message);
        return false;
    }
    trace_split_export_id(fctrans_subhost_id(sh), "verified", found.state);
    return true;
}

static SaveVMHandlers savevm_split_handlers;

void split_mig_init(void)
{
    split_save_handlers(&savevm_split_handlers);
    split_load_handlers(&savevm_split_handlers);
    register_savevm_live(SPLIT_SECTION_NAME, 0, SPLIT_SECTION_VERSION,
                         &savevm_split_handlers, NULL);
}
