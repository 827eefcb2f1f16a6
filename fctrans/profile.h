/*
 * fctrans: guest kernel profiles
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A profile holds what introspection needs to know about one guest
 * kernel build: how to recognise it in guest memory (its version banner
 * and where the banner is linked), the link-time addresses of the
 * variables that locate the memory map (exported symbols), the layout of
 * struct page (from BTF) and how a free buddy block is marked.  It is
 * generated from the kernel image by tools/fctrans-profile and stored as
 * a small text file, one per kernel build.
 */
#ifndef FCTRANS_PROFILE_H
#define FCTRANS_PROFILE_H

#include "fctrans.h"

#include <stdbool.h>
#include <stddef.h>

#define FCTRANS_PROFILE_FORMAT 1
#define FCTRANS_PROFILE_SUFFIX ".profile"

/* Upper bounds that both the generator and the parser enforce. */
#define FCTRANS_PROFILE_MAX_BANNER 512
#define FCTRANS_PROFILE_MAX_PAGE_SIZE 256
#define FCTRANS_PROFILE_MAX_ORDER 20

typedef struct FctransProfile {
    char *release;              /* e.g. "6.1.0-56-amd64" */
    char *banner;               /* linux_banner without its final newline */
    uint64_t banner_addr;       /* link-time address of the banner */
    uint64_t text_addr;         /* link-time address of _text */
    uint64_t page_offset_base_addr;  /* &page_offset_base */
    uint64_t vmemmap_base_addr;      /* &vmemmap_base */
    uint64_t phys_base_addr;         /* &phys_base */
    uint32_t page_size;         /* sizeof(struct page) */
    uint32_t page_flags_off;    /* offsetof(struct page, flags) */
    uint32_t page_private_off;  /* offsetof(struct page, private) */
    uint32_t page_type_off;     /* offsetof(struct page, page_type) */
    uint32_t buddy_mask;        /* PageBuddy(p) iff */
    uint32_t buddy_value;       /* (p->page_type & mask) == value */
    uint32_t max_order;         /* largest order of a buddy block */
} FctransProfile;

void fctrans_profile_free(FctransProfile *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FctransProfile, fctrans_profile_free)

/*
 * Generate a profile from an uncompressed vmlinux ELF image.  Fails with
 * FCTRANS_ERROR_UNSUPPORTED when the kernel lacks something needed (no
 * BTF, a ksymtab in another format, an unknown free-page encoding), and
 * FCTRANS_ERROR_INVALID for a malformed image.
 */
FctransProfile *fctrans_profile_from_vmlinux(const void *elf, size_t len,
                                             GError **errp);

/* Render a profile as text, and parse it back. */
char *fctrans_profile_to_text(const FctransProfile *p);
FctransProfile *fctrans_profile_parse(const char *text, size_t len,
                                      GError **errp);

/* A file name for @p: "<release>-<hash of banner>.profile". */
char *fctrans_profile_file_name(const FctransProfile *p);

FctransProfile *fctrans_profile_load(const char *path, GError **errp);

/*
 * Load @path: a profile file, or a directory whose *.profile files are
 * all loaded.  Returns an array of FctransProfile (freed with it).  A
 * file in the directory that fails to parse makes the whole load fail:
 * a broken profile is a configuration error to report, not to skip.
 */
GPtrArray *fctrans_profile_load_path(const char *path, GError **errp);

/* The kernel release named in a banner ("Linux version R ..."), or NULL. */
char *fctrans_banner_release(const char *banner);

#endif /* FCTRANS_PROFILE_H */
