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

#define FCTRANS_BANNER_PREFIX "Linux version "

/*
 * A search for version banners in a buffer that may hold anything (a
 * kernel image's .rodata, guest memory): each "Linux version " followed
 * by printable bytes up to a newline, at most FCTRANS_PROFILE_MAX_BANNER
 * of them.  Hits must lie before @limit; the line may run on to @len.
 *
 * One pass whatever the buffer holds: the first non-printable byte at or
 * after a hit is found by a cursor that only moves forward, and the hits
 * it disqualifies are skipped at once, so a buffer full of "Linux version
 * " costs one pass, not one per hit.  At most *@hits_left occurrences of
 * the prefix are looked at (the counter may be shared by several scans).
 */
typedef struct FctransBannerScan {
    const uint8_t *end;         /* the buffer's end */
    const uint8_t *limit;       /* hits start before this */
    const uint8_t *next;        /* where the search goes on */
    const uint8_t *np;          /* first non-printable byte after a hit */
    unsigned *hits_left;
} FctransBannerScan;

void fctrans_banner_scan_init(FctransBannerScan *s, const void *buf,
                              size_t len, size_t limit, unsigned *hits_left);

/*
 * The next banner: *@banner points at it in the buffer, *@len is its
 * length without the newline.  A banner's own line is skipped after it (a
 * later hit inside it is a suffix of it).  False when there is none left
 * or the hits are used up.
 */
bool fctrans_banner_scan_next(FctransBannerScan *s, const char **banner,
                              size_t *len);

/*
 * Does the banner @b of @len bytes carry a build number ("#<n>")?  The
 * printed linux_banner does; init/version-timestamp.c's copy does not.
 */
bool fctrans_banner_numbered(const char *b, size_t len);

#endif /* FCTRANS_PROFILE_H */
