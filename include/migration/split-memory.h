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
 * Whether this VM may run here: false, with @errp set, once a split
 * migration of this split-memory VM onto the same sub-hosts handed its
 * pages there over to the new main host ('cont', 'migrate',
 * 'pmemsave', 'memsave' and 'dump-guest-memory' check this: a read of
 * such a page would wait for good).
 */
bool split_memory_may_run(Error **errp);

/*
 * Discard @length bytes at @offset of @rb, which the guest gave up
 * (balloon inflation, free page reporting): ram_block_discard_range(),
 * and on a split main host, pages there that are still on a sub-host
 * become unused and are trimmed there, and pages being fetched get zeros
 * instead of their stale contents. Returns what the discard returned.
 */
int split_ram_discard(RAMBlock *rb, ram_addr_t offset, size_t length);

/*
 * A device maps @len bytes at @offset of @rb for writing (DMA into guest
 * RAM: address_space_map() with is_write), and unmaps them again. On a
 * split main host, page-out never drops a page mapped so: a write that
 * the kernel pinned the page for before page-out write-protected it
 * (O_DIRECT, io_uring) would land in a page already copied.
 */
void split_dma_begin(RAMBlock *rb, ram_addr_t offset, uint64_t len);
void split_dma_end(RAMBlock *rb, ram_addr_t offset);

#endif /* MIGRATION_SPLIT_MEMORY_H */
