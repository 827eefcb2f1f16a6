/*
 * Builders of synthetic kernel images for the unit tests and fuzzers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "test-kernel-image.h"
#include "vmi-internal.h"

#include <inttypes.h>
#include <lzma.h>
#include <stdio.h>
#include <zlib.h>
#include <zstd.h>

static void put32(GByteArray *a, uint32_t v)
{
    uint8_t b[4];

    fctrans_st32(b, v);
    g_byte_array_append(a, b, 4);
}

static void put16(GByteArray *a, uint16_t v)
{
    uint8_t b[2] = { v & 0xff, v >> 8 };

    g_byte_array_append(a, b, 2);
}

static void put64(GByteArray *a, uint64_t v)
{
    uint8_t b[8];

    fctrans_st64(b, v);
    g_byte_array_append(a, b, 8);
}

void btfb_init(BtfBuilder *b)
{
    b->types = g_byte_array_new();
    b->strs = g_byte_array_new();
    g_byte_array_append(b->strs, (const uint8_t *)"", 1);
    b->next_id = 1;
}

uint32_t btfb_str(BtfBuilder *b, const char *s)
{
    uint32_t off = b->strs->len;

    if (!s || !*s) {
        return 0;
    }
    g_byte_array_append(b->strs, (const uint8_t *)s, strlen(s) + 1);
    return off;
}

uint32_t btfb_raw(BtfBuilder *b, const char *name, FctransBtfKind kind,
                  bool kind_flag, uint32_t vlen, uint32_t size_type,
                  const void *extra, size_t extra_len)
{
    put32(b->types, btfb_str(b, name));
    put32(b->types, ((uint32_t)kind_flag << 31) | ((uint32_t)kind << 24) |
          vlen);
    put32(b->types, size_type);
    if (extra_len) {
        g_byte_array_append(b->types, extra, extra_len);
    }
    return b->next_id++;
}

uint32_t btfb_int(BtfBuilder *b, const char *name, uint32_t size)
{
    uint8_t enc[4];

    fctrans_st32(enc, size * 8);
    return btfb_raw(b, name, FCTRANS_BTF_KIND_INT, false, 0, size, enc, 4);
}

uint32_t btfb_ref(BtfBuilder *b, FctransBtfKind kind, const char *name,
                  uint32_t type)
{
    return btfb_raw(b, name, kind, false, 0, type, NULL, 0);
}

uint32_t btfb_array(BtfBuilder *b, uint32_t elem, uint32_t index,
                    uint32_t nelems)
{
    uint8_t a[12];

    fctrans_st32(a, elem);
    fctrans_st32(a + 4, index);
    fctrans_st32(a + 8, nelems);
    return btfb_raw(b, NULL, FCTRANS_BTF_KIND_ARRAY, false, 0, 0, a, 12);
}

uint32_t btfb_struct(BtfBuilder *b, FctransBtfKind kind, const char *name,
                     uint32_t size, unsigned n, const BtfbMember *m)
{
    g_autoptr(GByteArray) extra = g_byte_array_new();
    bool bitfields = false;
    unsigned i;

    for (i = 0; i < n; i++) {
        bitfields |= m[i].bitfield_size != 0;
    }
    for (i = 0; i < n; i++) {
        put32(extra, btfb_str(b, m[i].name));
        put32(extra, m[i].type);
        put32(extra, bitfields ? (m[i].bitfield_size << 24) | m[i].bit_offset
                               : m[i].bit_offset);
    }
    return btfb_raw(b, name, kind, bitfields, n, size, extra->data,
                    extra->len);
}

uint32_t btfb_enum(BtfBuilder *b, const char *name, unsigned n,
                   const char *const *names, const int32_t *vals)
{
    g_autoptr(GByteArray) extra = g_byte_array_new();
    unsigned i;

    for (i = 0; i < n; i++) {
        put32(extra, btfb_str(b, names[i]));
        put32(extra, (uint32_t)vals[i]);
    }
    return btfb_raw(b, name, FCTRANS_BTF_KIND_ENUM, false, n, 4, extra->data,
                    extra->len);
}

GBytes *btfb_finish(BtfBuilder *b)
{
    GByteArray *out = g_byte_array_new();

    put16(out, 0xeb9f);
    g_byte_array_append(out, (const uint8_t *)"\x01\x00", 2);
    put32(out, 24);
    put32(out, 0);
    put32(out, b->types->len);
    put32(out, b->types->len);
    put32(out, b->strs->len);
    g_byte_array_append(out, b->types->data, b->types->len);
    g_byte_array_append(out, b->strs->data, b->strs->len);
    g_byte_array_unref(b->types);
    g_byte_array_unref(b->strs);
    return g_byte_array_free_to_bytes(out);
}

GBytes *test_kernel_btf(bool pgty_enum)
{
    BtfBuilder b;
    uint32_t ulong, uint, intt, vptr, lh, lh_ptr, anon_s, anon_u, anon_t;
    uint32_t atomic, fa_arr, lh_arr, fa, idx;

    btfb_init(&b);
    ulong = btfb_int(&b, "long unsigned int", 8);
    uint = btfb_int(&b, "unsigned int", 4);
    intt = btfb_int(&b, "int", 4);
    vptr = btfb_ref(&b, FCTRANS_BTF_KIND_PTR, NULL, 0);
    lh_ptr = b.next_id + 1;
    {
        BtfbMember m[] = {
            { "next", lh_ptr, 0, 0 }, { "prev", lh_ptr, 64, 0 },
        };

        lh = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "list_head", 16, 2, m);
    }
    btfb_ref(&b, FCTRANS_BTF_KIND_PTR, NULL, lh);
    {
        BtfbMember m[] = {
            { "lru", lh, 0, 0 }, { "mapping", vptr, 128, 0 },
            { "index", ulong, 192, 0 }, { "private", ulong, 256, 0 },
        };

        anon_s = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, NULL, 40, 4, m);
    }
    {
        BtfbMember m[] = {
            { NULL, anon_s, 0, 0 }, { "callback_head", lh, 0, 0 },
        };

        anon_u = btfb_struct(&b, FCTRANS_BTF_KIND_UNION, NULL, 40, 2, m);
    }
    {
        BtfbMember m[] = { { "counter", intt, 0, 0 } };

        atomic = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, NULL, 4, 1, m);
        atomic = btfb_ref(&b, FCTRANS_BTF_KIND_TYPEDEF, "atomic_t", atomic);
    }
    {
        BtfbMember m[] = { { "_mapcount", atomic, 0, 0 },
                           { "page_type", uint, 0, 0 } };

        anon_t = btfb_struct(&b, FCTRANS_BTF_KIND_UNION, NULL, 4, 2, m);
    }
    {
        BtfbMember m[] = {
            { "flags", ulong, 0, 0 }, { NULL, anon_u, 64, 0 },
            { NULL, anon_t, 384, 0 }, { "_refcount", atomic, 416, 0 },
            { "memcg_data", ulong, 448, 0 },
        };

        btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "page", 64, 5, m);
    }
    idx = btfb_int(&b, "__ARRAY_SIZE_TYPE__", 4);
    lh_arr = btfb_array(&b, lh, idx, 5);
    {
        BtfbMember m[] = { { "free_list", lh_arr, 0, 0 },
                           { "nr_free", ulong, 640, 0 } };

        fa = btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "free_area", 88, 2, m);
    }
    fa_arr = btfb_array(&b, fa, idx, 11);
    {
        BtfbMember m[] = { { "watermark", ulong, 0, 0 },
                           { "free_area", fa_arr, 1024, 0 } };

        btfb_struct(&b, FCTRANS_BTF_KIND_STRUCT, "zone", 1152, 2, m);
    }
    if (pgty_enum) {
        const char *names[] = { "PGTY_buddy", "PGTY_offline", "PGTY_table", 0 };
        const int32_t vals[] = { 0xf0, 0xf1, 0xf2 };

        btfb_enum(&b, "pagetype", 3, names, vals);
    }
    return btfb_finish(&b);
}

GBytes *test_elf(unsigned n, const ElfbSection *secs)
{
    GByteArray *out = g_byte_array_new();
    g_autoptr(GByteArray) shstr = g_byte_array_new();
    g_autofree uint64_t *offs = g_new0(uint64_t, n);
    g_autofree uint32_t *names = g_new0(uint32_t, n);
    static const uint8_t zero[64];
    uint64_t shoff, shstr_off;
    unsigned i;

    g_byte_array_append(out, zero, 64);
    /* .shstrtab: "", ".shstrtab", then the names of our sections. */
    g_byte_array_append(shstr, (const uint8_t *)"\0.shstrtab", 11);
    for (i = 0; i < n; i++) {
        names[i] = shstr->len;
        g_byte_array_append(shstr, (const uint8_t *)secs[i].name,
                            strlen(secs[i].name) + 1);
        offs[i] = out->len;
        if (secs[i].type != 8) {
            g_byte_array_append(out, secs[i].data, secs[i].size);
        }
    }
    shstr_off = out->len;
    g_byte_array_append(out, shstr->data, shstr->len);
    while (out->len % 8) {
        g_byte_array_append(out, zero, 1);
    }
    shoff = out->len;
    /* Section 0 is SHT_NULL, then ours, then .shstrtab. */
    g_byte_array_append(out, zero, 64);
    for (i = 0; i <= n; i++) {
        bool last = i == n;

        put32(out, last ? 1 : names[i]);
        put32(out, last ? 3 : (secs[i].type ? secs[i].type : 1));
        put64(out, 2);
        put64(out, last ? 0 : secs[i].addr);
        put64(out, last ? shstr_off : offs[i]);
        put64(out, last ? shstr->len : secs[i].size);
        put32(out, 0);
        put32(out, 0);
        put64(out, 1);
        put64(out, 0);
    }
    memcpy(out->data, "\x7f" "ELF\x02\x01\x01", 7);
    out->data[16] = 2;                          /* ET_EXEC */
    out->data[18] = 62;                         /* EM_X86_64 */
    fctrans_st64(out->data + 0x28, shoff);
    out->data[0x3a] = 64;                       /* e_shentsize */
    out->data[0x3c] = n + 2;                    /* e_shnum */
    out->data[0x3e] = n + 1;                    /* e_shstrndx */
    return g_byte_array_free_to_bytes(out);
}

static void ksym(GByteArray *tab, uint64_t tab_addr, uint64_t value,
                 uint64_t name_addr)
{
    uint64_t e = tab_addr + tab->len;

    put32(tab, (uint32_t)(int32_t)(value - e));
    put32(tab, (uint32_t)(int32_t)(name_addr - (e + 4)));
    put32(tab, 0);
}

GBytes *test_vmlinux(const char *release, bool pgty_enum, bool with_btf)
{
    g_autoptr(GByteArray) rodata = g_byte_array_new();
    g_autoptr(GByteArray) ks = g_byte_array_new();
    g_autoptr(GByteArray) ks_gpl = g_byte_array_new();
    g_autoptr(GByteArray) strs = g_byte_array_new();
    g_autoptr(GBytes) btf = test_kernel_btf(pgty_enum);
    g_autofree char *banner = NULL;
    g_autofree char *unnumbered = NULL;
    static const uint8_t text[64] = { 0x90 };
    static uint8_t data[0x200];
    const uint64_t ks_addr = TV_RODATA + 0x10000;
    const uint64_t ks_gpl_addr = TV_RODATA + 0x11000;
    const uint64_t strs_addr = TV_RODATA + 0x12000;
    const char *gpl_names[] = { "vmemmap_base", "page_offset_base" };
    const uint64_t gpl_vals[] = { TV_VMEMMAP_BASE, TV_PAGE_OFFSET_BASE };
    const char *names[] = { "phys_base", "printk" };
    const uint64_t vals[] = { TV_PHYS_BASE, TV_TEXT + 0x10 };
    unsigned i;

    banner = g_strdup_printf("Linux version %s (test@example) (gcc 12) "
                             "#1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 "
                             "(2026-01-01)\n", release ? release : TV_RELEASE);
    unnumbered = g_strdup_printf("Linux version %s (test@example) (gcc 12) "
                                 "# SMP PREEMPT_DYNAMIC Debian 6.1.999-1 "
                                 "(2026-01-01)\n",
                                 release ? release : TV_RELEASE);
    g_byte_array_set_size(rodata, 0x100);
    memset(rodata->data, 0, 0x100);
    g_byte_array_append(rodata, (uint8_t *)unnumbered, strlen(unnumbered) + 1);
    g_byte_array_set_size(rodata, TV_BANNER_OFF);
    g_byte_array_append(rodata, (uint8_t *)banner, strlen(banner) + 1);
    g_byte_array_append(rodata, (uint8_t *)"Linux version \x01\n", 17);

    for (i = 0; i < 2; i++) {
        uint64_t n1 = strs_addr + strs->len;

        g_byte_array_append(strs, (uint8_t *)names[i], strlen(names[i]) + 1);
        ksym(ks, ks_addr, vals[i], n1);
    }
    for (i = 0; i < 2; i++) {
        uint64_t n1 = strs_addr + strs->len;

        g_byte_array_append(strs, (uint8_t *)gpl_names[i],
                            strlen(gpl_names[i]) + 1);
        ksym(ks_gpl, ks_gpl_addr, gpl_vals[i], n1);
    }
    {
        ElfbSection secs[] = {
            { ".text", TV_TEXT, text, sizeof(text), 0 },
            { ".rodata", TV_RODATA, rodata->data, rodata->len, 0 },
            { "__ksymtab", ks_addr, ks->data, ks->len, 0 },
            { "__ksymtab_gpl", ks_gpl_addr, ks_gpl->data, ks_gpl->len, 0 },
            { "__ksymtab_strings", strs_addr, strs->data, strs->len, 0 },
            { ".data", TV_DATA, data, sizeof(data), 0 },
            { ".BTF", TV_RODATA + 0x20000, g_bytes_get_data(btf, NULL),
              g_bytes_get_size(btf), 0 },
            { ".bss", TV_DATA + 0x100000, NULL, 0x1000, 8 },
        };

        return test_elf(with_btf ? G_N_ELEMENTS(secs) : 6, secs);
    }
}

GBytes *test_compress(FctransCompression c, GBytes *data)
{
    size_t len, cap, out_len = 0;
    const uint8_t *in = g_bytes_get_data(data, &len);
    uint8_t *out;

    cap = len + len / 2 + 65536;
    out = g_malloc(cap);
    switch (c) {
    case FCTRANS_COMPRESSION_XZ:
        g_assert(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, NULL, in, len,
                                         out, &out_len, cap) == LZMA_OK);
        break;
    case FCTRANS_COMPRESSION_LZMA: {
        lzma_stream s = LZMA_STREAM_INIT;
        lzma_options_lzma opt;

        lzma_lzma_preset(&opt, 1);
        g_assert(lzma_alone_encoder(&s, &opt) == LZMA_OK);
        s.next_in = in;
        s.avail_in = len;
        s.next_out = out;
        s.avail_out = cap;
        g_assert(lzma_code(&s, LZMA_FINISH) == LZMA_STREAM_END);
        out_len = cap - s.avail_out;
        lzma_end(&s);
        break;
    }
    case FCTRANS_COMPRESSION_ZSTD:
        out_len = ZSTD_compress(out, cap, in, len, 3);
        g_assert(!ZSTD_isError(out_len));
        break;
    case FCTRANS_COMPRESSION_GZIP: {
        z_stream zs = { 0 };

        g_assert(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8,
                              Z_DEFAULT_STRATEGY) == Z_OK);
        zs.next_in = (Bytef *)in;
        zs.avail_in = len;
        zs.next_out = out;
        zs.avail_out = cap;
        g_assert(deflate(&zs, Z_FINISH) == Z_STREAM_END);
        out_len = cap - zs.avail_out;
        deflateEnd(&zs);
        break;
    }
    default:
        g_assert_not_reached();
    }
    return g_bytes_new_take(out, out_len);
}

GBytes *test_bzimage(GBytes *vmlinux, FctransCompression c)
{
    g_autoptr(GBytes) z = test_compress(c, vmlinux);
    GByteArray *out = g_byte_array_new();
    const unsigned setup_sects = 1;
    const uint32_t poff = 0x40;
    uint8_t size[4];

    g_byte_array_set_size(out, (setup_sects + 1) * 512 + poff);
    memset(out->data, 0, out->len);
    out->data[0x1f1] = setup_sects;
    memcpy(out->data + 0x202, "HdrS", 4);
    out->data[0x206] = 0x0f;
    out->data[0x207] = 0x02;
    fctrans_st32(out->data + 0x248, poff);
    fctrans_st32(out->data + 0x24c, g_bytes_get_size(z) + 4);
    g_byte_array_append(out, g_bytes_get_data(z, NULL), g_bytes_get_size(z));
    /* Like the kernel's build, append the uncompressed size. */
    fctrans_st32(size, g_bytes_get_size(vmlinux));
    g_byte_array_append(out, size, 4);
    return g_byte_array_free_to_bytes(out);
}

void test_tar_header(GByteArray *t, const char *name, char type,
                     uint64_t len)
{
    uint8_t h[512] = { 0 };
    unsigned sum = 0, i;

    g_assert(strlen(name) < 100);
    g_assert(len < (1ULL << 33));
    memcpy(h, name, strlen(name));
    memcpy(h + 100, type == '5' ? "0000755" : "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf((char *)h + 124, 12, "%011" PRIo64, len);
    memcpy(h + 136, "00000000000", 12);
    memset(h + 148, ' ', 8);
    h[156] = type;
    memcpy(h + 257, "ustar\0" "00", 8);
    for (i = 0; i < 512; i++) {
        sum += h[i];
    }
    snprintf((char *)h + 148, 8, "%06o", sum);
    g_byte_array_append(t, h, 512);
}

static void tar_entry(GByteArray *t, const char *name, char type,
                      const void *data, size_t len)
{
    test_tar_header(t, name, type, len);
    if (len) {
        static const uint8_t zero[512];

        g_byte_array_append(t, data, len);
        g_byte_array_append(t, zero, (512 - len % 512) % 512);
    }
}

static void ar_member(GByteArray *a, const char *name, GBytes *data)
{
    char h[61];

    snprintf(h, sizeof(h), "%-16s%-12s%-6s%-6s%-8s%-10zu`\n", name, "0", "0",
             "0", "100644", g_bytes_get_size(data));
    g_byte_array_append(a, (uint8_t *)h, 60);
    g_byte_array_append(a, g_bytes_get_data(data, NULL),
                        g_bytes_get_size(data));
    if (g_bytes_get_size(data) & 1) {
        g_byte_array_append(a, (const uint8_t *)"\n", 1);
    }
}

GBytes *test_deb_tar(GBytes *tarb, FctransCompression c)
{
    g_autoptr(GBytes) data = NULL, ver = NULL, ctl = NULL;
    g_autofree char *member = NULL;
    GByteArray *deb = g_byte_array_new();
    const char *ext = c == FCTRANS_COMPRESSION_XZ ? ".xz"
                    : c == FCTRANS_COMPRESSION_ZSTD ? ".zst"
                    : c == FCTRANS_COMPRESSION_GZIP ? ".gz" : "";

    data = c == FCTRANS_COMPRESSION_NONE ? g_bytes_ref(tarb)
                                         : test_compress(c, tarb);
    ver = g_bytes_new_static("2.0\n", 4);
    ctl = g_bytes_new_static("not a real control tarball", 26);
    member = g_strdup_printf("data.tar%s", ext);
    g_byte_array_append(deb, (const uint8_t *)"!<arch>\n", 8);
    ar_member(deb, "debian-binary", ver);
    ar_member(deb, "control.tar.xz", ctl);
    ar_member(deb, member, data);
    return g_byte_array_free_to_bytes(deb);
}

GBytes *test_deb(GBytes *vmlinuz, const char *release, FctransCompression c)
{
    g_autoptr(GByteArray) tar = g_byte_array_new();
    g_autoptr(GBytes) tarb = NULL;
    g_autofree char *path = g_strdup_printf("./boot/vmlinuz-%s", release);
    static const uint8_t zero[1024];

    tar_entry(tar, "./", '5', NULL, 0);
    tar_entry(tar, "./boot/", '5', NULL, 0);
    tar_entry(tar, "./boot/config-x", '0', "CONFIG_X=y\n", 11);
    if (vmlinuz) {
        tar_entry(tar, path, '0', g_bytes_get_data(vmlinuz, NULL),
                  g_bytes_get_size(vmlinuz));
    }
    tar_entry(tar, "./lib/", '5', NULL, 0);
    g_byte_array_append(tar, zero, sizeof(zero));
    tarb = g_bytes_new(tar->data, tar->len);
    return test_deb_tar(tarb, c);
}
