/*
 * fctrans: the identity record of a sub-host export
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A split-memory VM's pages live on exports that other machines serve.
 * Nothing in a page tells whose it is, so a wrong id-to-URI mapping on the
 * main host, an export restarted empty, or two VMs pointed at one export
 * would read as zeros or as another VM's memory, and the guest would run
 * on it. The source therefore writes one record in each export, in its
 * last 4 KiB (so an export must be that much larger than the guest RAM
 * span), before it places any page there, naming the
 * VM, the migration, the sub-host and a nonce of its own. The main host
 * reads the record back from each export before the guest runs, and again
 * after every reconnect, and compares it with what the migration stream
 * announced; when it takes the VM over it rewrites the record with the
 * state RUNNING, which tells a later source that the export is in use.
 *
 * The record is 4096 bytes, big-endian, with a SHA-256 over the rest, so
 * that stale or foreign data is never mistaken for a record.
 */
#ifndef FCTRANS_EXPORT_ID_H
#define FCTRANS_EXPORT_ID_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fctrans.h"

#define FCTRANS_EXPORT_ID_SIZE      4096
#define FCTRANS_EXPORT_ID_UUID_LEN  16
#define FCTRANS_EXPORT_ID_NAME_MAX  64

typedef enum FctransExportIdState {
    /* A source is writing pages there for this migration. */
    FCTRANS_EXPORT_ID_MIGRATING = 1,
    /* The main host took the VM over: its pages there are in use. */
    FCTRANS_EXPORT_ID_RUNNING = 2,
} FctransExportIdState;

typedef struct FctransExportId {
    FctransExportIdState state;
    uint32_t page_size;
    uint64_t npages;            /* guest RAM span the export serves */
    uint32_t subhost_index;     /* position in the source's sub-host list */
    uint32_t nsubhosts;
    char subhost_id[FCTRANS_EXPORT_ID_NAME_MAX + 1];
    uint8_t vm_uuid[FCTRANS_EXPORT_ID_UUID_LEN];    /* may be all zero */
    uint8_t migration_id[FCTRANS_EXPORT_ID_UUID_LEN];
    uint8_t nonce[FCTRANS_EXPORT_ID_UUID_LEN];      /* per sub-host */
    uint64_t written_s;         /* wall clock, seconds, for messages */
} FctransExportId;

/*
 * Where the record lives in an export of @export_size bytes (at least
 * FCTRANS_EXPORT_ID_SIZE): its last 4 KiB-aligned 4 KiB. It depends on
 * the export only, not on the VM, so that a VM of another size pointed
 * at an export in use reads the record of the VM that uses it.
 */
uint64_t fctrans_export_id_offset(uint64_t export_size);

/* Fill @out with random bytes (getrandom(2)); false with @errp set. */
bool fctrans_export_id_random(uint8_t out[FCTRANS_EXPORT_ID_UUID_LEN],
                              GError **errp);

void fctrans_export_id_encode(const FctransExportId *id,
                              uint8_t buf[FCTRANS_EXPORT_ID_SIZE]);

/*
 * Decode the record in @buf. Errors: FCTRANS_ERROR_MISMATCH when @buf is
 * all zeros (an export that holds no record: new, trimmed or restarted),
 * FCTRANS_ERROR_INVALID when it holds something else than a record, or a
 * record of an unknown version, or a corrupt one.
 */
bool fctrans_export_id_decode(const uint8_t buf[FCTRANS_EXPORT_ID_SIZE],
                              FctransExportId *id, GError **errp);

/*
 * Whether @found (decoded from an export) is the record that @want
 * describes: the same migration, the same sub-host, the same nonce and
 * layout (the state is not compared). On a mismatch, FCTRANS_ERROR_MISMATCH
 * with a message that says what the export holds instead.
 */
bool fctrans_export_id_match(const FctransExportId *want,
                             const FctransExportId *found, GError **errp);

/* Whether two records belong to the same migration. */
bool fctrans_export_id_same_migration(const FctransExportId *a,
                                      const FctransExportId *b);

/* "01234567-89ab-..." for messages; @out holds 37 bytes. */
void fctrans_export_id_uuid_str(const uint8_t uuid[FCTRANS_EXPORT_ID_UUID_LEN],
                                char out[37]);

#endif /* FCTRANS_EXPORT_ID_H */
