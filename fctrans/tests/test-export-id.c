/*
 * Unit tests of the export identity record
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>

#include "export-id.h"

static void make_id(FctransExportId *id, unsigned index, const char *name)
{
    GError *err = NULL;

    memset(id, 0, sizeof(*id));
    id->state = FCTRANS_EXPORT_ID_MIGRATING;
    id->page_size = 4096;
    id->npages = 262144;
    id->subhost_index = index;
    id->nsubhosts = 2;
    g_strlcpy(id->subhost_id, name, sizeof(id->subhost_id));
    memset(id->vm_uuid, 0x11, sizeof(id->vm_uuid));
    memset(id->migration_id, 0x22, sizeof(id->migration_id));
    g_assert_true(fctrans_export_id_random(id->nonce, &err));
    g_assert_no_error(err);
    id->written_s = 1796000000;
}

/* Re-seal a record the test changed, as a writer of that content would. */
static void reseal(uint8_t *buf)
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = 32;

    g_checksum_update(c, buf, FCTRANS_EXPORT_ID_SIZE - 32);
    g_checksum_get_digest(c, buf + FCTRANS_EXPORT_ID_SIZE - 32, &len);
    g_checksum_free(c);
}

static void test_roundtrip(void)
{
    FctransExportId a, b;
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    GError *err = NULL;

    make_id(&a, 1, "sub-1.rack7");
    a.state = FCTRANS_EXPORT_ID_RUNNING;
    fctrans_export_id_encode(&a, buf);
    g_assert_true(fctrans_export_id_decode(buf, &b, &err));
    g_assert_no_error(err);
    g_assert_cmpint(b.state, ==, FCTRANS_EXPORT_ID_RUNNING);
    g_assert_cmpuint(b.page_size, ==, 4096);
    g_assert_cmpuint(b.npages, ==, 262144);
    g_assert_cmpuint(b.subhost_index, ==, 1);
    g_assert_cmpuint(b.nsubhosts, ==, 2);
    g_assert_cmpstr(b.subhost_id, ==, "sub-1.rack7");
    g_assert_cmpmem(b.nonce, 16, a.nonce, 16);
    g_assert_cmpmem(b.migration_id, 16, a.migration_id, 16);
    g_assert_cmpmem(b.vm_uuid, 16, a.vm_uuid, 16);
    g_assert_cmpuint(b.written_s, ==, a.written_s);
    g_assert_true(fctrans_export_id_match(&a, &b, &err));
    g_assert_no_error(err);
}

static void test_nonce_random(void)
{
    FctransExportId a, b;

    make_id(&a, 0, "a");
    make_id(&b, 0, "a");
    g_assert_false(memcmp(a.nonce, b.nonce, 16) == 0);
}

static void test_empty(void)
{
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE] = { 0 };
    FctransExportId b;
    GError *err = NULL;

    g_assert_false(fctrans_export_id_decode(buf, &b, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_MISMATCH);
    g_assert_nonnull(strstr(err->message, "no identity record"));
    g_error_free(err);
}

static void test_foreign_data(void)
{
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    FctransExportId b;
    GError *err = NULL;

    memset(buf, 0x5a, sizeof(buf));     /* guest pages, say */
    g_assert_false(fctrans_export_id_decode(buf, &b, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_error_free(err);
}

static void test_corrupt(void)
{
    FctransExportId a, b;
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    GError *err = NULL;
    unsigned offs[] = { 20, 40, 90, 105, 2000, FCTRANS_EXPORT_ID_SIZE - 1 };
    unsigned i;

    make_id(&a, 0, "sub0");
    for (i = 0; i < G_N_ELEMENTS(offs); i++) {
        fctrans_export_id_encode(&a, buf);
        buf[offs[i]] ^= 1;
        g_assert_false(fctrans_export_id_decode(buf, &b, &err));
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
        g_assert_nonnull(strstr(err->message, "corrupt"));
        g_clear_error(&err);
    }
}

/* Sealed but with fields this reader does not know: refused, not guessed */
static void test_invalid_fields(void)
{
    FctransExportId a, b;
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    GError *err = NULL;
    struct { unsigned off; uint8_t val; const char *what; } cases[] = {
        { 19, 2, "version" },
        { 23, 7, "invalid fields" },        /* state */
        { 39, 1, "invalid fields" },        /* reserved */
        { 104, 0, "invalid fields" },       /* empty name */
        { 104, 65, "invalid fields" },      /* name too long */
        { 106, 0, "invalid fields" },       /* NUL inside the name */
        { 3000, 1, "invalid fields" },      /* stray byte */
        { 106, '/', "invalid fields" },     /* not an id character */
        { 26, 0x11, "invalid fields" },     /* page size not a power of 2 */
        { 31, 2, "invalid fields" },        /* index >= sub-hosts */
        { 35, 0, "invalid fields" },        /* no sub-hosts */
    };
    unsigned i;

    make_id(&a, 0, "sub0");
    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        fctrans_export_id_encode(&a, buf);
        buf[cases[i].off] = cases[i].val;
        reseal(buf);
        g_assert_false(fctrans_export_id_decode(buf, &b, &err));
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
        g_assert_nonnull(strstr(err->message, cases[i].what));
        g_clear_error(&err);
    }
}

/* The misconfiguration of issue 10: two ids point at each other's export */
static void test_swapped(void)
{
    FctransExportId s0, s1, found;
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    GError *err = NULL;

    make_id(&s0, 0, "sub0");
    make_id(&s1, 1, "sub1");
    fctrans_export_id_encode(&s1, buf);
    g_assert_true(fctrans_export_id_decode(buf, &found, &err));
    g_assert_false(fctrans_export_id_match(&s0, &found, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_MISMATCH);
    g_assert_nonnull(strstr(err->message, "'sub1'"));
    g_assert_nonnull(strstr(err->message, "swapped"));
    g_clear_error(&err);

    /* Same name and index, other nonce: a record of another attempt */
    make_id(&s1, 0, "sub0");
    fctrans_export_id_encode(&s1, buf);
    g_assert_true(fctrans_export_id_decode(buf, &found, &err));
    g_assert_false(fctrans_export_id_match(&s0, &found, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_MISMATCH);
    g_clear_error(&err);
}

static void test_other_migration(void)
{
    FctransExportId a, b, found;
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    GError *err = NULL;

    make_id(&a, 0, "sub0");
    b = a;
    b.migration_id[15] ^= 1;
    b.state = FCTRANS_EXPORT_ID_RUNNING;
    fctrans_export_id_encode(&b, buf);
    g_assert_true(fctrans_export_id_decode(buf, &found, &err));
    g_assert_false(fctrans_export_id_same_migration(&a, &found));
    g_assert_false(fctrans_export_id_match(&a, &found, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_MISMATCH);
    g_assert_nonnull(strstr(err->message, "another migration"));
    g_assert_nonnull(strstr(err->message, "in use by its main host"));
    g_assert_nonnull(strstr(err->message, "11111111-1111-1111-1111-"));
    g_clear_error(&err);
}

static void test_other_layout(void)
{
    FctransExportId a, b, found;
    uint8_t buf[FCTRANS_EXPORT_ID_SIZE];
    GError *err = NULL;

    make_id(&a, 0, "sub0");
    b = a;
    b.npages++;
    fctrans_export_id_encode(&b, buf);
    g_assert_true(fctrans_export_id_decode(buf, &found, &err));
    g_assert_false(fctrans_export_id_match(&a, &found, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_MISMATCH);
    g_clear_error(&err);
}

static void test_offset(void)
{
    /* The export's last 4 KiB, whatever VM reads it */
    g_assert_cmpuint(fctrans_export_id_offset(UINT64_C(1) << 30), ==,
                     (UINT64_C(1) << 30) - 4096);
    g_assert_cmpuint(fctrans_export_id_offset((UINT64_C(1) << 40) + 4095),
                     ==, (UINT64_C(1) << 40) - 4096);
    g_assert_cmpuint(fctrans_export_id_offset(4096), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/export-id/roundtrip", test_roundtrip);
    g_test_add_func("/export-id/nonce-random", test_nonce_random);
    g_test_add_func("/export-id/empty", test_empty);
    g_test_add_func("/export-id/foreign-data", test_foreign_data);
    g_test_add_func("/export-id/corrupt", test_corrupt);
    g_test_add_func("/export-id/invalid-fields", test_invalid_fields);
    g_test_add_func("/export-id/swapped", test_swapped);
    g_test_add_func("/export-id/other-migration", test_other_migration);
    g_test_add_func("/export-id/other-layout", test_other_layout);
    g_test_add_func("/export-id/offset", test_offset);
    return g_test_run();
}
