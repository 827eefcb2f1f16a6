/*
 * Split migration: what the rest of QEMU needs to know about a
 * split-memory VM on its main host
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * On the main host of a split-memory VM, part of the guest's RAM is on
 * sub-hosts and the userfaultfd pager of migration/split-pager.c pages it
 * in on first touch. Code that gives guest RAM back to the host, or reads
 * all of it, must tell the pager or check first.
 */
#ifndef MIGRATION_SPLIT_MEMORY_H
#define MIGRATION_SPLIT_MEMORY_H

#include "exec/cpu-common.h"

/* Whether this host runs a split-memory VM (its pager is active). */
bool split_memory_active(void);

/*
 * The guest gave up @length bytes at @offset of @rb (balloon inflation,
 * free page reporting), which the caller is about to discard. Pages there
 * that are still on a sub-host become unused and are trimmed there;
 * pages being fetched get zeros instead of their stale contents. Call it
 * before ram_block_discard_range().
 */
void split_ram_discard(RAMBlock *rb, ram_addr_t offset, size_t length);

#endif /* MIGRATION_SPLIT_MEMORY_H */
