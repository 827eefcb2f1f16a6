/*
 * fctrans: a reader for BTF, the BPF Type Format
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The format is described in the kernel's Documentation/bpf/btf.rst.  A
 * blob is a header, a section of variable-length type records (type id 1
 * is the first record; id 0 is void) and a string table.  The records are
 * indexed once at load time; everything else is looked up on demand.
 */
#include "btf.h"

#include "vmi-internal.h"

#include <inttypes.h>

#include <string.h>

#define BTF_MAGIC 0xeb9f
#define BTF_HEADER_SIZE 24
#define BTF_TYPE_SIZE 12

/*
 * Bounds on walks through the type graph.  Real kernels nest anonymous
 * unions a few levels deep and stack a handful of qualifiers; a blob that
 * needs more is malformed (or a loop), not something to follow.
 */
#define BTF_MAX_RESOLVE_DEPTH 32
#define BTF_MAX_ANON_DEPTH 16

/*
 * Bound on the member records one lookup examines.  Each struct or union
 * is searched at most once per lookup (see btf_find_member()), so this is
 * only reached by a blob with more members than a kernel has; it keeps
 * the cost of a lookup fixed whatever the blob.
 */
#define BTF_MAX_MEMBER_VISITS (1 << 20)

struct FctransBtf {
    uint8_t *data;
    size_t len;
    const uint8_t *types;       /* type section */
    uint32_t types_len;
    const char *strs;           /* string section, NUL-terminated */
    uint32_t strs_len;
    uint32_t *offsets;          /* offsets[id] of record id; [0] unused */
    uint32_t count;             /* number of ids, including void */
};

typedef struct BtfType {
    uint32_t name_off;
    uint32_t vlen;
    FctransBtfKind kind;
    bool kind_flag;
    uint32_t size_type;         /* size or referenced type, by kind */
    const uint8_t *extra;       /* kind-specific data after the record */
} BtfType;

/* Set *errp to an FCTRANS_ERROR and return false. */
#define btf_fail(errp, code, ...) \
    fctrans_fail(errp, code, "BTF: ", __VA_ARGS__)

/* Size of the kind-specific data following a record, or -1. */
static int64_t btf_extra_size(FctransBtfKind kind, uint32_t vlen)
{
    switch (kind) {
    case FCTRANS_BTF_KIND_INT:
        return 4;
    case FCTRANS_BTF_KIND_PTR:
    case FCTRANS_BTF_KIND_FWD:
    case FCTRANS_BTF_KIND_TYPEDEF:
    case FCTRANS_BTF_KIND_VOLATILE:
    case FCTRANS_BTF_KIND_CONST:
    case FCTRANS_BTF_KIND_RESTRICT:
    case FCTRANS_BTF_KIND_FUNC:
    case FCTRANS_BTF_KIND_FLOAT:
    case FCTRANS_BTF_KIND_TYPE_TAG:
        return 0;
    case FCTRANS_BTF_KIND_ARRAY:
        return 12;
    case FCTRANS_BTF_KIND_STRUCT:
    case FCTRANS_BTF_KIND_UNION:
        return 12 * (int64_t)vlen;
    case FCTRANS_BTF_KIND_ENUM:
        return 8 * (int64_t)vlen;
    case FCTRANS_BTF_KIND_FUNC_PROTO:
        return 8 * (int64_t)vlen;
    case FCTRANS_BTF_KIND_VAR:
        return 4;
    case FCTRANS_BTF_KIND_DATASEC:
        return 12 * (int64_t)vlen;
    case FCTRANS_BTF_KIND_DECL_TAG:
        return 4;
    case FCTRANS_BTF_KIND_ENUM64:
        return 12 * (int64_t)vlen;
    default:
        return -1;
    }
}

static void btf_get(const FctransBtf *btf, uint32_t id, BtfType *t)
{
    const uint8_t *p = btf->types + btf->offsets[id];
    uint32_t info = fctrans_ld32(p + 4);

    t->name_off = fctrans_ld32(p);
    t->vlen = info & 0xffff;
    t->kind = (info >> 24) & 0x1f;
    t->kind_flag = info >> 31;
    t->size_type = fctrans_ld32(p + 8);
    t->extra = p + BTF_TYPE_SIZE;
}

static const char *btf_str(const FctransBtf *btf, uint32_t off)
{
    /* Checked at load time for every name offset of a type record. */
    return off < btf->strs_len ? btf->strs + off : "";
}

static bool btf_check_str(const FctransBtf *btf, uint32_t off)
{
    return off < btf->strs_len;
}

FctransBtf *fctrans_btf_new(const void *data, size_t len, GError **errp)
{
    g_autoptr(FctransBtf) btf = g_new0(FctransBtf, 1);
    const uint8_t *d = data;
    uint32_t hdr_len, type_off, type_len, str_off, str_len;
    uint32_t off, n, cap;

    if (len < BTF_HEADER_SIZE) {
        btf_fail(errp, FCTRANS_ERROR_INVALID, "truncated header (%zu bytes)",
                 len);
        return NULL;
    }
    if (len > UINT32_MAX) {
        btf_fail(errp, FCTRANS_ERROR_INVALID, "blob too large");
        return NULL;
    }
    if (fctrans_ld16(d) != BTF_MAGIC) {
        if (d[0] == 0xeb && d[1] == 0x9f) {
            btf_fail(errp, FCTRANS_ERROR_UNSUPPORTED,
                     "big-endian BTF is not supported");
        } else {
            btf_fail(errp, FCTRANS_ERROR_INVALID, "bad magic");
        }
        return NULL;
    }
    if (d[2] != 1) {
        btf_fail(errp, FCTRANS_ERROR_UNSUPPORTED, "version %u", d[2]);
        return NULL;
    }
    hdr_len = fctrans_ld32(d + 4);
    type_off = fctrans_ld32(d + 8);
    type_len = fctrans_ld32(d + 12);
    str_off = fctrans_ld32(d + 16);
    str_len = fctrans_ld32(d + 20);
    if (hdr_len < BTF_HEADER_SIZE || hdr_len > len) {
        btf_fail(errp, FCTRANS_ERROR_INVALID, "bad header length %u", hdr_len);
        return NULL;
    }
    if ((uint64_t)hdr_len + type_off + type_len > len ||
        (uint64_t)hdr_len + str_off + str_len > len) {
        btf_fail(errp, FCTRANS_ERROR_INVALID,
                 "sections extend past the end of the blob");
        return NULL;
    }
    if (type_off % 4) {
        btf_fail(errp, FCTRANS_ERROR_INVALID, "misaligned type section");
        return NULL;
    }
    if (str_len == 0 || d[hdr_len + str_off] != '\0' ||
        d[hdr_len + str_off + str_len - 1] != '\0') {
        btf_fail(errp, FCTRANS_ERROR_INVALID, "malformed string section");
        return NULL;
    }
    if (type_off < str_off ? (uint64_t)type_off + type_len > str_off
                           : (uint64_t)str_off + str_len > type_off) {
        btf_fail(errp, FCTRANS_ERROR_INVALID, "sections overlap");
        return NULL;
    }

    btf->data = g_memdup2(data, len);
    btf->len = len;
    btf->types = btf->data + hdr_len + type_off;
    btf->types_len = type_len;
    btf->strs = (const char *)btf->data + hdr_len + str_off;
    btf->strs_len = str_len;

    cap = type_len / BTF_TYPE_SIZE + 1;
    btf->offsets = g_new(uint32_t, cap);
    btf->offsets[0] = 0;
    n = 1;
    for (off = 0; off < type_len; n++) {
        const uint8_t *p = btf->types + off;
        uint32_t info;
        FctransBtfKind kind;
        int64_t extra;

        if (type_len - off < BTF_TYPE_SIZE) {
            btf_fail(errp, FCTRANS_ERROR_INVALID,
                     "truncated type record at offset %u", off);
            return NULL;
        }
        info = fctrans_ld32(p + 4);
        kind = (info >> 24) & 0x1f;
        extra = btf_extra_size(kind, info & 0xffff);
        if (extra < 0 || kind == FCTRANS_BTF_KIND_UNKN) {
            btf_fail(errp, FCTRANS_ERROR_INVALID,
                     "unknown kind %u for type %u", kind, n);
            return NULL;
        }
        if ((uint64_t)off + BTF_TYPE_SIZE + extra > type_len) {
            btf_fail(errp, FCTRANS_ERROR_INVALID,
                     "type %u extends past the type section", n);
            return NULL;
        }
        if (!btf_check_str(btf, fctrans_ld32(p))) {
            btf_fail(errp, FCTRANS_ERROR_INVALID,
                     "type %u has a bad name offset", n);
            return NULL;
        }
        g_assert(n < cap);
        btf->offsets[n] = off;
        off += BTF_TYPE_SIZE + extra;
    }
    btf->count = n;
    return g_steal_pointer(&btf);
}

void fctrans_btf_free(FctransBtf *btf)
{
    if (btf) {
        g_free(btf->data);
        g_free(btf->offsets);
        g_free(btf);
    }
}

uint32_t fctrans_btf_type_count(const FctransBtf *btf)
{
    return btf->count;
}

bool fctrans_btf_type_info(const FctransBtf *btf, uint32_t id,
                           FctransBtfKind *kind, const char **name)
{
    BtfType t;

    if (id == 0 || id >= btf->count) {
        return false;
    }
    btf_get(btf, id, &t);
    if (kind) {
        *kind = t.kind;
    }
    if (name) {
        *name = btf_str(btf, t.name_off);
    }
    return true;
}

bool fctrans_btf_find(const FctransBtf *btf, const char *name,
                      FctransBtfKind kind, uint32_t *id, GError **errp)
{
    uint32_t i;

    for (i = 1; i < btf->count; i++) {
        BtfType t;

        btf_get(btf, i, &t);
        if (t.kind == kind && t.name_off &&
            strcmp(btf_str(btf, t.name_off), name) == 0) {
            *id = i;
            return true;
        }
    }
    return btf_fail(errp, FCTRANS_ERROR_UNSUPPORTED, "no type '%s' of kind %d",
                    name, kind);
}

/*
 * Follow typedefs and qualifiers to the underlying type.  The failure
 * paths return a literal false (not btf_fail()'s value, which the
 * compiler cannot see is always false), so that callers may use @out and
 * @t exactly when this returns true.
 */
static bool btf_resolve(const FctransBtf *btf, uint32_t id, uint32_t *out,
                        BtfType *t, GError **errp)
{
    int depth;

    for (depth = 0; depth < BTF_MAX_RESOLVE_DEPTH; depth++) {
        if (id == 0 || id >= btf->count) {
            btf_fail(errp, FCTRANS_ERROR_INVALID,
                     "reference to type %u out of range", id);
            return false;
        }
        btf_get(btf, id, t);
        switch (t->kind) {
        case FCTRANS_BTF_KIND_TYPEDEF:
        case FCTRANS_BTF_KIND_VOLATILE:
        case FCTRANS_BTF_KIND_CONST:
        case FCTRANS_BTF_KIND_RESTRICT:
        case FCTRANS_BTF_KIND_TYPE_TAG:
            id = t->size_type;
            continue;
        default:
            *out = id;
            return true;
        }
    }
    btf_fail(errp, FCTRANS_ERROR_INVALID,
             "type chain longer than %d (a loop?) at type %u",
             BTF_MAX_RESOLVE_DEPTH, id);
    return false;
}

static bool btf_size_depth(const FctransBtf *btf, uint32_t id, uint64_t *size,
                           int depth, GError **errp)
{
    BtfType t;
    uint32_t rid, nelems;
    uint64_t elem;

    if (depth > BTF_MAX_RESOLVE_DEPTH) {
        return btf_fail(errp, FCTRANS_ERROR_INVALID,
                        "array nesting too deep at type %u", id);
    }
    if (!btf_resolve(btf, id, &rid, &t, errp)) {
        return false;
    }
    switch (t.kind) {
    case FCTRANS_BTF_KIND_INT:
    case FCTRANS_BTF_KIND_ENUM:
    case FCTRANS_BTF_KIND_ENUM64:
    case FCTRANS_BTF_KIND_STRUCT:
    case FCTRANS_BTF_KIND_UNION:
    case FCTRANS_BTF_KIND_FLOAT:
    case FCTRANS_BTF_KIND_DATASEC:
        *size = t.size_type;
        return true;
    case FCTRANS_BTF_KIND_PTR:
        /* The kernels this reader is for are 64-bit. */
        *size = 8;
        return true;
    case FCTRANS_BTF_KIND_ARRAY:
        nelems = fctrans_ld32(t.extra + 8);
        if (!btf_size_depth(btf, fctrans_ld32(t.extra), &elem, depth + 1,
                            errp)) {
            return false;
        }
        if (nelems && elem > UINT32_MAX * (uint64_t)4 / nelems) {
            return btf_fail(errp, FCTRANS_ERROR_INVALID,
                            "array type %u is too large", rid);
        }
        *size = elem * nelems;
        return true;
    default:
        return btf_fail(errp, FCTRANS_ERROR_INVALID,
                        "type %u (kind %d) has no size", rid, t.kind);
    }
}

bool fctrans_btf_type_size(const FctransBtf *btf, uint32_t id,
                           uint64_t *size, GError **errp)
{
    return btf_size_depth(btf, id, size, 0, errp);
}

/* One lookup of a member name, across nested anonymous members. */
typedef struct BtfMemberSearch {
    const char *name;
    /*
     * Struct/union ids searched: BTF_SEARCH_ACTIVE while on the stack of
     * the search, BTF_SEARCH_DONE once searched in full without a match.
     * Whether a type holds the name does not depend on where it is
     * embedded, so a type met again (a blob may embed one anonymous type
     * many times at each of many levels) is not searched again: the cost
     * is linear in the members of the distinct types, not exponential in
     * the nesting depth.
     */
    GHashTable *seen;
    uint32_t visits;            /* member records examined */
} BtfMemberSearch;

#define BTF_SEARCH_ACTIVE GINT_TO_POINTER(1)
#define BTF_SEARCH_DONE GINT_TO_POINTER(2)

/*
 * Find the name of @s among the members of struct/union @id, descending
 * into anonymous struct/union members.  Returns 1 when found, 0 when not,
 * -1 on a malformed blob.
 */
static int btf_find_member(const FctransBtf *btf, BtfMemberSearch *s,
                           uint32_t id, uint64_t base_bits,
                           FctransBtfMember *out, int depth, GError **errp)
{
    BtfType t;
    uint32_t rid, i;
    gpointer state;

    if (depth > BTF_MAX_ANON_DEPTH) {
        btf_fail(errp, FCTRANS_ERROR_INVALID,
                 "anonymous members nested more than %d deep",
                 BTF_MAX_ANON_DEPTH);
        return -1;
    }
    if (!btf_resolve(btf, id, &rid, &t, errp)) {
        return -1;
    }
    if (t.kind != FCTRANS_BTF_KIND_STRUCT && t.kind != FCTRANS_BTF_KIND_UNION) {
        btf_fail(errp, FCTRANS_ERROR_INVALID,
                 "type %u is not a struct or union", rid);
        return -1;
    }
    state = g_hash_table_lookup(s->seen, GUINT_TO_POINTER(rid));
    if (state == BTF_SEARCH_ACTIVE) {
        btf_fail(errp, FCTRANS_ERROR_INVALID,
                 "type %u contains itself through anonymous members", rid);
        return -1;
    }
    if (state == BTF_SEARCH_DONE) {
        return 0;
    }
    g_hash_table_insert(s->seen, GUINT_TO_POINTER(rid), BTF_SEARCH_ACTIVE);
    for (i = 0; i < t.vlen; i++) {
        const uint8_t *m = t.extra + 12 * i;
        uint32_t m_name = fctrans_ld32(m);
        uint32_t m_type = fctrans_ld32(m + 4);
        uint32_t m_off = fctrans_ld32(m + 8);
        uint64_t bits = t.kind_flag ? (m_off & 0xffffff) : m_off;
        uint32_t bit_size = t.kind_flag ? m_off >> 24 : 0;
        int r;

        if (++s->visits > BTF_MAX_MEMBER_VISITS) {
            btf_fail(errp, FCTRANS_ERROR_INVALID,
                     "more than %d members searched for '%s'",
                     BTF_MAX_MEMBER_VISITS, s->name);
            return -1;
        }
        if (m_name && btf_check_str(btf, m_name) &&
            strcmp(btf_str(btf, m_name), s->name) == 0) {
            out->bit_offset = base_bits + bits;
            out->bit_size = bit_size;
            out->type_id = m_type;
            return 1;
        }
        if (m_name == 0) {
            BtfType mt;
            uint32_t mrid;

            if (!btf_resolve(btf, m_type, &mrid, &mt, errp)) {
                return -1;
            }
            if (mt.kind != FCTRANS_BTF_KIND_STRUCT &&
                mt.kind != FCTRANS_BTF_KIND_UNION) {
                continue;
            }
            r = btf_find_member(btf, s, mrid, base_bits + bits, out,
                                depth + 1, errp);
            if (r != 0) {
                return r;
            }
        }
    }
    g_hash_table_insert(s->seen, GUINT_TO_POINTER(rid), BTF_SEARCH_DONE);
    return 0;
}

bool fctrans_btf_member(const FctransBtf *btf, uint32_t id,
                        const char *path, FctransBtfMember *member,
                        GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(path, ".", 0);
    FctransBtfMember m = { 0 };
    uint64_t base = 0;
    uint32_t cur = id;
    int i;

    if (!parts[0]) {
        return btf_fail(errp, FCTRANS_ERROR_INVALID, "empty member path");
    }
    for (i = 0; parts[i]; i++) {
        g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
        BtfMemberSearch s = { .name = parts[i], .seen = seen };
        int r = btf_find_member(btf, &s, cur, base, &m, 0, errp);

        if (r < 0) {
            return false;
        }
        if (r == 0) {
            const char *sname = "";

            fctrans_btf_type_info(btf, id, NULL, &sname);
            return btf_fail(errp, FCTRANS_ERROR_UNSUPPORTED,
                            "'%s' has no member '%s'", sname, path);
        }
        if (m.bit_size && parts[i + 1]) {
            return btf_fail(errp, FCTRANS_ERROR_INVALID,
                            "'%s' in '%s' is a bitfield", parts[i], path);
        }
        base = m.bit_offset;
        cur = m.type_id;
    }
    if (m.bit_size) {
        m.byte_size = (m.bit_size + 7) / 8;
    } else if (!fctrans_btf_type_size(btf, m.type_id, &m.byte_size, errp)) {
        return false;
    }
    *member = m;
    return true;
}

bool fctrans_btf_array_len(const FctransBtf *btf, uint32_t id,
                           uint32_t *nelems, GError **errp)
{
    BtfType t;
    uint32_t rid;

    if (!btf_resolve(btf, id, &rid, &t, errp)) {
        return false;
    }
    if (t.kind != FCTRANS_BTF_KIND_ARRAY) {
        return btf_fail(errp, FCTRANS_ERROR_INVALID,
                        "type %u is not an array", rid);
    }
    *nelems = fctrans_ld32(t.extra + 8);
    return true;
}

bool fctrans_btf_enum_value(const FctransBtf *btf, const char *name,
                            int64_t *value, GError **errp)
{
    uint32_t i, j;

    for (i = 1; i < btf->count; i++) {
        BtfType t;

        btf_get(btf, i, &t);
        if (t.kind == FCTRANS_BTF_KIND_ENUM) {
            for (j = 0; j < t.vlen; j++) {
                const uint8_t *e = t.extra + 8 * j;

                if (btf_check_str(btf, fctrans_ld32(e)) &&
                    strcmp(btf_str(btf, fctrans_ld32(e)), name) == 0) {
                    *value = t.kind_flag ? (int64_t)(int32_t)fctrans_ld32(e + 4)
                                         : (int64_t)fctrans_ld32(e + 4);
                    return true;
                }
            }
        } else if (t.kind == FCTRANS_BTF_KIND_ENUM64) {
            for (j = 0; j < t.vlen; j++) {
                const uint8_t *e = t.extra + 12 * j;

                if (btf_check_str(btf, fctrans_ld32(e)) &&
                    strcmp(btf_str(btf, fctrans_ld32(e)), name) == 0) {
                    *value = (int64_t)(((uint64_t)fctrans_ld32(e + 8) << 32) |
                                       fctrans_ld32(e + 4));
                    return true;
                }
            }
        }
    }
    return btf_fail(errp, FCTRANS_ERROR_UNSUPPORTED, "no enumerator '%s'",
                    name);
}
