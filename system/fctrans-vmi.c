/*
 * Guest free memory by introspection: QMP query-guest-free-memory and
 * HMP info guest_free_memory
 *
 * Copyright (c) 2026 splitmem authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The introspection itself is fctrans/vmi.c, plain C that only needs to
 * read guest-physical memory and a vCPU's control registers.  This file
 * provides both from QEMU:
 *
 * - Memory is read through address_space_memory, but only where the
 *   flat view has RAM: the addresses come from guest page tables, which
 *   a misbehaving guest controls, and a read that reached an MMIO region
 *   would have device side effects.
 * - CR0, CR3, CR4 and EFER come through the gdbstub register interface,
 *   which keeps this file target-independent; targets that have no such
 *   registers get a clean error.
 *
 * The guest is not stopped.  With KVM, cpu_synchronize_state() briefly
 * kicks one vCPU out of the guest to fetch its registers; the scan then
 * reads guest memory while the guest runs.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-fctrans.h"
#include "qobject/qdict.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "exec/address-spaces.h"
#include "exec/gdbstub.h"
#include "exec/memory.h"
#include "hw/core/cpu.h"
#include "system/hw_accel.h"
#include "fctrans/vmi.h"
#include "migration/split-memory.h"
#include "trace.h"

#define FCTRANS_PROFILE_DIR CONFIG_QEMU_DATADIR "/fctrans-profiles"

typedef struct VmiRam {
    GArray *ranges;             /* FctransVmiRam, sorted, merged */
} VmiRam;

static bool collect_ram(Int128 start, Int128 len, const MemoryRegion *mr,
                        hwaddr offset_in_region, void *opaque)
{
    VmiRam *ram = opaque;
    FctransVmiRam r = {
        .start = int128_get64(start),
        .end = int128_get64(start) + int128_get64(len),
    };

    /* Plain guest RAM only: no ROM, no device memory. */
    if (!mr->ram || mr->readonly || mr->ram_device) {
        return false;
    }
    if (ram->ranges->len) {
        FctransVmiRam *last = &g_array_index(ram->ranges, FctransVmiRam,
                                             ram->ranges->len - 1);
        if (last->end == r.start) {
            last->end = r.end;
            return false;
        }
    }
    g_array_append_val(ram->ranges, r);
    return false;
}

static bool vmi_read_phys(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    VmiRam *ram = opaque;
    guint i;

    for (i = 0; i < ram->ranges->len; i++) {
        FctransVmiRam *r = &g_array_index(ram->ranges, FctransVmiRam, i);

        if (gpa >= r->start && gpa < r->end) {
            if (len > r->end - gpa) {
                return false;
            }
            return address_space_read(&address_space_memory, gpa,
                                      MEMTXATTRS_UNSPECIFIED, buf,
                                      len) == MEMTX_OK;
        }
    }
    return false;
}

static const FctransVmiOps vmi_ops = {
    .read_phys = vmi_read_phys,
};

/* Read the registers introspection needs from @cs; false if absent. */
static bool vmi_cpu_state(CPUState *cs, FctransVmiCpu *st)
{
    g_autoptr(GArray) regs = NULL;
    g_autoptr(GByteArray) buf = g_byte_array_new();
    struct {
        const char *name;
        uint64_t *val;
    } want[] = {
        { "cr0", &st->cr0 }, { "cr3", &st->cr3 },
        { "cr4", &st->cr4 }, { "efer", &st->efer },
    };
    unsigned found = 0;
    guint i, j;

    cpu_synchronize_state(cs);
    regs = gdb_get_register_list(cs);
    for (i = 0; i < regs->len; i++) {
        GDBRegDesc *d = &g_array_index(regs, GDBRegDesc, i);

        for (j = 0; j < ARRAY_SIZE(want); j++) {
            int n;

            if (strcmp(d->name, want[j].name) != 0) {
                continue;
            }
            g_byte_array_set_size(buf, 0);
            n = gdb_read_register(cs, buf, d->gdb_reg);
            if (n == 8) {
                *want[j].val = ldq_le_p(buf->data);
            } else if (n == 4) {
                *want[j].val = ldl_le_p(buf->data);
            } else {
                return false;
            }
            found |= 1u << j;
        }
    }
    return found == (1u << ARRAY_SIZE(want)) - 1;
}

GuestFreeMemoryInfo *qmp_query_guest_free_memory(const char *profiles,
                                                 bool has_ranges,
                                                 bool ranges, Error **errp)
{
    g_autofree char *dir = NULL;
    g_autoptr(GPtrArray) plist = NULL;
    g_autoptr(GArray) free_ranges = NULL;
    g_autoptr(GError) err = NULL;
    VmiRam ram = { .ranges = g_array_new(false, false, sizeof(FctransVmiRam)) };
    FctransVmiKernel kernel;
    FctransVmiStats stats;
    GuestFreeMemoryInfo *info = NULL;
    bool recognised = false, have_cpu = false;
    CPUState *cs;

    /*
     * The scan reads guest RAM from the monitor with the BQL held: on a
     * split main host that would page in remote memory beyond the budget,
     * and wait with the BQL for a sub-host that may be lost.
     */
    if (split_memory_active()) {
        error_setg(errp, "query-guest-free-memory is not available on the "
                   "main host of a split-memory VM: it would page in the "
                   "guest's remote memory");
        goto out;
    }
    if (!profiles) {
        dir = get_relocated_path(FCTRANS_PROFILE_DIR);
        profiles = dir;
    }
    plist = fctrans_profile_load_path(profiles, &err);
    if (!plist) {
        error_setg(errp, "cannot load guest kernel profiles: %s",
                   err->message);
        goto out;
    }

    WITH_RCU_READ_LOCK_GUARD() {
        FlatView *fv = address_space_to_flatview(&address_space_memory);

        flatview_for_each_range(fv, collect_ram, &ram);
    }

    /*
     * Any vCPU in long mode will do: they share the kernel's mappings, so
     * the first one decides; retrying on the others would only repeat
     * the search (under the BQL) for the same answer.
     */
    CPU_FOREACH(cs) {
        FctransVmiCpu st;

        if (!vmi_cpu_state(cs, &st)) {
            continue;
        }
        have_cpu = true;
        g_clear_error(&err);
        recognised = fctrans_vmi_recognise(&vmi_ops, &ram, &st, plist,
                                           &kernel, &err);
        if (recognised || fctrans_vmi_cpu_usable(&st)) {
            break;
        }
    }
    if (!have_cpu) {
        error_setg(errp, "guest introspection needs an x86-64 vCPU");
        goto out;
    }
    if (!recognised) {
        trace_fctrans_vmi_refused(err->message);
        error_setg(errp, "%s", err->message);
        goto out;
    }
    trace_fctrans_vmi_recognised(kernel.profile->release, kernel.text_offset,
                                 kernel.phys_base, kernel.vmemmap_base);

    if (has_ranges && ranges) {
        free_ranges = g_array_new(false, false, sizeof(FctransPageRange));
    }
    if (!fctrans_vmi_scan(&vmi_ops, &ram, &kernel,
                          (FctransVmiRam *)ram.ranges->data, ram.ranges->len,
                          free_ranges, &stats, &err)) {
        error_setg(errp, "%s", err->message);
        goto out;
    }
    trace_fctrans_vmi_scan(stats.pfns, stats.free_pages, stats.blocks,
                           stats.ranges, stats.rejected, stats.scan_ns);

    info = g_new0(GuestFreeMemoryInfo, 1);
    info->kernel = g_strdup(kernel.profile->release);
    info->banner = g_strdup(kernel.profile->banner);
    info->kaslr_offset = kernel.text_offset;
    info->free_bytes = stats.free_pages * FCTRANS_VMI_PAGE_SIZE;
    info->free_blocks = stats.blocks;
    info->free_ranges = stats.ranges;
    info->scanned_bytes = stats.pfns * FCTRANS_VMI_PAGE_SIZE;
    info->rejected_blocks = stats.rejected;
    info->scan_time = stats.scan_ns / 1000;
    if (free_ranges) {
        GuestFreeMemoryRangeList **tail = &info->ranges;
        guint i;

        info->has_ranges = true;
        for (i = 0; i < free_ranges->len; i++) {
            FctransPageRange *r = &g_array_index(free_ranges,
                                                 FctransPageRange, i);
            GuestFreeMemoryRange *v = g_new0(GuestFreeMemoryRange, 1);

            v->start = r->start * FCTRANS_VMI_PAGE_SIZE;
            v->length = r->count * FCTRANS_VMI_PAGE_SIZE;
            QAPI_LIST_APPEND(tail, v);
        }
    }
out:
    g_array_free(ram.ranges, true);
    return info;
}

void hmp_info_guest_free_memory(Monitor *mon, const QDict *qdict)
{
    const char *profiles = qdict_get_try_str(qdict, "profiles");
    g_autoptr(GuestFreeMemoryInfo) info = NULL;
    Error *err = NULL;

    info = qmp_query_guest_free_memory(profiles, false, false, &err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    monitor_printf(mon, "kernel: %s (KASLR offset 0x%" PRIx64 ")\n",
                   info->kernel, (uint64_t)info->kaslr_offset);
    monitor_printf(mon, "free: %" PRIu64 " KiB in %" PRIu64 " ranges (%"
                   PRIu64 " buddy blocks)\n", info->free_bytes / 1024,
                   info->free_ranges, info->free_blocks);
    monitor_printf(mon, "scanned: %" PRIu64 " KiB of RAM in %" PRIu64
                   " us\n", info->scanned_bytes / 1024, info->scan_time);
    if (info->rejected_blocks) {
        monitor_printf(mon, "rejected: %" PRIu64 " inconsistent blocks\n",
                       info->rejected_blocks);
    }
}
