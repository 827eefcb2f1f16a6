/*
 * Unit tests of kernel image handling: bzImage payloads in every
 * supported compression, Debian packages, ELF sections, malformed input
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "kimage.h"
#include "profile.h"
#include "test-kernel-image.h"
#include "vmi-internal.h"
#include "test-bound.h"

#include <string.h>
#include <zstd.h>

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

/*
 * Decompression bombs: small streams of zeroes that expand past the
 * bound given (here 256 KiB instead of the default 512 MiB, to keep the
 * test small) fail quickly with an error saying so, as a bare image, as a
 * bzImage payload and as the data.tar of a .deb, where the tar entry
 * being skipped claims 8 GiB.
 */
#define BOMB_BOUND (256 * 1024)
#define BOMB_SIZE (4 * 1024 * 1024)

static void expect_bomb(GBytes *in, const char *what)
{
    g_autoptr(GTimer) timer = g_timer_new();
    g_autoptr(GError) err = NULL;
    GBytes *out;

    out = fctrans_kimage_vmlinux_bounded(g_bytes_get_data(in, NULL),
                                         g_bytes_get_size(in), BOMB_BOUND,
                                         NULL, &err);
    g_test_message("%s (%zu bytes): %.4f s: %s", what, g_bytes_get_size(in),
                   g_timer_elapsed(timer, NULL), err ? err->message : "");
    g_assert_null(out);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, "exceeds 262144 bytes"));
    g_assert_cmpfloat(g_timer_elapsed(timer, NULL), <, TEST_INPUT_SECONDS);
}

static void test_bombs(void)
{
    g_autoptr(GBytes) zeroes = g_bytes_new_take(g_malloc0(BOMB_SIZE),
                                                BOMB_SIZE);
    g_autoptr(GByteArray) tar = g_byte_array_new();
    g_autoptr(GBytes) tarb = NULL;
    unsigned i;

    test_tar_header(tar, "./", '5', 0);
    test_tar_header(tar, "./aaa-junk", '0', (1ULL << 33) - 1);
    g_byte_array_append(tar, g_bytes_get_data(zeroes, NULL), BOMB_SIZE);
    tarb = g_bytes_new(tar->data, tar->len);

    for (i = 0; i < G_N_ELEMENTS(supported); i++) {
        g_autoptr(GBytes) z = test_compress(supported[i], zeroes);
        g_autoptr(GBytes) bz = test_bzimage(zeroes, supported[i]);
        g_autofree char *what = g_strdup_printf(
            "%s", fctrans_compression_name(supported[i]));

        expect_bomb(z, what);
        expect_bomb(bz, "bzImage");
        if (supported[i] != FCTRANS_COMPRESSION_LZMA) {
            g_autoptr(GBytes) deb = test_deb_tar(tarb, supported[i]);

            expect_bomb(deb, "deb");
        }
    }
    {
        g_autoptr(GBytes) deb = test_deb_tar(tarb, FCTRANS_COMPRESSION_NONE);

        expect_bomb(deb, "deb of a plain tar");
    }
}

/* A vmlinuz whose tar header claims more than the bound is not captured. */
static void test_deb_huge_vmlinuz(void)
{
    g_autoptr(GByteArray) tar = g_byte_array_new();
    g_autoptr(GBytes) tarb = NULL, deb = NULL;
    g_autoptr(GError) err = NULL;

    test_tar_header(tar, "./boot/vmlinuz-x", '0', 200 * 1024 * 1024);
    g_byte_array_set_size(tar, tar->len + 4096);
    tarb = g_bytes_new(tar->data, tar->len);
    deb = test_deb_tar(tarb, FCTRANS_COMPRESSION_GZIP);
    g_assert_null(fctrans_kimage_vmlinux_bounded(g_bytes_get_data(deb, NULL),
                                                 g_bytes_get_size(deb),
                                                 BOMB_BOUND, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, "implausibly large"));
}

/* zstd frames asking for a window over 128 MiB are refused. */
static void test_zstd_window(void)
{
    g_autoptr(GBytes) small = g_bytes_new_take(g_malloc0(4096), 4096);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    uint8_t out[1024];
    ZSTD_inBuffer ib = { g_bytes_get_data(small, NULL), 4096, 0 };
    ZSTD_outBuffer ob = { out, sizeof(out), 0 };
    g_autoptr(GBytes) frame = NULL, got = NULL;
    g_autoptr(GError) err = NULL;
    int wlog;

    for (wlog = 27; wlog <= 28; wlog++) {
        ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, wlog);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
        ib.pos = 0;
        ob.pos = 0;
        /*
         * Streamed with the size unknown when the frame starts, so that
         * the frame declares the full window.
         */
        g_assert_false(ZSTD_isError(ZSTD_compressStream2(cctx, &ob, &ib,
                                                         ZSTD_e_continue)));
        g_assert_cmpuint(ib.pos, ==, ib.size);
        g_assert_cmpuint(ZSTD_compressStream2(cctx, &ob, &ib, ZSTD_e_end),
                         ==, 0);
        frame = g_bytes_new(out, ob.pos);
        got = fctrans_decompress_bytes(FCTRANS_COMPRESSION_ZSTD, out, ob.pos,
                                       1 << 20, &err);
        if (wlog == 27) {
            g_assert_no_error(err);
            g_assert_true(g_bytes_equal(got, small));
        } else {
            g_assert_null(got);
            g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
        }
        g_clear_pointer(&frame, g_bytes_unref);
        g_clear_pointer(&got, g_bytes_unref);
    }
    ZSTD_freeCCtx(cctx);
}

/*
 * A .rodata of 32 MiB of near-miss banners: strings of "Linux version "
 * 36 times over (each hit in them a candidate, unnumbered), then the
 * banner.  Profile generation finds it in one pass, not one per hit.
 */
static void test_rodata_near_miss(void)
{
    const size_t size = 32 * 1024 * 1024;
    const char junk[] = "Linux version ";
    const char banner[] = TV_BANNER "\n";
    g_autofree uint8_t *ro = g_malloc0(size);
    g_autoptr(GBytes) elf = NULL;
    g_autoptr(GTimer) timer = NULL;
    g_autoptr(GError) err = NULL;
    size_t off, bpos = size - 4096;
    FctransProfile *p;

    for (off = 0; off + 36 * strlen(junk) + 2 <= bpos; off += 2) {
        unsigned i;

        for (i = 0; i < 36; i++, off += strlen(junk)) {
            memcpy(ro + off, junk, strlen(junk));
        }
        ro[off] = '\n';
    }
    memcpy(ro + bpos, banner, strlen(banner));
    {
        ElfbSection secs[] = {
            { ".text", TV_TEXT, "\xc3", 1, 0 },
            { ".rodata", TV_RODATA, ro, size, 0 },
        };

        elf = test_elf(G_N_ELEMENTS(secs), secs);
    }
    timer = g_timer_new();
    p = fctrans_profile_from_vmlinux(g_bytes_get_data(elf, NULL),
                                     g_bytes_get_size(elf), &err);
    g_test_message("%.3f s: %s", g_timer_elapsed(timer, NULL), err->message);
    g_assert_cmpfloat(g_timer_elapsed(timer, NULL), <, TEST_INPUT_SECONDS);
    /* The banner was found: the error is about what comes next. */
    g_assert_null(p);
    g_assert_nonnull(strstr(err->message, "kernel " TV_RELEASE ":"));
    g_clear_error(&err);
    /* Without it, the first near miss is taken, still in one pass. */
    memset(ro + bpos, 0, 4096);
    {
        ElfbSection secs[] = {
            { ".text", TV_TEXT, "\xc3", 1, 0 },
            { ".rodata", TV_RODATA, ro, size, 0 },
        };

        g_clear_pointer(&elf, g_bytes_unref);
        elf = test_elf(G_N_ELEMENTS(secs), secs);
    }
    g_timer_start(timer);
    p = fctrans_profile_from_vmlinux(g_bytes_get_data(elf, NULL),
                                     g_bytes_get_size(elf), &err);
    g_test_message("%.3f s: %s", g_timer_elapsed(timer, NULL), err->message);
    g_assert_cmpfloat(g_timer_elapsed(timer, NULL), <, TEST_INPUT_SECONDS);
    g_assert_null(p);
    g_assert_nonnull(strstr(err->message, "kernel Linux:"));
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
    g_test_add_func("/kimage/bombs", test_bombs);
    g_test_add_func("/kimage/deb-huge-vmlinuz", test_deb_huge_vmlinuz);
    g_test_add_func("/kimage/zstd-window", test_zstd_window);
    g_test_add_func("/kimage/rodata-near-miss", test_rodata_near_miss);
    return g_test_run();
}
