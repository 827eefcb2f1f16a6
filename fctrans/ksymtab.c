/*
 * fctrans: exported kernel symbols from __ksymtab
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ksymtab.h"
#include "vmi-internal.h"

#include <inttypes.h>
#include <string.h>

#define KSYM_ENTRY_SIZE 12

struct FctransKsymtab {
    GHashTable *syms;           /* name -> uint64_t * address */
};

static bool ksymtab_read(FctransKsymtab *ks, const FctransElfSection *tab,
                         const FctransElfSection *strs, GError **errp)
{
    uint64_t i;

    if (tab->size % KSYM_ENTRY_SIZE) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "%s: size %" PRIu64 " is not a multiple of %d: not the "
                    "place-relative ksymtab format", tab->name, tab->size,
                    KSYM_ENTRY_SIZE);
        return false;
    }
    for (i = 0; i < tab->size; i += KSYM_ENTRY_SIZE) {
        const uint8_t *e = tab->data + i;
        int32_t value_off = (int32_t)fctrans_ld32(e);
        int32_t name_off = (int32_t)fctrans_ld32(e + 4);
        uint64_t value = tab->addr + i + (int64_t)value_off;
        uint64_t name = tab->addr + i + 4 + (int64_t)name_off;
        uint64_t soff;
        const char *s;
        size_t maxlen;
        uint64_t *v;

        if (name < strs->addr || name - strs->addr >= strs->size) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                        "%s: entry %" PRIu64 " names no string in %s: not "
                        "the place-relative ksymtab format", tab->name,
                        i / KSYM_ENTRY_SIZE, strs->name);
            return false;
        }
        soff = name - strs->addr;
        s = (const char *)strs->data + soff;
        maxlen = strs->size - soff;
        if (strnlen(s, maxlen) == maxlen) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "%s: unterminated symbol name", strs->name);
            return false;
        }
        v = g_new(uint64_t, 1);
        *v = value;
        g_hash_table_insert(ks->syms, g_strdup(s), v);
    }
    return true;
}

FctransKsymtab *fctrans_ksymtab_new(const FctransElf *elf, GError **errp)
{
    g_autoptr(FctransKsymtab) ks = g_new0(FctransKsymtab, 1);
    FctransElfSection tab, gpl, strs;

    if (!fctrans_elf_section(elf, "__ksymtab_strings", &strs, errp) ||
        !fctrans_elf_section(elf, "__ksymtab", &tab, errp)) {
        return NULL;
    }
    ks->syms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (!ksymtab_read(ks, &tab, &strs, errp)) {
        return NULL;
    }
    /* A kernel without GPL-only exports has no __ksymtab_gpl. */
    if (fctrans_elf_section(elf, "__ksymtab_gpl", &gpl, NULL) &&
        !ksymtab_read(ks, &gpl, &strs, errp)) {
        return NULL;
    }
    return g_steal_pointer(&ks);
}

void fctrans_ksymtab_free(FctransKsymtab *ks)
{
    if (ks) {
        if (ks->syms) {
            g_hash_table_unref(ks->syms);
        }
        g_free(ks);
    }
}

unsigned fctrans_ksymtab_count(const FctransKsymtab *ks)
{
    return g_hash_table_size(ks->syms);
}

bool fctrans_ksymtab_lookup(const FctransKsymtab *ks, const char *name,
                            uint64_t *addr, GError **errp)
{
    const uint64_t *v = g_hash_table_lookup(ks->syms, name);

    if (!v) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "symbol '%s' is not exported by the kernel", name);
        return false;
    }
    *addr = *v;
    return true;
}
