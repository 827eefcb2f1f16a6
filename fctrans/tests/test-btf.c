/*
 * Unit tests of the BTF reader on crafted blobs
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "btf.h"
#include "test-kernel-image.h"
#include "vmi-internal.h"
#include "test-bound.h"

static FctransBtf *load(GBytes *b, GError **errp)
{
    return fctrans_btf_new(g_bytes_get_data(b, NULL), g_bytes_get_size(b),
                           errp);
}

static void test_kernel_layout(void)
{
    g_autoptr(GBytes) blob = test_kernel_btf(true);
    g_autoptr(FctransBtf) btf = NULL;
    g_autoptr(GError) err = NULL;
    FctransBtfMember m;
    uint32_t page, zone, nelems;
    uint64_t size;
    int64_t v;
    FctransBtfKind kind;
    const char *name;

    btf = load(blob, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_btf_type_count(btf), >, 10);
    g_assert_true(fctrans_btf_find(btf, "page", FCTRANS_BTF_KIND_STRUCT,
                                   &page, &err));
    g_assert_true(fctrans_btf_type_info(btf, page, &kind, &name));
    g_assert_cmpint(kind, ==, FCTRANS_BTF_KIND_STRUCT);
    g_assert_cmpstr(name, ==, "page");
    g_assert_true(fctrans_btf_type_size(btf, page, &size, &err));
    g_assert_cmpuint(size, ==, 64);

    /* Direct, inside two anonymous levels, and through a path. */
    g_assert_true(fctrans_btf_member(btf, page, "flags", &m, &err));
    g_assert_cmpuint(m.bit_offset, ==, 0);
    g_assert_cmpuint(m.byte_size, ==, 8);
    g_assert_true(fctrans_btf_member(btf, page, "private", &m, &err));
    g_assert_cmpuint(m.bit_offset, ==, 40 * 8);
    g_assert_true(fctrans_btf_member(btf, page, "page_type", &m, &err));
    g_assert_cmpuint(m.bit_offset, ==, 48 * 8);
    g_assert_cmpuint(m.byte_size, ==, 4);
    g_assert_true(fctrans_btf_member(btf, page, "_mapcount", &m, &err));
    g_assert_cmpuint(m.byte_size, ==, 4);   /* through a typedef */
    g_assert_true(fctrans_btf_member(btf, page, "lru.prev", &m, &err));
    g_assert_cmpuint(m.bit_offset, ==, 16 * 8);
    g_assert_cmpuint(m.byte_size, ==, 8);

    g_assert_true(fctrans_btf_find(btf, "zone", FCTRANS_BTF_KIND_STRUCT,
                                   &zone, &err));
    g_assert_true(fctrans_btf_member(btf, zone, "free_area", &m, &err));
    g_assert_true(fctrans_btf_array_len(btf, m.type_id, &nelems, &err));
    g_assert_cmpuint(nelems, ==, 11);
    g_assert_cmpuint(m.byte_size, ==, 11 * 88);
    g_assert_true(fctrans_btf_member(btf, zone, "free_area", &m, &err));

    g_assert_true(fctrans_btf_enum_value(btf, "PGTY_table", &v, &err));
    g_assert_cmpint(v, ==, 0xf2);

    /* Absent things are UNSUPPORTED, not INVALID. */
    g_assert_false(fctrans_btf_member(btf, page, "nonesuch", &m, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_clear_error(&err);
    g_assert_false(fctrans_btf_member(btf, page, "lru.nonesuch", &m, &err));
    g_clear_error(&err);
    g_assert_false(fctrans_btf_find(btf, "nonesuch", FCTRANS_BTF_KIND_STRUCT,
                                    &page, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_clear_error(&err);
    g_assert_false(fctrans_btf_enum_value(btf, "PGTY_nonesuch", &v, &err));
    g_clear_error(&err);
    g_assert_false(fctrans_btf_array_len(btf, page, &nelems, &err));
    g_clear_error(&err);
    g_assert_false(fctrans_btf_type_info(btf, 0, NULL, NULL));
    g_assert_false(fctrans_btf_type_info(btf, 1000000, NULL, NULL));
}

static void test_bitfields_enum64(void)
{
    BtfBuilder b;
    g_autoptr(GBytes) blob = NULL;
    g_autoptr(FctransBtf) btf = NULL;
    g_autoptr(GError) err = NULL;
    FctransBtfMember m;
    uint32_t u32, s;
    uint8_t e64[12];
    int64_t v;

    btfb_init(&b);
    u32 = btfb_int(&b, "unsigned int", 4);
    {
        BtfbMember mm[] = {
            { "a", u32, 0, 3 }, { "b", u32, 3, 13 }, { "c", u32, 32, 0 },
        };

        s = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "bits", 8, 3, mm);
    }
    fctrans_st32(e64, btfb_str(&b, "BIG"));
    fctrans_st32(e64 + 4, 0x89abcdef);
    fctrans_st32(e64 + 8, 0x01234567);
    btfb_raw(&b, "big", FCTRANS_BTF_KIND_ENUM64, false, 1, 8, e64, 12);
    blob = btfb_finish(&b);
    btf = load(blob, &err);
    g_assert_no_error(err);
    g_assert_true(fctrans_btf_member(btf, s, "b", &m, &err));
    g_assert_cmpuint(m.bit_offset, ==, 3);
    g_assert_cmpuint(m.bit_size, ==, 13);
    g_assert_cmpuint(m.byte_size, ==, 2);
    g_assert_true(fctrans_btf_member(btf, s, "c", &m, &err));
    g_assert_cmpuint(m.bit_offset, ==, 32);
    g_assert_cmpuint(m.bit_size, ==, 0);
    g_assert_false(fctrans_btf_member(btf, s, "a.x", &m, &err));
    g_clear_error(&err);
    g_assert_true(fctrans_btf_enum_value(btf, "BIG", &v, &err));
    g_assert_cmpint(v, ==, 0x0123456789abcdefLL);
}

static void test_loops(void)
{
    BtfBuilder b;
    g_autoptr(GBytes) blob = NULL;
    g_autoptr(FctransBtf) btf = NULL;
    g_autoptr(GError) err = NULL;
    FctransBtfMember m;
    uint64_t size;
    uint32_t td1, s;

    btfb_init(&b);
    /* typedef 1 -> typedef 2 -> typedef 1 */
    td1 = btfb_ref(&b, FCTRANS_BTF_KIND_TYPEDEF, "a", 2);
    btfb_ref(&b, FCTRANS_BTF_KIND_TYPEDEF, "b", 1);
    /* A struct whose anonymous member is itself. */
    {
        BtfbMember mm[] = { { NULL, 3, 0, 0 } };

        s = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "self", 8, 1, mm);
    }
    /* An array of itself. */
    btfb_array(&b, 4, 4, 2);
    /* A reference past the last type. */
    btfb_ref(&b, FCTRANS_BTF_KIND_CONST, NULL, 999);
    blob = btfb_finish(&b);
    btf = load(blob, &err);
    g_assert_no_error(err);

    g_assert_false(fctrans_btf_type_size(btf, td1, &size, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    g_assert_false(fctrans_btf_member(btf, s, "x", &m, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    g_assert_false(fctrans_btf_type_size(btf, 4, &size, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    g_assert_false(fctrans_btf_type_size(btf, 5, &size, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
}

/*
 * Nested anonymous members, each level embedding the next one several
 * times: searching every embedding would visit 4^16 structs.  A lookup,
 * found or not, takes a bounded time; deeper nesting and blobs with more
 * members than a lookup may visit are refused.
 */
static void test_anon_nesting(void)
{
    const unsigned levels = 16, width = 4;
    BtfBuilder b;
    g_autoptr(GBytes) blob = NULL;
    g_autoptr(FctransBtf) btf = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(GTimer) timer = g_timer_new();
    FctransBtfMember m;
    BtfbMember mm[4];
    uint32_t u32, leaf, outer, deeper, cur;
    unsigned i, j;

    btfb_init(&b);
    u32 = btfb_int(&b, "u32", 4);
    {
        BtfbMember lm[] = { { "deep", u32, 32, 0 } };

        leaf = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, NULL, 8, 1, lm);
    }
    cur = leaf;
    for (i = 0; i < levels; i++) {
        for (j = 0; j < width; j++) {
            mm[j] = (BtfbMember){ NULL, cur, j * 64, 0 };
        }
        cur = btfb_struct(&b, i % 2 ? FCTRANS_BTF_KIND_UNION
                                    : FCTRANS_BTF_KIND_STRUCT,
                          i == levels - 1 ? "outer" : NULL, 8 * width,
                          width, mm);
    }
    outer = cur;
    /* One level more than a lookup descends. */
    mm[0] = (BtfbMember){ NULL, outer, 0, 0 };
    deeper = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "deeper", 32, 1, mm);
    blob = btfb_finish(&b);
    g_test_message("BTF blob of %zu bytes", g_bytes_get_size(blob));
    btf = load(blob, &err);
    g_assert_no_error(err);

    g_timer_start(timer);
    g_assert_false(fctrans_btf_member(btf, outer, "absent", &m, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_clear_error(&err);
    /* Found through the first embedding at each level: offset 32 bits. */
    g_assert_true(fctrans_btf_member(btf, outer, "deep", &m, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(m.bit_offset, ==, 32);
    g_assert_cmpuint(m.byte_size, ==, 4);
    g_assert_false(fctrans_btf_member(btf, deeper, "absent", &m, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, "nested"));
    g_clear_error(&err);
    g_test_message("lookups took %.6f s", g_timer_elapsed(timer, NULL));
    g_assert_cmpfloat(g_timer_elapsed(timer, NULL), <, TEST_INPUT_SECONDS);
}

/*
 * As wide as BTF allows: a struct of 65535 anonymous members, each a
 * distinct struct of 17 anonymous members (over the visit budget in all).
 */
static void test_anon_breadth(void)
{
    const unsigned outer_n = 65535, inner_n = 17;
    BtfBuilder b;
    g_autoptr(GBytes) blob = NULL;
    g_autoptr(FctransBtf) btf = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(GTimer) timer = NULL;
    g_autofree BtfbMember *om = g_new0(BtfbMember, outer_n);
    BtfbMember im[17];
    FctransBtfMember m;
    uint32_t leaf, wide;
    unsigned i;

    btfb_init(&b);
    leaf = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, NULL, 1, 0, NULL);
    for (i = 0; i < inner_n; i++) {
        im[i] = (BtfbMember){ NULL, leaf, 0, 0 };
    }
    for (i = 0; i < outer_n; i++) {
        om[i] = (BtfbMember){ NULL, 0, 0, 0 };
        om[i].type = btfb_struct(&b, FCTRANS_BTF_KIND_UNION, NULL, 1,
                                 inner_n, im);
    }
    wide = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "wide", 1, outer_n, om);
    blob = btfb_finish(&b);
    btf = load(blob, &err);
    g_assert_no_error(err);
    timer = g_timer_new();
    g_assert_false(fctrans_btf_member(btf, wide, "absent", &m, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, "members searched"));
    g_test_message("refused in %.6f s", g_timer_elapsed(timer, NULL));
    g_assert_cmpfloat(g_timer_elapsed(timer, NULL), <, TEST_INPUT_SECONDS);
}

static void expect_invalid(const uint8_t *d, size_t len, int code)
{
    g_autoptr(GError) err = NULL;
    FctransBtf *btf = fctrans_btf_new(d, len, &err);

    g_assert_null(btf);
    g_assert_error(err, FCTRANS_ERROR, code);
}

static void test_malformed(void)
{
    g_autoptr(GBytes) blob = test_kernel_btf(false);
    size_t len = g_bytes_get_size(blob);
    g_autofree uint8_t *d = g_memdup2(g_bytes_get_data(blob, NULL), len);
    g_autofree uint8_t *c = g_malloc(len);
    uint32_t type_len = fctrans_ld32(d + 12);

    expect_invalid(d, 10, FCTRANS_ERROR_INVALID);
    /* Every truncation fails cleanly. */
    for (size_t n = 0; n < len; n += 7) {
        FctransBtf *btf = fctrans_btf_new(d, n, NULL);

        g_assert_null(btf);
    }
#define MUTATE(stmt, code) do {             \
        memcpy(c, d, len);                  \
        stmt;                               \
        expect_invalid(c, len, code);       \
    } while (0)
    MUTATE(c[0] = 0, FCTRANS_ERROR_INVALID);
    MUTATE((c[0] = 0xeb, c[1] = 0x9f), FCTRANS_ERROR_UNSUPPORTED);
    MUTATE(c[2] = 2, FCTRANS_ERROR_UNSUPPORTED);
    MUTATE(fctrans_st32(c + 4, 8), FCTRANS_ERROR_INVALID);
    MUTATE(fctrans_st32(c + 4, 0x7fffffff), FCTRANS_ERROR_INVALID);
    MUTATE(fctrans_st32(c + 12, type_len + 1000), FCTRANS_ERROR_INVALID);
    MUTATE(fctrans_st32(c + 8, 2), FCTRANS_ERROR_INVALID);
    MUTATE(fctrans_st32(c + 20, 0), FCTRANS_ERROR_INVALID);
    MUTATE(c[len - 1] = 'x', FCTRANS_ERROR_INVALID);
    MUTATE(fctrans_st32(c + 16, 0), FCTRANS_ERROR_INVALID); /* overlap */
    /* First type: unknown kind, and a name past the strings. */
    MUTATE(c[24 + 7] = 0x1f, FCTRANS_ERROR_INVALID);
    MUTATE(fctrans_st32(c + 24, 0xffffff), FCTRANS_ERROR_INVALID);
    /* A struct whose member count runs past the section. */
    MUTATE(fctrans_st32(c + 24 + 4, (4u << 24) | 0xffff),
           FCTRANS_ERROR_INVALID);
#undef MUTATE
}

/* Random corruption: any outcome but a crash or a hang. */
static void test_mutations(void)
{
    g_autoptr(GBytes) blob = test_kernel_btf(true);
    size_t len = g_bytes_get_size(blob);
    const uint8_t *d = g_bytes_get_data(blob, NULL);
    g_autofree uint8_t *c = g_malloc(len);
    int i, j;

    for (i = 0; i < 3000; i++) {
        g_autoptr(FctransBtf) btf = NULL;
        FctransBtfMember m;
        uint32_t id, n;
        uint64_t size;
        int64_t v;

        memcpy(c, d, len);
        for (j = g_test_rand_int_range(1, 8); j > 0; j--) {
            c[g_test_rand_int_range(0, len)] = g_test_rand_int();
        }
        btf = fctrans_btf_new(c, len, NULL);
        if (!btf) {
            continue;
        }
        for (id = 0; id < fctrans_btf_type_count(btf) + 2; id++) {
            fctrans_btf_type_size(btf, id, &size, NULL);
            fctrans_btf_array_len(btf, id, &n, NULL);
            fctrans_btf_member(btf, id, "private", &m, NULL);
        }
        if (fctrans_btf_find(btf, "page", FCTRANS_BTF_KIND_STRUCT, &id,
                             NULL)) {
            fctrans_btf_member(btf, id, "lru.next", &m, NULL);
        }
        fctrans_btf_enum_value(btf, "PGTY_buddy", &v, NULL);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/btf/kernel-layout", test_kernel_layout);
    g_test_add_func("/btf/bitfields-enum64", test_bitfields_enum64);
    g_test_add_func("/btf/loops", test_loops);
    g_test_add_func("/btf/anon-nesting", test_anon_nesting);
    g_test_add_func("/btf/anon-breadth", test_anon_breadth);
    g_test_add_func("/btf/malformed", test_malformed);
    g_test_add_func("/btf/mutations", test_mutations);
    return g_test_run();
}
