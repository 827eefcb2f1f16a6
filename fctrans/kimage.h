/*
 * fctrans: kernel images (bzImage, vmlinux ELF, Debian kernel package)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A guest profile is generated from the kernel as distributions ship it:
 * a compressed bzImage (vmlinuz) or the linux-image .deb that contains
 * one.  This module turns those into the uncompressed vmlinux ELF image
 * and gives access to its sections.  All input is treated as untrusted.
 */
#ifndef FCTRANS_KIMAGE_H
#define FCTRANS_KIMAGE_H

#include "fctrans.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Default bound on any decompressed output of fctrans_kimage_vmlinux():
 * the vmlinux (real ones are under 100 MiB; Debian's 6.1 is 66 MiB) and
 * the data.tar stream of a .deb up to its vmlinuz.  A decompression bomb
 * fails when a stage's output reaches it: each stage produces at most
 * this many bytes (seconds of work at 512 MiB; measured 1.9 s for zstd,
 * 2.8 s for xz).
 */
#define FCTRANS_KIMAGE_MAX_VMLINUX (512 * 1024 * 1024)

typedef enum {
    FCTRANS_COMPRESSION_NONE,
    FCTRANS_COMPRESSION_GZIP,
    FCTRANS_COMPRESSION_XZ,
    FCTRANS_COMPRESSION_LZMA,
    FCTRANS_COMPRESSION_ZSTD,
    FCTRANS_COMPRESSION_BZIP2,  /* recognised, not supported */
    FCTRANS_COMPRESSION_LZ4,    /* recognised, not supported */
    FCTRANS_COMPRESSION_LZO,    /* recognised, not supported */
} FctransCompression;

const char *fctrans_compression_name(FctransCompression c);

/* The compression format whose magic starts @data, or NONE. */
FctransCompression fctrans_compression_detect(const void *data, size_t len);

/*
 * Called with each piece of decompressed output.  Return 1 to go on, 0 to
 * stop early (success), -1 to fail (the sink sets @errp).
 */
typedef int (*FctransSink)(void *opaque, const void *data, size_t len,
                           GError **errp);

/*
 * Decompress the stream @data of format @c into @sink.  Trailing bytes
 * after the end of the stream are ignored (a bzImage appends the
 * uncompressed size).  Fails on corrupt input, and when more than
 * @max_out bytes come out.
 */
bool fctrans_decompress(FctransCompression c, const void *data, size_t len,
                        uint64_t max_out, FctransSink sink, void *opaque,
                        GError **errp);

/* Decompress into a new buffer of at most @max_out bytes. */
GBytes *fctrans_decompress_bytes(FctransCompression c, const void *data,
                                 size_t len, uint64_t max_out, GError **errp);

/*
 * The vmlinux ELF image in @data, which may be a vmlinux ELF image
 * already, a bzImage, a bare compressed vmlinux, or a Debian
 * linux-image-*.deb (its ./boot/vmlinuz-* is used).  On success, @release
 * (if not NULL) receives the kernel release from the file name inside a
 * .deb, or NULL.
 */
GBytes *fctrans_kimage_vmlinux(const void *data, size_t len,
                               char **release, GError **errp);

/*
 * The same, with @max_out instead of FCTRANS_KIMAGE_MAX_VMLINUX as the
 * bound on what may come out of each decompression (FCTRANS_ERROR_INVALID,
 * "decompressed data exceeds ...", when a stream would expand past it).
 */
GBytes *fctrans_kimage_vmlinux_bounded(const void *data, size_t len,
                                       uint64_t max_out, char **release,
                                       GError **errp);

/* Read a whole file and pass it to fctrans_kimage_vmlinux(). */
GBytes *fctrans_kimage_vmlinux_file(const char *path, char **release,
                                    GError **errp);

/* An ELF64 little-endian x86-64 image and its sections. */
typedef struct FctransElf FctransElf;

typedef struct FctransElfSection {
    const char *name;
    uint64_t addr;              /* link-time virtual address */
    const uint8_t *data;        /* NULL for SHT_NOBITS */
    uint64_t size;
    uint64_t flags;
} FctransElfSection;

/* @data must stay valid while the FctransElf is in use. */
FctransElf *fctrans_elf_new(const void *data, size_t len, GError **errp);
void fctrans_elf_free(FctransElf *elf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FctransElf, fctrans_elf_free)

/* Look up a section by name; sets @errp (UNSUPPORTED) if absent. */
bool fctrans_elf_section(const FctransElf *elf, const char *name,
                         FctransElfSection *sec, GError **errp);

/* Map a link-time address to the section bytes holding it. */
const uint8_t *fctrans_elf_addr(const FctransElf *elf, uint64_t addr,
                                uint64_t len);

#endif /* FCTRANS_KIMAGE_H */
