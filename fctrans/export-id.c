/*
 * fctrans: the identity record of a sub-host export
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Layout (big-endian, offsets in bytes):
 *     0  magic "SPLITMEM-EXPORT\0"
 *    16  be32 version        20  be32 state
 *    24  be32 page size      28  be32 sub-host index
 *    32  be32 sub-hosts      36  be32 0
 *    40  be64 pages          48  be64 written (wall clock, s)
 *    56  VM UUID             72  migration id        88  nonce
 *   104  u8 sub-host id length, then the id (at most 64 bytes)
 *  4064  SHA-256 of bytes 0..4063
 * Everything not named is zero, and must be: a reader refuses a record
 * with stray bytes rather than guess what a newer writer meant.
 */
#include "export-id.h"
#include "byteorder.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define EXPORT_ID_MAGIC         "SPLITMEM-EXPORT"   /* 15 + NUL */
#define EXPORT_ID_VERSION       1
#define EXPORT_ID_NAME_OFF      104
#define EXPORT_ID_SUM_OFF       (FCTRANS_EXPORT_ID_SIZE - 32)
/* Bounds of what a record may describe */
#define EXPORT_ID_PAGE_MAX      (1u << 30)
#define EXPORT_ID_SUBHOSTS_MAX  1024

static const char prefix[] = "export identity: ";

static void export_id_sum(const uint8_t *buf, uint8_t sum[32])
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = 32;

    g_checksum_update(c, buf, EXPORT_ID_SUM_OFF);
    g_checksum_get_digest(c, sum, &len);
    g_checksum_free(c);
}

uint64_t fctrans_export_id_offset(uint64_t export_size)
{
    return (export_size & ~(uint64_t)(FCTRANS_EXPORT_ID_SIZE - 1)) -
           FCTRANS_EXPORT_ID_SIZE;
}

bool fctrans_export_id_random(uint8_t out[FCTRANS_EXPORT_ID_UUID_LEN],
                              GError **errp)
{
    size_t done = 0;

    while (done < FCTRANS_EXPORT_ID_UUID_LEN) {
        ssize_t n = getrandom(out + done, FCTRANS_EXPORT_ID_UUID_LEN - done,
                              0);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return fctrans_fail(errp, FCTRANS_ERROR_FAILED, prefix,
                                "getrandom: %s", g_strerror(errno));
        }
        done += n;
    }
    return true;
}

void fctrans_export_id_encode(const FctransExportId *id,
                              uint8_t buf[FCTRANS_EXPORT_ID_SIZE])
{
    size_t len = strnlen(id->subhost_id, FCTRANS_EXPORT_ID_NAME_MAX);

    memset(buf, 0, FCTRANS_EXPORT_ID_SIZE);
    memcpy(buf, EXPORT_ID_MAGIC, sizeof(EXPORT_ID_MAGIC));
    fctrans_put_be32(buf + 16, EXPORT_ID_VERSION);
    fctrans_put_be32(buf + 20, id->state);
    fctrans_put_be32(buf + 24, id->page_size);
    fctrans_put_be32(buf + 28, id->subhost_index);
    fctrans_put_be32(buf + 32, id->nsubhosts);
    fctrans_put_be64(buf + 40, id->npages);
    fctrans_put_be64(buf + 48, id->written_s);
    memcpy(buf + 56, id->vm_uuid, FCTRANS_EXPORT_ID_UUID_LEN);
    memcpy(buf + 72, id->migration_id, FCTRANS_EXPORT_ID_UUID_LEN);
    memcpy(buf + 88, id->nonce, FCTRANS_EXPORT_ID_UUID_LEN);
    buf[EXPORT_ID_NAME_OFF] = len;
    memcpy(buf + EXPORT_ID_NAME_OFF + 1, id->subhost_id, len);
    export_id_sum(buf, buf + EXPORT_ID_SUM_OFF);
}

static bool all_zero(const uint8_t *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

bool fctrans_export_id_decode(const uint8_t buf[FCTRANS_EXPORT_ID_SIZE],
                              FctransExportId *id, GError **errp)
{
    uint8_t sum[32];
    uint32_t version, state;
    uint32_t page_size = fctrans_get_be32(buf + 24);
    uint32_t index = fctrans_get_be32(buf + 28);
    uint32_t nsubhosts = fctrans_get_be32(buf + 32);
    size_t len, i;

    memset(id, 0, sizeof(*id));
    if (all_zero(buf, FCTRANS_EXPORT_ID_SIZE)) {
        return fctrans_fail(errp, FCTRANS_ERROR_MISMATCH, prefix,
                            "the export holds no identity record: it is "
                            "new, was trimmed, or its server was restarted "
                            "and lost what it held");
    }
    if (memcmp(buf, EXPORT_ID_MAGIC, sizeof(EXPORT_ID_MAGIC))) {
        return fctrans_fail(errp, FCTRANS_ERROR_INVALID, prefix,
                            "the export holds other data than a splitmem "
                            "identity record where it should be");
    }
    export_id_sum(buf, sum);
    if (memcmp(sum, buf + EXPORT_ID_SUM_OFF, sizeof(sum))) {
        return fctrans_fail(errp, FCTRANS_ERROR_INVALID, prefix,
                            "the record is corrupt (checksum mismatch)");
    }
    version = fctrans_get_be32(buf + 16);
    if (version != EXPORT_ID_VERSION) {
        return fctrans_fail(errp, FCTRANS_ERROR_INVALID, prefix,
                            "record version %u is not supported (this "
                            "host reads version %u)", version,
                            EXPORT_ID_VERSION);
    }
    state = fctrans_get_be32(buf + 20);
    len = buf[EXPORT_ID_NAME_OFF];
    if ((state != FCTRANS_EXPORT_ID_MIGRATING &&
         state != FCTRANS_EXPORT_ID_RUNNING) ||
        fctrans_get_be32(buf + 36) || len == 0 ||
        len > FCTRANS_EXPORT_ID_NAME_MAX ||
        memchr(buf + EXPORT_ID_NAME_OFF + 1, 0, len) ||
        !all_zero(buf + EXPORT_ID_NAME_OFF + 1 + len,
                  EXPORT_ID_SUM_OFF - EXPORT_ID_NAME_OFF - 1 - len)) {
        return fctrans_fail(errp, FCTRANS_ERROR_INVALID, prefix,
                            "the record holds invalid fields");
    }
    for (i = 0; i < len; i++) {
        uint8_t c = buf[EXPORT_ID_NAME_OFF + 1 + i];

        /* The id is echoed in messages: what split-subhosts accepts only */
        if (!g_ascii_isalnum(c) && c != '-' && c != '_' && c != '.') {
            return fctrans_fail(errp, FCTRANS_ERROR_INVALID, prefix,
                                "the record holds invalid fields");
        }
    }
    if (!page_size || (page_size & (page_size - 1)) ||
        page_size > EXPORT_ID_PAGE_MAX || !nsubhosts ||
        nsubhosts > EXPORT_ID_SUBHOSTS_MAX || index >= nsubhosts) {
        return fctrans_fail(errp, FCTRANS_ERROR_INVALID, prefix,
                            "the record holds invalid fields");
    }
    id->state = state;
    id->page_size = fctrans_get_be32(buf + 24);
    id->subhost_index = fctrans_get_be32(buf + 28);
    id->nsubhosts = fctrans_get_be32(buf + 32);
    id->npages = fctrans_get_be64(buf + 40);
    id->written_s = fctrans_get_be64(buf + 48);
    memcpy(id->vm_uuid, buf + 56, FCTRANS_EXPORT_ID_UUID_LEN);
    memcpy(id->migration_id, buf + 72, FCTRANS_EXPORT_ID_UUID_LEN);
    memcpy(id->nonce, buf + 88, FCTRANS_EXPORT_ID_UUID_LEN);
    memcpy(id->subhost_id, buf + EXPORT_ID_NAME_OFF + 1, len);
    id->subhost_id[len] = 0;
    return true;
}

void fctrans_export_id_uuid_str(const uint8_t uuid[FCTRANS_EXPORT_ID_UUID_LEN],
                                char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned i, j = 0;

    for (i = 0; i < FCTRANS_EXPORT_ID_UUID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[j++] = '-';
        }
        out[j++] = hex[uuid[i] >> 4];
        out[j++] = hex[uuid[i] & 15];
    }
    out[j] = 0;
}

bool fctrans_export_id_same_migration(const FctransExportId *a,
                                      const FctransExportId *b)
{
    return !memcmp(a->migration_id, b->migration_id,
                   FCTRANS_EXPORT_ID_UUID_LEN);
}

/* "VM <uuid>, migration <id>, written <date>" */
static char *export_id_describe(const FctransExportId *id)
{
    char vm[37], mig[37], when[64] = "at an unknown time";
    time_t t = id->written_s;
    struct tm tm;

    fctrans_export_id_uuid_str(id->vm_uuid, vm);
    fctrans_export_id_uuid_str(id->migration_id, mig);
    if (gmtime_r(&t, &tm)) {
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    }
    return g_strdup_printf("VM %s, migration %s, %s %s", vm, mig,
                           id->state == FCTRANS_EXPORT_ID_RUNNING ?
                           "in use by its main host since" :
                           "written by its source", when);
}

bool fctrans_export_id_match(const FctransExportId *want,
                             const FctransExportId *found, GError **errp)
{
    g_autofree char *what = export_id_describe(found);

    if (!fctrans_export_id_same_migration(want, found)) {
        return fctrans_fail(errp, FCTRANS_ERROR_MISMATCH, prefix,
                            "the export holds the pages of another "
                            "migration (%s): is the URI another VM's "
                            "export?", what);
    }
    if (want->subhost_index != found->subhost_index ||
        strcmp(want->subhost_id, found->subhost_id) ||
        memcmp(want->nonce, found->nonce, FCTRANS_EXPORT_ID_UUID_LEN)) {
        return fctrans_fail(errp, FCTRANS_ERROR_MISMATCH, prefix,
                            "the export holds the pages of sub-host '%s' of "
                            "this migration, not those of '%s': are the "
                            "sub-host URIs swapped?", found->subhost_id,
                            want->subhost_id);
    }
    if (want->npages != found->npages ||
        want->page_size != found->page_size ||
        want->nsubhosts != found->nsubhosts ||
        memcmp(want->vm_uuid, found->vm_uuid, FCTRANS_EXPORT_ID_UUID_LEN)) {
        return fctrans_fail(errp, FCTRANS_ERROR_MISMATCH, prefix,
                            "the record of this migration's sub-host '%s' "
                            "describes another layout or VM (%s)",
                            found->subhost_id, what);
    }
    return true;
}
