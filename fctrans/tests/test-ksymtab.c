/*
 * Unit tests of the __ksymtab reader
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ksymtab.h"
#include "test-kernel-image.h"
#include "vmi-internal.h"

static void test_lookup(void)
{
    g_autoptr(GBytes) vmlinux = test_vmlinux(NULL, false, true);
    g_autoptr(FctransElf) elf = NULL;
    g_autoptr(FctransKsymtab) ks = NULL;
    g_autoptr(GError) err = NULL;
    uint64_t a;

    elf = fctrans_elf_new(g_bytes_get_data(vmlinux, NULL),
                          g_bytes_get_size(vmlinux), &err);
    g_assert_no_error(err);
    ks = fctrans_ksymtab_new(elf, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_ksymtab_count(ks), ==, 4);
    g_assert_true(fctrans_ksymtab_lookup(ks, "phys_base", &a, &err));
    g_assert_cmphex(a, ==, TV_PHYS_BASE);
    g_assert_true(fctrans_ksymtab_lookup(ks, "vmemmap_base", &a, &err));
    g_assert_cmphex(a, ==, TV_VMEMMAP_BASE);    /* from __ksymtab_gpl */
    g_assert_true(fctrans_ksymtab_lookup(ks, "page_offset_base", &a, &err));
    g_assert_cmphex(a, ==, TV_PAGE_OFFSET_BASE);
    g_assert_false(fctrans_ksymtab_lookup(ks, "init_top_pgt", &a, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
}

/* Rebuild an image with a hand-made __ksymtab. */
static FctransKsymtab *with_table(const void *tab, size_t tab_len,
                                  const char *strs, size_t strs_len,
                                  GBytes **keep, GError **errp)
{
    ElfbSection secs[] = {
        { "__ksymtab", 0xffffffff82000000ULL, tab, tab_len, 0 },
        { "__ksymtab_strings", 0xffffffff82001000ULL, strs, strs_len, 0 },
    };
    g_autoptr(FctransElf) elf = NULL;

    *keep = test_elf(G_N_ELEMENTS(secs), secs);
    elf = fctrans_elf_new(g_bytes_get_data(*keep, NULL),
                          g_bytes_get_size(*keep), errp);
    g_assert_nonnull(elf);
    return fctrans_ksymtab_new(elf, errp);
}

static void test_malformed(void)
{
    static const char strs[] = "alpha\0beta";
    uint8_t tab[24];
    g_autoptr(GError) err = NULL;
    GBytes *keep = NULL;
    FctransKsymtab *ks;
    uint64_t a;

    /* Two good entries: alpha at 0x...10, beta at 0x...20. */
    fctrans_st32(tab, 0x10);
    fctrans_st32(tab + 4, 0x1000 - 4);
    fctrans_st32(tab + 8, 0);
    fctrans_st32(tab + 12, 0x20 - 12);
    fctrans_st32(tab + 16, 0x1000 + 6 - 16);
    fctrans_st32(tab + 20, 0);
    ks = with_table(tab, sizeof(tab), strs, sizeof(strs), &keep, &err);
    g_assert_no_error(err);
    g_assert_true(fctrans_ksymtab_lookup(ks, "beta", &a, &err));
    g_assert_cmphex(a, ==, 0xffffffff82000020ULL);
    fctrans_ksymtab_free(ks);
    g_bytes_unref(keep);

    /* Not a multiple of 12 bytes: another format. */
    ks = with_table(tab, 20, strs, sizeof(strs), &keep, &err);
    g_assert_null(ks);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_clear_error(&err);
    g_bytes_unref(keep);

    /* A name outside __ksymtab_strings (e.g. absolute addresses). */
    fctrans_st32(tab + 16, 0x7fffffff);
    ks = with_table(tab, sizeof(tab), strs, sizeof(strs), &keep, &err);
    g_assert_null(ks);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_clear_error(&err);
    g_bytes_unref(keep);

    /* An unterminated name. */
    fctrans_st32(tab + 16, 0x1000 + 6 - 16);
    ks = with_table(tab, sizeof(tab), strs, sizeof(strs) - 1, &keep, &err);
    g_assert_null(ks);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    g_bytes_unref(keep);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ksymtab/lookup", test_lookup);
    g_test_add_func("/ksymtab/malformed", test_malformed);
    return g_test_run();
}
