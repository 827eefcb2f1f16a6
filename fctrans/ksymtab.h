/*
 * fctrans: exported kernel symbols from __ksymtab
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Distribution kernels ship a placeholder System.map, but every symbol
 * exported to modules (EXPORT_SYMBOL, EXPORT_SYMBOL_GPL) is listed in the
 * image's __ksymtab and __ksymtab_gpl sections with its link-time
 * address.  On x86-64 (CONFIG_HAVE_ARCH_PREL32_RELOCATIONS) each entry is
 * three 32-bit place-relative offsets: value, name, namespace.
 */
#ifndef FCTRANS_KSYMTAB_H
#define FCTRANS_KSYMTAB_H

#include "fctrans.h"
#include "kimage.h"

#include <stdbool.h>

typedef struct FctransKsymtab FctransKsymtab;

/*
 * Read __ksymtab and __ksymtab_gpl of @elf, whose names are in
 * __ksymtab_strings.  Entries whose name offset points outside
 * __ksymtab_strings make the whole table invalid: that is how a table in
 * another format is detected rather than misread.
 */
FctransKsymtab *fctrans_ksymtab_new(const FctransElf *elf, GError **errp);
void fctrans_ksymtab_free(FctransKsymtab *ks);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FctransKsymtab, fctrans_ksymtab_free)

/* Number of symbols read. */
unsigned fctrans_ksymtab_count(const FctransKsymtab *ks);

/* Link-time address of @name; sets @errp (UNSUPPORTED) if not exported. */
bool fctrans_ksymtab_lookup(const FctransKsymtab *ks, const char *name,
                            uint64_t *addr, GError **errp);

#endif /* FCTRANS_KSYMTAB_H */
