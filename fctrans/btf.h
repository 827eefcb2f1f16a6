/*
 * fctrans: a reader for BTF, the BPF Type Format
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Linux kernels built with CONFIG_DEBUG_INFO_BTF carry a description of
 * every kernel type in the .BTF section of vmlinux.  Debian's kernels do,
 * so struct layouts (struct page, struct zone, ...) can be learnt from the
 * kernel image alone, without the -dbg package.  This reader is meant for
 * untrusted input: every offset, length and type reference is checked, and
 * every walk through the type graph is bounded.
 */
#ifndef FCTRANS_BTF_H
#define FCTRANS_BTF_H

#include "fctrans.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct FctransBtf FctransBtf;

/* BTF kinds, as in the kernel's include/uapi/linux/btf.h. */
typedef enum {
    FCTRANS_BTF_KIND_UNKN = 0,
    FCTRANS_BTF_KIND_INT = 1,
    FCTRANS_BTF_KIND_PTR = 2,
    FCTRANS_BTF_KIND_ARRAY = 3,
    FCTRANS_BTF_KIND_STRUCT = 4,
    FCTRANS_BTF_KIND_UNION = 5,
    FCTRANS_BTF_KIND_ENUM = 6,
    FCTRANS_BTF_KIND_FWD = 7,
    FCTRANS_BTF_KIND_TYPEDEF = 8,
    FCTRANS_BTF_KIND_VOLATILE = 9,
    FCTRANS_BTF_KIND_CONST = 10,
    FCTRANS_BTF_KIND_RESTRICT = 11,
    FCTRANS_BTF_KIND_FUNC = 12,
    FCTRANS_BTF_KIND_FUNC_PROTO = 13,
    FCTRANS_BTF_KIND_VAR = 14,
    FCTRANS_BTF_KIND_DATASEC = 15,
    FCTRANS_BTF_KIND_FLOAT = 16,
    FCTRANS_BTF_KIND_DECL_TAG = 17,
    FCTRANS_BTF_KIND_TYPE_TAG = 18,
    FCTRANS_BTF_KIND_ENUM64 = 19,
    FCTRANS_BTF_KIND_MAX = FCTRANS_BTF_KIND_ENUM64,
} FctransBtfKind;

/* Where a (possibly nested) member lies inside its outermost struct. */
typedef struct FctransBtfMember {
    uint64_t bit_offset;        /* from the start of the outer struct */
    uint32_t bit_size;          /* 0 unless the member is a bitfield */
    uint32_t type_id;           /* the member's type, unresolved */
    uint64_t byte_size;         /* size of the resolved type */
} FctransBtfMember;

/*
 * Parse a BTF blob (the contents of a .BTF section).  The data is copied.
 * Fails with FCTRANS_ERROR_INVALID when the header, the type records or
 * the string table are malformed, and FCTRANS_ERROR_UNSUPPORTED for a
 * big-endian blob or an unknown version.
 */
FctransBtf *fctrans_btf_new(const void *data, size_t len, GError **errp);
void fctrans_btf_free(FctransBtf *btf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FctransBtf, fctrans_btf_free)

/* Number of type ids, including the implicit void type 0. */
uint32_t fctrans_btf_type_count(const FctransBtf *btf);

/* Kind and name ("" when anonymous) of a type; false for a bad id. */
bool fctrans_btf_type_info(const FctransBtf *btf, uint32_t id,
                           FctransBtfKind *kind, const char **name);

/* The first type of @kind named @name. */
bool fctrans_btf_find(const FctransBtf *btf, const char *name,
                      FctransBtfKind kind, uint32_t *id, GError **errp);

/*
 * Size in bytes of a type, following typedefs and qualifiers and
 * multiplying out arrays.
 */
bool fctrans_btf_type_size(const FctransBtf *btf, uint32_t id,
                           uint64_t *size, GError **errp);

/*
 * Look up a member of the struct or union @id by a dotted path such as
 * "lru.next".  Members of anonymous structs and unions are found as if
 * they were direct members, as in C.
 */
bool fctrans_btf_member(const FctransBtf *btf, uint32_t id,
                        const char *path, FctransBtfMember *member,
                        GError **errp);

/* Number of elements of the array type @id (after typedefs). */
bool fctrans_btf_array_len(const FctransBtf *btf, uint32_t id,
                           uint32_t *nelems, GError **errp);

/* The value of the enumerator @name, in any ENUM or ENUM64 type. */
bool fctrans_btf_enum_value(const FctransBtf *btf, const char *name,
                            int64_t *value, GError **errp);

#endif /* FCTRANS_BTF_H */
