/*
 * fctrans: kernel images (bzImage, vmlinux ELF, Debian kernel package)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A bzImage is real-mode setup code followed by a compressed vmlinux; the
 * boot protocol header (Documentation/arch/x86/boot.rst, version >= 2.08)
 * gives the payload's offset and length.  Debian compresses with xz
 * (bookworm) or zstd (trixie); gzip and legacy lzma are also handled.
 * A .deb is an ar archive whose data.tar.* member holds ./boot/vmlinuz-*.
 */
#include "kimage.h"
#include "vmi-internal.h"

#include <inttypes.h>
#include <string.h>

#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#define CHUNK (256 * 1024)

/* Bound on the vmlinuz taken out of a .deb (real ones are ~10 MiB). */
#define MAX_VMLINUZ (256 * 1024 * 1024)

/*
 * Memory reserved up front for the vmlinuz of a .deb: the tar header's
 * size is not trusted with more; the buffer grows as the data arrives.
 */
#define VMLINUZ_PREALLOC (32 * 1024 * 1024)

/* Set *errp to an FCTRANS_ERROR and return false. */
#define kfail(errp, code, ...) \
    fctrans_fail(errp, code, "", __VA_ARGS__)

const char *fctrans_compression_name(FctransCompression c)
{
    static const char *const names[] = {
        [FCTRANS_COMPRESSION_NONE] = "none",
        [FCTRANS_COMPRESSION_GZIP] = "gzip",
        [FCTRANS_COMPRESSION_XZ] = "xz",
        [FCTRANS_COMPRESSION_LZMA] = "lzma",
        [FCTRANS_COMPRESSION_ZSTD] = "zstd",
        [FCTRANS_COMPRESSION_BZIP2] = "bzip2",
        [FCTRANS_COMPRESSION_LZ4] = "lz4",
        [FCTRANS_COMPRESSION_LZO] = "lzo",
    };

    return (unsigned)c < G_N_ELEMENTS(names) ? names[c] : "unknown";
}

FctransCompression fctrans_compression_detect(const void *data, size_t len)
{
    static const struct {
        FctransCompression c;
        uint8_t len;
        uint8_t magic[6];
    } magics[] = {
        { FCTRANS_COMPRESSION_XZ, 6, { 0xfd, '7', 'z', 'X', 'Z', 0 } },
        { FCTRANS_COMPRESSION_ZSTD, 4, { 0x28, 0xb5, 0x2f, 0xfd } },
        { FCTRANS_COMPRESSION_GZIP, 3, { 0x1f, 0x8b, 0x08 } },
        { FCTRANS_COMPRESSION_LZMA, 3, { 0x5d, 0x00, 0x00 } },
        { FCTRANS_COMPRESSION_BZIP2, 3, { 'B', 'Z', 'h' } },
        { FCTRANS_COMPRESSION_LZ4, 4, { 0x02, 0x21, 0x4c, 0x18 } },
        { FCTRANS_COMPRESSION_LZO, 4, { 0x89, 'L', 'Z', 'O' } },
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(magics); i++) {
        if (len >= magics[i].len &&
            memcmp(data, magics[i].magic, magics[i].len) == 0) {
            return magics[i].c;
        }
    }
    return FCTRANS_COMPRESSION_NONE;
}

typedef struct DecompState {
    FctransSink sink;
    void *opaque;
    uint64_t total;
    uint64_t max_out;
} DecompState;

/* Pass output on, enforcing the bound; same return convention as a sink. */
static int decomp_emit(DecompState *s, const uint8_t *buf, size_t len,
                       GError **errp)
{
    if (!len) {
        return 1;
    }
    if (len > s->max_out - s->total) {
        kfail(errp, FCTRANS_ERROR_INVALID,
              "decompressed data exceeds %" PRIu64 " bytes", s->max_out);
        return -1;
    }
    s->total += len;
    return s->sink(s->opaque, buf, len, errp);
}

static bool decomp_gzip(DecompState *s, const uint8_t *in, size_t len,
                        GError **errp)
{
    g_autofree uint8_t *out = g_malloc(CHUNK);
    z_stream zs = { 0 };
    bool ok = false;
    int zr, r;

    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        return kfail(errp, FCTRANS_ERROR_FAILED, "gzip: cannot initialise");
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = MIN(len, (size_t)UINT_MAX);
    for (;;) {
        zs.next_out = out;
        zs.avail_out = CHUNK;
        zr = inflate(&zs, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END) {
            kfail(errp, FCTRANS_ERROR_INVALID, "gzip: corrupt data (%s)",
                  zs.msg ? zs.msg : "error");
            break;
        }
        r = decomp_emit(s, out, CHUNK - zs.avail_out, errp);
        if (r <= 0) {
            ok = r == 0;
            break;
        }
        if (zr == Z_STREAM_END) {
            ok = true;
            break;
        }
        if (zs.avail_in == 0 && zs.avail_out != 0) {
            kfail(errp, FCTRANS_ERROR_INVALID, "gzip: truncated data");
            break;
        }
    }
    inflateEnd(&zs);
    return ok;
}

static bool decomp_xz(DecompState *s, FctransCompression c,
                      const uint8_t *in, size_t len, GError **errp)
{
    g_autofree uint8_t *out = g_malloc(CHUNK);
    lzma_stream ls = LZMA_STREAM_INIT;
    const char *name = fctrans_compression_name(c);
    /* Kernel streams use dictionaries of at most a few tens of MiB. */
    const uint64_t memlimit = 512 * 1024 * 1024;
    lzma_ret lr;
    bool ok = false;
    int r;

    if (c == FCTRANS_COMPRESSION_XZ) {
        lr = lzma_stream_decoder(&ls, memlimit, 0);
    } else {
        lr = lzma_alone_decoder(&ls, memlimit);
    }
    if (lr != LZMA_OK) {
        return kfail(errp, FCTRANS_ERROR_FAILED, "%s: cannot initialise",
                     name);
    }
    ls.next_in = in;
    ls.avail_in = len;
    for (;;) {
        ls.next_out = out;
        ls.avail_out = CHUNK;
        lr = lzma_code(&ls, LZMA_FINISH);
        if (lr != LZMA_OK && lr != LZMA_STREAM_END) {
            kfail(errp, FCTRANS_ERROR_INVALID, "%s: corrupt data (error %d)",
                  name, lr);
            break;
        }
        r = decomp_emit(s, out, CHUNK - ls.avail_out, errp);
        if (r <= 0) {
            ok = r == 0;
            break;
        }
        if (lr == LZMA_STREAM_END) {
            ok = true;
            break;
        }
    }
    lzma_end(&ls);
    return ok;
}

static bool decomp_zstd(DecompState *s, const uint8_t *in, size_t len,
                        GError **errp)
{
    g_autofree uint8_t *out = g_malloc(CHUNK);
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    ZSTD_inBuffer ib = { in, len, 0 };
    bool ok = false;
    size_t zr;
    int r;

    if (!dctx) {
        return kfail(errp, FCTRANS_ERROR_FAILED, "zstd: cannot initialise");
    }
    /*
     * The kernel is compressed with -22 --ultra, whose window is 2^27
     * bytes; a frame asking for more is refused rather than allocated.
     */
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 27);
    for (;;) {
        ZSTD_outBuffer ob = { out, CHUNK, 0 };

        zr = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(zr)) {
            kfail(errp, FCTRANS_ERROR_INVALID, "zstd: corrupt data (%s)",
                  ZSTD_getErrorName(zr));
            break;
        }
        r = decomp_emit(s, out, ob.pos, errp);
        if (r <= 0) {
            ok = r == 0;
            break;
        }
        if (zr == 0) {
            /* End of the frame; anything after it is not ours. */
            ok = true;
            break;
        }
        if (ib.pos == ib.size && ob.pos < ob.size) {
            kfail(errp, FCTRANS_ERROR_INVALID, "zstd: truncated data");
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return ok;
}

bool fctrans_decompress(FctransCompression c, const void *data, size_t len,
                        uint64_t max_out, FctransSink sink, void *opaque,
                        GError **errp)
{
    DecompState s = { sink, opaque, 0, max_out };

    switch (c) {
    case FCTRANS_COMPRESSION_GZIP:
        return decomp_gzip(&s, data, len, errp);
    case FCTRANS_COMPRESSION_XZ:
    case FCTRANS_COMPRESSION_LZMA:
        return decomp_xz(&s, c, data, len, errp);
    case FCTRANS_COMPRESSION_ZSTD:
        return decomp_zstd(&s, data, len, errp);
    case FCTRANS_COMPRESSION_NONE:
        return decomp_emit(&s, data, len, errp) >= 0;
    default:
        return kfail(errp, FCTRANS_ERROR_UNSUPPORTED,
                     "%s compression is not supported",
                     fctrans_compression_name(c));
    }
}

static int bytes_sink(void *opaque, const void *data, size_t len,
                      GError **errp)
{
    g_byte_array_append(opaque, data, len);
    return 1;
}

GBytes *fctrans_decompress_bytes(FctransCompression c, const void *data,
                                 size_t len, uint64_t max_out, GError **errp)
{
    GByteArray *out = g_byte_array_new();

    if (!fctrans_decompress(c, data, len, max_out, bytes_sink, out, errp)) {
        g_byte_array_unref(out);
        return NULL;
    }
    return g_byte_array_free_to_bytes(out);
}

/* ---------------------------------------------------------------------- */
/* .deb: an ar archive with a data.tar.* member */

typedef struct TarScan {
    uint8_t hdr[512];
    size_t hdr_fill;
    uint64_t skip;              /* bytes of the current entry to skip */
    uint64_t pad;               /* padding after the current entry */
    bool capturing;
    uint64_t max_file;          /* bound on the vmlinuz */
    uint64_t want;              /* bytes of the vmlinuz still to capture */
    GByteArray *file;
    char *release;
    bool done;
    uint64_t entries;
} TarScan;

static bool tar_size(const uint8_t *f, uint64_t *size)
{
    uint64_t v = 0;
    int i;

    if (f[0] & 0x80) {
        /* GNU base-256 encoding, for sizes over 8 GiB. */
        for (i = 1; i < 12; i++) {
            if (v >> 56) {
                return false;
            }
            v = (v << 8) | f[i];
        }
        *size = v;
        return true;
    }
    for (i = 0; i < 12 && f[i] == ' '; i++) {
        continue;
    }
    for (; i < 12 && f[i] >= '0' && f[i] <= '7'; i++) {
        v = (v << 3) | (f[i] - '0');
    }
    *size = v;
    return true;
}

static bool tar_header(TarScan *t, GError **errp)
{
    const uint8_t *h = t->hdr;
    char name[257];
    const char *base;
    uint64_t size;
    size_t n = 0;

    if (h[0] == 0) {
        /* End-of-archive marker (or padding): no vmlinuz was seen. */
        t->done = true;
        return true;
    }
    if (!tar_size(h + 124, &size)) {
        return kfail(errp, FCTRANS_ERROR_INVALID, "deb: bad tar entry size");
    }
    if (memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
        n = strnlen((const char *)h + 345, 155);
        memcpy(name, h + 345, n);
        name[n++] = '/';
    }
    memcpy(name + n, h, strnlen((const char *)h, 100));
    name[n + strnlen((const char *)h, 100)] = '\0';
    base = name;
    if (g_str_has_prefix(base, "./")) {
        base += 2;
    }
    t->entries++;
    t->pad = (512 - size % 512) % 512;
    if ((h[156] == '0' || h[156] == '\0') &&
        g_str_has_prefix(base, "boot/vmlinuz-") && !strchr(base + 5, '/')) {
        if (size > t->max_file) {
            return kfail(errp, FCTRANS_ERROR_INVALID,
                         "deb: %s is implausibly large (%" PRIu64
                         " bytes, at most %" PRIu64 ")", base, size,
                         t->max_file);
        }
        t->capturing = true;
        t->want = size;
        t->file = g_byte_array_sized_new(MIN(size, VMLINUZ_PREALLOC));
        t->release = g_strdup(base + strlen("boot/vmlinuz-"));
    } else {
        t->skip = size;
    }
    return true;
}

static int tar_sink(void *opaque, const void *data, size_t len, GError **errp)
{
    TarScan *t = opaque;
    const uint8_t *p = data;

    while (len) {
        size_t n;

        if (t->capturing) {
            n = MIN(len, t->want);
            g_byte_array_append(t->file, p, n);
            t->want -= n;
            if (t->want == 0) {
                return 0;
            }
        } else if (t->skip) {
            n = MIN(len, t->skip);
            t->skip -= n;
        } else if (t->pad) {
            n = MIN(len, t->pad);
            t->pad -= n;
        } else {
            n = MIN(len, sizeof(t->hdr) - t->hdr_fill);
            memcpy(t->hdr + t->hdr_fill, p, n);
            t->hdr_fill += n;
            if (t->hdr_fill == sizeof(t->hdr)) {
                t->hdr_fill = 0;
                if (!tar_header(t, errp)) {
                    return -1;
                }
                if (t->done) {
                    return 0;
                }
            }
        }
        p += n;
        len -= n;
    }
    return 1;
}

/*
 * The ./boot/vmlinuz-* of the .deb @d.  The data.tar stream is
 * decompressed only up to the vmlinuz, and at most @max_out bytes of it:
 * a member that expands without end (or a tar entry claiming terabytes
 * to skip) fails once that much has come out.
 */
static GBytes *deb_vmlinuz(const uint8_t *d, size_t len, uint64_t max_out,
                           char **release, GError **errp)
{
    size_t off = 8;
    TarScan t = { .max_file = MIN(max_out, MAX_VMLINUZ) };

    while (off + 60 <= len) {
        const uint8_t *h = d + off;
        char name[17], sizestr[11];
        uint64_t size;
        char *end;

        memcpy(name, h, 16);
        name[16] = '\0';
        g_strchomp(name);
        memcpy(sizestr, h + 48, 10);
        sizestr[10] = '\0';
        if (h[58] != '`' || h[59] != '\n') {
            kfail(errp, FCTRANS_ERROR_INVALID, "deb: bad ar member header");
            return NULL;
        }
        size = g_ascii_strtoull(sizestr, &end, 10);
        if (end == sizestr || size > len - off - 60) {
            kfail(errp, FCTRANS_ERROR_INVALID, "deb: bad ar member size");
            return NULL;
        }
        off += 60;
        if (g_str_has_prefix(name, "data.tar")) {
            FctransCompression c = fctrans_compression_detect(d + off, size);
            bool ok;

            ok = fctrans_decompress(c, d + off, size, max_out, tar_sink,
                                    &t, errp);
            if (!ok) {
                g_prefix_error(errp, "deb: %s: ", name);
            }
            if (ok && !t.file) {
                kfail(errp, FCTRANS_ERROR_INVALID,
                      "deb: no boot/vmlinuz-* in the package");
                ok = false;
            } else if (ok && t.want) {
                kfail(errp, FCTRANS_ERROR_INVALID, "deb: vmlinuz truncated");
                ok = false;
            }
            if (!ok) {
                if (t.file) {
                    g_byte_array_unref(t.file);
                }
                g_free(t.release);
                return NULL;
            }
            if (release) {
                *release = t.release;
            } else {
                g_free(t.release);
            }
            return g_byte_array_free_to_bytes(t.file);
        }
        off += size + (size & 1);
    }
    kfail(errp, FCTRANS_ERROR_INVALID, "deb: no data.tar member");
    return NULL;
}

/* ---------------------------------------------------------------------- */

static bool is_elf(const uint8_t *d, size_t len)
{
    return len >= 4 && memcmp(d, "\x7f" "ELF", 4) == 0;
}

/* Decompress the payload of a bzImage, or a bare compressed image. */
static GBytes *payload_vmlinux(const uint8_t *d, size_t len, uint64_t max_out,
                               GError **errp)
{
    FctransCompression c = fctrans_compression_detect(d, len);
    g_autoptr(GBytes) out = NULL;
    const uint8_t *elf;
    size_t elf_len;

    if (c == FCTRANS_COMPRESSION_NONE) {
        kfail(errp, FCTRANS_ERROR_UNSUPPORTED,
              "unknown compression of the kernel payload");
        return NULL;
    }
    out = fctrans_decompress_bytes(c, d, len, max_out, errp);
    if (!out) {
        return NULL;
    }
    elf = g_bytes_get_data(out, &elf_len);
    if (!is_elf(elf, elf_len)) {
        kfail(errp, FCTRANS_ERROR_INVALID,
              "the %s payload is not an ELF image",
              fctrans_compression_name(c));
        return NULL;
    }
    return g_steal_pointer(&out);
}

GBytes *fctrans_kimage_vmlinux(const void *data, size_t len,
                               char **release, GError **errp)
{
    return fctrans_kimage_vmlinux_bounded(data, len,
                                          FCTRANS_KIMAGE_MAX_VMLINUX,
                                          release, errp);
}

GBytes *fctrans_kimage_vmlinux_bounded(const void *data, size_t len,
                                       uint64_t max_out, char **release,
                                       GError **errp)
{
    const uint8_t *d = data;

    if (release) {
        *release = NULL;
    }
    if (is_elf(d, len)) {
        return g_bytes_new(data, len);
    }
    if (len >= 8 && memcmp(d, "!<arch>\n", 8) == 0) {
        g_autoptr(GBytes) vmlinuz = NULL;
        g_autofree char *rel = NULL;
        const uint8_t *z;
        size_t zlen;
        GBytes *out;

        vmlinuz = deb_vmlinuz(d, len, max_out, &rel, errp);
        if (!vmlinuz) {
            return NULL;
        }
        z = g_bytes_get_data(vmlinuz, &zlen);
        if (zlen >= 8 && memcmp(z, "!<arch>\n", 8) == 0) {
            kfail(errp, FCTRANS_ERROR_INVALID, "deb: nested archive");
            return NULL;
        }
        out = fctrans_kimage_vmlinux_bounded(z, zlen, max_out, NULL, errp);
        if (out && release) {
            *release = g_steal_pointer(&rel);
        }
        return out;
    }
    if (len >= 0x250 && memcmp(d + 0x202, "HdrS", 4) == 0) {
        uint16_t version = fctrans_ld16(d + 0x206);
        unsigned setup_sects = d[0x1f1] ? d[0x1f1] : 4;
        uint64_t start = (setup_sects + 1) * 512ULL;
        uint32_t poff = fctrans_ld32(d + 0x248);
        uint32_t plen = fctrans_ld32(d + 0x24c);

        if (version < 0x208) {
            kfail(errp, FCTRANS_ERROR_UNSUPPORTED,
                  "boot protocol %x.%02x has no payload fields",
                  version >> 8, version & 0xff);
            return NULL;
        }
        if (start + poff > len || plen > len - start - poff) {
            kfail(errp, FCTRANS_ERROR_INVALID,
                  "bzImage payload lies outside the file");
            return NULL;
        }
        return payload_vmlinux(d + start + poff, plen, max_out, errp);
    }
    if (fctrans_compression_detect(d, len) != FCTRANS_COMPRESSION_NONE) {
        return payload_vmlinux(d, len, max_out, errp);
    }
    kfail(errp, FCTRANS_ERROR_INVALID,
          "not a kernel image: neither ELF, bzImage, compressed image "
          "nor .deb");
    return NULL;
}

GBytes *fctrans_kimage_vmlinux_file(const char *path, char **release,
                                    GError **errp)
{
    g_autoptr(GMappedFile) mf = NULL;
    GBytes *out;

    mf = g_mapped_file_new(path, FALSE, errp);
    if (!mf) {
        return NULL;
    }
    out = fctrans_kimage_vmlinux(g_mapped_file_get_contents(mf),
                                 g_mapped_file_get_length(mf), release, errp);
    if (!out) {
        g_prefix_error(errp, "%s: ", path);
    }
    return out;
}

/* ---------------------------------------------------------------------- */
/* ELF */

struct FctransElf {
    const uint8_t *data;
    size_t len;
    FctransElfSection *secs;
    char **names;
    unsigned nsecs;
};

FctransElf *fctrans_elf_new(const void *data, size_t len, GError **errp)
{
    const uint8_t *d = data;
    g_autoptr(FctransElf) elf = g_new0(FctransElf, 1);
    uint64_t shoff;
    uint16_t shentsize, shnum, shstrndx;
    const uint8_t *strhdr;
    uint64_t str_off, str_size;
    unsigned i;

    if (len < 64 || !is_elf(d, len)) {
        kfail(errp, FCTRANS_ERROR_INVALID, "not an ELF image");
        return NULL;
    }
    if (d[4] != 2 || d[5] != 1 || fctrans_ld16(d + 18) != 62) {
        kfail(errp, FCTRANS_ERROR_UNSUPPORTED,
              "not a little-endian x86-64 ELF64 image");
        return NULL;
    }
    shoff = fctrans_ld64(d + 0x28);
    shentsize = fctrans_ld16(d + 0x3a);
    shnum = fctrans_ld16(d + 0x3c);
    shstrndx = fctrans_ld16(d + 0x3e);
    if (shentsize < 64 || shnum == 0 || shstrndx >= shnum ||
        shoff > len || (uint64_t)shnum * shentsize > len - shoff) {
        kfail(errp, FCTRANS_ERROR_INVALID, "bad ELF section header table");
        return NULL;
    }
    strhdr = d + shoff + (uint64_t)shstrndx * shentsize;
    str_off = fctrans_ld64(strhdr + 0x18);
    str_size = fctrans_ld64(strhdr + 0x20);
    if (str_off > len || str_size > len - str_off) {
        kfail(errp, FCTRANS_ERROR_INVALID, "bad ELF section name table");
        return NULL;
    }

    elf->data = d;
    elf->len = len;
    elf->nsecs = shnum;
    elf->secs = g_new0(FctransElfSection, shnum);
    elf->names = g_new0(char *, shnum + 1);
    for (i = 0; i < shnum; i++) {
        const uint8_t *sh = d + shoff + (uint64_t)i * shentsize;
        uint32_t name = fctrans_ld32(sh);
        uint32_t type = fctrans_ld32(sh + 4);
        uint64_t off = fctrans_ld64(sh + 0x18);
        uint64_t size = fctrans_ld64(sh + 0x20);
        FctransElfSection *s = &elf->secs[i];

        if (name < str_size) {
            elf->names[i] = g_strndup((const char *)d + str_off + name,
                                      str_size - name);
        } else {
            elf->names[i] = g_strdup("");
        }
        s->name = elf->names[i];
        s->flags = fctrans_ld64(sh + 8);
        s->addr = fctrans_ld64(sh + 0x10);
        s->size = size;
        if (type == 8 /* SHT_NOBITS */ || type == 0 /* SHT_NULL */) {
            s->data = NULL;
            continue;
        }
        if (off > len || size > len - off) {
            kfail(errp, FCTRANS_ERROR_INVALID,
                  "ELF section '%s' lies outside the file", s->name);
            return NULL;
        }
        if (size && s->addr + size < s->addr) {
            kfail(errp, FCTRANS_ERROR_INVALID,
                  "ELF section '%s' wraps the address space", s->name);
            return NULL;
        }
        s->data = d + off;
    }
    return g_steal_pointer(&elf);
}

void fctrans_elf_free(FctransElf *elf)
{
    if (elf) {
        g_strfreev(elf->names);
        g_free(elf->secs);
        g_free(elf);
    }
}

bool fctrans_elf_section(const FctransElf *elf, const char *name,
                         FctransElfSection *sec, GError **errp)
{
    unsigned i;

    for (i = 0; i < elf->nsecs; i++) {
        if (elf->secs[i].data && strcmp(elf->secs[i].name, name) == 0) {
            *sec = elf->secs[i];
            return true;
        }
    }
    return kfail(errp, FCTRANS_ERROR_UNSUPPORTED,
                 "the kernel image has no %s section", name);
}

const uint8_t *fctrans_elf_addr(const FctransElf *elf, uint64_t addr,
                                uint64_t len)
{
    unsigned i;

    for (i = 0; i < elf->nsecs; i++) {
        const FctransElfSection *s = &elf->secs[i];

        if (s->data && s->addr && addr >= s->addr &&
            addr - s->addr <= s->size && len <= s->size - (addr - s->addr)) {
            return s->data + (addr - s->addr);
        }
    }
    return NULL;
}
