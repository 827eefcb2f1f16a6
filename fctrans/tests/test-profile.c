/*
 * Unit tests of guest kernel profiles: generation from a synthetic
 * vmlinux, the text form and its parser, loading a directory
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "profile.h"
#include "test-kernel-image.h"

#include <glib/gstdio.h>

static FctransProfile *gen(const char *release, bool pgty, bool btf,
                           GError **errp)
{
    g_autoptr(GBytes) v = test_vmlinux(release, pgty, btf);

    return fctrans_profile_from_vmlinux(g_bytes_get_data(v, NULL),
                                        g_bytes_get_size(v), errp);
}

static void test_generate(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(FctransProfile) p = gen(NULL, false, true, &err);
    g_autoptr(FctransProfile) q = NULL;

    g_assert_no_error(err);
    g_assert_cmpstr(p->release, ==, TV_RELEASE);
    g_assert_cmpstr(p->banner, ==, TV_BANNER);     /* the numbered copy */
    g_assert_cmphex(p->banner_addr, ==, TV_RODATA + TV_BANNER_OFF);
    g_assert_cmphex(p->text_addr, ==, TV_TEXT);
    g_assert_cmphex(p->vmemmap_base_addr, ==, TV_VMEMMAP_BASE);
    g_assert_cmphex(p->page_offset_base_addr, ==, TV_PAGE_OFFSET_BASE);
    g_assert_cmphex(p->phys_base_addr, ==, TV_PHYS_BASE);
    g_assert_cmpuint(p->page_size, ==, 64);
    g_assert_cmpuint(p->page_flags_off, ==, 0);
    g_assert_cmpuint(p->page_private_off, ==, 40);
    g_assert_cmpuint(p->page_type_off, ==, 48);
    g_assert_cmphex(p->buddy_mask, ==, 0xf0000080);
    g_assert_cmphex(p->buddy_value, ==, 0xf0000000);
    g_assert_cmpuint(p->max_order, ==, 10);

    /* 6.12 and later: the encoding comes from BTF's enum pagetype. */
    q = gen("6.12.99-amd64", true, true, &err);
    g_assert_no_error(err);
    g_assert_cmphex(q->buddy_mask, ==, 0xff000000);
    g_assert_cmphex(q->buddy_value, ==, 0xf0000000);
}

static void test_generate_refused(void)
{
    const char *unknown[] = { "6.10.3-amd64", "4.14.0-1-amd64", "7.0-x" };
    GError *err = NULL;
    FctransProfile *p;
    unsigned i;

    /* Free pages encoded in a way this version does not know. */
    for (i = 0; i < G_N_ELEMENTS(unknown); i++) {
        p = gen(unknown[i], false, true, &err);
        g_assert_null(p);
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
        g_clear_error(&err);
    }
    p = gen("5.10.0-30-amd64", false, true, &err);
    g_assert_no_error(err);
    fctrans_profile_free(p);
    /* No BTF. */
    p = gen(NULL, false, false, &err);
    g_assert_null(p);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(err->message, "BTF"));
    g_clear_error(&err);
    /* Not an image at all. */
    p = fctrans_profile_from_vmlinux("nothing", 7, &err);
    g_assert_null(p);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
}

static void test_roundtrip(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(FctransProfile) p = gen(NULL, false, true, &err);
    g_autoptr(FctransProfile) q = NULL;
    g_autofree char *text = fctrans_profile_to_text(p);
    g_autofree char *text2 = NULL;
    g_autofree char *name = fctrans_profile_file_name(p);

    q = fctrans_profile_parse(text, strlen(text), &err);
    g_assert_no_error(err);
    text2 = fctrans_profile_to_text(q);
    g_assert_cmpstr(text, ==, text2);
    g_assert_cmpstr(q->banner, ==, p->banner);
    g_assert_true(g_str_has_prefix(name, TV_RELEASE "-"));
    g_assert_true(g_str_has_suffix(name, ".profile"));
}

static void expect_parse_error(const char *text, int code, const char *what)
{
    g_autoptr(GError) err = NULL;
    FctransProfile *p = fctrans_profile_parse(text, strlen(text), &err);

    g_assert_null(p);
    g_assert_error(err, FCTRANS_ERROR, code);
    if (what) {
        g_assert_nonnull(strstr(err->message, what));
    }
}

/* Replace the line starting with @key (or append when absent). */
static char *with_line(const char *text, const char *key, const char *line)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", 0);
    GString *s = g_string_new(NULL);
    bool done = false;
    int i;

    for (i = 0; lines[i]; i++) {
        if (!done && g_str_has_prefix(lines[i], key) &&
            lines[i][strlen(key)] == ' ') {
            if (line) {
                g_string_append_printf(s, "%s\n", line);
            }
            done = true;
        } else if (*lines[i]) {
            g_string_append_printf(s, "%s\n", lines[i]);
        }
    }
    if (!done && line) {
        g_string_append_printf(s, "%s\n", line);
    }
    return g_string_free(s, false);
}

static void test_parse_errors(void)
{
    g_autoptr(FctransProfile) p = gen(NULL, false, true, NULL);
    g_autofree char *good = fctrans_profile_to_text(p);
    static const struct {
        const char *key, *line, *what;
        int code;
    } cases[] = {
        { "page-size", NULL, "missing", FCTRANS_ERROR_INVALID },
        { "page-size", "page-size 64x", "bad value", FCTRANS_ERROR_INVALID },
        { "page-size", "page-size 4096", "bad value", FCTRANS_ERROR_INVALID },
        { "page-size", "page-size -1", "bad value", FCTRANS_ERROR_INVALID },
        { "page-size", "page-size 99999999999999999999999", "bad value",
          FCTRANS_ERROR_INVALID },
        { "max-order", "max-order 21", "bad value", FCTRANS_ERROR_INVALID },
        { "frobnicate", "frobnicate 1", "unknown key", FCTRANS_ERROR_INVALID },
        { "release", "release 6.1.0-98-amd64", "banner does not name",
          FCTRANS_ERROR_INVALID },
        { "release", "release two words", "bad value",
          FCTRANS_ERROR_INVALID },
        { "page-type-offset", "page-type-offset 62", "outside",
          FCTRANS_ERROR_INVALID },
        { "buddy-value", "buddy-value 0x1", "buddy", FCTRANS_ERROR_INVALID },
        { "banner-address", "banner-address 0x10", "below",
          FCTRANS_ERROR_INVALID },
        { "fctrans-profile", "fctrans-profile 2", "format",
          FCTRANS_ERROR_UNSUPPORTED },
        { "fctrans-profile", "hello world", "not an fctrans profile",
          FCTRANS_ERROR_INVALID },
        { "banner", "banner", "expected", FCTRANS_ERROR_INVALID },
    };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *t = with_line(good, cases[i].key, cases[i].line);

        expect_parse_error(t, cases[i].code, cases[i].what);
    }
    {
        g_autofree char *dup = g_strconcat(good, "page-size 64\n", NULL);

        expect_parse_error(dup, FCTRANS_ERROR_INVALID, "twice");
    }
    expect_parse_error("", FCTRANS_ERROR_INVALID, NULL);
    expect_parse_error("# only a comment\n", FCTRANS_ERROR_INVALID, NULL);
    {
        g_autoptr(GError) err = NULL;
        char nul[] = "fctrans-profile 1\0release x\n";

        g_assert_null(fctrans_profile_parse(nul, sizeof(nul) - 1, &err));
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    }
}

static void test_load_path(void)
{
    g_autofree char *dir = g_dir_make_tmp("fctrans-profile-XXXXXX", NULL);
    g_autoptr(FctransProfile) a = gen(NULL, false, true, NULL);
    g_autoptr(FctransProfile) b = gen("6.12.99-amd64", true, true, NULL);
    g_autofree char *ta = fctrans_profile_to_text(a);
    g_autofree char *tb = fctrans_profile_to_text(b);
    g_autofree char *na = fctrans_profile_file_name(a);
    g_autofree char *nb = fctrans_profile_file_name(b);
    g_autofree char *pa = g_build_filename(dir, na, NULL);
    g_autofree char *pb = g_build_filename(dir, nb, NULL);
    g_autofree char *other = g_build_filename(dir, "README", NULL);
    g_autofree char *bad = g_build_filename(dir, "bad.profile", NULL);
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) err = NULL;

    g_assert_true(g_file_set_contents(pa, ta, -1, NULL));
    g_assert_true(g_file_set_contents(pb, tb, -1, NULL));
    g_assert_true(g_file_set_contents(other, "not a profile", -1, NULL));
    list = fctrans_profile_load_path(dir, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(list->len, ==, 2);
    g_clear_pointer(&list, g_ptr_array_unref);

    list = fctrans_profile_load_path(pa, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(list->len, ==, 1);
    g_clear_pointer(&list, g_ptr_array_unref);

    /* One broken file fails the whole load, naming the file. */
    g_assert_true(g_file_set_contents(bad, "fctrans-profile 1\n", -1, NULL));
    list = fctrans_profile_load_path(dir, &err);
    g_assert_null(list);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, "bad.profile"));
    g_clear_error(&err);

    list = fctrans_profile_load_path("/nonexistent/profiles", &err);
    g_assert_null(list);
    g_assert_nonnull(err);

    g_unlink(pa);
    g_unlink(pb);
    g_unlink(other);
    g_unlink(bad);
    g_rmdir(dir);
}

/* Every banner of @buf, as "offset:length" words. */
static char *scan_all(const uint8_t *buf, size_t len, size_t limit,
                      unsigned hits)
{
    GString *out = g_string_new("");
    FctransBannerScan scan;
    const char *b;
    size_t n;

    fctrans_banner_scan_init(&scan, buf, len, limit, &hits);
    while (fctrans_banner_scan_next(&scan, &b, &n)) {
        g_string_append_printf(out, "%s%zu:%zu", out->len ? " " : "",
                               (size_t)((const uint8_t *)b - buf), n);
    }
    return g_string_free(out, false);
}

/*
 * The banner scanner: a prefix straddling the search window (64 KiB),
 * lines too long or not ended, the hit limit, hits past @limit.
 */
static void test_banner_scan(void)
{
    const char line[] = "Linux version 6.1.0-99-amd64 (x) #1 SMP\n";
    const size_t size = 256 * 1024;
    g_autofree uint8_t *buf = g_malloc0(size);
    g_autofree char *got = NULL;
    size_t at[] = { 0, 65536 - 5, 131072 - 13, 200000 };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(at); i++) {
        memcpy(buf + at[i], line, strlen(line));
    }
    got = scan_all(buf, size, size, 100);
    g_assert_cmpstr(got, ==, "0:39 65531:39 131059:39 200000:39");
    g_free(got);

    /* Only hits before limit; at most three hits looked at. */
    got = scan_all(buf, size, 200000, 100);
    g_assert_cmpstr(got, ==, "0:39 65531:39 131059:39");
    g_free(got);
    got = scan_all(buf, size, size, 2);
    g_assert_cmpstr(got, ==, "0:39 65531:39");
    g_free(got);

    /* A line running past the buffer's end, and one too long. */
    memset(buf, 'x', size);
    memcpy(buf + size - 20, "Linux version 6", 15);
    memcpy(buf, "Linux version ", 14);
    buf[14 + FCTRANS_PROFILE_MAX_BANNER] = '\n';
    memcpy(buf + 1000, line, strlen(line));
    got = scan_all(buf, size, size, 100);
    g_assert_cmpstr(got, ==, "1000:39");

    g_assert_true(fctrans_banner_numbered(line, strlen(line) - 1));
    g_assert_false(fctrans_banner_numbered("Linux version 6.1 #x", 20));
    g_assert_false(fctrans_banner_numbered("Linux version 6.1 #1", 19));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/profile/generate", test_generate);
    g_test_add_func("/profile/generate-refused", test_generate_refused);
    g_test_add_func("/profile/roundtrip", test_roundtrip);
    g_test_add_func("/profile/parse-errors", test_parse_errors);
    g_test_add_func("/profile/load-path", test_load_path);
    g_test_add_func("/profile/banner-scan", test_banner_scan);
    return g_test_run();
}
