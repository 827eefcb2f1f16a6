/*
 * Split migration: guest RAM over a main host and NBD sub-hosts
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A split migration sends each guest page either to the destination (the
 * main host, which runs the VM afterwards) through the normal RAM stream,
 * or to one of the sub-hosts (an NBD export per VM), or nowhere when the
 * page is all zero. The location of every page travels to the main host in
 * the "split" section, registered after "ram". When the map is committed,
 * before any device state loads there, every page that is not resident
 * is dropped and a userfaultfd pager pages it in on first touch: from its
 * sub-host, or as a zero page.
 *
 * See docs/devel/migration/split.rst.
 */
#ifndef QEMU_MIGRATION_SPLIT_H
#define QEMU_MIGRATION_SPLIT_H

#include "exec/cpu-common.h"
#include "qapi/qapi-types-migration.h"

/* Capabilities and parameters (options.c) */
bool split_caps_check(bool *old_caps, bool *new_caps, Error **errp);
bool split_params_check(MigrationParameters *params, Error **errp);

/*
 * Whether a split migration over @addr can run with this VM's RAM and
 * devices, on the source before it connects and on the main host before
 * it listens: RAM the main host's pager cannot see must never be split.
 * With @addr NULL only the RAM and devices are checked.
 */
bool split_migration_check(MigrationAddress *addr, Error **errp);

/* Register the "split" section; must run after ram_mig_init(). */
void split_mig_init(void);

/*
 * Source, from ram_save_target_page(): place the target page at @offset
 * of @rb. Returns 0 when the page must go to the main host through the
 * normal RAM stream, 1 when it was handled here (written to a sub-host or
 * recorded as unused), or a negative errno.
 */
int split_save_target_page(RAMBlock *rb, ram_addr_t offset);

/*
 * Source, before the BQL is taken to end a split migration: a migration
 * that failed after its commit waits, boundedly, for the main host's
 * verdict on the return path (see split_save_may_resume()).
 */
void split_save_await_verdict(void);

/*
 * Source, after a failed or cancelled split migration: false when the main
 * host took the VM over (it claimed every sub-host's export), so that the
 * source must not run it too.
 */
bool split_save_may_resume(void);

/*
 * migrate_cancel: shut every sub-host channel of the outgoing split
 * migration down, so that no wait on a sub-host outlasts the cancel.
 * Never blocks; any thread.
 */
void split_save_cancel(void);

/* Source: the 'split' member of query-migrate. */
void split_populate_migration_info(MigrationInfo *info);

/*
 * Main host, once the whole stream was loaded and before the VM may run:
 * check that the pager runs (it started when the page map was committed,
 * before the device sections loaded). False with @errp set when the VM
 * must not run.
 */
bool split_incoming_start(Error **errp);

#endif /* QEMU_MIGRATION_SPLIT_H */
