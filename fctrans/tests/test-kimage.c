/*
 * Unit tests of kernel image handling: bzImage payloads in every
 * supported compression, Debian packages, ELF sections, malformed input
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "kimage.h"
#include "test-kernel-image.h"
#include "vmi-internal.h"

static const FctransCompression supported[] = {
    FCTRANS_COMPRESSION_XZ, FCTRANS_COMPRESSION_ZSTD,
    FCTRANS_COMPRESSION_GZIP, FCTRANS_COMPRESSION_LZMA,
};

static GBytes *extract(GBytes *in, char **release, GError **errp)
{
    return fctrans_kimage_vmlinux(g_bytes_get_data(in, NULL),
                                  g_bytes_get_size(in), release, errp);
}

static void test_bzimage_formats(void)
{
    g_autoptr(GBytes) vmlinux = test_vmlinux(NULL, false, true);
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(supported); i++) {
        g_autoptr(GBytes) bz = test_bzimage(vmlinux, supported[i]);
        g_autoptr(GBytes) z = test_compress(supported[i], vmlinux);
        g_autoptr(GBytes) out = NULL, out2 = NULL;
        g_autoptr(GError) err = NULL;
        g_autofree char *rel = NULL;

        g_assert_cmpint(fctrans_compression_detect(g_bytes_get_data(z, NULL),
                                                   g_bytes_get_size(z)),
                        ==, supported[i]);
        out = extract(bz, &rel, &err);
        g_assert_no_error(err);
        g_assert_true(g_bytes_equal(out, vmlinux));
        g_assert_null(rel);
        /* A bare compressed image works too. */
        out2 = extract(z, NULL, &err);
        g_assert_no_error(err);
        g_assert_true(g_bytes_equal(out2, vmlinux));
    }
}

static void test_elf_passthrough(void)
{
    g_autoptr(GBytes) vmlinux = test_vmlinux(NULL, false, true);
    g_autoptr(GBytes) out = NULL;
    g_autoptr(FctransElf) elf = NULL;
    g_autoptr(GError) err = NULL;
    FctransElfSection sec;
    const uint8_t *p;

    out = extract(vmlinux, NULL, &err);
    g_assert_true(g_bytes_equal(out, vmlinux));
    elf = fctrans_elf_new(g_bytes_get_data(out, NULL), g_bytes_get_size(out),
                          &err);
    g_assert_no_error(err);
    g_assert_true(fctrans_elf_section(elf, ".rodata", &sec, &err));
    g_assert_cmphex(sec.addr, ==, TV_RODATA);
    p = fctrans_elf_addr(elf, TV_RODATA + TV_BANNER_OFF, 14);
    g_assert_nonnull(p);
    g_assert_cmpmem(p, 14, "Linux version ", 14);
    g_assert_null(fctrans_elf_addr(elf, TV_RODATA - 1, 1));
    g_assert_null(fctrans_elf_addr(elf, TV_RODATA + sec.size - 1, 2));
    /* NOBITS sections have no bytes. */
    g_assert_false(fctrans_elf_section(elf, ".bss", &sec, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
}

static void test_deb_formats(void)
{
    g_autoptr(GBytes) vmlinux = test_vmlinux(NULL, false, true);
    g_autoptr(GBytes) bz = test_bzimage(vmlinux, FCTRANS_COMPRESSION_XZ);
    const FctransCompression tars[] = {
        FCTRANS_COMPRESSION_XZ, FCTRANS_COMPRESSION_ZSTD,
        FCTRANS_COMPRESSION_GZIP, FCTRANS_COMPRESSION_NONE,
    };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(tars); i++) {
        g_autoptr(GBytes) deb = test_deb(bz, TV_RELEASE, tars[i]);
        g_autoptr(GBytes) out = NULL;
        g_autoptr(GError) err = NULL;
        g_autofree char *rel = NULL;

        out = extract(deb, &rel, &err);
        g_assert_no_error(err);
        g_assert_true(g_bytes_equal(out, vmlinux));
        g_assert_cmpstr(rel, ==, TV_RELEASE);
    }
    {
        g_autoptr(GBytes) deb = test_deb(NULL, TV_RELEASE,
                                         FCTRANS_COMPRESSION_XZ);
        g_autoptr(GError) err = NULL;

        g_assert_null(extract(deb, NULL, &err));
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    }
}

static void expect_error(const void *d, size_t len, int code)
{
    g_autoptr(GError) err = NULL;
    GBytes *out = fctrans_kimage_vmlinux(d, len, NULL, &err);

    g_assert_null(out);
    g_assert_error(err, FCTRANS_ERROR, code);
}

static void test_malformed(void)
{
    g_autoptr(GBytes) vmlinux = test_vmlinux(NULL, false, true);
    g_autoptr(GBytes) bz = test_bzimage(vmlinux, FCTRANS_COMPRESSION_ZSTD);
    size_t len = g_bytes_get_size(bz);
    g_autofree uint8_t *c = g_memdup2(g_bytes_get_data(bz, NULL), len);
    const uint8_t *d = g_bytes_get_data(bz, NULL);
    g_autoptr(GBytes) small = NULL;
    g_autoptr(GError) err = NULL;

    expect_error("", 0, FCTRANS_ERROR_INVALID);
    expect_error("hello world", 11, FCTRANS_ERROR_INVALID);
    expect_error("BZh91AY&SY", 10, FCTRANS_ERROR_UNSUPPORTED);
    expect_error("\x02\x21\x4c\x18xxxx", 8, FCTRANS_ERROR_UNSUPPORTED);
    /* Payload outside the file. */
    fctrans_st32(c + 0x24c, len);
    expect_error(c, len, FCTRANS_ERROR_INVALID);
    memcpy(c, d, len);
    fctrans_st32(c + 0x248, 0xfffffff0);
    expect_error(c, len, FCTRANS_ERROR_INVALID);
    /* Too old a boot protocol. */
    memcpy(c, d, len);
    c[0x206] = 0x04;
    expect_error(c, len, FCTRANS_ERROR_UNSUPPORTED);
    /* Truncated payloads; corrupt ones, caught by xz's check. */
    expect_error(d, len - len / 3, FCTRANS_ERROR_INVALID);
    {
        g_autoptr(GBytes) xbz = test_bzimage(vmlinux, FCTRANS_COMPRESSION_XZ);
        size_t xlen = g_bytes_get_size(xbz);
        g_autofree uint8_t *x = g_memdup2(g_bytes_get_data(xbz, NULL), xlen);

        size_t mid = 1088 + (xlen - 1088) / 2;  /* inside the payload */

        x[mid] ^= 0xff;
        x[mid + 1] ^= 0xff;
        expect_error(x, xlen, FCTRANS_ERROR_INVALID);
    }
    /* A payload that is not ELF. */
    {
        g_autoptr(GBytes) junk = g_bytes_new_static("not an elf image", 16);
        g_autoptr(GBytes) jz = test_bzimage(junk, FCTRANS_COMPRESSION_GZIP);

        expect_error(g_bytes_get_data(jz, NULL), g_bytes_get_size(jz),
                     FCTRANS_ERROR_INVALID);
    }
    /* The output bound holds (a decompression bomb stops early). */
    {
        g_autoptr(GBytes) z = test_compress(FCTRANS_COMPRESSION_XZ, vmlinux);

        small = fctrans_decompress_bytes(FCTRANS_COMPRESSION_XZ,
                                         g_bytes_get_data(z, NULL),
                                         g_bytes_get_size(z), 1000, &err);
        g_assert_null(small);
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    }
}

static void test_elf_malformed(void)
{
    g_autoptr(GBytes) vmlinux = test_vmlinux(NULL, false, true);
    size_t len = g_bytes_get_size(vmlinux);
    const uint8_t *d = g_bytes_get_data(vmlinux, NULL);
    g_autofree uint8_t *c = g_memdup2(d, len);
    uint64_t shoff = fctrans_ld64(d + 0x28);
    GError *err = NULL;

#define ELF_BAD(stmt, code) do {                                    \
        memcpy(c, d, len);                                          \
        stmt;                                                       \
        g_assert_null(fctrans_elf_new(c, len, &err));               \
        g_assert_error(err, FCTRANS_ERROR, code);                   \
        g_clear_error(&err);                                        \
    } while (0)
    ELF_BAD(c[4] = 1, FCTRANS_ERROR_UNSUPPORTED);
    ELF_BAD(c[18] = 3, FCTRANS_ERROR_UNSUPPORTED);
    ELF_BAD(fctrans_st64(c + 0x28, len), FCTRANS_ERROR_INVALID);
    ELF_BAD(c[0x3e] = 200, FCTRANS_ERROR_INVALID);
    ELF_BAD(c[0x3a] = 10, FCTRANS_ERROR_INVALID);
    /* Section 1's data beyond the end of the file. */
    ELF_BAD(fctrans_st64(c + shoff + 64 + 0x20, len), FCTRANS_ERROR_INVALID);
    ELF_BAD(fctrans_st64(c + shoff + 64 + 0x18, ~0ULL), FCTRANS_ERROR_INVALID);
#undef ELF_BAD
    g_assert_null(fctrans_elf_new(d, 40, &err));
    g_clear_error(&err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/kimage/bzimage", test_bzimage_formats);
    g_test_add_func("/kimage/elf", test_elf_passthrough);
    g_test_add_func("/kimage/deb", test_deb_formats);
    g_test_add_func("/kimage/malformed", test_malformed);
    g_test_add_func("/kimage/elf-malformed", test_elf_malformed);
    return g_test_run();
}
